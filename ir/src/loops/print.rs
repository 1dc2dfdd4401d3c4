//! Text form of the loop IR (what `tessera compile --emit loops` prints).
//!
//! ```text
//! kernel relu_1(in x: f32[12], out y: f32[12]) {
//!   for i0 in 0..12 parallel {
//!     y[i0] = max(x[i0], 0:f32)
//!   }
//! }
//! ```

use super::*;
use std::fmt::{self, Display, Write};

impl Display for LoopProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernel {}(", self.name)?;
        for (i, b) in self.buffers.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let role = b.role.name();
            write!(f, "{role} {}: {}[{}]", b.name, b.dtype, b.len)?;
        }
        f.write_str(") {\n")?;
        let mut s = String::new();
        for st in &self.body {
            write_stmt(&mut s, st, 1)?;
        }
        f.write_str(&s)?;
        f.write_str("}\n")
    }
}

fn indent(s: &mut String, depth: usize) {
    s.extend(std::iter::repeat_n("  ", depth));
}

fn write_stmt(s: &mut String, st: &Stmt, depth: usize) -> fmt::Result {
    indent(s, depth);
    match st {
        Stmt::For(l) => {
            let kind = match l.kind {
                LoopKind::Serial => String::new(),
                LoopKind::Parallel => " parallel".into(),
                LoopKind::Vectorize(w) => format!(" vectorize({w})"),
                LoopKind::Unroll(n) => format!(" unroll({n})"),
                LoopKind::Block(a) => format!(" block({})", a.name()),
                LoopKind::Thread(a) => format!(" thread({})", a.name()),
            };
            writeln!(s, "for {} in 0..{}{kind} {{", l.var, l.extent)?;
            write_block(s, &l.body, depth)?;
        }
        Stmt::Store { buf, index, value } => writeln!(s, "{buf}[{index}] = {value}")?,
        Stmt::If { cond, then } => {
            writeln!(s, "if {cond} {{")?;
            write_block(s, then, depth)?;
        }
        Stmt::Reduce(r) => {
            let op = match r.op {
                ReduceOp::Sum => "sum",
                ReduceOp::Max => "max",
                ReduceOp::Min => "min",
                ReduceOp::Prod => "prod",
            };
            let axes: Vec<String> = r
                .axes
                .iter()
                .map(|(v, e)| format!("{v} in 0..{e}"))
                .collect();
            let lanes = r
                .vectorize
                .map(|w| format!(" vectorize({w})"))
                .unwrap_or_default();
            writeln!(
                s,
                "${}: {} = reduce {op}({}){lanes} init {} of {} {{",
                r.acc,
                r.dtype,
                axes.join(", "),
                r.init,
                r.value
            )?;
            write_block(s, &r.body, depth)?;
        }
        Stmt::Mma(m) => {
            let operand = |o: &super::mma::MmaOperand| {
                let blocks = match (o.blocks, o.swizzle) {
                    (_, Some(atoms)) => format!("; sw128 {atoms}"),
                    (Some([r, c]), None) => format!("; {r}, {c}"),
                    (None, None) => String::new(),
                };
                format!(
                    "{}[{}; {}, {}{blocks}]",
                    o.buf, o.base, o.strides[0], o.strides[1]
                )
            };
            let retires = match m.retires {
                1 => String::new(),
                n => format!(" retires({n})"),
            };
            writeln!(
                s,
                "mma {} {}[{}] += {} * {} lane({}){retires}",
                m.shape.name(),
                m.acc,
                m.at,
                operand(&m.a),
                operand(&m.b),
                m.lane
            )?
        }
        Stmt::AsyncCopy(c) => {
            let lands = match c.lands {
                1 => String::new(),
                n => format!(" lands({n})"),
            };
            writeln!(
                s,
                "async_copy({}, {}) {}[{}] = {}[{}] valid({}){lands}",
                c.dtype, c.len, c.dst, c.dst_at, c.src, c.src_at, c.valid
            )?
        }
        Stmt::Mbarrier(m) => writeln!(s, "{m}")?,
        Stmt::SetMaxNReg(r) => writeln!(s, "{r}")?,
        Stmt::TensorCopy(c) => writeln!(s, "{c}")?,
        Stmt::TensorStore(c) => writeln!(s, "{c}")?,
        Stmt::AsyncProxy(a) => writeln!(s, "{a}")?,
        Stmt::WarpFold(w) => writeln!(
            s,
            "warp_fold {}({}) {}[{}] = {}[{}] lane({})",
            super::shuffle::op_name(w.op).unwrap_or("?"),
            w.width,
            w.dst,
            w.at,
            w.src,
            w.base,
            w.lane
        )?,
    }
    Ok(())
}

fn write_block(s: &mut String, body: &[Stmt], depth: usize) -> fmt::Result {
    for b in body {
        write_stmt(s, b, depth + 1)?;
    }
    indent(s, depth);
    s.push_str("}\n");
    Ok(())
}

impl Display for IExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IExpr::Const(c) => write!(f, "{c}"),
            IExpr::Var(v) => f.write_str(v),
            IExpr::Add(a, b) => write!(f, "({a} + {b})"),
            IExpr::Sub(a, b) => write!(f, "({a} - {b})"),
            IExpr::Mul(a, b) => write!(f, "{a}*{b}"),
            IExpr::FloorDiv(a, b) => write!(f, "({a} // {b})"),
            IExpr::Mod(a, b) => write!(f, "({a} % {b})"),
            IExpr::Min(a, b) => write!(f, "min({a}, {b})"),
            IExpr::Max(a, b) => write!(f, "max({a}, {b})"),
            IExpr::Xor(a, b) => write!(f, "xor({a}, {b})"),
            IExpr::Of(v) => write!(f, "idx({v})"),
        }
    }
}

pub fn cmp_name(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "==",
        CmpOp::Ne => "!=",
        CmpOp::Lt => "<",
        CmpOp::Le => "<=",
        CmpOp::Gt => ">",
        CmpOp::Ge => ">=",
    }
}

impl Display for VExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VExpr::Const(Lit::F(v), d) => write!(f, "{v:?}:{d}"),
            VExpr::Const(Lit::I(v), d) => write!(f, "{v}:{d}"),
            VExpr::Load { buf, index } => write!(f, "{buf}[{index}]"),
            VExpr::Acc(n, _) => write!(f, "${n}"),
            VExpr::Unary(op, a) => write!(f, "{}({a})", format!("{op:?}").to_lowercase()),
            VExpr::Binary(op, a, b) => match op {
                BinOp::Add => write!(f, "({a} + {b})"),
                BinOp::Sub => write!(f, "({a} - {b})"),
                BinOp::Mul => write!(f, "({a} * {b})"),
                BinOp::Div => write!(f, "({a} / {b})"),
                _ => write!(f, "{}({a}, {b})", format!("{op:?}").to_lowercase()),
            },
            VExpr::Cmp(op, a, b) => write!(f, "({a} {} {b})", cmp_name(*op)),
            VExpr::ICmp(op, a, b) => write!(f, "({a} {} {b})", cmp_name(*op)),
            VExpr::Select(c, a, b) => write!(f, "select({c}, {a}, {b})"),
            VExpr::Cast(d, a) => write!(f, "cast<{d}>({a})"),
            VExpr::Index(e, d) => write!(f, "index<{d}>({e})"),
        }
    }
}
