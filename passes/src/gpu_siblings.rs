//! Kernels of several loop nests side by side — a Concat's copies into the parts of its
//! output, a Split's — bound to one grid: each nest's independent outer loops fused and
//! spread over the same blocks, one thread loop per nest in every block (each thread taking
//! a run of 16 bytes where the nest and the size allow, as for one nest). Without it such a
//! kernel would run in a single GPU thread (the default schedule binds one outer nest).
//!
//! ```text
//! for i in 0..65536 { y[i] = a[i] }             for b in 0..256 block(x) {
//! for j in 0..32768 { y[65536 + j] = c[j] }  →    for t in 0..256 thread(x) { y[b·256 + t] = … }
//!                                                  for u in 0..256 thread(x) {
//!                                                    if b·256 + u < 32768 { y[65536 + …] = … }
//!                                                  } }
//! ```
//!
//! Safe when (checked) each nest's bound loops may run at once (`bindable`, as for one
//! nest), no nest reads or writes a buffer another one writes except at disjoint index
//! ranges of a shared output: then the nests' statements commute, and running them
//! interleaved across blocks computes what running them one after another does (bit-exact).

use crate::error::PassError;
use crate::gpu_product::lt;
use crate::gpu_runs::{MIN_THREADS_WITH_RUNS, contiguous_run, unrolled_run};
use crate::gpu_schedule::{GpuBinding, GpuScheduleConfig, bindable, collect_stores, outer_chain};
use crate::product::unused_name;
use crate::schedule::fuse;
use std::collections::HashMap;
use tessera_ir::loops::gpu::launch;
use tessera_ir::loops::{GpuAxis, IExpr, Loop, LoopKind, LoopProgram, Stmt};

/// `prog` (unscheduled, several top-level statements) with its nests bound side by side (see
/// the module docs); `None`, `prog` untouched, where that is not provably safe.
pub(crate) fn bind_siblings(
    prog: &mut LoopProgram,
    cfg: &GpuScheduleConfig,
) -> Result<Option<GpuBinding>, PassError> {
    if prog.body.len() < 2 || !independent(prog) {
        return Ok(None);
    }
    let mut prefixes = Vec::new();
    for s in &prog.body {
        let chain = outer_chain(std::slice::from_ref(s));
        let Some(n) = (1..=chain.len())
            .rev()
            .find(|&n| bindable(prog, &chain[..n]))
        else {
            return Ok(None);
        };
        prefixes.push(chain[..n].iter().map(|l| l.var.clone()).collect::<Vec<_>>());
    }
    let mut bound = prog.clone();
    let mut vars = Vec::new();
    for prefix in &prefixes {
        let mut var = prefix[0].clone();
        for inner in &prefix[1..] {
            var = fuse(&mut bound, &var, inner)?;
        }
        vars.push(var);
    }
    let nests: Vec<Loop> = bound
        .body
        .iter()
        .map(|s| match s {
            Stmt::For(l) => l.clone(),
            _ => unreachable!("every statement is a nest with a bound prefix"),
        })
        .collect();
    // Runs of 16 bytes per thread where each nest allows and enough threads remain.
    let mut runs: Vec<i64> = nests.iter().map(|l| contiguous_run(prog, l)).collect();
    let remaining: i64 = nests.iter().zip(&runs).map(|(l, r)| l.extent / r).sum();
    if !cfg.vector_runs || remaining < MIN_THREADS_WITH_RUNS {
        runs.fill(1);
    }
    let longest = nests
        .iter()
        .zip(&runs)
        .map(|(l, r)| l.extent / r)
        .max()
        .unwrap_or(1);
    let threads = cfg.threads_per_block.min(longest);
    let blocks = (longest + threads - 1) / threads;
    let block_var = format!("{}_blocks", vars[0]);
    let mut registers = Vec::new();
    let body = nests
        .iter()
        .zip(&runs)
        .map(|(l, &run)| {
            let thread_var = format!("{}_threads", l.var);
            let at = IExpr::var(&block_var)
                .times(threads)
                .plus(IExpr::var(&thread_var));
            let mut inner: Vec<Stmt> = match run {
                1 => l.body.iter().map(|s| s.subst(&l.var, &at)).collect(),
                _ => {
                    // The thread's run, unrolled; loads, values and stores staged apart so
                    // that LLVM merges each into 16-byte accesses.
                    let mut name = |base: &str| {
                        unused_name(prog, format!("{}_{}_{base}", prog.name, l.var), &[])
                    };
                    let (body, regs) = unrolled_run(
                        prog,
                        (&l.var, &l.body),
                        &at.clone().times(run),
                        (run, format!("{}_run", l.var)),
                        &mut name,
                    );
                    registers.extend(regs);
                    body
                }
            };
            if blocks * threads * run != l.extent {
                inner = vec![Stmt::If {
                    cond: lt(at, l.extent / run),
                    then: inner,
                }];
            }
            Stmt::For(Loop {
                var: thread_var,
                extent: threads,
                kind: LoopKind::Thread(GpuAxis::X),
                body: inner,
            })
        })
        .collect();
    bound.buffers.extend(registers);
    bound.body = vec![Stmt::For(Loop {
        var: block_var,
        extent: blocks,
        kind: LoopKind::Block(GpuAxis::X),
        body,
    })];
    // A name clash would fail verification: keep the kernel as it was then.
    if tessera_ir::loops::verify::verify(&bound).is_err() {
        return Ok(None);
    }
    let launch = launch(&bound).map_err(|e| PassError::Verify {
        pass: "gpu schedule (side by side)".into(),
        msg: e.to_string(),
    })?;
    *prog = bound;
    Ok(Some(GpuBinding {
        bound: vars,
        tiled_product: false,
        row_blocks: false,
        launch,
    }))
}

/// Whether the top-level statements of `prog` commute: none reads a buffer another writes,
/// and two that write one buffer write disjoint index ranges.
fn independent(prog: &LoopProgram) -> bool {
    // Per statement: buffers read; buffers written with the range of their indices.
    let mut reads = Vec::new();
    let mut writes: Vec<HashMap<String, (i64, i64)>> = Vec::new();
    for s in &prog.body {
        let mut read = Vec::new();
        s.visit_loads(&mut |buf, _| read.push(buf.to_string()));
        let mut stores = Vec::new();
        collect_stores(std::slice::from_ref(s), &mut HashMap::new(), &mut stores);
        let mut written: HashMap<String, (i64, i64)> = HashMap::new();
        for (buf, index, extents) in &stores {
            let Some((lo, hi)) = index.range(&|v| extents.get(v).copied()) else {
                return false;
            };
            let r = written.entry(buf.clone()).or_insert((lo, hi));
            *r = (r.0.min(lo), r.1.max(hi));
        }
        reads.push(read);
        writes.push(written);
    }
    for (i, written) in writes.iter().enumerate() {
        for (j, other) in writes.iter().enumerate() {
            if i == j {
                continue;
            }
            if reads[j].iter().any(|b| written.contains_key(b)) {
                return false;
            }
            let overlap = |(a, b): (i64, i64), (c, d): (i64, i64)| a <= d && c <= b;
            if written
                .iter()
                .any(|(buf, &r)| other.get(buf).is_some_and(|&o| overlap(r, o)))
            {
                return false;
            }
        }
    }
    true
}
