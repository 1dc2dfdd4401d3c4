//! Loads, and the `select`s that guard them.
//!
//! A load whose index [`range`](tessera_ir::loops::range) cannot prove inside its buffer —
//! a padded window's read, say, guarded by a condition instead of a clamped address — must
//! only run where the `select` above it takes its branch. In scalar code such a `select`
//! becomes an `scf.if`; in a vector loop its branch runs under a lane mask (the condition,
//! and the enclosing guards), and the loads in it become masked loads or gathers that touch
//! no memory in masked-off lanes (those lanes read zero; `select` discards them). Loads that
//! are provably in bounds stay eager and unmasked, as does every `select` over them.

use super::{Em, mem_ty, scalar_ty, ty};
use crate::error::CodegenError;
use tessera_ir::DType;
use tessera_ir::loops::{IExpr, Lit, VExpr};

/// Zero of a buffer's dtype: what an inactive lane reads.
fn zero_of(d: DType) -> Lit {
    if d.is_float() { Lit::F(0.0) } else { Lit::I(0) }
}

impl Em<'_> {
    /// Whether a load inside `e` may fall outside its buffer.
    pub(super) fn may_fault(&self, e: &VExpr) -> bool {
        !e.loads_in_bounds(&|v| self.extents.get(v).copied(), &|b| {
            self.prog.buffer(b).map(|x| x.len)
        })
    }

    /// `buf[index]`: a scalar, or in a vector loop one element per lane — contiguous (masked
    /// in a tail iteration or under a guard), a few elements apart (one load of the span and
    /// a shuffle), or gathered.
    pub(super) fn load(&mut self, buf: &str, index: &IExpr) -> Result<String, CodegenError> {
        let (b, bd, mt) = self
            .bufs
            .get(buf)
            .cloned()
            .ok_or_else(|| self.unsupported(format!("unknown buffer `{buf}`")))?;
        let lanes = self.vec.as_ref().map(|v| v.width);
        let coeff = self.vec.as_ref().map(|v| index.coeff(&v.var));
        // Only a load that may leave its buffer needs the guard's lanes.
        let guard = match &self.guard {
            Some(g) if !self.load_in_bounds(buf, index) => Some(g.clone()),
            _ => None,
        };
        if let (Some(w), Some(None | Some(5..) | Some(..1))) = (lanes, coeff) {
            return self.gather(buf, index, w, guard);
        }
        let i = self.iexpr(index)?;
        let i = self.thread_private_index(buf, i);
        let vt = ty(bd, lanes);
        let stride = coeff.flatten().unwrap_or(1);
        if let (Some(w), true) = (lanes, stride > 1) {
            return self.strided_load(&b, &i, bd, &mt, (w, stride), guard);
        }
        let raw = match (lanes, self.lane_mask(guard)) {
            (Some(w), Some(mask)) => {
                // Inactive lanes read zero; their results are never stored.
                let z = self.splat(zero_of(bd), bd)?;
                self.op(format!(
                    "vector.maskedload {b}[{i}], {mask}, {z} : {mt}, vector<{w}xi1>, {vt} into {vt}"
                ))
            }
            (Some(_), None) => self.op(format!("vector.load {b}[{i}] : {mt}, {vt}")),
            (None, _) => self.op(format!("memref.load {b}[{i}] : {mt}")),
        };
        if bd == DType::Bool {
            let z = self.constant(Lit::I(0), DType::I8);
            let z = match lanes {
                Some(w) => self.op(format!("vector.broadcast {z} : i8 to vector<{w}xi8>")),
                None => z,
            };
            return Ok(self.op(format!(
                "arith.cmpi ne, {raw}, {z} : {}",
                ty(DType::I8, lanes)
            )));
        }
        Ok(raw)
    }

    fn load_in_bounds(&self, buf: &str, index: &IExpr) -> bool {
        let len = self.prog.buffer(buf).map(|b| b.len as i64);
        match (index.range(&|v| self.extents.get(v).copied()), len) {
            (Some((lo, hi)), Some(n)) => lo >= 0 && hi < n,
            _ => false,
        }
    }

    /// The lanes a vector load may touch: the tail iteration's active lanes and `guard`
    /// (both, one, or neither: `None` means all lanes).
    fn lane_mask(&mut self, guard: Option<String>) -> Option<String> {
        let tail = self.vec.as_ref().and_then(|v| v.mask.clone());
        match (tail, guard) {
            (Some(t), Some(g)) => {
                let w = self.vec.as_ref().map_or(1, |v| v.width);
                Some(self.op(format!("arith.andi {t}, {g} : vector<{w}xi1>")))
            }
            (t, g) => t.or(g),
        }
    }

    /// A vector load of `buf` at an index that is not a simple stride of the vector loop's
    /// variable: the index lane by lane, then a gather masked to a
    /// tail iteration's lanes and to `guard`.
    fn gather(
        &mut self,
        buf: &str,
        index: &IExpr,
        w: u32,
        guard: Option<String>,
    ) -> Result<String, CodegenError> {
        let (b, bd, mt) = self.bufs[buf].clone();
        let idx = self.iexpr_lanes(index, w)?;
        let vt = ty(bd, Some(w));
        let mask = match self.lane_mask(guard) {
            Some(m) => m,
            None => self.op(format!("arith.constant dense<true> : vector<{w}xi1>")),
        };
        let pass = self.splat(zero_of(bd), bd)?;
        let c0 = self.index_const(0);
        Ok(self.op(format!(
            "vector.gather {b}[{c0}] [{idx}], {mask}, {pass} : {mt}, vector<{w}xindex>, vector<{w}xi1>, {vt} into {vt}"
        )))
    }

    /// `select c, a, b` whose branch `a` or `b` holds a load that may leave its buffer: each
    /// branch runs only where it is taken — an `scf.if` in scalar code, a lane mask in a
    /// vector loop.
    pub(super) fn guarded_select(
        &mut self,
        c: &VExpr,
        a: &VExpr,
        b: &VExpr,
        t: &str,
    ) -> Result<String, CodegenError> {
        let cv = self.vexpr(c)?;
        let Some(w) = self.vec.as_ref().map(|v| v.width) else {
            let r = self.fresh();
            self.line(format!("{r} = scf.if {cv} -> ({t}) {{"));
            for (i, branch) in [a, b].into_iter().enumerate() {
                if i == 1 {
                    self.line("} else {".into());
                }
                self.depth += 1;
                let x = self.vexpr(branch)?;
                self.line(format!("scf.yield {x} : {t}"));
                self.depth -= 1;
            }
            self.line("}".into());
            return Ok(r);
        };
        let mt = format!("vector<{w}xi1>");
        let x = if self.may_fault(a) {
            self.under_guard(&cv, a)?
        } else {
            self.vexpr(a)?
        };
        let y = if self.may_fault(b) {
            let ones = self.op(format!("arith.constant dense<true> : {mt}"));
            let not_c = self.op(format!("arith.xori {cv}, {ones} : {mt}"));
            self.under_guard(&not_c, b)?
        } else {
            self.vexpr(b)?
        };
        Ok(self.select(&cv, &x, &y, t))
    }

    /// `e` emitted with its possibly-faulting loads masked to the lanes of `mask` (and of
    /// the guards already in force).
    fn under_guard(&mut self, mask: &str, e: &VExpr) -> Result<String, CodegenError> {
        let m = match self.guard.clone() {
            Some(g) => {
                let w = self.vec.as_ref().map_or(1, |v| v.width);
                self.op(format!("arith.andi {g}, {mask} : vector<{w}xi1>"))
            }
            None => mask.to_string(),
        };
        let saved = self.guard.replace(m);
        let r = self.vexpr(e);
        self.guard = saved;
        r
    }

    /// A lane-invariant value (computed once, as a scalar) under a vector guard, when it
    /// holds a load that may leave its buffer: computed only if some guarded lane needs it,
    /// zero otherwise.
    pub(super) fn invariant_under_guard(
        &mut self,
        guard: &str,
        e: &VExpr,
        d: DType,
    ) -> Result<String, CodegenError> {
        let w = self.vec.as_ref().map_or(1, |v| v.width);
        let st = scalar_ty(d);
        let any = self.op(format!(
            "vector.reduction <or>, {guard} : vector<{w}xi1> into i1"
        ));
        let saved = (self.vec.take(), self.guard.take());
        let r = self.fresh();
        self.line(format!("{r} = scf.if {any} -> ({st}) {{"));
        self.depth += 1;
        let x = self.vexpr(e);
        let x = match x {
            Ok(x) => x,
            Err(err) => {
                (self.vec, self.guard) = saved;
                return Err(err);
            }
        };
        self.line(format!("scf.yield {x} : {st}"));
        self.depth -= 1;
        self.line("} else {".into());
        self.depth += 1;
        let z = self.constant(zero_of(d), d);
        self.line(format!("scf.yield {z} : {st}"));
        self.depth -= 1;
        self.line("}".into());
        (self.vec, self.guard) = saved;
        Ok(r)
    }

    /// A vector of `w` elements `stride` apart: one masked load of the span they cover (never
    /// past the last element needed, and under a guard only the guarded lanes' elements) and
    /// a shuffle that keeps every `stride`-th lane.
    fn strided_load(
        &mut self,
        b: &str,
        i: &str,
        bd: DType,
        mt: &str,
        (w, stride): (u32, i64),
        guard: Option<String>,
    ) -> Result<String, CodegenError> {
        let wide = w as i64 * stride;
        let m = mem_ty(bd);
        let active = match self.vec.as_ref().and_then(|v| v.active.clone()) {
            Some(a) => a,
            None => self.index_const(w as i64),
        };
        // Lanes needed: stride * (active - 1) + 1.
        let cs = self.index_const(stride);
        let c1 = self.index_const(1);
        let am1 = self.op(format!("arith.subi {active}, {c1} : index"));
        let span = self.op(format!("arith.muli {am1}, {cs} : index"));
        let need = self.op(format!("arith.addi {span}, {c1} : index"));
        let mut mask = self.op(format!("vector.create_mask {need} : vector<{wide}xi1>"));
        if let Some(g) = guard {
            // Lane k of the guard covers element k*stride of the span; the elements between
            // are not needed (and may lie outside the buffer).
            // Spread as i32 lanes: LLVM expands a shuffle of i1 vectors lane by lane, but
            // permutes 32-bit lanes in one instruction.
            let g32 = self.op(format!(
                "arith.extui {g} : vector<{w}xi1> to vector<{w}xi32>"
            ));
            let none = self.op(format!("arith.constant dense<0> : vector<{w}xi32>"));
            let spread: Vec<String> = (0..wide)
                .map(|q| match q % stride {
                    0 => (q / stride).to_string(),
                    _ => w.to_string(),
                })
                .collect();
            let g = self.op(format!(
                "vector.shuffle {g32}, {none} [{}] : vector<{w}xi32>, vector<{w}xi32>",
                spread.join(", ")
            ));
            let zeros = self.op(format!("arith.constant dense<0> : vector<{wide}xi32>"));
            let g = self.op(format!("arith.cmpi ne, {g}, {zeros} : vector<{wide}xi32>"));
            mask = self.op(format!("arith.andi {mask}, {g} : vector<{wide}xi1>"));
        }
        let z = self.constant(zero_of(bd), bd);
        let zw = self.op(format!(
            "vector.broadcast {z} : {} to vector<{wide}x{m}>",
            scalar_ty(bd)
        ));
        let v = self.op(format!("vector.maskedload {b}[{i}], {mask}, {zw} : {mt}, vector<{wide}xi1>, vector<{wide}x{m}> into vector<{wide}x{m}>"));
        let lanes: Vec<String> = (0..w as i64).map(|k| (k * stride).to_string()).collect();
        Ok(self.op(format!(
            "vector.shuffle {v}, {v} [{}] : vector<{wide}x{m}>, vector<{wide}x{m}>",
            lanes.join(", ")
        )))
    }
}
