//! Algebraic identities. Each holds in IEEE arithmetic with NaN and infinities (`x + 0` up to
//! the sign of a zero, `x²` and `x³` up to `pow`'s last-place rounding) and never changes a type:
//! rules that could broadcast check that the result's type is the kept operand's.

use super::{Rw, all_equal, same_type};
use egg::rewrite as rw;

pub fn rules() -> Vec<Rw> {
    vec![
        rw!("identity"; "(Identity ?a ?x)" => "?x"),
        rw!("neg-neg"; "(Neg ?a (Neg ?b ?x))" => "?x"),
        rw!("relu-relu"; "(Relu ?a (Relu ?b ?x))" => "(Relu ?b ?x)"),
        rw!("abs-abs"; "(Abs ?a (Abs ?b ?x))" => "(Abs ?b ?x)"),
        rw!("abs-neg"; "(Abs ?a (Neg ?b ?x))" => "(Abs ?a ?x)"),
        rw!("relu-abs"; "(Relu ?a (Abs ?b ?x))" => "(Abs ?b ?x)"),
        rw!("add-zero"; "(Add ?a ?x ?z)" => "?x" if all_equal("?z", 0.0) if same_type("?x")),
        rw!("zero-add"; "(Add ?a ?z ?x)" => "?x" if all_equal("?z", 0.0) if same_type("?x")),
        rw!("sub-zero"; "(Sub ?a ?x ?z)" => "?x" if all_equal("?z", 0.0) if same_type("?x")),
        rw!("mul-one"; "(Mul ?a ?x ?o)" => "?x" if all_equal("?o", 1.0) if same_type("?x")),
        rw!("one-mul"; "(Mul ?a ?o ?x)" => "?x" if all_equal("?o", 1.0) if same_type("?x")),
        rw!("div-one"; "(Div ?a ?x ?o)" => "?x" if all_equal("?o", 1.0) if same_type("?x")),
        rw!("pow-one"; "(Pow ?a ?x ?o)" => "?x" if all_equal("?o", 1.0) if same_type("?x")),
        rw!("pow-two"; "(Pow ?a ?x ?t)" => "(Mul ?a ?x ?x)"
            if all_equal("?t", 2.0) if same_type("?x")),
        // GPT-2's tanh GELU cubes its input: three multiplies instead of a `pow` call per
        // element (which does not vectorize).
        rw!("pow-three"; "(Pow ?a ?x ?t)" => "(Mul ?a (Mul ?a ?x ?x) ?x)"
            if all_equal("?t", 3.0) if same_type("?x")),
        rw!("cast-noop"; "(Cast ?a ?x)" => "?x" if same_type("?x")),
    ]
}
