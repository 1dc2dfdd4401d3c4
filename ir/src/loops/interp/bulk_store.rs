//! The interpreter's model of tensor stores (see [`crate::loops::tma::store`]): which shared
//! elements each thread wrote and whether it has fenced them for the copy engine since, and
//! which elements each thread's tensor stores still read until it waits for them.

use super::{HashMap, Result, St, ThreadId, buf_index, iexpr, thread_name};
use crate::loops::IExpr;
use crate::loops::tma::{AsyncProxy, TensorStore};
use std::collections::VecDeque;

/// A shared element: (buffer position, element).
type Element = (usize, usize);

/// One block's tensor-store bookkeeping (kept only for programs with tensor stores).
#[derive(Default)]
pub(super) struct BulkStores {
    /// Whether the program has tensor stores: only then are shared writes followed.
    pub(super) tracking: bool,
    /// Per shared element, the thread whose ordinary store last wrote it and the epoch of
    /// its fence after that (`None`: not fenced yet).
    written: HashMap<Element, (ThreadId, Option<u64>)>,
    /// Per thread, the elements it wrote since its last fence.
    unfenced: HashMap<ThreadId, Vec<Element>>,
    /// Per shared element, the tensor stores (thread, group) still reading it.
    reading: HashMap<Element, Vec<(ThreadId, u64)>>,
    /// Per thread, its tensor stores still reading, oldest first, each by its group.
    groups: HashMap<ThreadId, VecDeque<(u64, Vec<Element>)>>,
    /// Bulk groups committed in the block (by any thread): the next one's number.
    committed: u64,
}

impl BulkStores {
    /// A fresh block's, for a program that has tensor stores or not.
    pub(super) fn new(tracking: bool) -> BulkStores {
        BulkStores {
            tracking,
            ..BulkStores::default()
        }
    }
}

impl St<'_, '_> {
    /// Thread `me` writes shared `element`, by an ordinary store (`engine`: a copy engine's
    /// landing, which is the async proxy's own and needs no fence): refused while a tensor
    /// store still reads it.
    pub(super) fn bulk_write(
        &self,
        bulk: &mut BulkStores,
        element: Element,
        engine: bool,
    ) -> Result<()> {
        if !bulk.tracking {
            return Ok(());
        }
        let me = self.tid;
        if let Some(&(reader, _)) = bulk.reading.get(&element).and_then(|r| r.first()) {
            return self.fail(format!(
                "thread {} writes shared `{}[{}]` while thread {}'s tensor store still reads it \
                 (no bulk_wait_read by it, released to this thread, in between)",
                thread_name(me),
                self.prog.buffers[element.0].name,
                element.1,
                thread_name(reader)
            ));
        }
        if engine {
            bulk.written.remove(&element);
        } else {
            bulk.written.insert(element, (me, None));
            bulk.unfenced.entry(me).or_default().push(element);
        }
        Ok(())
    }

    pub(super) fn async_proxy(&mut self, a: &AsyncProxy) -> Result<()> {
        let me = self.tid;
        let mut guard = self.mem();
        let super::Mem { bulk, sync, .. } = &mut *guard;
        let epoch = sync.clocks.epoch(me);
        match a {
            AsyncProxy::Fence => {
                for element in bulk.unfenced.remove(&me).unwrap_or_default() {
                    if let Some(w) = bulk.written.get_mut(&element)
                        && w.0 == me
                    {
                        w.1 = Some(epoch);
                    }
                }
            }
            AsyncProxy::WaitRead { pending } => {
                let groups = bulk.groups.entry(me).or_default();
                let mut retired = Vec::new();
                while groups.len() > *pending as usize {
                    retired.push(groups.pop_front().expect("more than `pending` groups"));
                }
                for (group, elements) in retired {
                    for element in elements {
                        if let Some(r) = bulk.reading.get_mut(&element) {
                            r.retain(|&g| g != (me, group));
                        }
                        if self.coop.is_some() {
                            // Read until now: a later writer must know of this thread's
                            // epoch after the wait.
                            sync.clocks.record_read(me, element, 0);
                        }
                    }
                    bulk.reading.retain(|_, r| !r.is_empty());
                }
            }
        }
        Ok(())
    }

    /// Writes the box at once (the expansion), after checking that every element it reads
    /// was written and fenced in an order the issuing thread knows of; the elements then
    /// stay read until the thread waits for the store.
    pub(super) fn tensor_store(&mut self, c: &TensorStore) -> Result<()> {
        let src = buf_index(self, &c.src)?;
        let places = (0..c.map.box_dims.iter().product())
            .map(|flat| Ok((src, iexpr(self, &c.place(IExpr::c(flat)))? as usize)))
            .collect::<Result<Vec<Element>>>()?;
        let me = self.tid;
        {
            let mem = self.mem();
            for &element in &places {
                let Some(&(writer, fence)) = mem.bulk.written.get(&element) else {
                    continue;
                };
                let name = format!("`{}[{}]`", c.src, element.1);
                let unordered = match fence {
                    None => Some(format!(
                        "thread {} wrote shared {name} with no fence_proxy_async after it",
                        thread_name(writer)
                    )),
                    Some(epoch)
                        if self.coop.is_some() && !mem.sync.clocks.knows(me, writer, epoch) =>
                    {
                        Some(format!(
                            "thread {}'s fenced write of shared {name} comes before it in no \
                             order this thread knows of (no mbarrier arrival after the fence \
                             that it has waited for)",
                            thread_name(writer)
                        ))
                    }
                    Some(_) => None,
                };
                if let Some(why) = unordered {
                    return self.fail(format!(
                        "thread {}'s tensor store into `{}` reads what the copy engine may not \
                         see: {why}",
                        thread_name(me),
                        c.map.src
                    ));
                }
            }
        }
        // The reads are the thread's (ordered as its own: a barrier, or the happens-before
        // of a cooperative loop); the writes go to global memory.
        super::block(self, &c.expand())?;
        let mut mem = self.mem();
        let bulk = &mut mem.bulk;
        bulk.committed += 1;
        let group = bulk.committed;
        for &element in &places {
            bulk.reading.entry(element).or_default().push((me, group));
        }
        bulk.groups
            .entry(me)
            .or_default()
            .push_back((group, places));
        Ok(())
    }

    /// The end of a block: no tensor store still reads its shared memory.
    pub(super) fn end_block_stores(&self) -> Result<()> {
        let mem = self.mem();
        let mut open: Vec<ThreadId> = mem
            .bulk
            .groups
            .iter()
            .filter(|(_, g)| !g.is_empty())
            .map(|(&t, _)| t)
            .collect();
        open.sort();
        match open.first() {
            Some(&t) => self.fail(format!(
                "the block ends while thread {}'s tensor store still reads shared memory (no \
                 bulk_wait_read pending(0) after it)",
                thread_name(t)
            )),
            None => Ok(()),
        }
    }
}
