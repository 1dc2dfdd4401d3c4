//! NonMaxSuppression, as onnx's reference computes it: per batch and class, boxes above the
//! score threshold are taken best score first (ties: lower index first), and a box is kept
//! unless its IoU with a box already kept exceeds the threshold.
//!
//! The output's length depends on the data, so shape inference runs this too: the op's inputs
//! are value inputs (see `OpKind::value_inputs`) and a compiled graph specialises on them.

use crate::graph::Node;
use crate::op::AttrsExt;
use crate::tensor::Tensor;

type R<T> = Result<T, String>;

/// The selected `(batch, class, box)` triples.
pub fn non_max_suppression(n: &Node, args: &[Option<&Tensor>]) -> R<Vec<[i64; 3]>> {
    let boxes = args.first().copied().flatten().ok_or("missing boxes")?;
    let scores = args.get(1).copied().flatten().ok_or("missing scores")?;
    let (bs, ss) = (boxes.shape(), scores.shape());
    if bs.len() != 3 || bs[2] != 4 || ss.len() != 3 || ss[0] != bs[0] || ss[2] != bs[1] {
        return Err(format!("boxes {bs:?} and scores {ss:?} do not match"));
    }
    let scalar = |i: usize| args.get(i).copied().flatten().filter(|t| !t.is_empty());
    let max_out = scalar(2).map_or(0, |t| t.get_i64(0).max(0)) as usize;
    let iou_threshold = scalar(3).map_or(0.0, |t| t.get_f64(0));
    let score_threshold = scalar(4).map(|t| t.get_f64(0));
    let centre = n.attrs.int("center_point_box", 0)? != 0;
    let (nb, nc, nbox) = (bs[0], ss[1], bs[1]);
    let (bv, sv) = (boxes.to_f64_vec(), scores.to_f64_vec());
    let mut out = Vec::new();
    for b in 0..nb {
        let corners = |i: usize| -> [f64; 4] {
            let v = &bv[(b * nbox + i) * 4..(b * nbox + i) * 4 + 4];
            if centre {
                let (hw, hh) = (v[2] / 2.0, v[3] / 2.0);
                [v[0] - hw, v[0] + hw, v[1] - hh, v[1] + hh]
            } else {
                [
                    v[1].min(v[3]),
                    v[1].max(v[3]),
                    v[0].min(v[2]),
                    v[0].max(v[2]),
                ]
            }
        };
        let suppresses = |i: usize, j: usize| -> bool {
            let ([ax0, ax1, ay0, ay1], [bx0, bx1, by0, by1]) = (corners(i), corners(j));
            let (ix0, ix1) = (ax0.max(bx0), ax1.min(bx1));
            let (iy0, iy1) = (ay0.max(by0), ay1.min(by1));
            if ix1 <= ix0 || iy1 <= iy0 {
                return false;
            }
            let inter = (ix1 - ix0) * (iy1 - iy0);
            let (a1, a2) = ((ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0));
            let union = a1 + a2 - inter;
            if inter <= 0.0 || a1 <= 0.0 || a2 <= 0.0 || union <= 0.0 {
                return false;
            }
            inter / union > iou_threshold
        };
        for c in 0..nc {
            let sc = &sv[(b * nc + c) * nbox..(b * nc + c + 1) * nbox];
            let mut cand: Vec<usize> = (0..nbox)
                .filter(|&i| score_threshold.is_none_or(|t| sc[i] > t))
                .collect();
            cand.sort_by(|&i, &j| sc[j].total_cmp(&sc[i]).then(i.cmp(&j)));
            let mut kept: Vec<usize> = Vec::new();
            for i in cand {
                if kept.len() >= max_out {
                    break;
                }
                if kept.iter().all(|&k| !suppresses(i, k)) {
                    kept.push(i);
                    out.push([b as i64, c as i64, i as i64]);
                }
            }
        }
    }
    Ok(out)
}
