//! Valid-by-construction random loop programs from fuzzer bytes (Tzer-style IR generation).
//!
//! A program computes in f32 or, one time in four, i32 (exact: wrapping arithmetic on both
//! sides, integer reductions compared bit for bit). It has one to three input buffers and
//! one or two outputs. Each output gets a
//! nest of one to three serial loops whose innermost body stores an expression at a
//! row-major index over a permutation of the nest's variables (so stores are contiguous or
//! strided); a second output may be stored at an outer level (an imperfect nest). Bodies may
//! be wrapped in a reduction (sum, max or min over one or two axes). Loads read inputs at
//! affine indices over a subset of the variables, some shifted and guarded — `select(v - s ≥ 0,
//! load(max(v - s, 0)), c)`, the padded-window idiom, or `select(v + s < n, load(v + s), c)` —
//! half of them unclamped, so that an address outside the buffer is only kept from being
//! read by the lazy `select` (the oracle's guard pages catch native code that reads it
//! anyway). A store may also read an element of its output stored earlier (`y[i - s][j + t]`:
//! a loop-carried dependence, which interchanging or parallelising the loops would break).
//! Every output element is written exactly once; buffer lengths are fitted to the largest
//! index.

use arbitrary::{Result, Unstructured};
use std::collections::BTreeMap;
use tessera_ir::DType;
use tessera_ir::loops::{
    BinOp, BufRole, Buffer, CmpOp, IExpr, Loop, LoopKind, LoopProgram, Reduce, ReduceOp, Stmt,
    UnOp, VExpr,
};

/// A load's index shifted along one of its variables, and guarded.
#[derive(Clone, Copy)]
struct Shift {
    /// Which of the index's variables.
    at: usize,
    by: i64,
    /// `v + by < extent` instead of `v - by >= 0`.
    forward: bool,
    /// Clamped into the variable's range (else the address may leave the buffer).
    clamped: bool,
}

struct Gen<'a, 'b> {
    u: &'a mut Unstructured<'b>,
    /// The element type of every buffer and value.
    dt: DType,
    inputs: usize,
    /// Largest index + 1 read from each input.
    needed: BTreeMap<String, i64>,
}

/// Builds a random loop program named `fuzz` from `u`.
pub fn arbitrary_program(u: &mut Unstructured) -> Result<LoopProgram> {
    let dt = if u.ratio(1, 4)? {
        DType::I32
    } else {
        DType::F32
    };
    let inputs = u.int_in_range(1..=3)?;
    let mut g = Gen {
        u,
        dt,
        inputs,
        needed: BTreeMap::new(),
    };
    let outputs = g.u.int_in_range(1..=2)?;
    let mut body = Vec::new();
    let mut out_lens = Vec::new();
    for o in 0..outputs {
        let (nest, len, side) = g.nest(o, o == 0 && outputs == 2)?;
        body.push(nest);
        out_lens.push(len);
        if let Some(side_len) = side {
            // out1 is stored inside out0's nest (an imperfect nest): it needs no nest of its own.
            out_lens.push(side_len);
            break;
        }
    }
    let mut buffers: Vec<Buffer> = (0..g.inputs)
        .map(|k| Buffer {
            name: format!("in{k}"),
            dtype: g.dt,
            len: g.needed.get(&format!("in{k}")).copied().unwrap_or(1).max(1) as usize,
            role: BufRole::Input,
        })
        .collect();
    for (o, len) in out_lens.iter().enumerate() {
        buffers.push(Buffer {
            name: format!("out{o}"),
            dtype: g.dt,
            len: *len as usize,
            role: BufRole::Output,
        });
    }
    Ok(LoopProgram {
        name: "fuzz".into(),
        buffers,
        body,
    })
}

impl Gen<'_, '_> {
    /// The nest of output `o`: the statement, the output length, and — when a side store to
    /// `out1` sits at an outer level — the length that store covers.
    fn nest(&mut self, o: usize, may_side: bool) -> Result<(Stmt, i64, Option<i64>)> {
        let depth = self.u.int_in_range(1..=3)?;
        let vars: Vec<(String, i64)> = (0..depth)
            .map(|d| {
                Ok((
                    format!("{}{d}", ["i", "j"][o]),
                    self.u.int_in_range(1..=12)?,
                ))
            })
            .collect::<Result<_>>()?;
        let len: i64 = vars.iter().map(|v| v.1).product();
        let store_index = self.row_major(&vars)?;
        let mut reduce_axes = Vec::new();
        if self.u.ratio(1, 3)? {
            for r in 0..self.u.int_in_range(1..=2)? {
                reduce_axes.push((format!("r{o}{r}"), self.u.int_in_range(1..=9)?));
            }
        }
        let mut scope = vars.clone();
        scope.extend(reduce_axes.iter().cloned());
        let inner = if reduce_axes.is_empty() {
            let mut value = self.expr(&scope, None, 3)?;
            // Often: only a recurrence gives interchange and parallelisation a dependence
            // to break (one in four made `reorder-dependence` a matter of luck within 60 s).
            if self.u.ratio(1, 2)? {
                let earlier = self.recurrence(o, &vars, &store_index)?;
                // Halved (floats) so that chains stay small; integers simply wrap.
                let earlier = match self.dt.is_float() {
                    true => VExpr::bin(BinOp::Mul, VExpr::f(0.5, self.dt), earlier),
                    false => earlier,
                };
                value = VExpr::bin(BinOp::Add, value, earlier);
            }
            Stmt::Store {
                buf: format!("out{o}"),
                index: store_index,
                value,
            }
        } else {
            let op = *self
                .u
                .choose(&[ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min])?;
            let float = self.dt.is_float();
            let init = match op {
                ReduceOp::Sum => VExpr::lit(0.0, self.dt),
                ReduceOp::Max if float => VExpr::f(f64::NEG_INFINITY, self.dt),
                ReduceOp::Min if float => VExpr::f(f64::INFINITY, self.dt),
                ReduceOp::Max => VExpr::i(i32::MIN as i64, self.dt),
                ReduceOp::Min => VExpr::i(i32::MAX as i64, self.dt),
                ReduceOp::Prod => VExpr::lit(1.0, self.dt),
            };
            let acc = format!("acc{o}");
            let value = self.expr(&scope, None, 2)?;
            let after = self.expr(&vars, Some(&acc), 2)?;
            // Sometimes folded lane by lane in native code (the interpreters ignore it).
            let vectorize = if self.u.ratio(1, 3)? {
                Some(*self.u.choose(&[2, 4, 8, 16])?)
            } else {
                None
            };
            Stmt::Reduce(Reduce {
                acc,
                dtype: self.dt,
                op,
                init,
                axes: reduce_axes,
                value,
                body: vec![Stmt::Store {
                    buf: format!("out{o}"),
                    index: store_index,
                    value: after,
                }],
                vectorize,
            })
        };
        let mut body = vec![inner];
        let side_level = if may_side && depth > 1 && self.u.ratio(1, 2)? {
            Some(self.u.int_in_range(1..=depth - 1)?)
        } else {
            None
        };
        let mut side_len = None;
        for d in (0..depth).rev() {
            body = vec![Stmt::For(Loop {
                var: vars[d].0.clone(),
                extent: vars[d].1,
                kind: LoopKind::Serial,
                body,
            })];
            if side_level == Some(d) {
                // A store to out1 beside loop `d`, inside loops `0..d`: out1 is indexed by
                // those outer variables, so each of its elements is written once.
                let outer = &vars[..d];
                let value = self.expr(outer, None, 2)?;
                let index = self.row_major(outer)?;
                side_len = Some(outer.iter().map(|v| v.1).product());
                let at = if self.u.ratio(1, 2)? { 0 } else { body.len() };
                body.insert(
                    at,
                    Stmt::Store {
                        buf: "out1".into(),
                        index,
                        value,
                    },
                );
            }
        }
        debug_assert_eq!(body.len(), 1, "the outermost loop alone");
        Ok((body.pop().expect("one loop"), len, side_len))
    }

    /// A read of an element of `out{o}` the nest stored earlier (a loop-carried dependence):
    /// the store's own index with one variable `s` back and, maybe, a variable inside it `t`
    /// forward — `y[i - s][j + t]`, a wavefront that interchanging `i` and `j` breaks. Guarded
    /// (outside the output: a constant) and clamped, like the padded-window loads.
    fn recurrence(&mut self, o: usize, vars: &[(String, i64)], store: &IExpr) -> Result<VExpr> {
        let back = self.u.choose_index(vars.len())?;
        let s = self.u.int_in_range(1..=2)?;
        let (bv, _) = &vars[back];
        let back_at = IExpr::var(bv).minus(IExpr::c(s));
        let mut index = store.subst(
            bv,
            &IExpr::Max(Box::new(back_at.clone()), Box::new(IExpr::c(0))),
        );
        let mut guards = vec![VExpr::ICmp(CmpOp::Ge, back_at, IExpr::c(0))];
        if back + 1 < vars.len() && self.u.ratio(1, 2)? {
            let (fv, ext) = &vars[self.u.int_in_range(back + 1..=vars.len() - 1)?];
            let t = self.u.int_in_range(1..=2)?;
            let ahead = IExpr::var(fv).plus(IExpr::c(t));
            index = index.subst(
                fv,
                &IExpr::Min(Box::new(ahead.clone()), Box::new(IExpr::c(ext - 1))),
            );
            guards.push(VExpr::ICmp(CmpOp::Lt, ahead, IExpr::c(*ext)));
        }
        let mut read = VExpr::load(&format!("out{o}"), index);
        for g in guards {
            let m = self.u.int_in_range(1..=8)? as f64 / 4.0;
            read = VExpr::select(g, read, VExpr::lit(m, self.dt));
        }
        Ok(read)
    }

    /// A row-major index over a permutation of all of `vars` (covers `0..product` once).
    fn row_major(&mut self, vars: &[(String, i64)]) -> Result<IExpr> {
        let mut order: Vec<usize> = (0..vars.len()).collect();
        for j in (1..order.len()).rev() {
            let k = self.u.int_in_range(0..=j)?;
            order.swap(j, k);
        }
        let mut index = IExpr::c(0);
        for &i in &order {
            index = index.times(vars[i].1).plus(IExpr::var(&vars[i].0));
        }
        Ok(index)
    }

    /// A value expression over loop variables `scope` (and the accumulator `acc`).
    fn expr(&mut self, scope: &[(String, i64)], acc: Option<&str>, depth: u32) -> Result<VExpr> {
        if depth == 0 || self.u.ratio(1, 3)? {
            return self.leaf(scope, acc);
        }
        Ok(match self.u.int_in_range(0..=2)? {
            0 => {
                let ops: &[UnOp] = match self.dt.is_float() {
                    true => &[UnOp::Neg, UnOp::Abs, UnOp::Tanh],
                    false => &[UnOp::Neg, UnOp::Abs],
                };
                let op = *self.u.choose(ops)?;
                VExpr::un(op, self.expr(scope, acc, depth - 1)?)
            }
            1 => {
                let op = *self.u.choose(&[
                    BinOp::Add,
                    BinOp::Sub,
                    BinOp::Mul,
                    BinOp::Max,
                    BinOp::Min,
                ])?;
                VExpr::bin(
                    op,
                    self.expr(scope, acc, depth - 1)?,
                    self.expr(scope, acc, depth - 1)?,
                )
            }
            _ => {
                let c = VExpr::Cmp(
                    CmpOp::Lt,
                    Box::new(self.expr(scope, acc, depth - 1)?),
                    Box::new(self.expr(scope, acc, depth - 1)?),
                );
                VExpr::select(
                    c,
                    self.expr(scope, acc, depth - 1)?,
                    self.expr(scope, acc, depth - 1)?,
                )
            }
        })
    }

    fn leaf(&mut self, scope: &[(String, i64)], acc: Option<&str>) -> Result<VExpr> {
        let choice = self.u.int_in_range(0..=5)?;
        Ok(match choice {
            0 => {
                let m = self.u.int_in_range(1..=16)? as f64;
                let m = if self.dt.is_float() { m / 8.0 } else { m - 8.0 };
                VExpr::lit(if self.u.ratio(1, 2)? { -m } else { m }, self.dt)
            }
            1 if !scope.is_empty() => {
                let (v, _) = self.u.choose(scope)?.clone();
                VExpr::Index(IExpr::var(&v), self.dt)
            }
            2 if acc.is_some() => VExpr::Acc(acc.expect("checked").to_string(), self.dt),
            _ => self.load(scope)?,
        })
    }

    /// A load from a random input at an affine index over a subset of `scope`, maybe shifted
    /// along one variable and guarded against the shift's indices outside the variable's
    /// range.
    fn load(&mut self, scope: &[(String, i64)]) -> Result<VExpr> {
        let buf = format!("in{}", self.u.choose_index(self.inputs)?);
        let mut used: Vec<(String, i64)> = Vec::new();
        for v in scope {
            if self.u.ratio(2, 3)? {
                used.push(v.clone());
            }
        }
        for j in (1..used.len()).rev() {
            let k = self.u.int_in_range(0..=j)?;
            used.swap(j, k);
        }
        let shift = if !used.is_empty() && self.u.ratio(1, 3)? {
            Some(Shift {
                at: self.u.choose_index(used.len())?,
                by: self.u.int_in_range(1..=3)?,
                forward: self.u.ratio(1, 3)?,
                clamped: self.u.ratio(1, 2)?,
            })
        } else {
            None
        };
        let mut index = IExpr::c(0);
        let mut len = 1;
        let mut guard = None;
        for (k, (v, ext)) in used.iter().enumerate() {
            let mut term = IExpr::var(v);
            if let Some(sh) = shift.filter(|sh| sh.at == k) {
                let (shifted, inside, clamp) = match sh.forward {
                    true => {
                        let at = IExpr::var(v).plus(IExpr::c(sh.by));
                        let inside = VExpr::ICmp(CmpOp::Lt, at.clone(), IExpr::c(*ext));
                        let clamp = IExpr::Min(Box::new(at.clone()), Box::new(IExpr::c(ext - 1)));
                        (at, inside, clamp)
                    }
                    false => {
                        let at = IExpr::var(v).minus(IExpr::c(sh.by));
                        let inside = VExpr::ICmp(CmpOp::Ge, at.clone(), IExpr::c(0));
                        let clamp = IExpr::Max(Box::new(at.clone()), Box::new(IExpr::c(0)));
                        (at, inside, clamp)
                    }
                };
                guard = Some(inside);
                // Unclamped, the address leaves the buffer where the guard is false (when
                // this variable is the outermost of the index): only the lazy `select`
                // keeps the load from running there.
                term = if sh.clamped { clamp } else { shifted };
            }
            index = index.times(*ext).plus(term);
            len *= ext;
        }
        let e = self.needed.entry(buf.clone()).or_insert(1);
        *e = (*e).max(len);
        let load = VExpr::load(&buf, index);
        Ok(match guard {
            Some(g) => {
                let m = self.u.int_in_range(1..=8)? as f64 / 4.0;
                VExpr::select(g, load, VExpr::lit(m, self.dt))
            }
            None => load,
        })
    }
}
