//! Parser for the loop-IR text form printed by [`super::print`]; `parse(print(p)) == p`.
//!
//! A small backtracking recursive-descent parser: an opening parenthesis inside a value
//! expression may start a value comparison or an index comparison, and `min`/`max` exist
//! for both; the parser tries the value reading first and falls back to the index reading.

use super::*;
use crate::error::{IrError, Result};

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Num(String),
    P(&'static str),
}

const PUNCT: [&str; 23] = [
    "..", "//", "<=", ">=", "==", "!=", "(", ")", "[", "]", "{", "}", ",", ":", ";", "=", "$", "+",
    "-", "*", "/", "%", "<",
];

fn lex(src: &str) -> Result<Vec<(Tok, usize)>> {
    let cs: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < cs.len() {
        let c = cs[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let st = i;
            while i < cs.len()
                && (cs[i].is_ascii_alphanumeric()
                    || (cs[i] == '.' && cs.get(i + 1) != Some(&'.'))
                    || ((cs[i] == '-' || cs[i] == '+') && matches!(cs[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
            out.push((Tok::Num(cs[st..i].iter().collect()), line));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let st = i;
            while i < cs.len() && (cs[i].is_ascii_alphanumeric() || cs[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(cs[st..i].iter().collect()), line));
        } else if c == '>' {
            let two = cs.get(i + 1) == Some(&'=');
            out.push((Tok::P(if two { ">=" } else { ">" }), line));
            i += if two { 2 } else { 1 };
        } else if let Some(p) = PUNCT
            .iter()
            .find(|p| cs[i..].starts_with(&p.chars().collect::<Vec<_>>()[..]))
        {
            out.push((Tok::P(p), line));
            i += p.len();
        } else {
            return Err(IrError::Parse {
                line,
                msg: format!("unexpected character `{c}`"),
            });
        }
    }
    Ok(out)
}

pub(crate) struct P {
    toks: Vec<(Tok, usize)>,
    pub(crate) pos: usize,
}

pub(crate) type R<T> = std::result::Result<T, IrError>;

impl P {
    pub(crate) fn err<T>(&self, msg: impl Into<String>) -> R<T> {
        let line = self
            .toks
            .get(self.pos)
            .or(self.toks.last())
            .map(|t| t.1)
            .unwrap_or(0);
        Err(IrError::Parse {
            line,
            msg: msg.into(),
        })
    }
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }
    fn peek2(&self) -> Option<&Tok> {
        self.toks.get(self.pos + 1).map(|t| &t.0)
    }
    fn is(&self, p: &str) -> bool {
        matches!(self.peek(), Some(Tok::P(q)) if *q == p)
    }
    pub(crate) fn eat(&mut self, p: &str) -> bool {
        if self.is(p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    pub(crate) fn expect(&mut self, p: &str) -> R<()> {
        if self.eat(p) {
            Ok(())
        } else {
            self.err(format!("expected `{p}`, found {:?}", self.peek()))
        }
    }
    pub(crate) fn ident(&mut self) -> R<String> {
        match self.peek().cloned() {
            Some(Tok::Ident(s)) => {
                self.pos += 1;
                Ok(s)
            }
            t => self.err(format!("expected a name, found {t:?}")),
        }
    }
    pub(crate) fn keyword(&mut self, k: &str) -> R<()> {
        match self.peek() {
            Some(Tok::Ident(s)) if s == k => {
                self.pos += 1;
                Ok(())
            }
            t => self.err(format!("expected `{k}`, found {t:?}")),
        }
    }
    /// An integer literal, with an optional leading minus.
    pub(crate) fn int(&mut self) -> R<i64> {
        let neg = self.eat("-");
        match self.peek().cloned() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                let v: i64 = n
                    .parse()
                    .or_else(|_| self.err(format!("bad integer `{n}`")))?;
                Ok(if neg { -v } else { v })
            }
            t => self.err(format!("expected an integer, found {t:?}")),
        }
    }
    pub(crate) fn dtype(&mut self) -> R<DType> {
        let d = self.ident()?;
        DType::parse(&d).map_or_else(|| self.err(format!("unknown dtype `{d}`")), Ok)
    }
    /// Runs `f`; on failure rewinds and returns None.
    fn attempt<T>(&mut self, f: impl FnOnce(&mut P) -> R<T>) -> Option<T> {
        let save = self.pos;
        match f(self) {
            Ok(v) => Some(v),
            Err(_) => {
                self.pos = save;
                None
            }
        }
    }

    /// `buf[index]`, as a warp statement names its accumulator or source.
    pub(crate) fn indexed(&mut self) -> R<(String, IExpr)> {
        let buf = self.ident()?;
        self.expect("[")?;
        let index = self.iexpr()?;
        self.expect("]")?;
        Ok((buf, index))
    }
    /// `buf[base; row_stride, col_stride]`, `…; row_blocks, col_blocks]` or `…; sw128 atoms]`:
    /// an `mma` operand tile.
    fn mma_operand(&mut self) -> R<super::mma::MmaOperand> {
        let buf = self.ident()?;
        self.expect("[")?;
        let base = self.iexpr()?;
        self.expect(";")?;
        let r = self.int()?;
        self.expect(",")?;
        let c = self.int()?;
        let (mut blocks, mut swizzle) = (None, None);
        if self.eat(";") {
            match self.peek() {
                Some(Tok::Ident(k)) if k == "sw128" => {
                    self.pos += 1;
                    swizzle = Some(self.int()?);
                }
                _ => {
                    let rb = self.int()?;
                    self.expect(",")?;
                    blocks = Some([rb, self.int()?]);
                }
            }
        }
        self.expect("]")?;
        Ok(super::mma::MmaOperand {
            buf,
            base,
            strides: [r, c],
            blocks,
            swizzle,
        })
    }
    /// `keyword(n)` if it comes next, else 1: an async statement's barrier count.
    fn optional_count(&mut self, keyword: &str) -> R<i64> {
        match self.peek() {
            Some(Tok::Ident(k)) if k == keyword => {
                self.pos += 1;
                self.expect("(")?;
                let n = self.int()?;
                self.expect(")")?;
                Ok(n)
            }
            _ => Ok(1),
        }
    }
    /// `lane(expr)`, the warp statements' last part.
    fn lane(&mut self) -> R<IExpr> {
        self.keyword("lane")?;
        self.expect("(")?;
        let lane = self.iexpr()?;
        self.expect(")")?;
        Ok(lane)
    }

    // ---- index expressions ----
    pub(crate) fn iexpr(&mut self) -> R<IExpr> {
        let mut e = self.iprimary()?;
        while self.eat("*") {
            let r = self.iprimary()?;
            e = IExpr::Mul(Box::new(e), Box::new(r));
        }
        Ok(e)
    }
    fn iprimary(&mut self) -> R<IExpr> {
        match self.peek().cloned() {
            Some(Tok::Num(_)) | Some(Tok::P("-")) => Ok(IExpr::Const(self.int()?)),
            Some(Tok::P("(")) => {
                self.pos += 1;
                let a = self.iexpr()?;
                let op = match self.peek() {
                    Some(Tok::P(p)) => *p,
                    t => return self.err(format!("expected an index operator, found {t:?}")),
                };
                self.pos += 1;
                let b = self.iexpr()?;
                self.expect(")")?;
                let (a, b) = (Box::new(a), Box::new(b));
                match op {
                    "+" => Ok(IExpr::Add(a, b)),
                    "-" => Ok(IExpr::Sub(a, b)),
                    "//" => Ok(IExpr::FloorDiv(a, b)),
                    "%" => Ok(IExpr::Mod(a, b)),
                    o => self.err(format!("`{o}` is not an index operator")),
                }
            }
            Some(Tok::Ident(f)) if matches!(self.peek2(), Some(Tok::P("("))) => {
                self.pos += 2;
                if f == "idx" {
                    let v = self.vexpr()?;
                    self.expect(")")?;
                    return Ok(IExpr::Of(Box::new(v)));
                }
                let a = self.iexpr()?;
                self.expect(",")?;
                let b = self.iexpr()?;
                self.expect(")")?;
                match f.as_str() {
                    "min" => Ok(IExpr::Min(Box::new(a), Box::new(b))),
                    "max" => Ok(IExpr::Max(Box::new(a), Box::new(b))),
                    "xor" => Ok(IExpr::Xor(Box::new(a), Box::new(b))),
                    _ => self.err(format!("unknown index function `{f}`")),
                }
            }
            Some(Tok::Ident(v)) => {
                self.pos += 1;
                Ok(IExpr::Var(v))
            }
            t => self.err(format!("expected an index expression, found {t:?}")),
        }
    }

    // ---- value expressions ----
    fn cmp_op(&mut self) -> Option<CmpOp> {
        let op = match self.peek() {
            Some(Tok::P("==")) => CmpOp::Eq,
            Some(Tok::P("!=")) => CmpOp::Ne,
            Some(Tok::P("<")) => CmpOp::Lt,
            Some(Tok::P("<=")) => CmpOp::Le,
            Some(Tok::P(">")) => CmpOp::Gt,
            Some(Tok::P(">=")) => CmpOp::Ge,
            _ => return None,
        };
        self.pos += 1;
        Some(op)
    }
    fn vexpr(&mut self) -> R<VExpr> {
        match self.peek().cloned() {
            Some(Tok::Num(_)) | Some(Tok::P("-")) => self.literal(),
            Some(Tok::P("$")) => {
                self.pos += 1;
                let n = self.ident()?;
                // The accumulator's dtype is filled in by `fix_acc_types`.
                Ok(VExpr::Acc(n, DType::Bool))
            }
            Some(Tok::P("(")) => {
                if let Some(v) = self.attempt(|p| {
                    p.expect("(")?;
                    let a = p.vexpr()?;
                    let r = if let Some(op) = p.cmp_op() {
                        VExpr::Cmp(op, Box::new(a), Box::new(p.vexpr()?))
                    } else {
                        let op = match p.peek() {
                            Some(Tok::P("+")) => BinOp::Add,
                            Some(Tok::P("-")) => BinOp::Sub,
                            Some(Tok::P("*")) => BinOp::Mul,
                            Some(Tok::P("/")) => BinOp::Div,
                            t => return p.err(format!("expected an operator, found {t:?}")),
                        };
                        p.pos += 1;
                        VExpr::bin(op, a, p.vexpr()?)
                    };
                    p.expect(")")?;
                    Ok(r)
                }) {
                    return Ok(v);
                }
                self.expect("(")?;
                let a = self.iexpr()?;
                let op = self
                    .cmp_op()
                    .map_or_else(|| self.err("expected a comparison"), Ok)?;
                let b = self.iexpr()?;
                self.expect(")")?;
                Ok(VExpr::ICmp(op, a, b))
            }
            Some(Tok::Ident(name)) => {
                let name_pos = self.pos;
                self.pos += 1;
                if self.eat("[") {
                    let i = self.iexpr()?;
                    self.expect("]")?;
                    return Ok(VExpr::Load {
                        buf: name,
                        index: i,
                    });
                }
                if matches!(name.as_str(), "inf" | "NaN") {
                    self.pos -= 1;
                    return self.literal();
                }
                if name == "cast" || name == "index" {
                    self.expect("<")?;
                    let d = self.dtype()?;
                    self.expect(">")?;
                    self.expect("(")?;
                    let r = if name == "cast" {
                        VExpr::Cast(d, Box::new(self.vexpr()?))
                    } else {
                        VExpr::Index(self.iexpr()?, d)
                    };
                    self.expect(")")?;
                    return Ok(r);
                }
                self.expect("(")?;
                let args = {
                    let mut v = vec![self.vexpr()?];
                    while self.eat(",") {
                        v.push(self.vexpr()?);
                    }
                    v
                };
                self.expect(")")?;
                let un = |op: UnOp, v: Vec<VExpr>| -> Option<VExpr> {
                    (v.len() == 1).then(|| VExpr::un(op, v.into_iter().next().unwrap()))
                };
                let bin = |op: BinOp, v: Vec<VExpr>| -> Option<VExpr> {
                    let mut it = v.into_iter();
                    match (it.next(), it.next(), it.next()) {
                        (Some(a), Some(b), None) => Some(VExpr::bin(op, a, b)),
                        _ => None,
                    }
                };
                let r = match name.as_str() {
                    "neg" => un(UnOp::Neg, args),
                    "abs" => un(UnOp::Abs, args),
                    "exp" => un(UnOp::Exp, args),
                    "log" => un(UnOp::Log, args),
                    "sqrt" => un(UnOp::Sqrt, args),
                    "tanh" => un(UnOp::Tanh, args),
                    "erf" => un(UnOp::Erf, args),
                    "floor" => un(UnOp::Floor, args),
                    "ceil" => un(UnOp::Ceil, args),
                    "not" => un(UnOp::Not, args),
                    "sin" => un(UnOp::Sin, args),
                    "cos" => un(UnOp::Cos, args),
                    "round" => un(UnOp::Round, args),
                    "xor" => bin(BinOp::Xor, args),
                    "rem" => bin(BinOp::Rem, args),
                    "pow" => bin(BinOp::Pow, args),
                    "max" => bin(BinOp::Max, args),
                    "min" => bin(BinOp::Min, args),
                    "and" => bin(BinOp::And, args),
                    "or" => bin(BinOp::Or, args),
                    "select" if args.len() == 3 => {
                        let mut it = args.into_iter();
                        Some(VExpr::select(
                            it.next().unwrap(),
                            it.next().unwrap(),
                            it.next().unwrap(),
                        ))
                    }
                    _ => None,
                };
                r.map_or_else(
                    || {
                        self.pos = name_pos;
                        self.err(format!("unknown function `{name}` or wrong arity"))
                    },
                    Ok,
                )
            }
            t => self.err(format!("expected a value expression, found {t:?}")),
        }
    }
    /// `1.5:f32`, `-3:i64`, `-inf:f32`, `NaN:f32`
    fn literal(&mut self) -> R<VExpr> {
        let neg = self.eat("-");
        let text = match self.peek().cloned() {
            Some(Tok::Num(n)) | Some(Tok::Ident(n)) => {
                self.pos += 1;
                n
            }
            t => return self.err(format!("expected a literal, found {t:?}")),
        };
        self.expect(":")?;
        let d = self.dtype()?;
        let sign = if neg { "-" } else { "" };
        if d.is_float() {
            let v: f64 = format!("{sign}{text}")
                .parse()
                .or_else(|_| self.err(format!("bad float `{text}`")))?;
            Ok(VExpr::Const(Lit::F(v), d))
        } else {
            let v: i64 = format!("{sign}{text}")
                .parse()
                .or_else(|_| self.err(format!("bad integer `{text}`")))?;
            Ok(VExpr::Const(Lit::I(v), d))
        }
    }

    // ---- statements ----
    fn block(&mut self) -> R<Vec<Stmt>> {
        self.expect("{")?;
        let mut out = Vec::new();
        while !self.eat("}") {
            out.push(self.stmt()?);
        }
        Ok(out)
    }
    fn stmt(&mut self) -> R<Stmt> {
        if let Some(Tok::Ident(k)) = self.peek().cloned()
            && let Some(stmt) = self.tma_stmt(&k)
        {
            return stmt;
        }
        match self.peek().cloned() {
            Some(Tok::Ident(k)) if k == "for" => {
                self.pos += 1;
                let var = self.ident()?;
                self.keyword("in")?;
                if self.int()? != 0 {
                    return self.err("loops start at 0");
                }
                self.expect("..")?;
                let extent = self.int()?;
                let kind = match self.peek().cloned() {
                    Some(Tok::Ident(k)) if k == "parallel" => {
                        self.pos += 1;
                        LoopKind::Parallel
                    }
                    Some(Tok::Ident(k)) if k == "vectorize" || k == "unroll" => {
                        self.pos += 1;
                        self.expect("(")?;
                        let n = u32::try_from(self.int()?).or_else(|_| self.err("bad factor"))?;
                        self.expect(")")?;
                        if k == "vectorize" {
                            LoopKind::Vectorize(n)
                        } else {
                            LoopKind::Unroll(n)
                        }
                    }
                    Some(Tok::Ident(k)) if k == "block" || k == "thread" => {
                        self.pos += 1;
                        self.expect("(")?;
                        let name = self.ident()?;
                        let Some(axis) = super::GpuAxis::from_name(&name) else {
                            return self.err("GPU axis must be x, y or z");
                        };
                        self.expect(")")?;
                        if k == "block" {
                            LoopKind::Block(axis)
                        } else {
                            LoopKind::Thread(axis)
                        }
                    }
                    _ => LoopKind::Serial,
                };
                Ok(Stmt::For(Loop {
                    var,
                    extent,
                    kind,
                    body: self.block()?,
                }))
            }
            Some(Tok::Ident(k)) if k == "if" && !matches!(self.peek2(), Some(Tok::P("["))) => {
                self.pos += 1;
                let cond = self.vexpr()?;
                Ok(Stmt::If {
                    cond,
                    then: self.block()?,
                })
            }
            Some(Tok::P("$")) => {
                self.pos += 1;
                let acc = self.ident()?;
                self.expect(":")?;
                let dtype = self.dtype()?;
                self.expect("=")?;
                self.keyword("reduce")?;
                let op = match self.ident()?.as_str() {
                    "sum" => ReduceOp::Sum,
                    "max" => ReduceOp::Max,
                    "min" => ReduceOp::Min,
                    "prod" => ReduceOp::Prod,
                    o => return self.err(format!("unknown reduction `{o}`")),
                };
                self.expect("(")?;
                let mut axes = Vec::new();
                while !self.eat(")") {
                    if !axes.is_empty() {
                        self.expect(",")?;
                    }
                    let v = self.ident()?;
                    self.keyword("in")?;
                    self.int()?;
                    self.expect("..")?;
                    axes.push((v, self.int()?));
                }
                let vectorize = match self.peek() {
                    Some(Tok::Ident(k)) if k == "vectorize" => {
                        self.pos += 1;
                        self.expect("(")?;
                        let w = u32::try_from(self.int()?).or_else(|_| self.err("bad factor"))?;
                        self.expect(")")?;
                        Some(w)
                    }
                    _ => None,
                };
                self.keyword("init")?;
                let init = self.vexpr()?;
                self.keyword("of")?;
                let value = self.vexpr()?;
                Ok(Stmt::Reduce(Reduce {
                    acc,
                    dtype,
                    op,
                    init,
                    axes,
                    value,
                    body: self.block()?,
                    vectorize,
                }))
            }
            Some(Tok::Ident(k)) if k == "mma" && matches!(self.peek2(), Some(Tok::Ident(_))) => {
                self.pos += 1;
                let name = self.ident()?;
                let Some(shape) = super::mma::MmaShape::parse(&name) else {
                    return self.err(format!("unknown mma shape `{name}`"));
                };
                let (acc, at) = self.indexed()?;
                self.expect("+")?;
                self.expect("=")?;
                let a = self.mma_operand()?;
                self.expect("*")?;
                let b = self.mma_operand()?;
                let lane = self.lane()?;
                let retires = self.optional_count("retires")?;
                Ok(Stmt::Mma(super::mma::Mma {
                    shape,
                    retires,
                    lane,
                    acc,
                    at,
                    a,
                    b,
                }))
            }
            Some(Tok::Ident(k))
                if k == "async_copy" && matches!(self.peek2(), Some(Tok::P("("))) =>
            {
                self.pos += 1;
                self.expect("(")?;
                let dtype = self.dtype()?;
                self.expect(",")?;
                let len = self.int()?;
                self.expect(")")?;
                let (dst, dst_at) = self.indexed()?;
                self.expect("=")?;
                let (src, src_at) = self.indexed()?;
                self.keyword("valid")?;
                self.expect("(")?;
                let valid = self.iexpr()?;
                self.expect(")")?;
                let lands = self.optional_count("lands")?;
                Ok(Stmt::AsyncCopy(super::async_copy::AsyncCopy {
                    dtype,
                    len,
                    dst,
                    dst_at,
                    src,
                    src_at,
                    valid,
                    lands,
                }))
            }
            Some(Tok::Ident(k))
                if k == "warp_fold" && matches!(self.peek2(), Some(Tok::Ident(_))) =>
            {
                self.pos += 1;
                let name = self.ident()?;
                let Some(op) = super::shuffle::op_of(&name) else {
                    return self.err(format!("`{name}` is not a warp fold"));
                };
                self.expect("(")?;
                let width = self.int()?;
                self.expect(")")?;
                let (dst, at) = self.indexed()?;
                self.expect("=")?;
                let (src, base) = self.indexed()?;
                let lane = self.lane()?;
                Ok(Stmt::WarpFold(super::shuffle::WarpFold {
                    op,
                    width,
                    lane,
                    src,
                    base,
                    dst,
                    at,
                }))
            }
            Some(Tok::Ident(buf)) => {
                self.pos += 1;
                self.expect("[")?;
                let index = self.iexpr()?;
                self.expect("]")?;
                self.expect("=")?;
                Ok(Stmt::Store {
                    buf,
                    index,
                    value: self.vexpr()?,
                })
            }
            t => self.err(format!("expected a statement, found {t:?}")),
        }
    }
}

/// Accumulator references print without their dtype; take it from the binding `Reduce`.
fn fix_acc_types(body: &mut [Stmt], scope: &mut Vec<(String, DType)>) {
    fn fix(e: &mut VExpr, scope: &[(String, DType)]) {
        match e {
            VExpr::Acc(n, d) => {
                if let Some((_, t)) = scope.iter().rev().find(|(a, _)| a == n) {
                    *d = *t;
                }
            }
            VExpr::Const(..) | VExpr::Load { .. } | VExpr::ICmp(..) | VExpr::Index(..) => {}
            VExpr::Unary(_, a) | VExpr::Cast(_, a) => fix(a, scope),
            VExpr::Binary(_, a, b) | VExpr::Cmp(_, a, b) => {
                fix(a, scope);
                fix(b, scope)
            }
            VExpr::Select(c, a, b) => {
                fix(c, scope);
                fix(a, scope);
                fix(b, scope)
            }
        }
    }
    for s in body {
        match s {
            Stmt::For(l) => fix_acc_types(&mut l.body, scope),
            Stmt::Store { value, .. } => fix(value, scope),
            Stmt::If { cond, then } => {
                fix(cond, scope);
                fix_acc_types(then, scope)
            }
            Stmt::Reduce(r) => {
                fix(&mut r.init, scope);
                fix(&mut r.value, scope);
                scope.push((r.acc.clone(), r.dtype));
                fix_acc_types(&mut r.body, scope);
                scope.pop();
            }
            Stmt::Mma(_)
            | Stmt::WarpFold(_)
            | Stmt::AsyncCopy(_)
            | Stmt::Mbarrier(_)
            | Stmt::SetMaxNReg(_)
            | Stmt::TensorCopy(_)
            | Stmt::TensorStore(_)
            | Stmt::AsyncProxy(_) => {}
        }
    }
}

/// Parses one kernel printed by `LoopProgram`'s `Display`.
pub fn parse_program(src: &str) -> Result<LoopProgram> {
    let mut p = P {
        toks: lex(src)?,
        pos: 0,
    };
    p.keyword("kernel")?;
    let name = p.ident()?;
    p.expect("(")?;
    let mut buffers = Vec::new();
    while !p.eat(")") {
        if !buffers.is_empty() {
            p.expect(",")?;
        }
        let word = p.ident()?;
        let Some(role) = BufRole::ALL.into_iter().find(|r| r.name() == word) else {
            return p.err(format!(
                "buffer role `{word}` is not in/out/scratch/shared/local"
            ));
        };
        let bname = p.ident()?;
        p.expect(":")?;
        let dtype = p.dtype()?;
        p.expect("[")?;
        let len = usize::try_from(p.int()?).or_else(|_| p.err("negative buffer length"))?;
        p.expect("]")?;
        buffers.push(Buffer {
            name: bname,
            dtype,
            len,
            role,
        });
    }
    let mut body = p.block()?;
    if p.peek().is_some() {
        return p.err("trailing text after the kernel");
    }
    fix_acc_types(&mut body, &mut Vec::new());
    Ok(LoopProgram {
        name,
        buffers,
        body,
    })
}
