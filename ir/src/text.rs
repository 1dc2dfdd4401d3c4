//! Text form of the graph IR: a printer and a parser that round-trip exactly.
//!
//! ```text
//! graph "mlp" opset 21 {
//!   input x: f32[N,4]
//!   init w: f32[4,2] = hex"0000803f..."
//!   node "mm" MatMul(x, w) -> (h: f32[N,2])
//!   node "act" Gelu[approximate="tanh"](h) -> (y)
//!   output y
//! }
//! ```
//! Names that are not plain identifiers are quoted; a missing optional input prints as `_`.
//! Float attributes always carry a `.` or exponent so they never read back as ints.

use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::graph::{Dim, Graph, Node, ValueId, ValueType};
use crate::op::{Attr, Attrs, OpKind};
use crate::tensor::Tensor;
use std::fmt::Write;

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        && s != "_"
}

fn quote(s: &str) -> String {
    let mut o = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if c.is_control() => write!(o, "\\u{{{:x}}}", c as u32).unwrap(),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn name(s: &str) -> String {
    if is_ident(s) { s.to_string() } else { quote(s) }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2 + 5);
    s.push_str("hex\"");
    for b in bytes {
        write!(s, "{b:02x}").unwrap();
    }
    s.push('"');
    s
}

fn ty(t: &ValueType) -> String {
    let dims: Vec<String> = t
        .shape
        .iter()
        .map(|d| match d {
            Dim::Known(n) => n.to_string(),
            Dim::Sym(s) => name(s),
        })
        .collect();
    format!("{}[{}]", t.dtype, dims.join(","))
}

fn float(v: f64) -> String {
    if v.is_finite() {
        format!("{v:?}")
    } else if v.is_nan() {
        "nan".into()
    } else if v > 0.0 {
        "inf".into()
    } else {
        "-inf".into()
    }
}

/// The canonical text of an attribute set, `name=value, …` in name order (as node lines print
/// them); equal sets print equal.
pub fn print_attrs(attrs: &Attrs) -> String {
    attrs
        .iter()
        .map(|(k, a)| format!("{k}={}", attr(a)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn attr(a: &Attr) -> String {
    match a {
        Attr::Int(v) => v.to_string(),
        Attr::Float(v) => float(*v),
        Attr::Ints(v) => format!(
            "ints({})",
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
        Attr::Floats(v) => format!(
            "floats({})",
            v.iter().map(|x| float(*x)).collect::<Vec<_>>().join(",")
        ),
        Attr::Str(s) => quote(s),
        Attr::Graph(g) => print_graph(&g.0).trim_end().replace('\n', "\n    "),
        Attr::Tensor(t) => format!(
            "tensor({}, {})",
            ty(&ValueType::new(t.dtype(), t.shape())),
            hex(t.bytes())
        ),
    }
}

/// Options of the graph printer.
#[derive(Clone, Debug)]
pub struct PrintConfig {
    /// Initializers larger than this many bytes print as `<N bytes>` (which does not parse
    /// back); `usize::MAX` prints everything.
    pub max_data_bytes: usize,
}

/// Prints the graph. Initializer data is printed in full so the text can be parsed back.
pub fn print_graph(g: &Graph) -> String {
    print_graph_with(
        g,
        &PrintConfig {
            max_data_bytes: usize::MAX,
        },
    )
}

/// Prints the graph, eliding large initializers as configured (for humans).
pub fn print_graph_with(g: &Graph, cfg: &PrintConfig) -> String {
    let mut s = String::new();
    writeln!(s, "graph {} opset {} {{", quote(&g.name), g.opset).unwrap();
    let val = |v: ValueId| -> String {
        match g.ty(v) {
            Some(t) => format!("{}: {}", name(g.name_of(v)), ty(t)),
            None => name(g.name_of(v)),
        }
    };
    for &v in &g.inputs {
        writeln!(s, "  input {}", val(v)).unwrap();
    }
    for (v, t) in &g.initializers {
        let data = if t.bytes().len() > cfg.max_data_bytes {
            format!("<{} bytes>", t.bytes().len())
        } else {
            hex(t.bytes())
        };
        writeln!(
            s,
            "  init {}: {} = {data}",
            name(g.name_of(*v)),
            ty(&ValueType::new(t.dtype(), t.shape()))
        )
        .unwrap();
    }
    for ix in g.topo_order().unwrap_or_default() {
        let n = g.node(ix);
        write!(s, "  node {} {}", quote(&n.name), n.op).unwrap();
        if !n.attrs.is_empty() {
            let attrs: Vec<String> = n
                .attrs
                .iter()
                .map(|(k, a)| format!("{k}={}", attr(a)))
                .collect();
            write!(s, "[{}]", attrs.join(", ")).unwrap();
        }
        let ins: Vec<String> = n
            .inputs
            .iter()
            .map(|i| i.map(|v| name(g.name_of(v))).unwrap_or_else(|| "_".into()))
            .collect();
        let outs: Vec<String> = n.outputs.iter().map(|&v| val(v)).collect();
        writeln!(s, "({}) -> ({})", ins.join(", "), outs.join(", ")).unwrap();
    }
    for &v in &g.outputs {
        writeln!(s, "  output {}", name(g.name_of(v))).unwrap();
    }
    s.push_str("}\n");
    s
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Hex(Vec<u8>),
    Num(String),
    Punct(char),
    Arrow,
}

struct Lexer {
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

fn lex(src: &str) -> Result<Lexer> {
    let mut toks = Vec::new();
    let cs: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut line = 1;
    let perr = |line: usize, msg: String| IrError::Parse { line, msg };
    while i < cs.len() {
        let c = cs[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            while i < cs.len() && cs[i] != '\n' {
                i += 1;
            }
        } else if c == '-' && cs.get(i + 1) == Some(&'>') {
            toks.push((Tok::Arrow, line));
            i += 2;
        } else if c == '"'
            || (c == 'h'
                && cs.get(i + 1) == Some(&'e')
                && cs.get(i + 2) == Some(&'x')
                && cs.get(i + 3) == Some(&'"'))
        {
            let is_hex = c == 'h';
            i += if is_hex { 4 } else { 1 };
            let mut s = String::new();
            loop {
                let ch = *cs
                    .get(i)
                    .ok_or_else(|| perr(line, "unterminated string".into()))?;
                i += 1;
                match ch {
                    '"' => break,
                    '\\' => {
                        let e = *cs.get(i).ok_or_else(|| perr(line, "bad escape".into()))?;
                        i += 1;
                        match e {
                            '"' | '\\' => s.push(e),
                            'u' => {
                                let close = (i..cs.len())
                                    .find(|&k| cs[k] == '}')
                                    .ok_or_else(|| perr(line, "bad \\u escape".into()))?;
                                let h: String = cs[i + 1..close].iter().collect();
                                let code = u32::from_str_radix(&h, 16)
                                    .ok()
                                    .and_then(char::from_u32)
                                    .ok_or_else(|| perr(line, "bad \\u escape".into()))?;
                                s.push(code);
                                i = close + 1;
                            }
                            _ => return Err(perr(line, format!("unknown escape \\{e}"))),
                        }
                    }
                    ch => s.push(ch),
                }
            }
            if is_hex {
                if !s.len().is_multiple_of(2) {
                    return Err(perr(line, "odd hex length".into()));
                }
                let bytes = (0..s.len())
                    .step_by(2)
                    .map(|k| u8::from_str_radix(&s[k..k + 2], 16))
                    .collect::<std::result::Result<Vec<u8>, _>>()
                    .map_err(|e| perr(line, format!("bad hex: {e}")))?;
                toks.push((Tok::Hex(bytes), line));
            } else {
                toks.push((Tok::Str(s), line));
            }
        } else if c.is_ascii_digit()
            || (c == '-'
                && cs
                    .get(i + 1)
                    .is_some_and(|d| d.is_ascii_digit() || *d == 'i'))
        {
            let st = i;
            i += 1;
            while i < cs.len()
                && (cs[i].is_ascii_alphanumeric()
                    || cs[i] == '.'
                    || ((cs[i] == '-' || cs[i] == '+') && matches!(cs[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
            toks.push((Tok::Num(cs[st..i].iter().collect()), line));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let st = i;
            while i < cs.len() && (cs[i].is_ascii_alphanumeric() || cs[i] == '_') {
                i += 1;
            }
            toks.push((Tok::Ident(cs[st..i].iter().collect()), line));
        } else if "()[]{},:=".contains(c) {
            toks.push((Tok::Punct(c), line));
            i += 1;
        } else {
            return Err(perr(line, format!("unexpected character `{c}`")));
        }
    }
    Ok(Lexer { toks, pos: 0 })
}

impl Lexer {
    fn line(&self) -> usize {
        self.toks
            .get(self.pos)
            .or(self.toks.last())
            .map(|t| t.1)
            .unwrap_or(0)
    }
    fn err<T>(&self, msg: impl Into<String>) -> Result<T> {
        Err(IrError::Parse {
            line: self.line(),
            msg: msg.into(),
        })
    }
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }
    fn next(&mut self) -> Result<Tok> {
        let t = self.toks.get(self.pos).map(|t| t.0.clone());
        self.pos += 1;
        match t {
            Some(t) => Ok(t),
            None => self.err("unexpected end of input"),
        }
    }
    fn punct(&mut self, c: char) -> Result<()> {
        match self.next()? {
            Tok::Punct(p) if p == c => Ok(()),
            t => self.err(format!("expected `{c}`, found {t:?}")),
        }
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn keyword(&mut self, k: &str) -> Result<()> {
        match self.next()? {
            Tok::Ident(s) if s == k => Ok(()),
            t => self.err(format!("expected `{k}`, found {t:?}")),
        }
    }
    fn name(&mut self) -> Result<String> {
        match self.next()? {
            Tok::Ident(s) | Tok::Str(s) => Ok(s),
            t => self.err(format!("expected a name, found {t:?}")),
        }
    }
    fn int(&mut self) -> Result<i64> {
        match self.next()? {
            Tok::Num(s) => s
                .parse()
                .or_else(|_| self.err(format!("bad integer `{s}`"))),
            t => self.err(format!("expected an integer, found {t:?}")),
        }
    }
    fn ty(&mut self) -> Result<ValueType> {
        let d = self.name()?;
        let dtype =
            DType::parse(&d).map_or_else(|| self.err(format!("unknown dtype `{d}`")), Ok)?;
        self.punct('[')?;
        let mut shape = Vec::new();
        while !self.eat(']') {
            if !shape.is_empty() {
                self.punct(',')?;
            }
            match self.next()? {
                Tok::Num(n) => shape.push(Dim::Known(
                    n.parse()
                        .or_else(|_| self.err(format!("bad dimension `{n}`")))?,
                )),
                Tok::Ident(s) | Tok::Str(s) => shape.push(Dim::Sym(s)),
                t => return self.err(format!("bad dimension {t:?}")),
            }
        }
        Ok(ValueType { dtype, shape })
    }
    fn tensor_data(&mut self, t: &ValueType) -> Result<Tensor> {
        let shape = t
            .static_shape()
            .map_or_else(|| self.err("initializer shapes must be static"), Ok)?;
        match self.next()? {
            Tok::Hex(b) => Tensor::from_bytes(t.dtype, shape, b).map_err(|e| IrError::Parse {
                line: self.line(),
                msg: e.to_string(),
            }),
            tok => self.err(format!("expected hex data, found {tok:?}")),
        }
    }
    fn float_tok(&self, s: &str) -> Result<f64> {
        match s {
            "nan" => Ok(f64::NAN),
            "inf" => Ok(f64::INFINITY),
            "-inf" => Ok(f64::NEG_INFINITY),
            _ => s.parse().or_else(|_| self.err(format!("bad number `{s}`"))),
        }
    }
    fn attr(&mut self) -> Result<Attr> {
        match self.next()? {
            Tok::Num(s) if s.contains(['.', 'e', 'E']) || s.contains("inf") => {
                Ok(Attr::Float(self.float_tok(&s)?))
            }
            Tok::Num(s) => Ok(Attr::Int(
                s.parse().or_else(|_| self.err(format!("bad int `{s}`")))?,
            )),
            Tok::Ident(s) if s == "nan" || s == "inf" => Ok(Attr::Float(self.float_tok(&s)?)),
            Tok::Str(s) => Ok(Attr::Str(s)),
            Tok::Ident(s) if s == "ints" || s == "floats" => {
                self.punct('(')?;
                let mut items = Vec::new();
                while !self.eat(')') {
                    if !items.is_empty() {
                        self.punct(',')?;
                    }
                    match self.next()? {
                        Tok::Num(n) | Tok::Ident(n) => items.push(n),
                        t => return self.err(format!("bad list item {t:?}")),
                    }
                }
                if s == "ints" {
                    Ok(Attr::Ints(
                        items
                            .iter()
                            .map(|n| n.parse().or_else(|_| self.err(format!("bad int `{n}`"))))
                            .collect::<Result<_>>()?,
                    ))
                } else {
                    Ok(Attr::Floats(
                        items
                            .iter()
                            .map(|n| self.float_tok(n))
                            .collect::<Result<_>>()?,
                    ))
                }
            }
            Tok::Ident(s) if s == "graph" => {
                self.pos -= 1;
                Ok(Attr::Graph(crate::op::SubGraph(Box::new(graph_at(self)?))))
            }
            Tok::Ident(s) if s == "tensor" => {
                self.punct('(')?;
                let t = self.ty()?;
                self.punct(',')?;
                let data = self.tensor_data(&t)?;
                self.punct(')')?;
                Ok(Attr::Tensor(data))
            }
            t => self.err(format!("bad attribute value {t:?}")),
        }
    }
    /// `name` or `name: type`
    fn value_decl(&mut self, g: &mut Graph) -> Result<ValueId> {
        let n = self.name()?;
        let v = g.value(&n);
        if self.eat(':') {
            let t = self.ty()?;
            g.set_ty(v, t);
        }
        Ok(v)
    }
}

/// Parses the text form printed by [`print_graph`].
pub fn parse_graph(src: &str) -> Result<Graph> {
    let mut lx = lex(src)?;
    let g = graph_at(&mut lx)?;
    if lx.peek().is_some() {
        return lx.err("trailing text after the graph");
    }
    Ok(g)
}

/// Parses one `graph … { … }` at the lexer's position (also a subgraph attribute).
fn graph_at(lx: &mut Lexer) -> Result<Graph> {
    lx.keyword("graph")?;
    let gname = lx.name()?;
    let mut g = Graph::new(gname);
    lx.keyword("opset")?;
    g.opset = lx.int()?;
    lx.punct('{')?;
    loop {
        match lx.next()? {
            Tok::Punct('}') => break,
            Tok::Ident(k) if k == "input" => {
                let n = lx.name()?;
                lx.punct(':')?;
                let t = lx.ty()?;
                g.add_input(&n, t);
            }
            Tok::Ident(k) if k == "init" => {
                let n = lx.name()?;
                lx.punct(':')?;
                let t = lx.ty()?;
                lx.punct('=')?;
                let data = lx.tensor_data(&t)?;
                g.add_initializer(&n, data);
            }
            Tok::Ident(k) if k == "output" => {
                let n = lx.name()?;
                let v = g
                    .lookup(&n)
                    .map_or_else(|| lx.err(format!("output `{n}` is not defined")), Ok)?;
                g.outputs.push(v);
            }
            Tok::Ident(k) if k == "node" => {
                let nname = lx.name()?;
                let opname = lx.name()?;
                let op = OpKind::parse(&opname)
                    .map_or_else(|| lx.err(format!("unknown op `{opname}`")), Ok)?;
                let mut attrs = Attrs::new();
                if lx.eat('[') {
                    while !lx.eat(']') {
                        if !attrs.is_empty() {
                            lx.punct(',')?;
                        }
                        let k = lx.name()?;
                        lx.punct('=')?;
                        let a = lx.attr()?;
                        attrs.insert(k, a);
                    }
                }
                lx.punct('(')?;
                let mut inputs = Vec::new();
                while !lx.eat(')') {
                    if !inputs.is_empty() {
                        lx.punct(',')?;
                    }
                    let n = lx.name()?;
                    if n == "_" {
                        inputs.push(None);
                    } else {
                        let v = g.lookup(&n).map_or_else(
                            || lx.err(format!("node `{nname}` uses undefined value `{n}`")),
                            Ok,
                        )?;
                        inputs.push(Some(v));
                    }
                }
                match lx.next()? {
                    Tok::Arrow => {}
                    t => return lx.err(format!("expected `->`, found {t:?}")),
                }
                lx.punct('(')?;
                let mut outputs = Vec::new();
                while !lx.eat(')') {
                    if !outputs.is_empty() {
                        lx.punct(',')?;
                    }
                    outputs.push(lx.value_decl(&mut g)?);
                }
                g.add_node(Node {
                    name: nname,
                    op,
                    attrs,
                    inputs,
                    outputs,
                });
            }
            t => return lx.err(format!("expected input/init/node/output, found {t:?}")),
        }
    }
    Ok(g)
}

/// The graph as Graphviz DOT: one box per node (op and name), one ellipse per graph input,
/// edges labelled with value names and types.
pub fn to_dot(g: &Graph) -> String {
    let mut s =
        String::from("digraph tessera {\n  rankdir=TB;\n  node [fontname=\"monospace\"];\n");
    let label = |v: ValueId| match g.ty(v) {
        Some(t) => format!("{}: {}", g.name_of(v), ty(t)),
        None => g.name_of(v).to_string(),
    };
    let esc = |x: &str| x.replace('\\', "\\\\").replace('"', "\\\"");
    for &v in &g.inputs {
        writeln!(
            s,
            "  \"v{}\" [shape=ellipse, label=\"{}\"];",
            v.0,
            esc(&label(v))
        )
        .unwrap();
    }
    let mut producer = std::collections::HashMap::new();
    for (ix, n) in g.nodes() {
        let fused = match n.attrs.get("body") {
            Some(Attr::Graph(b)) => format!(
                "\\n[{}]",
                b.0.nodes()
                    .map(|(_, m)| m.op.name())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            _ => String::new(),
        };
        writeln!(
            s,
            "  \"n{}\" [shape=box, label=\"{}\\n{}{}\"];",
            ix.index(),
            n.op,
            esc(&n.name),
            fused
        )
        .unwrap();
        for &o in &n.outputs {
            producer.insert(o, ix.index());
        }
    }
    for (ix, n) in g.nodes() {
        for i in n.inputs.iter().flatten() {
            if g.initializers.contains_key(i) {
                continue;
            }
            let from = match producer.get(i) {
                Some(p) => format!("n{p}"),
                None => format!("v{}", i.0),
            };
            writeln!(
                s,
                "  \"{from}\" -> \"n{}\" [label=\"{}\"];",
                ix.index(),
                esc(&label(*i))
            )
            .unwrap();
        }
    }
    for (k, &v) in g.outputs.iter().enumerate() {
        writeln!(
            s,
            "  \"out{k}\" [shape=ellipse, label=\"output {}\"];",
            esc(g.name_of(v))
        )
        .unwrap();
        if let Some(p) = producer.get(&v) {
            writeln!(s, "  \"n{p}\" -> \"out{k}\";").unwrap();
        }
    }
    s.push_str("}\n");
    s
}
