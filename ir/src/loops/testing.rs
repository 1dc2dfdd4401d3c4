//! Helpers of the loop IR's hand-written kernel tests (the TMA, tensor-store and
//! cooperative-loop tests write their kernels as text).

use crate::Tensor;
use crate::loops::interp::run_outputs;
use crate::loops::parse::parse_program;
use crate::loops::verify::verify;

/// The first output of kernel `text` — parsed, verified, interpreted on `inputs`.
pub(crate) fn first_output(text: &str, inputs: &[Tensor]) -> crate::error::Result<Tensor> {
    let prog = parse_program(text)?;
    verify(&prog)?;
    Ok(run_outputs(&prog, inputs)?.remove(0))
}

/// Kernel `text` parses, and its printed form parses back to the same program.
pub(crate) fn assert_round_trip(text: &str) {
    let prog = parse_program(text).unwrap();
    assert_eq!(
        parse_program(&prog.to_string()).unwrap(),
        prog,
        "round trip"
    );
}
