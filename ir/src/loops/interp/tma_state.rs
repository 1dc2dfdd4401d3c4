//! The interpreter's model of mbarriers and tensor copies (see [`crate::loops::tma`]): each
//! mbarrier's phase, arrivals and bytes outstanding; which phase each tensor-copied element
//! belongs to; which phases each thread has waited for; and what a thread's waits tell it
//! of the other threads' accesses (happens-before, for the overwrites of cooperative
//! pipelines, see [`super::coop`]).

use super::HashMap;
use super::coop::Status;
use super::happens::{Clocks, Vc, join};
use super::{IrError, Result, St, ThreadId, Touched, buf_index, iexpr, thread_name};
use crate::loops::IExpr;
use crate::loops::tma::{Mbarrier, MbarrierOp, TensorCopy};

/// One initialised mbarrier.
#[derive(Clone, Debug)]
struct Phases {
    /// Arrivals each phase waits for.
    count: i64,
    /// Arrivals of the current phase so far.
    arrived: i64,
    /// Bytes announced but not yet landed in the current phase (negative: landed before
    /// they were announced).
    pending_bytes: i64,
    /// Phases completed (the current phase's number).
    completed: u64,
    /// The clocks with which threads arrived in the current phase (joined).
    arriving: Vc,
    /// The clocks of the arrivals of every completed phase (joined): a thread that sees a
    /// completion knows that what they did before came first.
    released: Vc,
}

impl Phases {
    fn new(count: i64) -> Phases {
        Phases {
            count,
            arrived: 0,
            pending_bytes: 0,
            completed: 0,
            arriving: Vc::default(),
            released: Vc::default(),
        }
    }

    /// Completes the current phase once all its arrivals came and its bytes landed.
    fn settle(&mut self) {
        if self.arrived == self.count && self.pending_bytes == 0 {
            self.completed += 1;
            self.arrived = 0;
            join(&mut self.released, &std::mem::take(&mut self.arriving));
        }
    }
}

/// The block's mbarriers and the threads' knowledge of them.
#[derive(Default)]
pub(super) struct Sync {
    /// The initialised mbarriers, by (buffer position, element).
    mbarriers: HashMap<(usize, usize), Phases>,
    /// Per thread and mbarrier, how many of its phases the thread has seen complete.
    observed: HashMap<(ThreadId, usize, usize), u64>,
    /// What the threads know of each other (happens-before).
    pub(super) clocks: Clocks,
}

impl Sync {
    /// Phases mbarrier `bar` has completed (0 if it is not initialised).
    pub(super) fn completed(&self, bar: (usize, usize)) -> u64 {
        self.mbarriers.get(&bar).map_or(0, |p| p.completed)
    }

    /// Whether thread `t` has waited for the completion of phase `phase` of `bar`.
    pub(super) fn has_seen(&self, t: ThreadId, bar: (usize, usize), phase: u64) -> bool {
        self.observed
            .get(&(t, bar.0, bar.1))
            .is_some_and(|&seen| seen > phase)
    }

    /// Thread `t` arrives at `bar`: it releases what it did before.
    fn arrive(&mut self, t: ThreadId, bar: (usize, usize)) {
        let released = self.clocks.release(t);
        if let Some(p) = self.mbarriers.get_mut(&bar) {
            join(&mut p.arriving, &released);
        }
    }

    /// Thread `t` has seen `bar`'s phases complete: it learns what their arrivals did
    /// before.
    fn observe(&mut self, t: ThreadId, bar: (usize, usize)) {
        let Some(p) = self.mbarriers.get(&bar) else {
            return;
        };
        let seen = self.observed.entry((t, bar.0, bar.1)).or_default();
        *seen = (*seen).max(p.completed);
        self.clocks.acquire(t, &p.released);
    }
}

impl St<'_, '_> {
    pub(super) fn fail<T>(&self, msg: String) -> Result<T> {
        Err(IrError::Interp(format!(
            "kernel `{}`: {msg}",
            self.prog.name
        )))
    }

    /// The mbarrier `buf[at]`: its place and its name for messages.
    fn mbarrier_at(&self, buf: &str, at: &IExpr) -> Result<((usize, usize), String)> {
        let pos = buf_index(self, buf)?;
        let i = iexpr(self, at)?;
        self.check_bounds("mbarrier", pos, i)?;
        Ok(((pos, i as usize), format!("{buf}[{i}]")))
    }

    fn uninitialised<T>(&self, name: &str) -> Result<T> {
        self.fail(format!(
            "mbarrier `{name}` is used before it is initialised"
        ))
    }

    pub(super) fn mbarrier(&mut self, m: &Mbarrier) -> Result<()> {
        let (key, name) = self.mbarrier_at(&m.buf, &m.at)?;
        let parity = match &m.op {
            MbarrierOp::Wait { parity } => iexpr(self, parity)?,
            _ => 0,
        };
        let me = self.tid;
        let mut mem = self.mem();
        // Initialising writes the object, arriving and waiting read it: an initialisation
        // races with another thread's use between the same two barriers.
        let init = matches!(m.op, MbarrierOp::Init { .. });
        self.touch(&mut mem, key.0, key.1, init)?;
        let sync = &mut mem.sync;
        let bytes = match m.op {
            MbarrierOp::Init { count } => {
                sync.mbarriers.insert(key, Phases::new(count));
                return Ok(());
            }
            MbarrierOp::ExpectTx { bytes } => bytes,
            MbarrierOp::Arrive => 0,
            MbarrierOp::Wait { .. } => {
                let Some(p) = sync.mbarriers.get(&key) else {
                    return self.uninitialised(&name);
                };
                if !matches!(parity, 0 | 1) {
                    return self.fail(format!("mbarrier `{name}` waited with parity {parity}"));
                }
                if p.completed % 2 == parity as u64 {
                    let Some((turns, turn)) = self.coop else {
                        return self.fail(format!(
                            "thread {} waits for phase {} of mbarrier `{name}`, which nothing \
                             before it completes ({} of {} arrivals, {} bytes outstanding): \
                             the GPU would hang",
                            thread_name(me),
                            p.completed,
                            p.arrived,
                            p.count,
                            p.pending_bytes
                        ));
                    };
                    // Another thread's turn, until one completes the phase.
                    drop(mem);
                    self.hand_over(Status::Waiting { bar: key, parity });
                    turns.wait_turn(turn)?;
                    mem = self.mem();
                }
                mem.sync.observe(me, key);
                return Ok(());
            }
        };
        if !sync.mbarriers.contains_key(&key) {
            return self.uninitialised(&name);
        }
        sync.arrive(me, key);
        let p = sync.mbarriers.get_mut(&key).expect("checked above");
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
        Ok(())
    }

    /// Lands the box at once, each element marked with the phase it counts towards. The
    /// copy may not overwrite an element that a warpgroup `mma` still reads, nor one another
    /// thread touched since the last barrier — in a cooperative thread loop: one another
    /// thread read without an arrival after it that the issuing thread has seen complete.
    pub(super) fn tensor_copy(&mut self, c: &TensorCopy) -> Result<()> {
        let (key, name) = self.mbarrier_at(&c.barrier, &c.barrier_at)?;
        let dst = buf_index(self, &c.dst)?;
        let places = (0..c.map.box_dims.iter().product())
            .map(|flat| Ok(iexpr(self, &c.place(IExpr::c(flat)))? as usize))
            .collect::<Result<Vec<usize>>>()?;
        let me = self.tid;
        let phase = {
            let mut mem = self.mem();
            self.touch(&mut mem, key.0, key.1, false)?;
            let Some(p) = mem.sync.mbarriers.get(&key) else {
                return self.uninitialised(&name);
            };
            let phase = p.completed;
            for &i in &places {
                if let Some(other) = self.overwritten_reader(&mut mem, (dst, i))? {
                    return self.fail(format!(
                        "thread {}'s tensor copy overwrites shared `{}[{i}]`, which {other}",
                        thread_name(me),
                        c.dst,
                    ));
                }
            }
            phase
        };
        // The box lands as the expansion stores it (what the CPU runs) — written by the
        // copy engine, not the thread — then each element is marked with its phase.
        self.engine_writes = true;
        let landed = super::block(self, &c.expand());
        self.engine_writes = false;
        landed?;
        let mut mem = self.mem();
        for &i in &places {
            let t = mem.touched.entry((dst, i)).or_default();
            *t = Touched {
                tma: Some((key.0, key.1, phase)),
                ..Touched::default()
            };
        }
        let p = mem.sync.mbarriers.get_mut(&key).expect("checked above");
        p.pending_bytes -= c.map.box_bytes();
        p.settle();
        Ok(())
    }

    /// Who still uses shared `element` that the running thread's tensor copy would
    /// overwrite (see [`St::tensor_copy`]), in words.
    fn overwritten_reader(
        &self,
        mem: &mut super::Mem,
        element: (usize, usize),
    ) -> Result<Option<String>> {
        let me = self.tid;
        let t = mem.touched.get(&element).copied().unwrap_or_default();
        if t.read_in_flight > 0 {
            return Ok(Some(format!(
                "a warpgroup mma still reads (it retires {} barrier(s) later)",
                t.read_in_flight
            )));
        }
        if self.coop.is_some() {
            return Ok(mem.sync.clocks.unreleased_reader(me, element).map(|r| {
                format!(
                    "thread {} read in an epoch thread {} does not know of (no mbarrier \
                     arrival after the read that it has waited for)",
                    thread_name(r),
                    thread_name(me)
                )
            }));
        }
        let other_writer = t.writer.filter(|&w| w != me);
        let other_reader = t.reader.filter(|&r| r != me);
        Ok(match other_writer.or(other_reader) {
            Some(o) => Some(format!(
                "thread {} touched with no barrier between",
                thread_name(o)
            )),
            None if t.readers => Some("other threads read with no barrier between".into()),
            None => None,
        })
    }

    /// The end of a block: every phase begun has completed (a copy still in flight, or an
    /// announced byte that never lands, would outlive the block).
    pub(super) fn end_block(&mut self) -> Result<()> {
        self.end_block_stores()?;
        let mem = self.mem();
        let mut open: Vec<_> = mem
            .sync
            .mbarriers
            .iter()
            .filter(|(_, p)| p.arrived != 0 || p.pending_bytes != 0)
            .map(|(&(pos, i), p)| (pos, i, p.clone()))
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
