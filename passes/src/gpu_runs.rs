//! Runs of 16 bytes per thread for the bound loops of elementwise kernels: which run a loop
//! allows (its stores walk memory contiguously with it and the run divides its extent, enough
//! threads remaining), and a thread's run rewritten as loads, values and stores in loops of
//! their own, so that LLVM merges each group into 16-byte accesses.

use tessera_ir::loops::{BufRole, Buffer, IExpr, Loop, LoopKind, LoopProgram, Stmt, VExpr};

/// The fewest threads an elementwise kernel keeps when it gives each a run of elements (64
/// blocks of 256: every SM of a large GPU busy).
pub(crate) const MIN_THREADS_WITH_RUNS: i64 = 64 * 256;

/// The run of consecutive elements each thread of the bound loop (the program's only
/// top-level loop, `extent` long) should take: 16 bytes of its output when the loop's body
/// is only stores that walk memory contiguously with it and enough threads remain; else 1.
pub(crate) fn vector_run(prog: &LoopProgram, extent: i64) -> i64 {
    let [Stmt::For(l)] = prog.body.as_slice() else {
        return 1;
    };
    let run = contiguous_run(prog, l);
    match extent / run >= MIN_THREADS_WITH_RUNS {
        true => run,
        false => 1,
    }
}

/// The run of consecutive iterations of loop `l` a thread could take: 16 bytes of its output
/// when its body is only stores that walk memory contiguously with it and the run divides its
/// extent; else 1.
pub(crate) fn contiguous_run(prog: &LoopProgram, l: &Loop) -> i64 {
    let mut bytes = None;
    for s in &l.body {
        let Stmt::Store { buf, index, .. } = s else {
            return 1;
        };
        let size = prog.buffer(buf).map_or(0, |b| b.dtype.size() as i64);
        if index.coeff(&l.var) != Some(1) || size == 0 || bytes.is_some_and(|b| b != size) {
            return 1;
        }
        bytes = Some(size);
    }
    let run = bytes.map_or(1, |size| (16 / size).max(1));
    match l.extent % run == 0 {
        true => run,
        false => 1,
    }
}

/// The distinct loads of `e` that walk memory contiguously with `var` (coefficient 1),
/// outside `select` branches (a load there may run only where its branch is taken), in
/// order of appearance.
pub(crate) fn run_loads(e: &VExpr, var: &str) -> Vec<(String, IExpr)> {
    fn walk(e: &VExpr, var: &str, out: &mut Vec<(String, IExpr)>) {
        match e {
            VExpr::Load { buf, index } => {
                let load = (buf.clone(), index.clone());
                if index.coeff(var) == Some(1) && !out.contains(&load) {
                    out.push(load);
                }
            }
            // The condition always runs; the branches only where taken.
            VExpr::Select(c, _, _) => walk(c, var, out),
            VExpr::Unary(_, a) | VExpr::Cast(_, a) => walk(a, var, out),
            VExpr::Binary(_, a, b) | VExpr::Cmp(_, a, b) => {
                walk(a, var, out);
                walk(b, var, out)
            }
            VExpr::Const(..) | VExpr::Acc(..) | VExpr::ICmp(..) | VExpr::Index(..) => {}
        }
    }
    let mut out = Vec::new();
    walk(e, var, &mut out);
    out
}

/// The body of the loop over `var` for its run of `run` iterations from `first`: unrolled
/// over a new loop variable `u`, its loads, values and stores staged apart
/// ([`through_registers`], registers named by `name`) where they can be. Returns the
/// statements and the register buffers they need.
pub(crate) fn unrolled_run(
    prog: &LoopProgram,
    (var, body): (&str, &[Stmt]),
    first: &IExpr,
    (run, u): (i64, String),
    name: &mut dyn FnMut(&str) -> String,
) -> (Vec<Stmt>, Vec<Buffer>) {
    let element = first.clone().plus(IExpr::var(&u));
    let run_loop = Loop {
        var: u,
        extent: run,
        kind: LoopKind::Unroll(run as u32),
        body: body.iter().map(|s| s.subst(var, &element)).collect(),
    };
    match through_registers(prog, &run_loop, name) {
        Some(staged) => (staged.body, staged.registers),
        None => (vec![Stmt::For(run_loop)], vec![]),
    }
}

/// A thread's run rewritten as loads, computation and stores, each a loop of its own.
pub(crate) struct StagedRun {
    pub body: Vec<Stmt>,
    pub registers: Vec<Buffer>,
}

/// The run loop `r` (stores only) as three unrolled loops over registers: every load that
/// walks the run contiguously, then the values, then the stores — so that each group of
/// accesses sits in one basic block, where LLVM merges them into 16-byte accesses (a
/// libdevice call between them, with its branches, would keep them apart). Same operations
/// in the same order per element: bit-identical. Loads in a `select` branch stay where they
/// are (hoisted, they would run where the branch is not taken: maybe out of bounds). `None`
/// when a stored buffer is also read (hoisting its loads would reorder them with the
/// stores). `name(base)` names each register buffer (unused names).
pub(crate) fn through_registers(
    prog: &LoopProgram,
    r: &Loop,
    name: &mut dyn FnMut(&str) -> String,
) -> Option<StagedRun> {
    let stored: Vec<&str> = r
        .body
        .iter()
        .filter_map(|s| match s {
            Stmt::Store { buf, .. } => Some(buf.as_str()),
            _ => None,
        })
        .collect();
    let mut loads: Vec<(String, IExpr)> = Vec::new();
    for s in &r.body {
        if let Stmt::Store { value, .. } = s {
            for load in run_loads(value, &r.var) {
                if !loads.contains(&load) {
                    loads.push(load);
                }
            }
        }
    }
    if loads.is_empty() || loads.iter().any(|(b, _)| stored.contains(&b.as_str())) {
        return None;
    }
    let run = IExpr::var;
    let (load_var, value_var, store_var) = (
        format!("{}_load", r.var),
        format!("{}_value", r.var),
        format!("{}_store", r.var),
    );
    let unrolled = |var: &str, body: Vec<Stmt>| {
        Stmt::For(Loop {
            var: var.into(),
            extent: r.extent,
            kind: r.kind,
            body,
        })
    };
    let mut registers = Vec::new();
    let mut register = |base: String, dtype: tessera_ir::DType| {
        let name = name(&base);
        registers.push(Buffer {
            name: name.clone(),
            dtype,
            len: r.extent as usize,
            role: BufRole::Local,
        });
        name
    };
    let mut load_body = Vec::new();
    let mut loaded = Vec::new();
    for (n, (buf, index)) in loads.iter().enumerate() {
        let reg = register(format!("in{n}"), prog.buffer(buf)?.dtype);
        load_body.push(Stmt::Store {
            buf: reg.clone(),
            index: run(&load_var),
            value: VExpr::load(buf, index.subst(&r.var, &run(&load_var))),
        });
        loaded.push(reg);
    }
    let (mut value_body, mut store_body) = (Vec::new(), Vec::new());
    for (n, s) in r.body.iter().enumerate() {
        let Stmt::Store { buf, index, value } = s else {
            return None;
        };
        let reg = register(format!("out{n}"), prog.buffer(buf)?.dtype);
        let value = loads
            .iter()
            .zip(&loaded)
            .fold(value.clone(), |v, ((b, i), reg)| {
                v.replace_load(b, i, &VExpr::load(reg, run(&r.var)))
            });
        value_body.push(Stmt::Store {
            buf: reg.clone(),
            index: run(&value_var),
            value: value.subst(&r.var, &run(&value_var)),
        });
        store_body.push(Stmt::Store {
            buf: buf.clone(),
            index: index.subst(&r.var, &run(&store_var)),
            value: VExpr::load(&reg, run(&store_var)),
        });
    }
    Some(StagedRun {
        body: vec![
            unrolled(&load_var, load_body),
            unrolled(&value_var, value_body),
            unrolled(&store_var, store_body),
        ],
        registers,
    })
}
