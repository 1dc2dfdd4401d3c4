//! Memory planning (offsets in one workspace, reused by liveness) and aligned buffers.

use tessera_ir::plan::{ALIGN, align_up};

/// One intermediate tensor: its size and the first and last plan steps that touch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferReq {
    pub bytes: usize,
    pub first: usize,
    pub last: usize,
}

/// Assigns each buffer an offset so that buffers alive at the same time never overlap.
/// Greedy best-fit in order of decreasing size; returns the offsets and the total size.
pub fn plan_memory(reqs: &[BufferReq]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..reqs.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(reqs[i].bytes), i));
    let mut offsets = vec![0; reqs.len()];
    let mut placed: Vec<usize> = Vec::new();
    let mut total = 0;
    for i in order {
        let r = reqs[i];
        let size = align_up(r.bytes.max(1));
        // Intervals already taken by buffers whose lifetimes overlap this one.
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| {
                if tessera_ir::planted::active(tessera_ir::planted::Bug::PlanLiveness) {
                    reqs[j].first < r.last && r.first < reqs[j].last
                } else {
                    reqs[j].first <= r.last && r.first <= reqs[j].last
                }
            })
            .map(|&j| (offsets[j], offsets[j] + align_up(reqs[j].bytes.max(1))))
            .collect();
        busy.sort();
        let mut best: Option<(usize, usize)> = None; // (gap size, offset)
        let mut cursor = 0;
        for (s, e) in &busy {
            if *s >= cursor + size && best.is_none_or(|(g, _)| s - cursor < g) {
                best = Some((s - cursor, cursor));
            }
            cursor = cursor.max(*e);
        }
        let off = best.map(|(_, o)| o).unwrap_or(cursor);
        offsets[i] = off;
        total = total.max(off + size);
        placed.push(i);
    }
    (offsets, total)
}

/// A heap buffer aligned to [`ALIGN`] bytes.
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only hand out `*const`/`&[u8]` views.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    pub fn zeroed(len: usize) -> AlignedBuf {
        let layout =
            std::alloc::Layout::from_size_align(len.max(ALIGN), ALIGN).expect("valid layout");
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, len }
    }
    pub fn from_bytes(bytes: &[u8]) -> AlignedBuf {
        let mut b = AlignedBuf::zeroed(bytes.len());
        b.as_mut_slice().copy_from_slice(bytes);
        b
    }
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len bytes for as long as self lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for len bytes and uniquely borrowed through &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout =
            std::alloc::Layout::from_size_align(self.len.max(ALIGN), ALIGN).expect("valid layout");
        // SAFETY: allocated in `zeroed` with this exact layout.
        unsafe { std::alloc::dealloc(self.ptr, layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_buffers_never_overlap_and_dead_ones_are_reused() {
        let reqs = [
            BufferReq {
                bytes: 100,
                first: 0,
                last: 1,
            },
            BufferReq {
                bytes: 100,
                first: 1,
                last: 2,
            },
            BufferReq {
                bytes: 100,
                first: 2,
                last: 3,
            },
            BufferReq {
                bytes: 50,
                first: 3,
                last: 4,
            },
        ];
        let (off, total) = plan_memory(&reqs);
        for i in 0..reqs.len() {
            for j in 0..i {
                let (a, b) = (reqs[i], reqs[j]);
                if a.first <= b.last && b.first <= a.last {
                    let (ai, bi) = (off[i]..off[i] + a.bytes, off[j]..off[j] + b.bytes);
                    assert!(
                        ai.end <= bi.start || bi.end <= ai.start,
                        "{i} and {j} overlap"
                    );
                }
            }
        }
        assert!(total <= 2 * align_up(100), "reuse: total {total}");
        assert!(off.iter().all(|o| o % ALIGN == 0));
    }
}
