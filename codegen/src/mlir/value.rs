//! Value expressions of the loop IR as MLIR: constants, arithmetic, comparisons, selects and
//! casts, on scalars or — inside a vector loop — on vectors (loads through [`super::load`],
//! transcendental functions through [`super::math`]).

use super::{Backend, Em, NO_SIGNED_ZEROS, scalar_ty, ty, unsigned};
use crate::error::CodegenError;
use tessera_ir::DType;
use tessera_ir::loops::{BinOp, CmpOp, Lit, UnOp, VExpr};

impl Em<'_> {
    pub(super) fn dtype_of(&self, e: &VExpr) -> Result<DType, CodegenError> {
        e.dtype(&|b| self.prog.buffer(b).map(|x| x.dtype))
            .ok_or_else(|| self.unsupported(format!("cannot type `{e}`")))
    }

    pub(super) fn constant(&mut self, l: Lit, d: DType) -> String {
        let text = match (l, d) {
            (_, DType::Bool) => format!(
                "{}",
                matches!(l, Lit::I(x) if x != 0) || matches!(l, Lit::F(x) if x != 0.0)
            ),
            (Lit::F(x), DType::F32) => format!("0x{:08X}", (x as f32).to_bits()),
            (Lit::F(x), DType::F64) => format!("0x{:016X}", x.to_bits()),
            (Lit::F(x), DType::F16) => format!("0x{:04X}", half::f16::from_f64(x).to_bits()),
            (Lit::F(x), DType::BF16) => format!("0x{:04X}", half::bf16::from_f64(x).to_bits()),
            (Lit::F(x), _) => format!("{}", d.wrap_i64(x as i64)),
            (Lit::I(x), DType::U8) => format!("{}", x as u8 as i8),
            (Lit::I(x), _) if d.is_float() => return self.constant(Lit::F(x as f64), d),
            (Lit::I(x), _) => format!("{}", d.wrap_i64(x)),
        };
        if d == DType::Bool {
            // `true`/`false` literals carry their type (i1) in MLIR's syntax.
            return self.op(format!("arith.constant {text}"));
        }
        self.op(format!("arith.constant {text} : {}", scalar_ty(d)))
    }

    /// Emits a value expression; in a vector loop the result is a vector unless the
    /// expression does not depend on the vector variable (then it is broadcast).
    pub(super) fn vexpr(&mut self, e: &VExpr) -> Result<String, CodegenError> {
        if let Some(v) = &self.vec
            && !e.mentions(&v.var)
            && !self.uses_vector_acc(e)
        {
            let w = v.width;
            let d = self.dtype_of(e)?;
            let s = match self.guard.clone() {
                Some(g) if self.may_fault(e) => self.invariant_under_guard(&g, e, d)?,
                _ => {
                    let (vec, guard) = (self.vec.take(), self.guard.take());
                    let s = self.vexpr(e);
                    (self.vec, self.guard) = (vec, guard);
                    s?
                }
            };
            return Ok(self.op(format!(
                "vector.broadcast {s} : {} to {}",
                scalar_ty(d),
                ty(d, Some(w))
            )));
        }
        let lanes = self.vec.as_ref().map(|v| v.width);
        let d = self.dtype_of(e)?;
        let t = ty(d, lanes);
        match e {
            VExpr::Const(l, d) => Ok(self.constant(*l, *d)),
            VExpr::Load { buf, index } => self.load(buf, index),
            VExpr::Acc(n, _) => self
                .accs
                .iter()
                .rev()
                .find(|(a, _, _)| a == n)
                .map(|(_, v, _)| v.clone())
                .ok_or_else(|| self.unsupported(format!("unbound accumulator `{n}`"))),
            VExpr::Unary(op, a) => {
                let x = self.vexpr(a)?;
                let f = d.is_float();
                Ok(match op {
                    UnOp::Neg if f => self.op(format!("arith.negf {x} : {t}")),
                    UnOp::Neg => {
                        let z = self.splat(Lit::I(0), d)?;
                        self.op(format!("arith.subi {z}, {x} : {t}"))
                    }
                    UnOp::Abs if f => self.op(format!("math.absf {x} : {t}")),
                    UnOp::Abs => self.op(format!("math.absi {x} : {t}")),
                    UnOp::Not => {
                        let one = self.splat(Lit::I(1), DType::Bool)?;
                        self.op(format!("arith.xori {x}, {one} : {t}"))
                    }
                    UnOp::Exp if d == DType::F32 && self.cfg.backend == Backend::Cpu => {
                        self.exp_f32(&x, &t)?
                    }
                    UnOp::Exp => self.op(format!("math.exp {x} : {t}")),
                    UnOp::Log => self.op(format!("math.log {x} : {t}")),
                    UnOp::Sqrt => self.op(format!("math.sqrt {x} : {t}")),
                    UnOp::Tanh if d == DType::F32 && self.cfg.backend == Backend::Cpu => {
                        self.tanh_f32(&x, &t)?
                    }
                    UnOp::Tanh => self.op(format!("math.tanh {x} : {t}")),
                    UnOp::Erf if d == DType::F32 && self.cfg.backend == Backend::Cpu => {
                        self.erf_f32(&x, &t)?
                    }
                    UnOp::Erf => self.op(format!("math.erf {x} : {t}")),
                    UnOp::Floor => self.op(format!("math.floor {x} : {t}")),
                    UnOp::Ceil => self.op(format!("math.ceil {x} : {t}")),
                    UnOp::Sin => self.op(format!("math.sin {x} : {t}")),
                    UnOp::Cos => self.op(format!("math.cos {x} : {t}")),
                    UnOp::Round => self.op(format!("math.roundeven {x} : {t}")),
                })
            }
            VExpr::Binary(op, a, b) => {
                let (x, y) = (self.vexpr(a)?, self.vexpr(b)?);
                let (f, u) = (d.is_float(), unsigned(d));
                let name = match op {
                    BinOp::Add => {
                        if f {
                            "arith.addf"
                        } else {
                            "arith.addi"
                        }
                    }
                    BinOp::Sub => {
                        if f {
                            "arith.subf"
                        } else {
                            "arith.subi"
                        }
                    }
                    BinOp::Mul => {
                        if f {
                            "arith.mulf"
                        } else {
                            "arith.muli"
                        }
                    }
                    BinOp::Div => {
                        if f {
                            "arith.divf"
                        } else if u {
                            "arith.divui"
                        } else {
                            "arith.divsi"
                        }
                    }
                    BinOp::Pow => "math.powf",
                    BinOp::Max => {
                        if f {
                            "arith.maximumf"
                        } else if u {
                            "arith.maxui"
                        } else {
                            "arith.maxsi"
                        }
                    }
                    BinOp::Min => {
                        if f {
                            "arith.minimumf"
                        } else if u {
                            "arith.minui"
                        } else {
                            "arith.minsi"
                        }
                    }
                    BinOp::And => "arith.andi",
                    BinOp::Or => "arith.ori",
                    BinOp::Xor => "arith.xori",
                    BinOp::Rem if f => "arith.remf",
                    BinOp::Rem if u => "arith.remui",
                    BinOp::Rem => "arith.remsi",
                };
                // `contract` lets LLVM fuse a product feeding a sum into one FMA (one
                // rounding instead of two: never less accurate than the reference's order).
                let flags = match op {
                    BinOp::Add | BinOp::Sub | BinOp::Mul if f => " fastmath<contract>",
                    BinOp::Max | BinOp::Min if f => NO_SIGNED_ZEROS,
                    _ => "",
                };
                Ok(self.op(format!("{name} {x}, {y}{flags} : {t}")))
            }
            VExpr::Cmp(op, a, b) => {
                let ad = self.dtype_of(a)?;
                let (x, y) = (self.vexpr(a)?, self.vexpr(b)?);
                let at = ty(ad, lanes);
                if ad.is_float() {
                    let p = match op {
                        CmpOp::Eq => "oeq",
                        CmpOp::Ne => "une",
                        CmpOp::Lt => "olt",
                        CmpOp::Le => "ole",
                        CmpOp::Gt => "ogt",
                        CmpOp::Ge => "oge",
                    };
                    Ok(self.op(format!("arith.cmpf {p}, {x}, {y} : {at}")))
                } else {
                    Ok(self.op(format!(
                        "arith.cmpi {}, {x}, {y} : {at}",
                        int_pred(*op, unsigned(ad))
                    )))
                }
            }
            VExpr::ICmp(op, a, b) => {
                // Inside a vector loop: one index per lane (only reached when the comparison
                // depends on the vector loop's variable).
                let (x, y, t) = match lanes {
                    Some(w) => (
                        self.iexpr_lanes(a, w)?,
                        self.iexpr_lanes(b, w)?,
                        format!("vector<{w}xindex>"),
                    ),
                    None => (self.iexpr(a)?, self.iexpr(b)?, "index".to_string()),
                };
                // Indices are signed (a padded window starts below 0).
                let unsigned = *op == CmpOp::Ge
                    && tessera_ir::planted::active(tessera_ir::planted::Bug::IndexCmpUnsigned);
                Ok(self.op(format!(
                    "arith.cmpi {}, {x}, {y} : {t}",
                    int_pred(*op, unsigned)
                )))
            }
            VExpr::Select(c, a, b)
                if (self.may_fault(a) || self.may_fault(b))
                    && !tessera_ir::planted::active(tessera_ir::planted::Bug::EagerSelect) =>
            {
                self.guarded_select(c, a, b, &t)
            }
            VExpr::Select(c, a, b) => {
                let (cv, x, y) = (self.vexpr(c)?, self.vexpr(a)?, self.vexpr(b)?);
                Ok(self.select(&cv, &x, &y, &t))
            }
            VExpr::Cast(to, a) => {
                let from = self.dtype_of(a)?;
                let x = self.vexpr(a)?;
                self.cast(&x, from, *to, lanes)
            }
            VExpr::Index(i, to) => {
                let x = self.iexpr(i)?;
                let w = self.op(format!("arith.index_cast {x} : index to i64"));
                self.cast(&w, DType::I64, *to, None)
            }
        }
    }

    /// Whether `e` reads an accumulator that holds a vector (so it is not lane-invariant).
    pub(super) fn uses_vector_acc(&self, e: &VExpr) -> bool {
        match e {
            VExpr::Acc(n, _) => self
                .accs
                .iter()
                .rev()
                .find(|(a, _, _)| a == n)
                .is_some_and(|(_, _, v)| *v),
            VExpr::Const(..) | VExpr::Load { .. } | VExpr::ICmp(..) | VExpr::Index(..) => false,
            VExpr::Unary(_, a) | VExpr::Cast(_, a) => self.uses_vector_acc(a),
            VExpr::Binary(_, a, b) | VExpr::Cmp(_, a, b) => {
                self.uses_vector_acc(a) || self.uses_vector_acc(b)
            }
            VExpr::Select(c, a, b) => {
                self.uses_vector_acc(c) || self.uses_vector_acc(a) || self.uses_vector_acc(b)
            }
        }
    }

    /// `arith.select cond, a, b` on values of type `t`, the condition as wide as the current
    /// vector loop (a scalar outside one).
    pub(super) fn select(&mut self, cond: &str, a: &str, b: &str, t: &str) -> String {
        let ct = ty(DType::Bool, self.vec.as_ref().map(|v| v.width));
        self.op(format!("arith.select {cond}, {a}, {b} : {ct}, {t}"))
    }

    /// A constant, broadcast to the current vector width if in a vector loop.
    pub(super) fn splat(&mut self, l: Lit, d: DType) -> Result<String, CodegenError> {
        let c = self.constant(l, d);
        Ok(match self.vec.as_ref().map(|v| v.width) {
            Some(w) => self.op(format!(
                "vector.broadcast {c} : {} to {}",
                scalar_ty(d),
                ty(d, Some(w))
            )),
            None => c,
        })
    }

    pub(super) fn cast(
        &mut self,
        x: &str,
        from: DType,
        to: DType,
        lanes: Option<u32>,
    ) -> Result<String, CodegenError> {
        if from == to {
            return Ok(x.to_string());
        }
        let (ft, tt) = (ty(from, lanes), ty(to, lanes));
        let bits = |d: DType| if d == DType::Bool { 1 } else { d.size() * 8 };
        Ok(match (from.is_float(), to.is_float()) {
            (true, true) => {
                if matches!(
                    (from, to),
                    (DType::F16, DType::BF16) | (DType::BF16, DType::F16)
                ) {
                    let mid = self.op(format!(
                        "arith.extf {x} : {ft} to {}",
                        ty(DType::F32, lanes)
                    ));
                    self.op(format!(
                        "arith.truncf {mid} : {} to {tt}",
                        ty(DType::F32, lanes)
                    ))
                } else if bits(to) > bits(from) {
                    self.op(format!("arith.extf {x} : {ft} to {tt}"))
                } else {
                    self.op(format!("arith.truncf {x} : {ft} to {tt}"))
                }
            }
            (false, true) => {
                let op = if unsigned(from) {
                    "arith.uitofp"
                } else {
                    "arith.sitofp"
                };
                self.op(format!("{op} {x} : {ft} to {tt}"))
            }
            (true, false) if to == DType::Bool => {
                let z = self.splat(Lit::F(0.0), from)?;
                self.op(format!("arith.cmpf une, {x}, {z} : {ft}"))
            }
            (true, false) => {
                let op = if unsigned(to) {
                    "arith.fptoui"
                } else {
                    "arith.fptosi"
                };
                self.op(format!("{op} {x} : {ft} to {tt}"))
            }
            (false, false) if to == DType::Bool => {
                let z = self.splat(Lit::I(0), from)?;
                self.op(format!("arith.cmpi ne, {x}, {z} : {ft}"))
            }
            (false, false) => {
                if bits(to) > bits(from) {
                    let op = if unsigned(from) {
                        "arith.extui"
                    } else {
                        "arith.extsi"
                    };
                    self.op(format!("{op} {x} : {ft} to {tt}"))
                } else if bits(to) < bits(from) {
                    self.op(format!("arith.trunci {x} : {ft} to {tt}"))
                } else {
                    x.to_string()
                }
            }
        })
    }
}

fn int_pred(op: CmpOp, unsigned: bool) -> &'static str {
    match (op, unsigned) {
        (CmpOp::Eq, _) => "eq",
        (CmpOp::Ne, _) => "ne",
        (CmpOp::Lt, false) => "slt",
        (CmpOp::Le, false) => "sle",
        (CmpOp::Gt, false) => "sgt",
        (CmpOp::Ge, false) => "sge",
        (CmpOp::Lt, true) => "ult",
        (CmpOp::Le, true) => "ule",
        (CmpOp::Gt, true) => "ugt",
        (CmpOp::Ge, true) => "uge",
    }
}
