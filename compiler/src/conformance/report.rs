//! Renders conformance results as the Markdown report committed as `docs/conformance.md`.
//!
//! The report is deterministic (no timings, sorted everywhere) so that a rerun on unchanged code
//! reproduces it byte for byte and the test suite can compare it with the committed copy.

use super::{
    Backend, DEFAULT_ATOL, DEFAULT_RTOL, MAX_OPSET, Outcome, TOLERANCE_OVERRIDES, TestResult,
};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Per-backend totals over in-scope tests: (passed, in scope).
pub fn totals<'a>(
    results: impl IntoIterator<Item = &'a TestResult>,
    backend: Backend,
) -> (usize, usize) {
    let mut pass = 0;
    let mut n = 0;
    for r in results.into_iter().filter(|r| r.scope.is_ok()) {
        if let Some((_, o)) = r.outcomes.iter().find(|(b, _)| *b == backend) {
            n += 1;
            pass += usize::from(*o == Outcome::Pass);
        }
    }
    (pass, n)
}

fn percent(p: usize, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        100.0 * p as f64 / n as f64
    }
}

/// Escapes a cell of a Markdown table.
fn cell(s: &str) -> String {
    let one_line: String = s.chars().map(|c| if c == '\n' { ' ' } else { c }).collect();
    let short: String = one_line.chars().take(300).collect();
    short.replace('|', "\\|")
}

/// A Markdown table header: the fixed columns, then one column per backend.
fn table_header(w: &mut String, fixed: &[&str], backends: &[Backend]) {
    let names: Vec<&str> = fixed
        .iter()
        .copied()
        .chain(backends.iter().map(|b| b.name()))
        .collect();
    let _ = writeln!(w, "| {} |", names.join(" | "));
    let _ = writeln!(w, "|{}", "---|".repeat(names.len()));
}

/// The Markdown report: totals per backend first, then out-of-scope categories, a per-op
/// table, the failures with their reasons, and every test's result.
pub fn report(results: &[TestResult], backends: &[Backend], source: &str) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "# ONNX backend node-test conformance\n");
    for &b in backends {
        let (p, n) = totals(results, b);
        let _ = writeln!(
            w,
            "{}: {p}/{n} in-scope passed ({:.1}%)  ",
            b.name(),
            percent(p, n)
        );
    }
    let in_scope = results.iter().filter(|r| r.scope.is_ok()).count();
    let _ = writeln!(
        w,
        "\n{} tests in {source}; {in_scope} in scope, {} out of scope.\n",
        results.len(),
        results.len() - in_scope
    );
    let _ = writeln!(
        w,
        "Regenerate with `cargo run --release -p tessera -- conformance --report docs/conformance.md` \
         after `scripts/gen_node_suite.py` (the test suite checks that this file is current; \
         `TESSERA_BLESS=1` rewrites it).\n"
    );
    let _ = writeln!(w, "## Rules\n");
    let _ = writeln!(
        w,
        "- In scope: default ONNX domain, opset ≤ {MAX_OPSET}, every input and output a tensor of a \
         tessera dtype (f32, f16, bf16, f64, i64, i32, i8, u8, bool). An unsupported operator is a failure.\n\
         - Comparison as in onnx's backend runner: same output count, exact dtype and shape; integers \
         and bools exactly; floats `|got − expected| ≤ atol + rtol·|expected|`, NaN matches NaN, \
         infinities must match. Default rtol {DEFAULT_RTOL:e}, atol {DEFAULT_ATOL:e}."
    );
    if TOLERANCE_OVERRIDES.is_empty() {
        let _ = writeln!(w, "- No test uses a looser tolerance.");
    } else {
        let _ = writeln!(
            w,
            "- Looser tolerances:\n\n| test | rtol | atol | why |\n|---|---|---|---|"
        );
        for (n, r, a, why) in TOLERANCE_OVERRIDES {
            let _ = writeln!(w, "| {n} | {r:e} | {a:e} | {why} |");
        }
    }

    let _ = writeln!(
        w,
        "\n## Out of scope\n\n| category | tests | names |\n|---|---|---|"
    );
    let mut cats: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for r in results {
        if let Err(o) = &r.scope {
            cats.entry(o.category()).or_default().push(&r.name);
        }
    }
    for (c, names) in &cats {
        let _ = writeln!(w, "| {c} | {} | {} |", names.len(), names.join(", "));
    }

    let _ = writeln!(w, "\n## Per operator (in-scope tests)\n");
    table_header(w, &["op", "tests"], backends);
    let mut per_op: BTreeMap<&str, Vec<&TestResult>> = BTreeMap::new();
    for r in results.iter().filter(|r| r.scope.is_ok()) {
        per_op.entry(&r.op).or_default().push(r);
    }
    for (op, rs) in &per_op {
        let _ = write!(w, "| {op} | {} |", rs.len());
        for &b in backends {
            let (p, _) = totals(rs.iter().copied(), b);
            let _ = write!(w, " {p} |");
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(
        w,
        "\n## Failures\n\n| test | op | backend | reason |\n|---|---|---|---|"
    );
    for r in results {
        for (b, o) in &r.outcomes {
            if let Outcome::Fail(why) = o {
                let _ = writeln!(
                    w,
                    "| {} | {} | {} | {} |",
                    r.name,
                    r.op,
                    b.name(),
                    cell(why)
                );
            }
        }
    }

    let _ = writeln!(w, "\n## Every test\n");
    table_header(w, &["test", "op"], backends);
    for r in results {
        let _ = write!(w, "| {} | {} |", r.name, r.op);
        for &b in backends {
            let status = match (&r.scope, r.outcomes.iter().find(|(x, _)| *x == b)) {
                (Err(o), _) => format!("out of scope ({})", o.category()),
                (Ok(()), Some((_, Outcome::Pass))) => "pass".into(),
                (Ok(()), Some((_, Outcome::Fail(_)))) => "FAIL".into(),
                (Ok(()), None) => "not run".into(),
            };
            let _ = write!(w, " {status} |");
        }
        let _ = writeln!(w);
    }
    s
}
