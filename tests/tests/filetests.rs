//! Filetests: graph IR text in, the printed output of a pipeline stage out.
//!
//! Each `tests/filetests/*.tess` file holds a
//! `# stage: <prepared|fused|loops|scheduled|gpu_scheduled|mlir>`
//! line, a graph in the text form, a `# ---- expected ----` line and the expected text.
//! `TESSERA_BLESS=1 cargo test --test filetests` rewrites the expected parts. The same files
//! also run through the reference interpreter and the JIT on random inputs, which must agree.

use std::collections::BTreeMap;
use tessera::{Compiler, Target};
use tessera_tests::*;

const SEP: &str = "# ---- expected ----\n";

fn stage_output(stage: &str, graph: &tessera_ir::Graph) -> String {
    if stage == "gpu_scheduled" {
        // The GPU schedules for sm_90 (tensor cores, warp folds, blocks and threads).
        let c = Compiler::new(Target::Cuda { sm: 90 });
        let st = c.stages(graph, &BTreeMap::new()).expect("pipeline");
        return st
            .kernels
            .iter()
            .map(|k| k.program.to_string())
            .collect::<Vec<_>>()
            .join("\n");
    }
    let schedule = stage != "loops";
    // Fixed threads and CPU so that row blocks and vector widths in the expected text do not
    // depend on the machine.
    let cfg = tessera::CompileConfig {
        schedule,
        threads: 2,
        ..Default::default()
    };
    let c = Compiler::new(Target::cpu("x86-64-v3")).with_config(cfg);
    let st = c.stages(graph, &BTreeMap::new()).expect("pipeline");
    let progs: Vec<_> = st.kernels.iter().map(|k| &k.program).collect();
    match stage {
        "prepared" => tessera_ir::text::print_graph(&st.prepared),
        "fused" => tessera_ir::text::print_graph(&st.optimized),
        "loops" | "scheduled" => progs
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
        "mlir" => tessera_codegen::mlir::emit_module(
            &progs,
            &tessera_codegen::mlir::EmitConfig::default(),
        )
        .unwrap(),
        other => panic!("unknown stage `{other}`"),
    }
}

#[test]
fn filetests() {
    let dir = repo_root().join("tests/filetests");
    let bless = std::env::var("TESSERA_BLESS").is_ok_and(|v| v == "1");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "tess"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let (input, expected) = text.split_once(SEP).unwrap_or((&text, ""));
        let stage = input
            .lines()
            .find_map(|l| l.strip_prefix("# stage: "))
            .unwrap_or_else(|| panic!("{}: no `# stage:` line", f.display()))
            .trim()
            .to_string();
        let graph_text: String = input
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        let graph = tessera_ir::text::parse_graph(&graph_text)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let got = stage_output(&stage, &graph);
        if bless {
            std::fs::write(f, format!("{input}{SEP}{got}")).unwrap();
        } else if got != expected {
            failures.push(format!("{}: stage `{stage}` output differs (TESSERA_BLESS=1 to accept)\n--- expected\n{expected}\n--- got\n{got}", f.display()));
        }
        // Same file, interpreter vs native code.
        let inputs = random_inputs(&graph, 13);
        let half = inputs
            .iter()
            .any(|t| matches!(t.dtype(), tessera_ir::DType::F16 | tessera_ir::DType::BF16));
        let tolerance = if half { HALF } else { REDUCTION };
        check_graph(&f.display().to_string(), &graph, &inputs, tolerance);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
