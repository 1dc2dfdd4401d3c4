//! Reductions: `scf.for` loops carrying the accumulator in `iter_args`, and reductions
//! annotated `vectorize(w)` folded `w` lanes at a time.
//!
//! Inside a vector loop a reduction's accumulator is a vector, one partial result per lane of
//! that loop. Outside one, a `vectorize(w)` reduction runs its innermost axis `w` values a
//! step into a vector of partial results that starts at the fold's identity; a masked step
//! takes the remainder (masked-off lanes contribute the identity); one `vector.reduction`
//! folds the lanes, and the result is combined with `init`. A float sum so reassociated
//! rounds differently from the interpreter's left-to-right order, within the oracle's
//! reduction tolerance.

use super::{
    Backend, Em, NO_SIGNED_ZEROS, Vec_, int_division, lane_value_ok, scalar_ty, ty, unsigned,
};
use crate::error::CodegenError;
use tessera_ir::DType;
use tessera_ir::loops::{Lit, Reduce, ReduceOp};

impl Em<'_> {
    pub(super) fn reduce(&mut self, r: &Reduce) -> Result<(), CodegenError> {
        // Inside a vector loop the accumulator is a vector: one partial result per lane.
        let lanes = self.vec.as_ref().map(|v| v.width);
        let t = ty(r.dtype, lanes);
        let init = self.vexpr(&r.init)?;
        let result = match self.reduce_lanes(r) {
            Some(w) => self.lane_reduce(r, w, &init)?,
            None => self.reduce_axes(r, 0, &init, &t)?,
        };
        self.accs.push((r.acc.clone(), result, lanes.is_some()));
        for s in &r.body {
            self.stmt(s)?;
        }
        self.accs.pop();
        Ok(())
    }

    fn reduce_axes(
        &mut self,
        r: &Reduce,
        k: usize,
        acc_in: &str,
        t: &str,
    ) -> Result<String, CodegenError> {
        if k == r.axes.len() {
            let v = self.vexpr(&r.value)?;
            let (op, flags) = (fold_op(r.op, r.dtype).0, fold_flags(r.op, r.dtype));
            return Ok(self.op(format!("{op} {acc_in}, {v}{flags} : {t}")));
        }
        let (var, extent) = &r.axes[k];
        self.carried_for(var, (*extent, 1), acc_in, t, |s, acc| {
            s.reduce_axes(r, k + 1, acc, t)
        })
    }

    /// `scf.for var = 0 to end step step` carrying one value of type `t` from `acc_in`;
    /// `body` emits an iteration and returns the value carried to the next. Returns the
    /// final value.
    fn carried_for(
        &mut self,
        var: &str,
        (end, step): (i64, i64),
        acc_in: &str,
        t: &str,
        body: impl FnOnce(&mut Self, &str) -> Result<String, CodegenError>,
    ) -> Result<String, CodegenError> {
        let (lo, hi, step) = (
            self.index_const(0),
            self.index_const(end),
            self.index_const(step),
        );
        let (iv, acc, res) = (self.fresh(), self.fresh(), self.fresh());
        self.line(format!(
            "{res} = scf.for {iv} = {lo} to {hi} step {step} iter_args({acc} = {acc_in}) -> ({t}) {{"
        ));
        self.depth += 1;
        self.idx.insert(var.to_string(), iv);
        let next = body(self, &acc)?;
        self.line(format!("scf.yield {next} : {t}"));
        self.idx.remove(var);
        self.depth -= 1;
        self.line("}".into());
        Ok(res)
    }

    /// The width of a reduction folded lane by lane: annotated `vectorize(w)`, not inside a
    /// vector loop (there it already folds one accumulator per lane), on the CPU, and with a
    /// value computable lane by lane along the innermost axis that may also run on the
    /// masked-off lanes of a tail. Otherwise the fold stays scalar: never a change of meaning.
    fn reduce_lanes(&self, r: &Reduce) -> Option<u32> {
        let w = r.vectorize.filter(|&w| w > 1)?;
        let (var, _) = r.axes.last()?;
        (self.vec.is_none()
            && self.cfg.backend == Backend::Cpu
            && r.dtype != DType::Bool
            && lane_value_ok(self.prog, &r.value, var)
            && !int_division(self.prog, &r.value))
        .then_some(w)
    }

    /// A reduction whose innermost axis runs `w` values at a time into a vector of partial
    /// results (starting from the fold's identity), folded into one value at the end and
    /// then combined with `init`.
    fn lane_reduce(&mut self, r: &Reduce, w: u32, init: &str) -> Result<String, CodegenError> {
        let (st, vt) = (scalar_ty(r.dtype), ty(r.dtype, Some(w)));
        let identity = self.constant(identity(r.op, r.dtype), r.dtype);
        let identity = self.op(format!("vector.broadcast {identity} : {st} to {vt}"));
        let partial = self.lane_reduce_axes(r, 0, &identity, &identity, w)?;
        let (op, kind) = fold_op(r.op, r.dtype);
        // `reassoc`: the lanes fold as a tree, not one after another.
        let flags = match (r.dtype.is_float(), r.op) {
            (false, _) => "",
            (true, ReduceOp::Max | ReduceOp::Min) => " fastmath<reassoc,nsz>",
            (true, _) => " fastmath<reassoc>",
        };
        let folded = self.op(format!(
            "vector.reduction <{kind}>, {partial}{flags} : {vt} into {st}"
        ));
        let flags = fold_flags(r.op, r.dtype);
        Ok(self.op(format!("{op} {init}, {folded}{flags} : {st}")))
    }

    /// The loops of [`Self::lane_reduce`]: outer axes carry the vector of partial results;
    /// the innermost runs `w` lanes a step, then once more masked for its remainder (the
    /// masked-off lanes contribute the identity).
    fn lane_reduce_axes(
        &mut self,
        r: &Reduce,
        k: usize,
        acc_in: &str,
        identity: &str,
        w: u32,
    ) -> Result<String, CodegenError> {
        let vt = ty(r.dtype, Some(w));
        let (var, extent) = r.axes[k].clone();
        let (op, flags) = (fold_op(r.op, r.dtype).0, fold_flags(r.op, r.dtype));
        if k + 1 < r.axes.len() {
            return self.carried_for(&var, (extent, 1), acc_in, &vt, |s, acc| {
                s.lane_reduce_axes(r, k + 1, acc, identity, w)
            });
        }
        let main = extent - extent % w as i64;
        let mut partial = acc_in.to_string();
        if main > 0 {
            partial = self.carried_for(&var, (main, w as i64), acc_in, &vt, |s, acc| {
                s.vec = Some(Vec_ {
                    var: var.clone(),
                    width: w,
                    mask: None,
                    active: None,
                });
                let v = s.vexpr(&r.value);
                s.vec = None;
                let v = v?;
                Ok(s.op(format!("{op} {acc}, {v}{flags} : {vt}")))
            })?;
        }
        if main < extent {
            let (start, rem) = (self.index_const(main), self.index_const(extent - main));
            let mask = self.op(format!("vector.create_mask {rem} : vector<{w}xi1>"));
            self.idx.insert(var.clone(), start);
            self.vec = Some(Vec_ {
                var: var.clone(),
                width: w,
                mask: Some(mask.clone()),
                active: Some(rem),
            });
            let v = self.vexpr(&r.value);
            self.vec = None;
            self.idx.remove(&var);
            let v = v?;
            let kept = match tessera_ir::planted::active(tessera_ir::planted::Bug::LaneFoldIdentity)
            {
                true => v,
                false => self.op(format!(
                    "arith.select {mask}, {v}, {identity} : vector<{w}xi1>, {vt}"
                )),
            };
            partial = self.op(format!("{op} {partial}, {kept}{flags} : {vt}"));
        }
        Ok(partial)
    }
}

/// The `arith` operation that folds one value into a reduction's accumulator, and the
/// `vector.reduction` kind that folds a vector's lanes the same way.
fn fold_op(op: ReduceOp, d: DType) -> (&'static str, &'static str) {
    match (op, d.is_float()) {
        (ReduceOp::Sum, true) => ("arith.addf", "add"),
        (ReduceOp::Sum, false) => ("arith.addi", "add"),
        (ReduceOp::Max, true) => ("arith.maximumf", "maximumf"),
        (ReduceOp::Min, true) => ("arith.minimumf", "minimumf"),
        (ReduceOp::Max, false) if unsigned(d) => ("arith.maxui", "maxui"),
        (ReduceOp::Min, false) if unsigned(d) => ("arith.minui", "minui"),
        (ReduceOp::Max, false) => ("arith.maxsi", "maxsi"),
        (ReduceOp::Min, false) => ("arith.minsi", "minsi"),
        (ReduceOp::Prod, true) => ("arith.mulf", "mul"),
        (ReduceOp::Prod, false) => ("arith.muli", "mul"),
    }
}

/// The fast-math flags of [`fold_op`]: float max and min ignore the sign of zero, float sums
/// may contract a product into an FMA.
fn fold_flags(op: ReduceOp, d: DType) -> &'static str {
    match op {
        ReduceOp::Max | ReduceOp::Min if d.is_float() => NO_SIGNED_ZEROS,
        // A sum of products (a small matrix product, a short convolution's channels) folds
        // each product in with one FMA — one rounding instead of two, as in `vexpr`'s sums.
        ReduceOp::Sum if d.is_float() => " fastmath<contract>",
        _ => "",
    }
}

/// The value that leaves a fold unchanged: a lane that has seen nothing yet starts there.
fn identity(op: ReduceOp, d: DType) -> Lit {
    let (lowest, highest) = match d {
        DType::I64 => (i64::MIN, i64::MAX),
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        DType::I8 => (i8::MIN as i64, i8::MAX as i64),
        _ => (0, u8::MAX as i64),
    };
    match op {
        ReduceOp::Sum => Lit::I(0),
        ReduceOp::Prod => Lit::I(1),
        ReduceOp::Max if d.is_float() => Lit::F(f64::NEG_INFINITY),
        ReduceOp::Min if d.is_float() => Lit::F(f64::INFINITY),
        ReduceOp::Max => Lit::I(lowest),
        ReduceOp::Min => Lit::I(highest),
    }
}
