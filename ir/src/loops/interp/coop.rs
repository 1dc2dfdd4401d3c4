//! Cooperative thread loops: the threads of a warp-specialised pipeline hand work to each
//! other through mbarriers — a producer waits for consumers that come after it in the thread
//! loop to release a buffer, the consumers wait for the producer's copies — so they cannot
//! run one after another, as the interpreter runs every other thread loop. Here each GPU
//! thread of the loop runs on an interpreter thread of its own, but one at a time: a thread
//! runs until it finishes or waits for a phase that has not completed, then hands the turn
//! to the next thread (in thread order, cyclically) that can go on. When none can, the GPU
//! would hang, and that is the error.
//!
//! A warpgroup's tensor-core steps are collective (`wgmma … .sync.aligned`): at the end of
//! each run of them a thread waits for the rest of its warpgroup (a *gathering*).
//!
//! The order is fixed, so runs are reproducible. Races are not found by trying orders but by
//! the happens-before bookkeeping of [`super::happens`] (vector clocks): a tensor copy may
//! overwrite a tile only after every thread that read it has released it — arrived at an
//! mbarrier whose phase the issuing thread has waited for, itself or through its
//! warpgroup's gathering and leader.
//!
//! A thread loop runs so when it holds an mbarrier wait (the only statement that blocks
//! until another thread acts); its thread loops must nest perfectly (one thread id per
//! interpreter thread). Other thread loops run their threads one after another.

use super::{IrError, Result, St, Stmt, ThreadId, block};
use crate::loops::mma::WARPGROUP;
use crate::loops::tma::MbarrierOp;
use crate::loops::{Loop, LoopKind, any_stmt};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Whether the thread loop `l` runs cooperatively: it holds an mbarrier wait.
pub(super) fn needs_turns(l: &Loop) -> bool {
    any_stmt(
        &l.body,
        &|s| matches!(s, Stmt::Mbarrier(m) if matches!(m.op, MbarrierOp::Wait { .. })),
    )
}

/// The threads (their numbers in the loop) that can no longer go on, and where each stands.
type Stuck = [(usize, Status)];

/// Where a cooperative thread stands.
#[derive(Clone, Copy, Debug)]
pub(super) enum Status {
    /// Not started, or free to go on.
    Ready,
    /// Waiting until mbarrier (buffer position, element)'s current phase has a parity other
    /// than `parity`.
    Waiting {
        bar: (usize, usize),
        parity: i64,
    },
    /// Waiting at the end of a run of tensor-core steps until the rest of its warpgroup (by
    /// its first thread) has come: until the group has completed `gathering` gatherings.
    Gathering {
        group: ThreadId,
        gathering: u64,
    },
    Done,
}

struct Turn {
    /// The thread that runs now (`None` once all are done).
    running: Option<usize>,
    status: Vec<Status>,
    /// The first error of any thread: every other thread stops at its next turn.
    failure: Option<IrError>,
}

/// The turns of one cooperative thread loop's threads.
pub(super) struct Turns {
    /// Each thread's id in its block.
    ids: Vec<ThreadId>,
    turn: Mutex<Turn>,
    /// One per thread: it sleeps on its own, so handing the turn over wakes one thread.
    wake: Vec<Condvar>,
}

impl Turns {
    fn new(ids: Vec<ThreadId>) -> Turns {
        let threads = ids.len();
        Turns {
            ids,
            turn: Mutex::new(Turn {
                running: Some(0),
                status: vec![Status::Ready; threads],
                failure: None,
            }),
            wake: (0..threads).map(|_| Condvar::new()).collect(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Turn> {
        self.turn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Blocks until it is thread `me`'s turn; an error once another thread has failed (the
    /// caller unwinds; the failure is what the loop reports).
    pub(super) fn wait_turn(&self, me: usize) -> Result<()> {
        let mut turn = self.lock();
        loop {
            if turn.failure.is_some() {
                return Err(IrError::Interp("stopped: another thread failed".into()));
            }
            if turn.running == Some(me) {
                return Ok(());
            }
            turn = self.wake[me]
                .wait(turn)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Thread `me` stops running (it is done, or waits): the turn goes to the next thread
    /// that can go on — ready, or waiting for what `over` says is over. When none can but
    /// some are not done, `hang` describes them.
    pub(super) fn hand_over(
        &self,
        me: usize,
        status: Status,
        over: &dyn Fn(Status) -> bool,
        hang: &dyn Fn(&Stuck) -> IrError,
    ) {
        let mut turn = self.lock();
        turn.status[me] = status;
        let n = turn.status.len();
        let next = (1..=n)
            .map(|d| (me + d) % n)
            .find(|&j| match turn.status[j] {
                Status::Ready => true,
                Status::Done => false,
                waiting => over(waiting),
            });
        match next {
            Some(j) => {
                turn.status[j] = Status::Ready;
                turn.running = Some(j);
                self.wake[j].notify_one();
            }
            None => {
                turn.running = None;
                let stuck: Vec<(usize, Status)> = turn
                    .status
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| !matches!(s, Status::Done))
                    .map(|(j, s)| (j, *s))
                    .collect();
                if !stuck.is_empty() {
                    self.fail_locked(&mut turn, hang(&stuck));
                }
            }
        }
    }

    /// Records `e` (unless an earlier failure was) and wakes every thread to stop.
    pub(super) fn fail(&self, e: IrError) {
        let mut turn = self.lock();
        self.fail_locked(&mut turn, e);
    }

    fn fail_locked(&self, turn: &mut Turn, e: IrError) {
        turn.failure.get_or_insert(e);
        for w in &self.wake {
            w.notify_one();
        }
    }
}

/// The warpgroup of thread `t` (of an x-axis thread loop): its first thread.
fn warpgroup_of(t: ThreadId) -> ThreadId {
    [t[0] / WARPGROUP * WARPGROUP, t[1], t[2]]
}

/// The perfectly nested thread loops from `l` on, and the innermost body.
fn nest(l: &Loop) -> (Vec<&Loop>, &[Stmt]) {
    let mut loops = vec![l];
    let mut body = l.body.as_slice();
    while let [Stmt::For(inner)] = body
        && matches!(inner.kind, LoopKind::Thread(_))
    {
        loops.push(inner);
        body = inner.body.as_slice();
    }
    (loops, body)
}

/// Runs the thread loop `l` (outermost in its block, after its barrier) cooperatively.
pub(super) fn run_thread_loop(st: &mut St, l: &Loop) -> Result<()> {
    let (loops, body) = nest(l);
    if any_stmt(
        body,
        &|s| matches!(s, Stmt::For(l) if matches!(l.kind, LoopKind::Thread(_))),
    ) {
        return Err(IrError::Interp(format!(
            "kernel `{}`: the thread loops of `{}` hand work to each other through mbarriers, \
             and must nest perfectly",
            st.prog.name, l.var
        )));
    }
    let threads: i64 = loops.iter().map(|l| l.extent).product();
    let st = &*st;
    let ids: Vec<ThreadId> = (0..threads)
        .map(|w| {
            let mut tid = st.tid;
            let mut rem = w;
            for l in loops.iter().rev() {
                if let LoopKind::Thread(axis) = l.kind {
                    tid[axis.index()] = rem % l.extent;
                }
                rem /= l.extent;
            }
            tid
        })
        .collect();
    let turns = Turns::new(ids);
    let panicked = std::thread::scope(|scope| {
        let workers: Vec<_> = turns
            .ids
            .iter()
            .enumerate()
            .map(|(w, &tid)| {
                let mut worker = St {
                    prog: st.prog,
                    mem: st.mem,
                    idx: st.idx.clone(),
                    accs: st.accs.clone(),
                    tid,
                    thread_depth: st.thread_depth + loops.len(),
                    nested: 0,
                    reads_retire_later: 0,
                    coop: Some((&turns, w)),
                    engine_writes: false,
                };
                for l in &loops {
                    if let LoopKind::Thread(axis) = l.kind {
                        worker.idx.insert(l.var.clone(), tid[axis.index()]);
                    }
                }
                let turns = &turns;
                scope.spawn(move || {
                    if turns.wait_turn(w).is_err() {
                        return;
                    }
                    // A panic would keep the turn forever: it stops every thread instead.
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        block(&mut worker, body)
                    }));
                    match run {
                        Ok(Ok(())) => worker.hand_over(Status::Done),
                        Ok(Err(e)) => turns.fail(e),
                        Err(_) => turns.fail(IrError::Interp(format!(
                            "kernel `{}`: the interpreter panicked running thread {} of \
                             thread loop `{}`",
                            worker.prog.name,
                            super::thread_name(worker.tid),
                            l.var
                        ))),
                    }
                })
            })
            .collect();
        workers.into_iter().any(|w| w.join().is_err())
    });
    if let Some(e) = turns.lock().failure.take() {
        return Err(e);
    }
    if panicked {
        return Err(IrError::Interp(format!(
            "kernel `{}`: an interpreter thread of thread loop `{}` panicked",
            st.prog.name, l.var
        )));
    }
    Ok(())
}

impl St<'_, '_> {
    /// The end of a run of warpgroup tensor-core steps in a cooperative thread loop: the
    /// steps are collective (`wgmma … .sync.aligned`), so the thread waits for the rest of
    /// its warpgroup, and they learn each other's clocks — what one lane read of the tiles
    /// comes before what any lane does next (a leader's arrival releases them all).
    pub(super) fn gather_warpgroup(&mut self) -> Result<()> {
        let Some((turns, turn)) = self.coop else {
            return Ok(());
        };
        let group = warpgroup_of(self.tid);
        let waiting = self
            .mem()
            .sync
            .clocks
            .gather(self.tid, group, WARPGROUP as usize);
        if let Some(gathering) = waiting {
            self.hand_over(Status::Gathering { group, gathering });
            turns.wait_turn(turn)?;
        }
        Ok(())
    }

    /// The running cooperative thread stops (`status`): the next one takes the turn.
    pub(super) fn hand_over(&self, status: Status) {
        let (turns, me) = self.coop.expect("a cooperative thread");
        let ids = &turns.ids;
        let over = |waiting| {
            let sync = &self.mem().sync;
            match waiting {
                Status::Waiting { bar, parity } => sync.completed(bar) % 2 != parity as u64,
                Status::Gathering { group, gathering } => sync.clocks.gathered(group) > gathering,
                Status::Ready | Status::Done => true,
            }
        };
        let hang = |stuck: &Stuck| {
            // Runs of consecutive threads that wait alike, each said once.
            let mut runs: Vec<(usize, usize, String)> = Vec::new();
            for &(j, s) in stuck {
                let what = match s {
                    Status::Waiting { bar, parity } => format!(
                        "on `{}[{}]` with parity {parity}",
                        self.prog.buffers[bar.0].name, bar.1
                    ),
                    Status::Gathering { .. } => {
                        "for the rest of its warpgroup at a tensor-core step".into()
                    }
                    _ => "to run".into(),
                };
                match runs.last_mut() {
                    Some((_, last, w)) if *last + 1 == j && *w == what => *last = j,
                    _ => runs.push((j, j, what)),
                }
            }
            let said: Vec<String> = runs
                .iter()
                .map(|(first, last, what)| match first == last {
                    true => format!("thread {} waits {what}", super::thread_name(ids[*first])),
                    false => format!(
                        "threads {} to {} wait {what}",
                        super::thread_name(ids[*first]),
                        super::thread_name(ids[*last])
                    ),
                })
                .collect();
            IrError::Interp(format!(
                "kernel `{}`: threads wait for mbarrier phases that no thread can complete: \
                 the GPU would hang ({})",
                self.prog.name,
                said.join("; ")
            ))
        };
        turns.hand_over(me, status, &over, &hang);
    }
}

#[cfg(test)]
mod tests;
