//! The text form of the TMA statements (see the module docs of [`super`]): printing, and
//! parsing as a part of the loop IR's parser.

use super::{Mbarrier, MbarrierOp, TensorCopy, TensorMap};
use crate::loops::parse::{P, R};
use crate::loops::regs::{RegisterChange, SetMaxNReg};
use crate::loops::{IExpr, Stmt};
use std::fmt;

fn list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Mbarrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}[{}]", self.keyword(), self.buf, self.at)?;
        match &self.op {
            MbarrierOp::Init { count } => write!(f, " count({count})"),
            MbarrierOp::ExpectTx { bytes } => write!(f, " bytes({bytes})"),
            MbarrierOp::Arrive => Ok(()),
            MbarrierOp::Wait { parity } => write!(f, " parity({parity})"),
        }
    }
}

impl fmt::Display for TensorCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.map;
        write!(
            f,
            "tensor_copy({}, {}) {}[{}] = {}[{}; {}; {}; box {}] at({}) mbar({}[{}])",
            m.dtype,
            if m.swizzle { "sw128" } else { "none" },
            self.dst,
            self.dst_at,
            m.src,
            m.origin,
            list(&m.extents),
            list(&m.strides),
            list(&m.box_dims),
            list(&self.coords),
            self.barrier,
            self.barrier_at
        )
    }
}

impl P {
    /// `count(n)`, `bytes(n)`, …: a keyword and one integer in parentheses.
    fn counted(&mut self, keyword: &str) -> R<i64> {
        self.keyword(keyword)?;
        self.expect("(")?;
        let n = self.int()?;
        self.expect(")")?;
        Ok(n)
    }

    /// Integers separated by commas (at least one).
    fn ints(&mut self) -> R<Vec<i64>> {
        let mut out = vec![self.int()?];
        while self.eat(",") {
            out.push(self.int()?);
        }
        Ok(out)
    }

    /// The statement after the keyword `k` (the current token) when it is a TMA statement's
    /// or a warp-specialised kernel's register reallocation ([`crate::loops::regs`]).
    pub(crate) fn tma_stmt(&mut self, k: &str) -> Option<R<Stmt>> {
        let statement = match k {
            "mbarrier_init" | "mbarrier_expect_tx" | "mbarrier_arrive" | "mbarrier_wait" => {
                Self::mbarrier
            }
            "tensor_copy" => Self::tensor_copy,
            "setmaxnreg_dec" | "setmaxnreg_inc" => Self::set_max_nreg,
            _ => return None,
        };
        self.pos += 1;
        Some(statement(self, k))
    }

    fn set_max_nreg(&mut self, k: &str) -> R<Stmt> {
        Ok(Stmt::SetMaxNReg(SetMaxNReg {
            change: match k {
                "setmaxnreg_dec" => RegisterChange::Release,
                _ => RegisterChange::Claim,
            },
            count: self.counted("count")?,
        }))
    }

    fn mbarrier(&mut self, k: &str) -> R<Stmt> {
        let (buf, at) = self.indexed()?;
        let op = match k {
            "mbarrier_init" => MbarrierOp::Init {
                count: self.counted("count")?,
            },
            "mbarrier_expect_tx" => MbarrierOp::ExpectTx {
                bytes: self.counted("bytes")?,
            },
            "mbarrier_arrive" => MbarrierOp::Arrive,
            _ => {
                self.keyword("parity")?;
                self.expect("(")?;
                let parity = self.iexpr()?;
                self.expect(")")?;
                MbarrierOp::Wait { parity }
            }
        };
        Ok(Stmt::Mbarrier(Mbarrier { buf, at, op }))
    }

    fn tensor_copy(&mut self, _: &str) -> R<Stmt> {
        self.expect("(")?;
        let dtype = self.dtype()?;
        self.expect(",")?;
        let swizzle = match self.ident()?.as_str() {
            "sw128" => true,
            "none" => false,
            s => return self.err(format!("unknown swizzle `{s}` (sw128 or none)")),
        };
        self.expect(")")?;
        let (dst, dst_at) = self.indexed()?;
        self.expect("=")?;
        let src = self.ident()?;
        self.expect("[")?;
        let origin = self.int()?;
        self.expect(";")?;
        let extents = self.ints()?;
        self.expect(";")?;
        let strides = self.ints()?;
        self.expect(";")?;
        self.keyword("box")?;
        let box_dims = self.ints()?;
        self.expect("]")?;
        self.keyword("at")?;
        self.expect("(")?;
        let mut coords: Vec<IExpr> = vec![self.iexpr()?];
        while self.eat(",") {
            coords.push(self.iexpr()?);
        }
        self.expect(")")?;
        self.keyword("mbar")?;
        self.expect("(")?;
        let (barrier, barrier_at) = self.indexed()?;
        self.expect(")")?;
        Ok(Stmt::TensorCopy(TensorCopy {
            map: TensorMap {
                src,
                dtype,
                origin,
                extents,
                strides,
                box_dims,
                swizzle,
            },
            dst,
            dst_at,
            coords,
            barrier,
            barrier_at,
        }))
    }
}
