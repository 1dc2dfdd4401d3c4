//! The loop-IR verifier: names bound, dtypes consistent, annotations where they are allowed.
//! Runs after every loop pass in tests and debug builds.

use super::async_copy::{AsyncCopy, MAX_ASYNC_COPY_LANDS, MAX_ASYNC_COPY_LEN};
use super::*;
use crate::error::{IrError, Result};
use std::collections::HashSet;

mod tma_rules;

struct Ctx<'a> {
    prog: &'a LoopProgram,
    vars: Vec<String>,
    accs: Vec<(String, DType)>,
    seen: HashSet<String>,
    /// How many thread loops enclose the statement being checked.
    thread_depth: usize,
    /// The innermost enclosing thread loop (variable, extent, axis), and what the guards and
    /// reductions between it and the statement keep together: `None` when there are none,
    /// else the aligned groups of threads (warps, warpgroups) that take every branch alike
    /// (1: the threads of a warp may diverge).
    thread: Option<(String, i64, GpuAxis)>,
    guard_group: Option<i64>,
    /// The buffers holding mbarriers: nothing but TMA statements may touch them.
    mbarriers: Vec<String>,
}

/// Shared and local buffers belong to a thread: they are only touched inside thread loops.
fn check_gpu_access(cx: &Ctx, buf: &Buffer, what: &str) -> Result<()> {
    if cx.mbarriers.contains(&buf.name) {
        return Err(err(
            cx.prog,
            format!("{what} mbarrier buffer `{}`", buf.name),
        ));
    }
    if buf.role.is_gpu_memory() && cx.thread_depth == 0 {
        return Err(err(
            cx.prog,
            format!(
                "{what} {} buffer `{}` outside a thread loop",
                buf.role.name(),
                buf.name
            ),
        ));
    }
    Ok(())
}

fn err(prog: &LoopProgram, msg: String) -> IrError {
    IrError::Verify(format!("kernel `{}`: {msg}", prog.name))
}

pub fn verify(prog: &LoopProgram) -> Result<()> {
    let mut names = HashSet::new();
    let mut bytes_of = std::collections::HashMap::new();
    for (i, b) in prog.buffers.iter().enumerate() {
        if b.role.is_param() && prog.buffers[..i].iter().any(|p| !p.role.is_param()) {
            return Err(err(
                prog,
                format!("parameter `{}` declared after kernel-local buffers", b.name),
            ));
        }
        *bytes_of.entry(b.role).or_insert(0usize) += b.len.saturating_mul(b.dtype.size());
        if !names.insert(&b.name) {
            return Err(err(prog, format!("buffer `{}` declared twice", b.name)));
        }
        if b.len == 0 {
            return Err(err(prog, format!("buffer `{}` is empty", b.name)));
        }
    }
    for (role, limit) in [
        (BufRole::Scratch, MAX_SCRATCH_BYTES),
        (BufRole::Shared, MAX_SHARED_BYTES),
        (BufRole::Local, MAX_LOCAL_BYTES),
    ] {
        let bytes = bytes_of.get(&role).copied().unwrap_or(0);
        if bytes > limit {
            return Err(err(
                prog,
                format!("{bytes} bytes of {} memory (at most {limit})", role.name()),
            ));
        }
    }
    let gpu = super::gpu::binds_gpu(&prog.body);
    if let Some(b) = prog.buffers.iter().find(|b| b.role.is_gpu_memory())
        && !gpu
    {
        return Err(err(
            prog,
            format!(
                "{} buffer `{}` in a kernel with no GPU-bound loop",
                b.role.name(),
                b.name
            ),
        ));
    }
    let mut cx = Ctx {
        prog,
        vars: vec![],
        accs: vec![],
        seen: HashSet::new(),
        thread_depth: 0,
        thread: None,
        guard_group: None,
        mbarriers: tma::mbarrier_buffers(&prog.body),
    };
    for (i, s) in prog.body.iter().enumerate() {
        if let Stmt::For(l) = s
            && l.kind == LoopKind::Parallel
            && (i > 0 || prog.body.len() > 1)
        {
            return Err(err(
                prog,
                "a parallel loop must be the only top-level statement".into(),
            ));
        }
        stmt(&mut cx, s, 0)?;
    }
    if gpu {
        if prog.parallel_extent() > 1 {
            return Err(err(prog, "CPU-parallel and GPU-bound loops mixed".into()));
        }
        super::gpu::launch(prog)?;
    }
    Ok(())
}

fn stmt(cx: &mut Ctx, s: &Stmt, depth: usize) -> Result<()> {
    let prog = cx.prog;
    match s {
        Stmt::For(l) => {
            if l.extent <= 0 {
                return Err(err(
                    prog,
                    format!("loop `{}` has extent {}", l.var, l.extent),
                ));
            }
            bind(cx, &l.var)?;
            match l.kind {
                LoopKind::Parallel if depth > 0 => {
                    return Err(err(
                        prog,
                        format!("loop `{}` is parallel but not outermost", l.var),
                    ));
                }
                LoopKind::Vectorize(w) | LoopKind::Unroll(w) if w == 0 => {
                    return Err(err(prog, format!("loop `{}` has a zero factor", l.var)));
                }
                LoopKind::Vectorize(_) if l.body.iter().any(|b| matches!(b, Stmt::For(_))) => {
                    return Err(err(
                        prog,
                        format!("vectorized loop `{}` must be innermost", l.var),
                    ));
                }
                _ => {}
            }
            let thread = matches!(l.kind, LoopKind::Thread(_)) as usize;
            cx.vars.push(l.var.clone());
            cx.thread_depth += thread;
            let outer = (cx.thread.clone(), cx.guard_group);
            if let LoopKind::Thread(axis) = l.kind {
                cx.thread = Some((l.var.clone(), l.extent, axis));
                cx.guard_group = None;
            }
            for b in &l.body {
                stmt(cx, b, depth + 1)?;
            }
            (cx.thread, cx.guard_group) = outer;
            cx.thread_depth -= thread;
            cx.vars.pop();
        }
        Stmt::Store { buf, index, value } => {
            let b = prog
                .buffer(buf)
                .ok_or_else(|| err(prog, format!("store to unknown buffer `{buf}`")))?;
            if b.role == BufRole::Input {
                return Err(err(prog, format!("store to input buffer `{buf}`")));
            }
            check_gpu_access(cx, b, "store to")?;
            iexpr(cx, index)?;
            let d = vexpr(cx, value)?;
            if d != b.dtype {
                return Err(err(
                    prog,
                    format!("storing {d} into {} buffer `{buf}`", b.dtype),
                ));
            }
        }
        Stmt::If { cond, then } => {
            if vexpr(cx, cond)? != DType::Bool {
                return Err(err(prog, format!("if condition `{cond}` is not bool")));
            }
            let kept = match &cx.thread {
                Some((t, ..)) => kept_together(cond, t),
                None => 1,
            };
            let outer = cx.guard_group;
            cx.guard_group = Some(outer.map_or(kept, |g| g.min(kept)));
            for b in then {
                stmt(cx, b, depth + 1)?;
            }
            cx.guard_group = outer;
        }
        Stmt::Reduce(r) => {
            if vexpr(cx, &r.init)? != r.dtype {
                return Err(err(
                    prog,
                    format!("reduce `{}` init is not {}", r.acc, r.dtype),
                ));
            }
            if let Some(w) = r.vectorize
                && !(2..=64).contains(&w)
            {
                return Err(err(
                    prog,
                    format!("reduce `{}` is vectorized {w} wide (2 to 64 lanes)", r.acc),
                ));
            }
            if r.vectorize.is_some() && r.dtype == DType::Bool {
                return Err(err(
                    prog,
                    format!("reduce `{}` over bool values cannot be vectorized", r.acc),
                ));
            }
            for (v, e) in &r.axes {
                if *e <= 0 {
                    return Err(err(prog, format!("reduce axis `{v}` has extent {e}")));
                }
                bind(cx, v)?;
                cx.vars.push(v.clone());
            }
            let d = vexpr(cx, &r.value)?;
            for _ in &r.axes {
                cx.vars.pop();
            }
            if d != r.dtype {
                return Err(err(
                    prog,
                    format!("reduce `{}` folds {d} into {}", r.acc, r.dtype),
                ));
            }
            cx.accs.push((r.acc.clone(), r.dtype));
            let outer = cx.guard_group.replace(1);
            for b in &r.body {
                stmt(cx, b, depth + 1)?;
            }
            cx.guard_group = outer;
            cx.accs.pop();
        }
        Stmt::Mma(m) => mma(cx, m)?,
        Stmt::WarpFold(w) => warp_fold(cx, w)?,
        Stmt::AsyncCopy(c) => async_copy(cx, c)?,
        Stmt::Mbarrier(m) => tma_rules::mbarrier(cx, m)?,
        Stmt::TensorCopy(c) => tma_rules::tensor_copy(cx, c)?,
        Stmt::TensorStore(c) => tma_rules::tensor_store(cx, c)?,
        Stmt::AsyncProxy(a) => tma_rules::async_proxy(cx, a)?,
        Stmt::SetMaxNReg(r) => set_max_nreg(cx, r)?,
    }
    Ok(())
}

/// The rules of `async_copy` (see [`super::async_copy`]): in a thread loop, from an input
/// into a shared buffer of its dtype, 1 to 16 elements, landing 1 to 8 barriers later.
fn async_copy(cx: &Ctx, c: &AsyncCopy) -> Result<()> {
    let prog = cx.prog;
    let bad = |msg: String| Err(err(prog, format!("async_copy into `{}`: {msg}", c.dst)));
    if cx.thread.is_none() {
        return bad("outside a thread loop".into());
    }
    if !(1..=MAX_ASYNC_COPY_LEN).contains(&c.len) {
        return bad(format!("{} elements (1 to {MAX_ASYNC_COPY_LEN})", c.len));
    }
    match (prog.buffer(&c.dst), prog.buffer(&c.src)) {
        (Some(dst), Some(src))
            if dst.role == BufRole::Shared
                && src.role == BufRole::Input
                && dst.dtype == c.dtype
                && src.dtype == c.dtype => {}
        _ => {
            return bad(format!(
                "from an input into a shared buffer, both {} (`{}` to `{}`)",
                c.dtype, c.src, c.dst
            ));
        }
    }
    if !(1..=MAX_ASYNC_COPY_LANDS).contains(&c.lands) {
        return bad(format!(
            "lands after {} barriers (1 to {MAX_ASYNC_COPY_LANDS})",
            c.lands
        ));
    }
    for e in [&c.dst_at, &c.src_at, &c.valid] {
        iexpr(cx, e)?;
    }
    Ok(())
}

/// Where a statement that `group` consecutive threads (a warp, a warpgroup) run together —
/// `mma`, `warp_fold` — may stand: directly in the only, x-axis thread loop of whole groups,
/// not under a guard or a reduction, its `lane` that loop's variable modulo `group`,
/// `uniform` the same for every thread of a group.
/// The rules of `setmaxnreg` (see [`super::regs`]): a count it takes, by every thread of a
/// warpgroup together.
fn set_max_nreg(cx: &Ctx, r: &super::regs::SetMaxNReg) -> Result<()> {
    let what = r.to_string();
    if !r.count_ok() {
        return Err(err(
            cx.prog,
            format!(
                "{what}: a thread's registers are {} to {}, a multiple of {}",
                super::regs::SETMAXNREG_MIN,
                super::regs::SETMAXNREG_MAX,
                super::regs::SETMAXNREG_GRANULE
            ),
        ));
    }
    let lane = match &cx.thread {
        Some((t, ..)) => IExpr::var(t).modulo(mma::WARPGROUP),
        None => return Err(err(cx.prog, format!("{what}: outside a thread loop"))),
    };
    group_collective(cx, &what, mma::WARPGROUP, &lane, &[])
}

fn group_collective(
    cx: &Ctx,
    what: &str,
    group: i64,
    lane: &IExpr,
    uniform: &[&IExpr],
) -> Result<()> {
    let bad = |msg: String| Err(err(cx.prog, format!("{what}: {msg}")));
    let Some((t, extent, axis)) = &cx.thread else {
        return bad("outside a thread loop".into());
    };
    if cx.thread_depth != 1 || *axis != GpuAxis::X || extent % group != 0 {
        return bad(format!(
            "its thread loop `{t}` must be the only one, along x, a multiple of {group} long"
        ));
    }
    if cx.guard_group.is_some_and(|g| g % group != 0) {
        return bad(
            "under a guard or a reduction that splits its groups (the group must run it \
             together)"
                .into(),
        );
    }
    if !mma::is_lane_of(lane, t, group) {
        return bad(format!("lane `{lane}` is not `{t} % {group}`"));
    }
    iexpr(cx, lane)?;
    for e in uniform {
        iexpr(cx, e)?;
        if !mma::group_uniform(e, t, group) {
            let name = if group == mma::WARPGROUP {
                "warpgroup"
            } else {
                "warp"
            };
            return bad(format!("`{e}` differs between the threads of a {name}"));
        }
    }
    Ok(())
}

/// The largest aligned groups of threads of the thread loop over `t` (a warpgroup, a warp)
/// that all take the branch of guard `cond` alike — 1 when threads of a warp may differ: a
/// comparison of group-uniform indices, or of the thread index with a multiple of the group
/// (`t < 256`: the first two warpgroups), or a conjunction or disjunction of such.
fn kept_together(cond: &VExpr, t: &str) -> i64 {
    fn uniform(cond: &VExpr, t: &str, group: i64) -> bool {
        match cond {
            VExpr::ICmp(op, a, b) => {
                let threshold = matches!(op, CmpOp::Lt | CmpOp::Ge)
                    && matches!(a, IExpr::Var(v) if v == t)
                    && matches!(b, IExpr::Const(c) if c % group == 0);
                threshold || (mma::group_uniform(a, t, group) && mma::group_uniform(b, t, group))
            }
            VExpr::Binary(BinOp::And | BinOp::Or, x, y) => {
                uniform(x, t, group) && uniform(y, t, group)
            }
            _ => false,
        }
    }
    [mma::WARPGROUP, mma::WARP]
        .into_iter()
        .find(|&g| uniform(cond, t, g))
        .unwrap_or(1)
}

/// Whether `base` can start a swizzled warpgroup operand: at the first of 8 rows (the
/// descriptor has no base offset), and for `A` (`k_major`, a step's 16 columns inside one
/// 64-column row) 0, 16, 32 or 48 columns into it; for `B` (its rows along `k`) at the row.
fn swizzled_base_ok(base: &IExpr, k_major: bool) -> bool {
    match base.residue(mma::SWIZZLE_SPAN) {
        Some(0) => true,
        Some(r) => k_major && r < mma::SWIZZLE_ROW && r % mma::MMA_K == 0,
        None => false,
    }
}

/// The rules of `mma` (see [`super::mma`]): where it may stand, what it reads and writes.
fn mma(cx: &Ctx, m: &mma::Mma) -> Result<()> {
    let prog = cx.prog;
    let what = format!("mma into `{}`", m.acc);
    let bad = |msg: String| Err(err(prog, format!("{what}: {msg}")));
    let group = m.shape.group();
    group_collective(cx, &what, group, &m.lane, &[&m.at, &m.a.base, &m.b.base])?;
    if let mma::MmaShape::Warpgroup { n } = m.shape {
        if !(mma::CORE..=mma::WGMMA_MAX_N).contains(&n) || n % mma::CORE != 0 {
            return bad(format!("N = {n} (a multiple of 8, 8 to 256)"));
        }
        // The descriptors' offsets: 14 bits of 16-byte units.
        let offset_ok = |o: i64| o > 0 && o % mma::CORE == 0 && o / mma::CORE < 1 << 14;
        for (op, k_major) in [(&m.a, true), (&m.b, false)] {
            match (op.blocks, op.swizzle) {
                (Some(blocks), None)
                    if op.strides == [mma::CORE, 1]
                        && blocks.iter().all(|&o| offset_ok(o))
                        && op.base.is_multiple_of(mma::CORE) => {}
                (None, Some(atoms))
                    if op.strides == [mma::SWIZZLE_ROW, 1]
                        && atoms % mma::SWIZZLE_SPAN == 0
                        && offset_ok(atoms)
                        && swizzled_base_ok(&op.base, k_major)
                        // Its buffer starts 1024-byte aligned.
                        && prog.buffer(&op.buf).is_some_and(|b| {
                            super::gpu::shared_alignment(b.len * b.dtype.size())
                                == super::gpu::SWIZZLE_ALIGNMENT
                        }) => {}
                (_, None) => {
                    return bad(format!(
                        "operand `{}` is not a tile of core matrices at a 16-byte-aligned \
                         base (strides 8, 1; block offsets multiples of 8)",
                        op.buf
                    ));
                }
                (_, Some(_)) => {
                    return bad(format!(
                        "operand `{}` is not a 128-byte-swizzled tile (strides 64, 1; atoms \
                         a multiple of 512 apart; a buffer of 1 KB or more) starting at a \
                         group of 8 rows{}",
                        op.buf,
                        match k_major {
                            true => " (and 0, 16, 32 or 48 columns into it)",
                            false => "",
                        }
                    ));
                }
            }
        }
        if !(1..=mma::MAX_RETIRES).contains(&m.retires) {
            return bad(format!(
                "retires({}) (1 to {})",
                m.retires,
                mma::MAX_RETIRES
            ));
        }
    } else if [&m.a, &m.b]
        .iter()
        .any(|op| op.blocks.is_some() || op.swizzle.is_some())
    {
        return bad("an m16n8k16 step reads plain tiles".into());
    } else if m.retires != 1 {
        return bad("an m16n8k16 step is synchronous: retires(1)".into());
    }
    match prog.buffer(&m.acc) {
        Some(b) if b.role == BufRole::Local && b.dtype == DType::F32 => {}
        _ => return bad("the accumulator must be a local f32 buffer".into()),
    }
    let (a, b) = (prog.buffer(&m.a.buf), prog.buffer(&m.b.buf));
    match (a, b) {
        (Some(a), Some(b))
            if a.role == BufRole::Shared
                && b.role == BufRole::Shared
                && a.dtype == b.dtype
                && matches!(a.dtype, DType::F16 | DType::BF16) => {}
        _ => return bad("operands must be shared f16 or bf16 buffers of one dtype".into()),
    }
    Ok(())
}

/// The rules of `warp_fold` (see [`super::shuffle`]).
fn warp_fold(cx: &Ctx, w: &shuffle::WarpFold) -> Result<()> {
    let prog = cx.prog;
    let what = format!("warp_fold into `{}`", w.dst);
    let bad = |msg: String| Err(err(prog, format!("{what}: {msg}")));
    group_collective(cx, &what, mma::WARP, &w.lane, &[&w.base, &w.at])?;
    if !shuffle::foldable(w.op) {
        return bad(format!("{:?} is not a commutative fold", w.op));
    }
    if !(2..=mma::WARP).contains(&w.width) || w.width & (w.width - 1) != 0 {
        return bad(format!("width {} (a power of two, 2 to 32)", w.width));
    }
    match (prog.buffer(&w.src), prog.buffer(&w.dst)) {
        (Some(src), Some(dst))
            if src.role == BufRole::Shared
                && dst.role == BufRole::Local
                && src.dtype == dst.dtype
                && matches!(src.dtype, DType::F32 | DType::I32) => {}
        _ => return bad("from a shared into a local buffer, both f32 or i32".into()),
    }
    Ok(())
}

fn bind(cx: &mut Ctx, v: &str) -> Result<()> {
    if !cx.seen.insert(v.to_string()) {
        return Err(err(cx.prog, format!("index variable `{v}` is bound twice")));
    }
    Ok(())
}

fn iexpr(cx: &Ctx, e: &IExpr) -> Result<()> {
    match e {
        IExpr::Const(_) => Ok(()),
        IExpr::Var(v) => {
            if cx.vars.iter().any(|x| x == v) {
                Ok(())
            } else {
                Err(err(
                    cx.prog,
                    format!("index variable `{v}` is not bound here"),
                ))
            }
        }
        IExpr::Add(a, b)
        | IExpr::Sub(a, b)
        | IExpr::Mul(a, b)
        | IExpr::FloorDiv(a, b)
        | IExpr::Mod(a, b)
        | IExpr::Min(a, b)
        | IExpr::Max(a, b)
        | IExpr::Xor(a, b) => {
            if let (IExpr::FloorDiv(_, d) | IExpr::Mod(_, d), IExpr::Const(0)) = (e, b.as_ref()) {
                return Err(err(cx.prog, format!("division by zero in `{d}`")));
            }
            iexpr(cx, a)?;
            iexpr(cx, b)
        }
        IExpr::Of(v) => {
            let d = vexpr(cx, v)?;
            if !d.is_int() {
                return Err(err(cx.prog, format!("index from non-integer value `{v}`")));
            }
            Ok(())
        }
    }
}

fn vexpr(cx: &Ctx, e: &VExpr) -> Result<DType> {
    let prog = cx.prog;
    Ok(match e {
        VExpr::Const(l, d) => {
            if matches!(l, Lit::F(_)) != d.is_float() {
                return Err(err(prog, format!("literal `{e}` does not match its dtype")));
            }
            *d
        }
        VExpr::Load { buf, index } => {
            iexpr(cx, index)?;
            let b = prog
                .buffer(buf)
                .ok_or_else(|| err(prog, format!("load from unknown buffer `{buf}`")))?;
            check_gpu_access(cx, b, "load from")?;
            b.dtype
        }
        VExpr::Acc(n, d) => {
            match cx.accs.iter().rev().find(|(a, _)| a == n) {
                Some((_, ad)) if ad == d => {}
                _ => {
                    return Err(err(
                        prog,
                        format!("accumulator `${n}: {d}` is not bound here"),
                    ));
                }
            }
            *d
        }
        VExpr::Unary(op, a) => {
            let d = vexpr(cx, a)?;
            match op {
                UnOp::Not if d != DType::Bool => return Err(err(prog, format!("not of {d}"))),
                UnOp::Not | UnOp::Neg | UnOp::Abs => {}
                _ if !d.is_float() => return Err(err(prog, format!("{op:?} of non-float {d}"))),
                _ => {}
            }
            if *op == UnOp::Not { DType::Bool } else { d }
        }
        VExpr::Binary(op, a, b) => {
            let (da, db) = (vexpr(cx, a)?, vexpr(cx, b)?);
            if da != db {
                return Err(err(prog, format!("{op:?} of {da} and {db} in `{e}`")));
            }
            if matches!(op, BinOp::And | BinOp::Or | BinOp::Xor) && da.is_float() {
                return Err(err(prog, format!("{op:?} on {da}")));
            }
            if *op == BinOp::Pow && !da.is_float() {
                return Err(err(prog, format!("pow on {da}")));
            }
            da
        }
        VExpr::Cmp(_, a, b) => {
            let (da, db) = (vexpr(cx, a)?, vexpr(cx, b)?);
            if da != db {
                return Err(err(prog, format!("comparison of {da} and {db}")));
            }
            DType::Bool
        }
        VExpr::ICmp(_, a, b) => {
            iexpr(cx, a)?;
            iexpr(cx, b)?;
            DType::Bool
        }
        VExpr::Select(c, a, b) => {
            if vexpr(cx, c)? != DType::Bool {
                return Err(err(prog, format!("select condition `{c}` is not bool")));
            }
            let (da, db) = (vexpr(cx, a)?, vexpr(cx, b)?);
            if da != db {
                return Err(err(prog, format!("select branches {da} and {db}")));
            }
            da
        }
        VExpr::Cast(d, a) => {
            vexpr(cx, a)?;
            *d
        }
        VExpr::Index(i, d) => {
            iexpr(cx, i)?;
            *d
        }
    })
}
