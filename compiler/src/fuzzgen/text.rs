//! The text form of a [`Case`]: a regression file that replays a finding as a test.
//!
//! ```text
//! # tessera fuzz case
//! target: loop_passes
//! seed: 7
//! pass: split i0 3
//! pass: annotate i0_o parallel
//! --- program
//! <loop program text>
//! ```
//!
//! Header lines are `key: value` (`#` lines are comments); after the `---` line comes the
//! case's IR text (a loop program or a graph) or, for the ONNX loader, its bytes in hex.

use super::{Case, FuzzTarget, GraphOptions, pass_gen};
use std::fmt::Write;

impl Case {
    pub fn target(&self) -> FuzzTarget {
        match self {
            Case::Onnx { .. } => FuzzTarget::OnnxLoader,
            Case::Graph { .. } => FuzzTarget::GraphPipeline,
            Case::Loops { .. } => FuzzTarget::LoopPasses,
            Case::Schedule { .. } => FuzzTarget::Schedule,
        }
    }

    /// The case as a regression file.
    pub fn to_text(&self) -> String {
        let mut s = String::from("# tessera fuzz case (replayed by tests/tests/fuzz_replay.rs)\n");
        let _ = writeln!(s, "target: {}", self.target().name());
        match self {
            Case::Onnx { bytes } => {
                s.push_str("--- hex\n");
                for chunk in bytes.chunks(32) {
                    for b in chunk {
                        let _ = write!(s, "{b:02x}");
                    }
                    s.push('\n');
                }
            }
            Case::Graph {
                graph,
                options,
                seed,
            } => {
                let _ = writeln!(s, "seed: {seed}");
                let _ = writeln!(s, "optimize: {}", options.optimize);
                let _ = writeln!(s, "tile: {}", options.tile_products);
                let _ = writeln!(s, "threads: {}", options.threads);
                let _ = writeln!(s, "winograd: {}", options.winograd);
                s.push_str("--- graph\n");
                s.push_str(&tessera_ir::text::print_graph(graph));
            }
            Case::Loops {
                program,
                passes,
                seed,
            } => {
                let _ = writeln!(s, "seed: {seed}");
                for p in passes {
                    let _ = writeln!(s, "pass: {}", pass_gen::print(p));
                }
                s.push_str("--- program\n");
                let _ = write!(s, "{program}");
            }
            Case::Schedule {
                graph,
                kernel,
                schedule,
                seed,
            } => {
                let _ = writeln!(s, "seed: {seed}");
                let _ = writeln!(s, "kernel: {kernel}");
                let _ = writeln!(
                    s,
                    "schedule: {}",
                    serde_json::to_string(schedule).expect("a schedule serialises")
                );
                s.push_str("--- graph\n");
                s.push_str(&tessera_ir::text::print_graph(graph));
            }
        }
        s
    }

    /// Parses a regression file written by [`Case::to_text`].
    pub fn parse(text: &str) -> Result<Case, String> {
        let (head, body) = text
            .split_once("\n--- ")
            .ok_or("no `---` line before the case's IR")?;
        let body = body.split_once('\n').map_or("", |(_, rest)| rest);
        let mut fields: Vec<(&str, &str)> = Vec::new();
        for line in head.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| format!("bad header line `{line}`"))?;
            fields.push((k.trim(), v.trim()));
        }
        let get = |k: &str| -> Result<&str, String> {
            fields
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| *v)
                .ok_or_else(|| format!("missing `{k}:`"))
        };
        let num =
            |k: &str| -> Result<u64, String> { get(k)?.parse().map_err(|e| format!("`{k}`: {e}")) };
        let flag = |k: &str| -> Result<bool, String> {
            get(k)?.parse().map_err(|e| format!("`{k}`: {e}"))
        };
        let graph = || tessera_ir::text::parse_graph(body).map_err(|e| format!("graph: {e}"));
        let target = get("target")?;
        Ok(
            match FuzzTarget::from_name(target)
                .ok_or_else(|| format!("unknown target `{target}`"))?
            {
                FuzzTarget::OnnxLoader => {
                    let hex: String = body.split_whitespace().collect();
                    let bytes = (0..hex.len() / 2)
                        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
                        .collect::<Result<_, _>>()
                        .map_err(|e| format!("hex: {e}"))?;
                    Case::Onnx { bytes }
                }
                FuzzTarget::GraphPipeline => Case::Graph {
                    graph: graph()?,
                    options: GraphOptions {
                        optimize: flag("optimize")?,
                        tile_products: flag("tile")?,
                        threads: num("threads")? as usize,
                        // Absent in files written before the option existed: off.
                        winograd: get("winograd").is_ok() && flag("winograd")?,
                    },
                    seed: num("seed")?,
                },
                FuzzTarget::LoopPasses => Case::Loops {
                    program: tessera_ir::loops::parse::parse_program(body)
                        .map_err(|e| format!("program: {e}"))?,
                    passes: fields
                        .iter()
                        .filter(|(k, _)| *k == "pass")
                        .map(|(_, v)| pass_gen::parse(v))
                        .collect::<Result<_, _>>()?,
                    seed: num("seed")?,
                },
                FuzzTarget::Schedule => Case::Schedule {
                    graph: graph()?,
                    kernel: num("kernel")? as usize,
                    schedule: serde_json::from_str(get("schedule")?)
                        .map_err(|e| format!("schedule: {e}"))?,
                    seed: num("seed")?,
                },
            },
        )
    }
}
