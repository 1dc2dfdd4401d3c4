//! Conv and ConvTranspose as loop nests: the direct forms (outputs in registers across a
//! short channel reduction, or whole rows streamed over a long one), the convolution as a
//! matrix product for the tiled schedules, and the transposed convolution in gather form.

use super::window::{Axis, RowPass, Span, Window2, chained};
use super::{Builder, NodeCx, clamp, idx, in_range, serial_for};
use crate::error::PassError;
use crate::product::{ConvGeometry, ProductSpec, RowBlocks, accumulation_dtype, convert};
use tessera_ir::AttrsExt;
use tessera_ir::infer::Window;
use tessera_ir::loops::simplify::simplify_value;
use tessera_ir::loops::{BinOp, CmpOp, IExpr, Reduce, ReduceOp, Stmt, VExpr};

fn add(a: VExpr, b: VExpr) -> VExpr {
    VExpr::bin(BinOp::Add, a, b)
}
fn mul(a: VExpr, b: VExpr) -> VExpr {
    VExpr::bin(BinOp::Mul, a, b)
}

/// The geometry of a 2-D convolution node, shared by both loop structures.
#[derive(Clone, Copy)]
struct ConvShape {
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    /// Input channels per group.
    cpg: usize,
    kh: usize,
    kw: usize,
    nb: usize,
    oh: usize,
    ow: usize,
    /// Output channels per group.
    opg: usize,
    sy: i64,
    sx: i64,
    dy: i64,
    dx: i64,
    py: i64,
    px: i64,
    /// The weight buffer holds the weight in blocks of this many output channels, k-major
    /// within each (`[cout / rows, cpg·kh·kw, rows]`, one group); 0: as ONNX stores it.
    row_blocks: i64,
}

impl ConvShape {
    /// Index of weight `(co, ci, ky, kx)` (`ci` within the group) in its buffer.
    fn w_at(&self, co: IExpr, ci: IExpr, ky: IExpr, kx: IExpr) -> IExpr {
        let k = ci
            .times(self.kh as i64)
            .plus(ky)
            .times(self.kw as i64)
            .plus(kx);
        self.w_at_k(co, k)
    }

    /// Index of weight `(co, k)`, `k = (ci, ky, kx)` flattened, in its buffer.
    fn w_at_k(&self, co: IExpr, k: IExpr) -> IExpr {
        let k_len = (self.cpg * self.kh * self.kw) as i64;
        match self.row_blocks {
            0 => co.times(k_len).plus(k),
            rows => co
                .clone()
                .floordiv(rows)
                .times(k_len)
                .plus(k)
                .times(rows)
                .plus(co.modulo(rows)),
        }
    }

    fn of(cx: &NodeCx) -> Result<ConvShape, PassError> {
        let (xs, ws) = (cx.shape(0), cx.shape(1));
        let (h, w) = (xs[2], xs[3]);
        let group = cx.node.attrs.int("group", 1).map_err(|e| cx.err(e))? as usize;
        let win =
            Window::from_node(cx.node, &[h, w], Some(&[ws[2], ws[3]])).map_err(|e| cx.err(e))?;
        Ok(ConvShape {
            cin: xs[1],
            h,
            w,
            cout: ws[0],
            cpg: ws[1],
            kh: ws[2],
            kw: ws[3],
            nb: cx.out_shape[0],
            oh: cx.out_shape[2],
            ow: cx.out_shape[3],
            opg: ws[0] / group,
            sy: win.strides[0] as i64,
            sx: win.strides[1] as i64,
            dy: win.dilations[0] as i64,
            dx: win.dilations[1] as i64,
            py: win.pads[0] as i64,
            px: win.pads[1] as i64,
            row_blocks: cx.weight_row_blocks,
        })
    }

    /// The window over the output plane, for the direct lowering.
    fn window(&self) -> Window2 {
        let axis = |size, out, kernel, stride, dilation, pad| Axis {
            size,
            out,
            kernel,
            stride,
            dilation,
            pad,
        };
        Window2 {
            rows: axis(self.h, self.oh, self.kh, self.sy, self.dy, self.py),
            cols: axis(self.w, self.ow, self.kw, self.sx, self.dx, self.px),
        }
    }
}

/// Direct 2-D convolution (NCHW, groups, strides, pads, dilations).
///
/// Two loop structures, picked by the length of the channel reduction: short reductions keep
/// each output's sum in a (vector) register across channels and taps ([`conv_columns`]); long
/// ones stream whole output rows, one channel and tap at a time ([`conv_rows`]), which walks
/// memory in order. Both unroll the kernel taps at compile time so the inner loops need no
/// bounds checks. Register-tiled convolution is the autotuner's job.
pub(crate) fn conv(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    /// Channels per group up to which the register-accumulating form is used.
    const SHORT_REDUCTION: usize = 32;
    // Half-precision sums are kept in f32 registers (`accumulation_dtype`), never in the
    // output row.
    let half = accumulation_dtype(cx.out_dtype) != cx.out_dtype;
    let body = if cx.shape(1)[1] <= SHORT_REDUCTION || half {
        conv_columns(cx, b)?
    } else {
        conv_rows(cx, b)?
    };
    b.product = Some(conv_product(cx, b)?);
    Ok(body)
}

/// A convolution as a matrix product, per image and group: rows are the group's output
/// channels, columns the output pixels, the reduction runs over (input channel, tap row, tap
/// column). `A` is the weight tensor as it is stored (`[cout, cpg*kh*kw]`); `B(k, pixel)` is
/// the input under that tap, zero in the padding — packing `B` is im2col, one panel at a time.
fn conv_product(cx: &NodeCx, b: &mut Builder) -> Result<ProductSpec, PassError> {
    let g = ConvShape::of(cx)?;
    let group = (g.cout / g.opg.max(1)) as i64;
    let (taps, pixels) = ((g.kh * g.kw) as i64, (g.oh * g.ow) as i64);
    let kdim = g.cpg as i64 * taps;
    // The input as geometry (for panels packed row by row), in its own variables: batch,
    // channel within the group, input row and column.
    let xvars = [b.var(), b.var(), b.var(), b.var()];
    let [xb, xc, xy, xx] = xvars.clone().map(|v| IExpr::var(&v));
    let x_channel = xb
        .clone()
        .floordiv(group)
        .times(g.cin as i64)
        .plus(xb.modulo(group).times(g.cpg as i64))
        .plus(xc);
    let geometry = ConvGeometry {
        oh: g.oh as i64,
        ow: g.ow as i64,
        h: g.h as i64,
        w: g.w as i64,
        kh: g.kh as i64,
        kw: g.kw as i64,
        stride: [g.sy, g.sx],
        dilation: [g.dy, g.dx],
        pad: [g.py, g.px],
        vars: xvars,
        x: VExpr::load(
            cx.buf(0),
            x_channel
                .times(g.h as i64)
                .plus(xy)
                .times(g.w as i64)
                .plus(xx),
        ),
    };
    let vars = [b.var(), b.var(), b.var(), b.var()];
    let [bi, i, j, k] = vars.clone().map(|v| IExpr::var(&v));
    let (img, grp) = (bi.clone().floordiv(group), bi.clone().modulo(group));
    let co = grp.times(g.opg as i64).plus(i.clone());
    let (oy, ox) = (
        j.clone().floordiv(g.ow as i64),
        j.clone().modulo(g.ow as i64),
    );
    let (ky, kx) = (
        k.clone().floordiv(g.kw as i64).modulo(g.kh as i64),
        k.clone().modulo(g.kw as i64),
    );
    let iy = oy
        .clone()
        .times(g.sy)
        .plus(ky.times(g.dy))
        .plus(IExpr::c(-g.py));
    let ix = ox
        .clone()
        .times(g.sx)
        .plus(kx.times(g.dx))
        .plus(IExpr::c(-g.px));
    // `B(k, j)` reads the geometry's input at channel `k // taps` of the product's batch.
    let x_at = |iy: IExpr, ix: IExpr| {
        let [vb, vc, vy, vx] = &geometry.vars;
        let channel = k.clone().floordiv(taps);
        geometry
            .x
            .subst(vb, &bi)
            .subst(vc, &channel)
            .subst(vy, &iy)
            .subst(vx, &ix)
    };
    // Taps can leave the image only along an axis with padding (or a window that overhangs
    // the end): only there do they need a guard and a clamped address. Without any, the
    // index simplifies (a 1×1 convolution reads `x[ci·h·w + j]`, contiguous in the pixel).
    let (guard_y, guard_x) = (geometry.can_leave(0), geometry.can_leave(1));
    let x = match (guard_y, guard_x) {
        (false, false) => simplify_value(&x_at(iy, ix)),
        _ => {
            let (cond_y, at_y) = match guard_y {
                true => (Some(in_range(iy.clone(), g.h)), clamp(iy, g.h)),
                false => (None, iy),
            };
            let (cond_x, at_x) = match guard_x {
                true => (Some(in_range(ix.clone(), g.w)), clamp(ix, g.w)),
                false => (None, ix),
            };
            let cond = match (cond_y, cond_x) {
                (Some(a), Some(b)) => VExpr::bin(BinOp::And, a, b),
                (Some(c), None) | (None, Some(c)) => c,
                (None, None) => unreachable!("some axis is guarded"),
            };
            VExpr::select(
                cond,
                simplify_value(&x_at(at_y, at_x)),
                VExpr::lit(0.0, cx.out_dtype),
            )
        }
    };
    let c_index = bi
        .clone()
        .times(g.opg as i64 * pixels)
        .plus(i.clone().times(pixels))
        .plus(j.clone());
    let init = match cx.has(2) {
        true => VExpr::load(cx.buf(2), co.clone()),
        false => VExpr::lit(0.0, cx.out_dtype),
    };
    Ok(ProductSpec {
        batch: g.nb as i64 * group,
        m: g.opg as i64,
        n: pixels,
        k: kdim,
        out: cx.out.clone(),
        dtype: cx.out_dtype,
        vars,
        c_index: c_index.clone(),
        a: VExpr::load(cx.buf(1), g.w_at_k(co.clone(), k)),
        b: x,
        init,
        finish: cx
            .epilogue
            .map(|epi| epi(VExpr::load(&cx.out, c_index), &[img, co, oy, ox])),
        conv: Some(geometry),
        a_blocks: (g.row_blocks > 0).then(|| RowBlocks {
            buf: cx.buf(1).to_string(),
            rows: g.row_blocks,
        }),
    })
}

/// Convolution that accumulates whole output rows in memory (for long channel reductions).
///
/// The kernel taps are unrolled at compile time: for each tap `(ky, kx)` the range of output
/// columns whose input column lies inside the image is computed statically, so the innermost
/// loop has no bounds checks and, at stride 1, walks input and output contiguously (it
/// vectorizes). Rows are guarded by an `if` only when padding can put them outside the image.
fn conv_rows(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let g = ConvShape::of(cx)?;
    let ConvShape {
        cin,
        h,
        w,
        cout,
        cpg,
        kh,
        kw,
        nb,
        oh,
        ow,
        opg,
        sy,
        sx,
        dy,
        dx,
        py,
        px,
        ..
    } = g;
    let dt = cx.out_dtype;
    let (nv, cov, ohv, owv, civ) = (b.var(), b.var(), b.var(), b.var(), b.var());
    let v = IExpr::var;
    let row = |owi: IExpr| {
        v(&nv)
            .times(cout as i64)
            .plus(v(&cov))
            .times(oh as i64)
            .plus(v(&ohv))
            .times(ow as i64)
            .plus(owi)
    };
    let init = match cx.has(2) {
        true => VExpr::load(cx.buf(2), v(&cov)),
        false => VExpr::lit(0.0, dt),
    };
    let chan = v(&cov).floordiv(opg as i64).times(cpg as i64).plus(v(&civ));
    let mut taps = Vec::new();
    for ky in 0..kh as i64 {
        // Input row of this tap; guard it unless every output row maps inside the image.
        let iy = v(&ohv).times(sy).plus(IExpr::c(ky * dy - py));
        let first = ky * dy - py;
        let last = (oh as i64 - 1) * sy + ky * dy - py;
        let row_always_inside = first >= 0 && last < h as i64;
        if last < 0 || first >= h as i64 {
            continue; // no output row ever reads this tap row
        }
        let mut row_body = Vec::new();
        for kx in 0..kw as i64 {
            let off = kx * dx - px;
            let (lo, hi) = g.window().cols.valid(kx);
            if lo >= hi {
                continue;
            }
            let j = b.var();
            let ox = v(&j).plus(IExpr::c(lo));
            let ix = ox.clone().times(sx).plus(IExpr::c(off));
            let x_idx = v(&nv)
                .times(cin as i64)
                .plus(chan.clone())
                .times(h as i64)
                .plus(iy.clone())
                .times(w as i64)
                .plus(ix);
            let w_idx = g.w_at(v(&cov), v(&civ), IExpr::c(ky), IExpr::c(kx));
            let acc = Stmt::Store {
                buf: cx.out.clone(),
                index: row(ox.clone()),
                value: add(
                    VExpr::load(&cx.out, row(ox)),
                    mul(VExpr::load(cx.buf(1), w_idx), VExpr::load(cx.buf(0), x_idx)),
                ),
            };
            row_body.push(serial_for(&j, (hi - lo) as usize, vec![acc]));
        }
        if row_body.is_empty() {
            continue;
        }
        if row_always_inside {
            taps.extend(row_body);
        } else {
            let inside = in_range(iy, h);
            taps.push(Stmt::If {
                cond: inside,
                then: row_body,
            });
        }
    }
    let mut body = vec![serial_for(
        &owv,
        ow,
        vec![Stmt::Store {
            buf: cx.out.clone(),
            index: row(v(&owv)),
            value: init,
        }],
    )];
    if !taps.is_empty() {
        body.push(serial_for(&civ, cpg, taps));
    }
    if let Some(epi) = cx.epilogue {
        // The row is final: rewrite it in place while it is in cache.
        let e = b.var();
        let coords = [v(&nv), v(&cov), v(&ohv), v(&e)];
        body.push(serial_for(
            &e,
            ow,
            vec![Stmt::Store {
                buf: cx.out.clone(),
                index: row(v(&e)),
                value: epi(VExpr::load(&cx.out, row(v(&e))), &coords),
            }],
        ));
    }
    Ok(vec![serial_for(
        &nv,
        nb,
        vec![serial_for(&cov, cout, vec![serial_for(&ohv, oh, body)])],
    )])
}

/// Convolution that keeps each output element's sum in a register (for short channel
/// reductions).
///
/// Each output element is a reduction over input channels of the sum over the (unrolled)
/// taps, so the accumulator stays in a register, and the column loop vectorizes (one vector
/// accumulator per group of columns). The window's loops and tap checks are
/// [`Window2::plane`]'s: border rows with only their valid taps, rows as one loop of columns
/// whose taps that can reach the padding read through a check (masked loads in vector code).
fn conv_columns(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let g = ConvShape::of(cx)?;
    let ConvShape {
        cin,
        h,
        w,
        cout,
        cpg,
        nb,
        oh,
        ow,
        opg,
        ..
    } = g;
    let dt = cx.out_dtype;
    let acc_dt = accumulation_dtype(dt);
    let widen = |v: VExpr| convert(v, dt, acc_dt);
    let (nv, cov) = (b.var(), b.var());
    let v = IExpr::var;
    let init = if cx.has(2) {
        VExpr::load(cx.buf(2), v(&cov))
    } else {
        VExpr::lit(0.0, dt)
    };
    // A depthwise convolution has no channel sum: each output is the bias plus its taps,
    // and one column loop computes `DEPTHWISE_ROWS` output rows, sharing their input rows.
    let depthwise = cpg == 1;
    let out_index = |oy: &Span, ox: &Span| {
        v(&nv)
            .times(cout as i64)
            .plus(v(&cov))
            .times(oh as i64)
            .plus(oy.at.clone())
            .times(ow as i64)
            .plus(ox.at.clone())
    };
    // The epilogue of an output whose sum is already stored.
    let finish_in_place = |epi: &super::Epilogue, oy: &Span, ox: &Span| {
        let index = out_index(oy, ox);
        let coords = [v(&nv), v(&cov), oy.at.clone(), ox.at.clone()];
        Stmt::Store {
            buf: cx.out.clone(),
            index: index.clone(),
            value: epi(VExpr::load(&cx.out, index), &coords),
        }
    };
    let output = |b: &mut Builder, oy: &Span, ox: &Span, deferred: bool| {
        let ci = match depthwise {
            true => None,
            false => Some(b.var()),
        };
        let ci_at = ci.as_deref().map_or(IExpr::c(0), v);
        let chan = v(&cov)
            .floordiv(opg as i64)
            .times(cpg as i64)
            .plus(ci_at.clone());
        let terms = g.window().taps(oy, ox).into_iter().map(|t| {
            let x_idx = v(&nv)
                .times(cin as i64)
                .plus(chan.clone())
                .times(h as i64)
                .plus(t.iy.clone())
                .times(w as i64)
                .plus(t.ix.clone());
            let w_idx = g.w_at(v(&cov), ci_at.clone(), IExpr::c(t.ky), IExpr::c(t.kx));
            let x = t.guard(VExpr::load(cx.buf(0), x_idx), VExpr::lit(0.0, dt));
            mul(widen(VExpr::load(cx.buf(1), w_idx)), widen(x))
        });
        let index = out_index(oy, ox);
        let coords = [v(&nv), v(&cov), oy.at.clone(), ox.at.clone()];
        let finish = |x: VExpr| match cx.epilogue {
            Some(epi) if !deferred => epi(x, &coords),
            _ => x,
        };
        // A sum (in `acc_dt`) stored in the output's dtype.
        let store = |sum| Stmt::Store {
            buf: cx.out.clone(),
            index: index.clone(),
            value: finish(convert(sum, acc_dt, dt)),
        };
        match (ci, chained(terms.collect(), BinOp::Add)) {
            (Some(ci), Some(value)) => Stmt::Reduce(Reduce {
                acc: "s".into(),
                dtype: acc_dt,
                op: ReduceOp::Sum,
                init: widen(init.clone()),
                axes: vec![(ci, cpg as i64)],
                value,
                body: vec![store(VExpr::Acc("s".into(), acc_dt))],
                vectorize: None,
            }),
            (None, Some(value)) => store(add(widen(init.clone()), value)),
            // Every tap reads padding: the output is the bias.
            (_, None) => store(widen(init.clone())),
        }
    };
    let rows_per_step = if depthwise { DEPTHWISE_ROWS } else { 1 };
    let finish_at = match cx.epilogue {
        None => FinishAt::EachOutput,
        Some(epi) => FinishAt::of(epi, depthwise && b.cfg.split_border_rows, oh * ow, dt),
    };
    let mut element = |b: &mut Builder, oys: &[Span], ox: &Span, pass: RowPass| {
        let deferred = match finish_at {
            FinishAt::EachOutput => None,
            // Rows computed together store their sums, and their epilogue runs over them next.
            FinishAt::EachStep => cx.epilogue.filter(|_| oys.len() > 1),
            FinishAt::Plane => cx.epilogue,
        };
        match (pass, deferred, finish_at) {
            (RowPass::Compute, _, _) => oys
                .iter()
                .map(|oy| output(b, oy, ox, deferred.is_some()))
                .collect(),
            (RowPass::Finish, Some(epi), FinishAt::EachStep) => {
                oys.iter().map(|oy| finish_in_place(epi, oy, ox)).collect()
            }
            (RowPass::Finish, _, _) => vec![],
        }
    };
    let mut body = g.window().plane(b, rows_per_step, &mut element);
    if let (FinishAt::Plane, Some(epi)) = (finish_at, cx.epilogue) {
        // One loop over the channel's contiguous plane: full vectors, no row tails.
        let p = b.var();
        let index = v(&nv)
            .times(cout as i64)
            .plus(v(&cov))
            .times((oh * ow) as i64)
            .plus(v(&p));
        let coords = [
            v(&nv),
            v(&cov),
            v(&p).floordiv(ow as i64),
            v(&p).modulo(ow as i64),
        ];
        body.push(serial_for(
            &p,
            oh * ow,
            vec![Stmt::Store {
                buf: cx.out.clone(),
                index: index.clone(),
                value: epi(VExpr::load(&cx.out, index), &coords),
            }],
        ));
    }
    Ok(vec![serial_for(
        &nv,
        nb,
        vec![serial_for(&cov, cout, body)],
    )])
}

/// Where a direct convolution applies its fused epilogue.
///
/// Written into each output's store, an epilogue with an exponential or a division (SiLU,
/// sigmoid, GELU) crowds the registers of the taps of the rows computed together. Deferred
/// to a second loop over the rows just stored, it reads back each row's masked tail store,
/// which the store buffer cannot forward: each such load waits for the store to retire (on
/// Zen 4 a 14-column depthwise row took twice as long, ReLU or SiLU). Deferred to a loop over
/// the whole channel plane once it is computed, the reads are full vectors well after the
/// stores, and the plane is still in L1 when it is small enough.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FinishAt {
    /// In each output's store: cheap epilogues (ReLU, clips, a residual add), and the rows
    /// of a layout without row steps (GPUs).
    EachOutput,
    /// Over each step of rows computed together, once they are stored (one row: in its
    /// store): a costly epilogue over a plane larger than [`PLANE_FINISH_BYTES`].
    EachStep,
    /// Over the channel's plane once it is computed.
    Plane,
}

impl FinishAt {
    fn of(epi: &super::Epilogue, row_steps: bool, plane: usize, dt: tessera_ir::DType) -> FinishAt {
        if !row_steps || !super::is_costly(&epi(VExpr::lit(1.0, dt), &vec![IExpr::c(0); 4])) {
            FinishAt::EachOutput
        } else if plane * dt.size() <= PLANE_FINISH_BYTES {
            FinishAt::Plane
        } else {
            FinishAt::EachStep
        }
    }
}

/// The largest output plane a costly epilogue runs over in one pass: half a 32 KiB L1 data
/// cache, so the plane is still there when the pass reads it back (56×56 f32 planes run
/// 20–30% faster than per step of rows; 112×112 planes 15% slower, from L2).
const PLANE_FINISH_BYTES: usize = 16 * 1024;

/// Output rows a depthwise convolution computes in one column loop: with a 5×5 window, 4 rows
/// read 8 input rows instead of 20.
const DEPTHWISE_ROWS: usize = 4;

/// ConvTranspose (2-D) in gather form: each output element sums the input elements whose
/// scattered kernel reaches it — tap `(ky, kx)` contributes when `oy + pad - ky*dy` is a
/// non-negative multiple of the stride inside the input. Out-of-range taps read a clamped,
/// in-bounds address and are masked to zero.
pub(crate) fn conv_transpose(cx: &NodeCx, b: &mut Builder) -> Result<Vec<Stmt>, PassError> {
    let (xs, ws) = (cx.shape(0).to_vec(), cx.shape(1).to_vec());
    let g = tessera_ir::infer::conv_transpose_geometry(cx.node, &xs, &ws).map_err(|e| cx.err(e))?;
    let (nb, cin, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let (cpg_out, cpg_in) = (ws[1], cin / g.group);
    let (cout, oh, ow) = (g.out_channels, g.out[0], g.out[1]);
    let dt = cx.out_dtype;
    let acc_dt = accumulation_dtype(dt);
    let widen = |v: VExpr| convert(v, dt, acc_dt);
    let dims = b.dims(&[nb, cout, oh, ow]);
    let oi = idx(&dims);
    let (ci, ky, kx) = (b.var(), b.var(), b.var());
    let v = IExpr::var;
    let grp = oi[1].clone().floordiv(cpg_out as i64);
    let chan = grp.times(cpg_in as i64).plus(v(&ci));
    let mut conds = Vec::new();
    let mut src = Vec::new();
    for (d, (o, k)) in [(oi[2].clone(), &ky), (oi[3].clone(), &kx)]
        .into_iter()
        .enumerate()
    {
        let t = o
            .plus(IExpr::c(g.pad_begin[d]))
            .minus(v(k).times(g.dilations[d]));
        let q = t.clone().floordiv(g.strides[d]);
        let size = if d == 0 { h } else { w };
        if g.strides[d] > 1 {
            conds.push(VExpr::ICmp(CmpOp::Eq, t.modulo(g.strides[d]), IExpr::c(0)));
        }
        conds.push(in_range(q.clone(), size));
        src.push(clamp(q, size));
    }
    let valid = conds
        .into_iter()
        .reduce(|a, c| VExpr::bin(BinOp::And, a, c))
        .expect("two dims");
    let x_idx = oi[0]
        .clone()
        .times(cin as i64)
        .plus(chan.clone())
        .times(h as i64)
        .plus(src[0].clone())
        .times(w as i64)
        .plus(src[1].clone());
    let w_idx = chan
        .times(cpg_out as i64)
        .plus(oi[1].clone().modulo(cpg_out as i64))
        .times(g.kernel[0] as i64)
        .plus(v(&ky))
        .times(g.kernel[1] as i64)
        .plus(v(&kx));
    let value = mul(
        widen(VExpr::load(cx.buf(1), w_idx)),
        widen(VExpr::select(
            valid,
            VExpr::load(cx.buf(0), x_idx),
            VExpr::lit(0.0, dt),
        )),
    );
    let init = if cx.has(2) {
        VExpr::load(cx.buf(2), oi[1].clone())
    } else {
        VExpr::lit(0.0, dt)
    };
    let out_idx = IExpr::linear(&oi, &super::strides_of(&[nb, cout, oh, ow]));
    let store = Stmt::Store {
        buf: cx.out.clone(),
        index: out_idx,
        value: convert(VExpr::Acc("s".into(), acc_dt), acc_dt, dt),
    };
    let red = Stmt::Reduce(Reduce {
        acc: "s".into(),
        dtype: acc_dt,
        op: ReduceOp::Sum,
        init: widen(init),
        axes: vec![
            (ci, cpg_in as i64),
            (ky, g.kernel[0] as i64),
            (kx, g.kernel[1] as i64),
        ],
        value,
        body: vec![store],
        vectorize: None,
    });
    Ok(super::nest(&dims, vec![red]))
}
