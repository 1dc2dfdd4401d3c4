//! The interpreter's model of mbarriers and tensor copies (see [`crate::loops::tma`]): each
//! mbarrier's phase, arrivals and bytes outstanding; which phase each tensor-copied element
//! belongs to; which phases each thread has waited for.

use super::{IrError, Result, St, Touched, buf_index, iexpr, thread_name};
use crate::loops::IExpr;
use crate::loops::tma::{Mbarrier, MbarrierOp, TensorCopy};

/// One initialised mbarrier.
#[derive(Clone, Copy, Debug)]
pub(super) struct Phases {
    /// Arrivals each phase waits for.
    count: i64,
    /// Arrivals of the current phase so far.
    arrived: i64,
    /// Bytes announced but not yet landed in the current phase (negative: landed before
    /// they were announced).
    pending_bytes: i64,
    /// Phases completed (the current phase's number).
    completed: u64,
}

impl Phases {
    /// Completes the current phase once all its arrivals came and its bytes landed.
    fn settle(&mut self) {
        if self.arrived == self.count && self.pending_bytes == 0 {
            self.completed += 1;
            self.arrived = 0;
        }
    }
}

impl St<'_> {
    fn fail<T>(&self, msg: String) -> Result<T> {
        Err(IrError::Interp(format!(
            "kernel `{}`: {msg}",
            self.prog.name
        )))
    }

    /// The mbarrier `buf[at]`: its place, its name for messages, and its state.
    fn mbarrier_at(&mut self, buf: &str, at: &IExpr) -> Result<((usize, usize), String)> {
        let pos = buf_index(self, buf)?;
        let i = iexpr(self, at)?;
        self.check_bounds("mbarrier", pos, i)?;
        Ok(((pos, i as usize), format!("{buf}[{i}]")))
    }

    fn phases(&mut self, key: (usize, usize), name: &str) -> Result<&mut Phases> {
        if !self.mbarriers.contains_key(&key) {
            return self.fail(format!(
                "mbarrier `{name}` is used before it is initialised"
            ));
        }
        Ok(self.mbarriers.get_mut(&key).expect("checked above"))
    }

    pub(super) fn mbarrier(&mut self, m: &Mbarrier) -> Result<()> {
        let (key, name) = self.mbarrier_at(&m.buf, &m.at)?;
        // Initialising writes the object, arriving and waiting read it: an initialisation
        // races with another thread's use between the same two barriers.
        let init = matches!(m.op, MbarrierOp::Init { .. });
        self.touch(key.0, key.1, init)?;
        let me = self.tid;
        match &m.op {
            MbarrierOp::Init { count } => {
                self.mbarriers.insert(
                    key,
                    Phases {
                        count: *count,
                        arrived: 0,
                        pending_bytes: 0,
                        completed: 0,
                    },
                );
            }
            MbarrierOp::ExpectTx { bytes } => {
                let p = self.phases(key, &name)?;
                p.arrived += 1;
                p.pending_bytes += bytes;
                if p.arrived > p.count {
                    let count = p.count;
                    return self.fail(format!(
                        "thread {} arrives at mbarrier `{name}` once more than its {count}",
                        thread_name(me)
                    ));
                }
                p.settle();
            }
            MbarrierOp::Wait { parity } => {
                let parity = iexpr(self, parity)?;
                let p = *self.phases(key, &name)?;
                if !matches!(parity, 0 | 1) {
                    return self.fail(format!("mbarrier `{name}` waited with parity {parity}"));
                }
                if p.completed % 2 == parity as u64 {
                    return self.fail(format!(
                        "thread {} waits for phase {} of mbarrier `{name}`, which nothing \
                         before it completes ({} of {} arrivals, {} bytes outstanding): the \
                         GPU would hang",
                        thread_name(me),
                        p.completed,
                        p.arrived,
                        p.count,
                        p.pending_bytes
                    ));
                }
                let seen = self.observed.entry((me, key.0, key.1)).or_default();
                *seen = (*seen).max(p.completed);
            }
        }
        Ok(())
    }

    /// Lands the box at once, each element marked with the phase it counts towards; the
    /// writes race with other threads' accesses between the same barriers.
    pub(super) fn tensor_copy(&mut self, c: &TensorCopy) -> Result<()> {
        let (key, name) = self.mbarrier_at(&c.barrier, &c.barrier_at)?;
        self.touch(key.0, key.1, false)?;
        let phase = self.phases(key, &name)?.completed;
        // The box lands as the expansion stores it (what the CPU runs), then each element
        // is marked with its phase.
        super::block(self, &c.expand())?;
        let dst = buf_index(self, &c.dst)?;
        for flat in 0..c.map.box_dims.iter().product() {
            let i = iexpr(self, &c.place(IExpr::c(flat)))?;
            let t = self.touched.get_mut().entry((dst, i as usize)).or_default();
            // The copy wrote it, not the thread: what races is the mark's business now.
            *t = Touched {
                tma: Some((key.0, key.1, phase)),
                read_in_flight: t.read_in_flight,
                ..Touched::default()
            };
        }
        let p = self.phases(key, &name)?;
        p.pending_bytes -= c.map.box_bytes();
        p.settle();
        Ok(())
    }

    /// The end of a block: every phase begun has completed (a copy still in flight, or an
    /// announced byte that never lands, would outlive the block).
    pub(super) fn end_block(&mut self) -> Result<()> {
        let mut open: Vec<_> = self
            .mbarriers
            .iter()
            .filter(|(_, p)| p.arrived != 0 || p.pending_bytes != 0)
            .map(|(&(pos, i), p)| (pos, i, *p))
            .collect();
        open.sort_by_key(|&(pos, i, _)| (pos, i));
        if let Some((pos, i, p)) = open.first() {
            return self.fail(format!(
                "the block ends with phase {} of mbarrier `{}[{i}]` incomplete ({} of {} \
                 arrivals, {} bytes outstanding)",
                p.completed, self.prog.buffers[*pos].name, p.arrived, p.count, p.pending_bytes
            ));
        }
        Ok(())
    }
}
