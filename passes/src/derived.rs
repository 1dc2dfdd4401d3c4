//! Constants derived at compile time from the graph's initializers: a weight rearranged for
//! the kernel that reads it (a Gemm's `B` used transposed, a convolution's weight in blocks
//! of rows), computed by the reference interpreter and added to the graph once per source.

use std::collections::HashMap;
use tessera_ir::{Attr, Graph, Node, OpKind, Tensor, ValueId};

/// The copies of one kind made so far, by source initializer.
pub(crate) struct Derived {
    /// Appended to the source's name: `<source>_<suffix>`.
    suffix: &'static str,
    made: HashMap<ValueId, ValueId>,
}

impl Derived {
    pub(crate) fn new(suffix: &'static str) -> Derived {
        Derived {
            suffix,
            made: HashMap::new(),
        }
    }

    /// The copy of initializer `source`, made by `make` and added to `g` on first use.
    pub(crate) fn of(
        &mut self,
        g: &mut Graph,
        source: ValueId,
        make: impl FnOnce(&Tensor) -> Result<Tensor, String>,
    ) -> Result<ValueId, String> {
        if let Some(&v) = self.made.get(&source) {
            return Ok(v);
        }
        let t = g
            .initializers
            .get(&source)
            .ok_or_else(|| format!("`{}` is no initializer", g.name_of(source)))?;
        let copy = make(t)?;
        let name = format!("{}_{}", g.name_of(source), self.suffix);
        let v = g.add_initializer(&name, copy);
        self.made.insert(source, v);
        Ok(v)
    }
}

/// `t` transposed by `perm`, through the reference interpreter's Transpose.
pub(crate) fn transposed(t: &Tensor, perm: &[i64]) -> Result<Tensor, String> {
    let transpose = Node {
        name: "derived_transpose".into(),
        op: OpKind::Transpose,
        attrs: [("perm".to_string(), Attr::Ints(perm.to_vec()))]
            .into_iter()
            .collect(),
        inputs: vec![None],
        outputs: vec![],
    };
    Ok(tessera_ir::interp::eval_node(&transpose, &[Some(t)])?.remove(0))
}
