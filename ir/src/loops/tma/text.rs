//! The text form of the TMA statements (see the module docs of [`super`]): printing, and
//! parsing as a part of the loop IR's parser.

use super::{AsyncProxy, Mbarrier, MbarrierOp, TensorCopy, TensorMap, TensorStore};
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

impl TensorMap {
    /// `(f16, sw128)`: the element type and the swizzle, after a statement's keyword.
    fn kind_text(&self) -> String {
        let swizzle = if self.swizzle { "sw128" } else { "none" };
        format!("({}, {swizzle})", self.dtype)
    }

    /// `x[origin; extents; strides; box sides]`: the tensor and the box.
    fn tensor_text(&self) -> String {
        format!(
            "{}[{}; {}; {}; box {}]",
            self.src,
            self.origin,
            list(&self.extents),
            list(&self.strides),
            list(&self.box_dims)
        )
    }
}

impl fmt::Display for TensorCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.map;
        write!(
            f,
            "tensor_copy{} {}[{}] = {} at({}) mbar({}[{}])",
            m.kind_text(),
            self.dst,
            self.dst_at,
            m.tensor_text(),
            list(&self.coords),
            self.barrier,
            self.barrier_at
        )
    }
}

impl fmt::Display for TensorStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.map;
        write!(
            f,
            "tensor_store{} {} at({}) = {}[{}]",
            m.kind_text(),
            m.tensor_text(),
            list(&self.coords),
            self.src,
            self.src_at
        )
    }
}

impl fmt::Display for AsyncProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsyncProxy::Fence => write!(f, "{}", self.keyword()),
            AsyncProxy::WaitRead { pending } => {
                write!(f, "{} pending({pending})", self.keyword())
            }
        }
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
            "tensor_store" => Self::tensor_store,
            "fence_proxy_async" => |_: &mut P, _: &str| Ok(Stmt::AsyncProxy(AsyncProxy::Fence)),
            "bulk_wait_read" => |p: &mut P, _: &str| {
                Ok(Stmt::AsyncProxy(AsyncProxy::WaitRead {
                    pending: p.counted("pending")?,
                }))
            },
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

    /// `(f16, sw128)` after a tensor statement's keyword.
    fn map_kind(&mut self) -> R<(crate::DType, bool)> {
        self.expect("(")?;
        let dtype = self.dtype()?;
        self.expect(",")?;
        let swizzle = match self.ident()?.as_str() {
            "sw128" => true,
            "none" => false,
            s => return self.err(format!("unknown swizzle `{s}` (sw128 or none)")),
        };
        self.expect(")")?;
        Ok((dtype, swizzle))
    }

    /// `x[origin; extents; strides; box sides]` of a tensor map of `kind`.
    fn map_tensor(&mut self, (dtype, swizzle): (crate::DType, bool)) -> R<TensorMap> {
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
        Ok(TensorMap {
            src,
            dtype,
            origin,
            extents,
            strides,
            box_dims,
            swizzle,
        })
    }

    /// `at(c0, c1, …)`: a box's coordinates.
    fn box_coords(&mut self) -> R<Vec<IExpr>> {
        self.keyword("at")?;
        self.expect("(")?;
        let mut coords: Vec<IExpr> = vec![self.iexpr()?];
        while self.eat(",") {
            coords.push(self.iexpr()?);
        }
        self.expect(")")?;
        Ok(coords)
    }

    fn tensor_copy(&mut self, _: &str) -> R<Stmt> {
        let kind = self.map_kind()?;
        let (dst, dst_at) = self.indexed()?;
        self.expect("=")?;
        let map = self.map_tensor(kind)?;
        let coords = self.box_coords()?;
        self.keyword("mbar")?;
        self.expect("(")?;
        let (barrier, barrier_at) = self.indexed()?;
        self.expect(")")?;
        Ok(Stmt::TensorCopy(TensorCopy {
            map,
            dst,
            dst_at,
            coords,
            barrier,
            barrier_at,
        }))
    }

    fn tensor_store(&mut self, _: &str) -> R<Stmt> {
        let kind = self.map_kind()?;
        let map = self.map_tensor(kind)?;
        let coords = self.box_coords()?;
        self.expect("=")?;
        let (src, src_at) = self.indexed()?;
        Ok(Stmt::TensorStore(TensorStore {
            map,
            src,
            src_at,
            coords,
        }))
    }
}
