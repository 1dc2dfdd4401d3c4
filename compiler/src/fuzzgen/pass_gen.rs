//! Random loop-pass sequences (order, repetition and options of the schedule primitives),
//! applied one at a time, each chosen on the program as the previous passes left it.
//!
//! A pass a primitive refuses ([`PassError`]) is skipped, as a search would skip it; the
//! verifier runs after every pass that applies (the primitives call it; [`apply`] checks
//! again). A sequence prints one pass per line (`split i0 3`, `annotate i1 vectorize 8`,
//! `schedule {json}`) and parses back, so a failing case replays exactly.

use arbitrary::{Result, Unstructured};
use tessera_ir::loops::{LoopKind, LoopProgram, Stmt};
use tessera_passes::PassError;
use tessera_passes::schedule::{self, LoopSchedule};

/// One loop-program pass with its options.
#[derive(Clone, Debug, PartialEq)]
pub enum LoopPass {
    Split {
        var: String,
        factor: i64,
    },
    Reorder {
        outer: String,
        inner: String,
    },
    Fuse {
        outer: String,
        inner: String,
    },
    Tile {
        a: String,
        b: String,
        fa: i64,
        fb: i64,
    },
    Annotate {
        var: String,
        kind: LoopKind,
    },
    /// The default CPU scheduler with these knobs (fuse + parallel, vectorize, unroll).
    Schedule(LoopSchedule),
}

/// The most passes one sequence gets.
pub const MAX_PASSES: usize = 8;

/// A loop of the program: its variable, its extent, and its only child loop (if its body is
/// exactly one loop).
fn loops(body: &[Stmt], out: &mut Vec<(String, i64, Option<String>)>) {
    for s in body {
        match s {
            Stmt::For(l) => {
                let child = match l.body.as_slice() {
                    [Stmt::For(c)] => Some(c.var.clone()),
                    _ => None,
                };
                out.push((l.var.clone(), l.extent, child));
                loops(&l.body, out);
            }
            s => loops(s.nested(), out),
        }
    }
}

/// Picks the next pass for `prog`, or `None` when the program has no loop.
pub fn arbitrary_pass(u: &mut Unstructured, prog: &LoopProgram) -> Result<Option<LoopPass>> {
    let mut all = Vec::new();
    loops(&prog.body, &mut all);
    if all.is_empty() {
        return Ok(None);
    }
    let (var, extent, child) = u.choose(&all)?.clone();
    let factor = |u: &mut Unstructured| -> Result<i64> {
        Ok(if u.ratio(1, 2)? {
            u.int_in_range(2..=(extent.max(2) + 1))?
        } else {
            *u.choose(&[2, 3, 4, 8, 16])?
        })
    };
    Ok(Some(match u.int_in_range(0..=6)? {
        0 => LoopPass::Split {
            var,
            factor: factor(u)?,
        },
        1 if child.is_some() => LoopPass::Reorder {
            outer: var,
            inner: child.expect("checked"),
        },
        2 if child.is_some() => LoopPass::Fuse {
            outer: var,
            inner: child.expect("checked"),
        },
        3 if child.is_some() => LoopPass::Tile {
            a: var,
            b: child.expect("checked"),
            fa: factor(u)?,
            fb: *u.choose(&[2, 3, 4, 8])?,
        },
        4 => LoopPass::Annotate {
            var,
            kind: match u.int_in_range(0..=3)? {
                0 => LoopKind::Parallel,
                1 => LoopKind::Vectorize(*u.choose(&[2, 4, 8, 16])?),
                2 => LoopKind::Unroll(*u.choose(&[2, 3, 4, 8])?),
                _ => LoopKind::Serial,
            },
        },
        5 => LoopPass::Schedule(LoopSchedule {
            parallel_min_extent: *u.choose(&[0, 1, 4, 16, 64])?,
            vector_bytes: *u.choose(&[0, 16, 32, 64])?,
            unroll: *u.choose(&[1, 2, 4])?,
        }),
        _ => LoopPass::Split {
            var,
            factor: factor(u)?,
        },
    }))
}

/// Applies `pass`; `Ok(false)` when the primitive refused it (the program is unchanged).
pub fn apply(prog: &mut LoopProgram, pass: &LoopPass) -> std::result::Result<bool, String> {
    let mut next = prog.clone();
    let r: std::result::Result<(), PassError> = match pass {
        LoopPass::Split { var, factor } => schedule::split(&mut next, var, *factor).map(|_| ()),
        LoopPass::Reorder { outer, inner } => schedule::reorder(&mut next, outer, inner),
        LoopPass::Fuse { outer, inner } => schedule::fuse(&mut next, outer, inner).map(|_| ()),
        LoopPass::Tile { a, b, fa, fb } => schedule::tile(&mut next, a, b, *fa, *fb),
        LoopPass::Annotate { var, kind } => schedule::annotate(&mut next, var, *kind),
        LoopPass::Schedule(s) => schedule::schedule_loops(&mut next, s),
    };
    match r {
        Ok(()) => {
            // The verifier after every pass: a pass that returns an invalid program is a bug.
            tessera_ir::loops::verify::verify(&next)
                .map_err(|e| format!("`{}` left an invalid program: {e}", print(pass)))?;
            *prog = next;
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

fn kind_text(k: LoopKind) -> String {
    match k {
        LoopKind::Serial => "serial".into(),
        LoopKind::Parallel => "parallel".into(),
        LoopKind::Vectorize(w) => format!("vectorize {w}"),
        LoopKind::Unroll(n) => format!("unroll {n}"),
        LoopKind::Block(a) => format!("block {}", a.name()),
        LoopKind::Thread(a) => format!("thread {}", a.name()),
    }
}

/// The pass as one line of text.
pub fn print(p: &LoopPass) -> String {
    match p {
        LoopPass::Split { var, factor } => format!("split {var} {factor}"),
        LoopPass::Reorder { outer, inner } => format!("reorder {outer} {inner}"),
        LoopPass::Fuse { outer, inner } => format!("fuse {outer} {inner}"),
        LoopPass::Tile { a, b, fa, fb } => format!("tile {a} {b} {fa} {fb}"),
        LoopPass::Annotate { var, kind } => format!("annotate {var} {}", kind_text(*kind)),
        LoopPass::Schedule(s) => format!(
            "schedule {}",
            serde_json::to_string(s).expect("a schedule serialises")
        ),
    }
}

/// Parses one line printed by [`print()`].
pub fn parse(line: &str) -> std::result::Result<LoopPass, String> {
    let bad = || format!("bad pass `{line}`");
    let num = |s: Option<&str>| -> std::result::Result<i64, String> {
        s.and_then(|t| t.parse().ok()).ok_or_else(bad)
    };
    if let Some(json) = line.strip_prefix("schedule ") {
        return serde_json::from_str(json)
            .map(LoopPass::Schedule)
            .map_err(|e| format!("{}: {e}", bad()));
    }
    let mut w = line.split_whitespace();
    let (op, a) = (
        w.next().ok_or_else(bad)?,
        w.next().ok_or_else(bad)?.to_string(),
    );
    Ok(match op {
        "split" => LoopPass::Split {
            var: a,
            factor: num(w.next())?,
        },
        "reorder" | "fuse" => {
            let inner = w.next().ok_or_else(bad)?.to_string();
            if op == "reorder" {
                LoopPass::Reorder { outer: a, inner }
            } else {
                LoopPass::Fuse { outer: a, inner }
            }
        }
        "tile" => LoopPass::Tile {
            a,
            b: w.next().ok_or_else(bad)?.to_string(),
            fa: num(w.next())?,
            fb: num(w.next())?,
        },
        "annotate" => LoopPass::Annotate {
            var: a,
            kind: match w.next() {
                Some("serial") => LoopKind::Serial,
                Some("parallel") => LoopKind::Parallel,
                Some("vectorize") => LoopKind::Vectorize(num(w.next())? as u32),
                Some("unroll") => LoopKind::Unroll(num(w.next())? as u32),
                Some(k @ ("block" | "thread")) => {
                    let axis = w
                        .next()
                        .and_then(tessera_ir::loops::GpuAxis::from_name)
                        .ok_or_else(bad)?;
                    if k == "block" {
                        LoopKind::Block(axis)
                    } else {
                        LoopKind::Thread(axis)
                    }
                }
                _ => return Err(bad()),
            },
        },
        _ => return Err(bad()),
    })
}
