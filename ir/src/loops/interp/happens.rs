//! Happens-before between the threads of a cooperative thread loop (see [`super::coop`]):
//! vector clocks. Each thread's clock counts its *epochs*; a thread starts a new one when it
//! arrives at an mbarrier (releasing what it did before) and when its warpgroup gathers at
//! the end of a run of tensor-core steps. A thread that waits for an mbarrier phase learns
//! the clocks of the arrivals that completed it; the threads of a warpgroup that gather
//! learn each other's. So a thread knows, of every other thread, up to which epoch that
//! thread's accesses came before its own — transitively (a consumer lane's reads reach the
//! producer through its warpgroup's gathering and its leader's arrival).
//!
//! What it checks: a tensor copy may overwrite a shared element only if every thread that
//! read it since the last barrier did so in an epoch the issuing thread knows of; an
//! ordinary shared access may follow another thread's write (or, a write, its read) only in
//! an epoch it knows of — so threads of one cooperative loop may hand shared data to each
//! other through mbarriers (a tensor store's tile, see [`crate::loops::tma::store`]). A read by
//! a warpgroup step that stays in flight (`retires(r)` in a cooperative loop: until the
//! `r`-th gathering of its warpgroup from its own, `wgmma.wait_group r − 1`) counts as done
//! in the epoch before that gathering.

use super::HashMap;
use super::ThreadId;

/// A vector clock: per thread, the latest of its epochs known (epochs count from 1; an
/// absent thread: none).
pub(super) type Vc = HashMap<ThreadId, u64>;

/// `into` ⊔= `from`.
pub(super) fn join(into: &mut Vc, from: &Vc) {
    for (&t, &e) in from {
        let known = into.entry(t).or_default();
        *known = (*known).max(e);
    }
}

/// The threads of a warpgroup gathering (at the end of a run of its tensor-core steps).
#[derive(Default)]
struct Gathering {
    /// Gatherings of the group completed.
    completed: u64,
    /// Those at the current one so far.
    members: Vec<ThreadId>,
}

#[derive(Default)]
pub(super) struct Clocks {
    /// Each thread's vector clock (its own entry: its current epoch).
    vc: HashMap<ThreadId, Vc>,
    /// Per shared element (buffer position, element), the threads that read it since the
    /// last barrier or the copy that last landed there, and their epochs then.
    reads: HashMap<(usize, usize), Vec<(ThreadId, u64)>>,
    /// Per shared element, the thread that last wrote it since the last barrier (an
    /// ordinary store), and its epoch then.
    writes: HashMap<(usize, usize), (ThreadId, u64)>,
    /// Per warpgroup (its first thread's id), its gatherings.
    gatherings: HashMap<ThreadId, Gathering>,
}

impl Clocks {
    pub(super) fn epoch(&self, t: ThreadId) -> u64 {
        self.vc
            .get(&t)
            .and_then(|v| v.get(&t))
            .copied()
            .unwrap_or(1)
    }

    fn clock(&mut self, t: ThreadId) -> &mut Vc {
        self.vc
            .entry(t)
            .or_insert_with(|| [(t, 1)].into_iter().collect())
    }

    /// Thread `t` releases what it did so far (an arrival): its clock until now, for the
    /// phase to pass on; a new epoch begins.
    pub(super) fn release(&mut self, t: ThreadId) -> Vc {
        let clock = self.clock(t);
        let released = clock.clone();
        *clock.entry(t).or_default() += 1;
        released
    }

    /// Thread `t` learns what `released` (a completed phase's arrivals) did before.
    pub(super) fn acquire(&mut self, t: ThreadId, released: &Vc) {
        join(self.clock(t), released);
    }

    /// Thread `t` reads shared `element` — for a warpgroup step in flight through
    /// `retire_later` more gatherings, a read that is done only in the epoch that many
    /// gatherings on (so a release before the steps retire does not cover it).
    pub(super) fn record_read(&mut self, t: ThreadId, element: (usize, usize), retire_later: u64) {
        let epoch = self.epoch(t) + retire_later;
        let reads = self.reads.entry(element).or_default();
        if !reads.contains(&(t, epoch)) {
            reads.push((t, epoch));
        }
    }

    /// A thread that read `element` in an epoch thread `t` does not know of — forgetting
    /// the reads: `t` overwrites it.
    pub(super) fn unreleased_reader(
        &mut self,
        t: ThreadId,
        element: (usize, usize),
    ) -> Option<ThreadId> {
        let reads = self.reads.remove(&element)?;
        let known = self.vc.get(&t);
        reads
            .into_iter()
            .find(|&(r, epoch)| r != t && known.and_then(|k| k.get(&r)).is_none_or(|&k| k < epoch))
            .map(|(r, _)| r)
    }

    /// Whether thread `t` knows that thread `other`'s accesses up to its epoch `epoch` came
    /// before its own.
    pub(super) fn knows(&self, t: ThreadId, other: ThreadId, epoch: u64) -> bool {
        other == t
            || self
                .vc
                .get(&t)
                .and_then(|k| k.get(&other))
                .is_some_and(|&k| k >= epoch)
    }

    /// Thread `t` writes shared `element` (an ordinary store).
    pub(super) fn record_write(&mut self, t: ThreadId, element: (usize, usize)) {
        let epoch = self.epoch(t);
        self.writes.insert(element, (t, epoch));
    }

    /// The thread that last wrote `element` in an epoch thread `t` does not know of.
    pub(super) fn unknown_writer(&self, t: ThreadId, element: (usize, usize)) -> Option<ThreadId> {
        let &(w, epoch) = self.writes.get(&element)?;
        (!self.knows(t, w, epoch)).then_some(w)
    }

    /// A barrier of the block: every access before it comes before every access after.
    pub(super) fn barrier(&mut self) {
        self.reads.clear();
        self.writes.clear();
    }

    /// Thread `t` gathers with the `size` threads of its warpgroup `group`: `None` when it
    /// is the last (all learn each other's clocks and begin new epochs), else the number of
    /// the gathering it waits for.
    pub(super) fn gather(&mut self, t: ThreadId, group: ThreadId, size: usize) -> Option<u64> {
        let g = self.gatherings.entry(group).or_default();
        g.members.push(t);
        if g.members.len() < size {
            return Some(g.completed);
        }
        g.completed += 1;
        let members = std::mem::take(&mut g.members);
        let mut all = Vc::default();
        for &m in &members {
            join(&mut all, self.clock(m));
        }
        for m in members {
            let clock = self.clock(m);
            join(clock, &all);
            *clock.entry(m).or_default() += 1;
        }
        None
    }

    /// Gatherings warpgroup `group` has completed.
    pub(super) fn gathered(&self, group: ThreadId) -> u64 {
        self.gatherings.get(&group).map_or(0, |g| g.completed)
    }
}
