//! The reference interpreter for the loop IR.
//!
//! Every float operation is rounded to its dtype after it is computed in f64, so the
//! interpreter models f32/f16 arithmetic the way compiled code performs it (up to the
//! accuracy of the transcendental functions). Out-of-bounds accesses are errors.

use super::mma::{MMA_K, MmaShape, WGMMA_M};
use super::*;
use crate::error::{IrError, Result};
use crate::tensor::Tensor;
use std::sync::{Mutex, MutexGuard};

/// The interpreter's maps: their keys are small (indices, names), hashed by Fx, not by
/// SipHash, which dominated the interpreter's profile.
type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;

mod bulk_store;
mod coop;
mod happens;
mod tma_state;

#[derive(Clone, Copy, Debug, PartialEq)]
enum V {
    F(f64),
    I(i64),
}

impl V {
    fn f(self) -> f64 {
        match self {
            V::F(x) => x,
            V::I(i) => i as f64,
        }
    }
    fn i(self) -> i64 {
        match self {
            V::F(x) => x as i64,
            V::I(i) => i,
        }
    }
}

/// A GPU thread's coordinate in its block (x, y, z).
type ThreadId = [i64; 3];

/// Who touched one shared element since the last barrier.
#[derive(Clone, Copy, Default)]
struct Touched {
    writer: Option<ThreadId>,
    reader: Option<ThreadId>,
    /// Read by more than one thread.
    readers: bool,
    /// Written by an async copy that lands this many barriers later: nobody may touch it
    /// before (0: not in flight).
    in_flight: i64,
    /// Read by a warpgroup `mma` that retires this many barriers later: nobody may write it
    /// before (0: none).
    read_in_flight: i64,
    /// Written by a tensor copy counted on this mbarrier (buffer position, element) in this
    /// phase: a thread may touch it once it has waited for the phase (see [`super::tma`]).
    tma: Option<(usize, usize, u64)>,
}

/// What the threads of a block share: the buffers and the bookkeeping of their accesses.
/// Behind a lock, because a cooperative thread loop (see [`coop`]) runs each GPU thread on
/// an interpreter thread of its own (one at a time).
struct Mem<'a> {
    /// Parameters, then kernel-local buffers (scratch, shared; a placeholder for local ones),
    /// at their positions in `prog.buffers`.
    bufs: Vec<&'a mut Tensor>,
    /// Each thread's copy of each `local` buffer (by position), made on first use.
    local: HashMap<(ThreadId, usize), Tensor>,
    /// Shared elements touched since the last barrier, by (buffer position, element).
    touched: HashMap<(usize, usize), Touched>,
    /// The block's mbarriers and what their arrivals tell (see [`tma_state`]).
    sync: tma_state::Sync,
    /// What the block's tensor stores read, and the fences they need (see [`bulk_store`]).
    bulk: bulk_store::BulkStores,
}

/// One running GPU thread's view: the shared state, and its own loop indices and sums.
struct St<'a, 'm> {
    prog: &'a LoopProgram,
    mem: &'m Mutex<Mem<'a>>,
    idx: HashMap<String, i64>,
    accs: Vec<(String, V)>,
    /// The running GPU thread (inside a thread loop) and how many thread loops enclose it.
    tid: ThreadId,
    thread_depth: usize,
    /// How many loops and guards lie between the innermost thread loop and the statement.
    nested: usize,
    /// The reads running now are a warpgroup step's that stays in flight through this many
    /// more gatherings of its warpgroup (see [`happens`]).
    reads_retire_later: u64,
    /// In a cooperative thread loop: its turns and this thread's number among them.
    coop: Option<(&'m coop::Turns, usize)>,
    /// The stores running now are a tensor copy's, landed by the copy engine: not the
    /// thread's accesses (see [`tma_state`]).
    engine_writes: bool,
}

/// The outputs of `prog` run on `inputs` (its input buffers' contents, in parameter order),
/// every output poisoned first (see [`run`]).
pub fn run_outputs(prog: &LoopProgram, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    let mut given = inputs.iter();
    let mut buffers = Vec::new();
    for b in prog.params() {
        buffers.push(match b.role {
            BufRole::Input => given.next().cloned().ok_or_else(|| {
                IrError::Interp(format!(
                    "kernel `{}`: no value for input `{}`",
                    prog.name, b.name
                ))
            })?,
            _ => Tensor::poisoned(b.dtype, vec![b.len]),
        });
    }
    run(prog, &mut buffers)?;
    Ok(buffers
        .into_iter()
        .zip(prog.params())
        .filter(|(_, b)| b.role == BufRole::Output)
        .map(|(t, _)| t)
        .collect())
}

/// Runs `prog` over `buffers` (one tensor per parameter buffer, in order; outputs are written
/// in place). Each tensor's element count must equal the buffer's `len`. Kernel-local buffers
/// are allocated here, poisoned (NaN, or a junk pattern for integers) so that reading one
/// before writing it shows: scratch once, shared memory at the start of every block, a
/// thread's local memory at the start of every block. GPU programs run one thread loop at a
/// time (see [`super::gpu`]), its threads one after another — or by turns where it waits on
/// mbarriers ([`coop`]); a shared element written by one thread and touched by another
/// within one thread loop (between two barriers) is reported as a data race.
pub fn run(prog: &LoopProgram, buffers: &mut [Tensor]) -> Result<()> {
    let params = prog.params().count();
    if buffers.len() != params {
        return Err(IrError::Interp(format!(
            "kernel `{}` takes {params} buffers, got {}",
            prog.name,
            buffers.len()
        )));
    }
    let mut scratch: Vec<Tensor> = prog
        .buffers
        .iter()
        .filter(|b| !b.role.is_param())
        .map(|b| Tensor::poisoned(b.dtype, vec![b.len]))
        .collect();
    for (b, t) in prog.params().zip(buffers.iter()) {
        if b.dtype != t.dtype() || b.len != t.len() {
            return Err(IrError::Interp(format!(
                "buffer `{}` is {}[{}], got {}[{}]",
                b.name,
                b.dtype,
                b.len,
                t.dtype(),
                t.len()
            )));
        }
    }
    let mem = Mutex::new(Mem {
        // Kernel-local buffers follow the parameters (a verifier rule), so positions match
        // `prog.buffers`.
        bufs: buffers.iter_mut().chain(scratch.iter_mut()).collect(),
        local: HashMap::default(),
        touched: HashMap::default(),
        sync: tma_state::Sync::default(),
        bulk: bulk_store::BulkStores::new(has_tensor_stores(prog)),
    });
    let mut st = St {
        prog,
        mem: &mem,
        idx: HashMap::default(),
        accs: vec![],
        tid: [0; 3],
        thread_depth: 0,
        nested: 0,
        reads_retire_later: 0,
        coop: None,
        engine_writes: false,
    };
    block(&mut st, &prog.body)?;
    st.end_block()
}

impl<'a, 'm> St<'a, 'm> {
    /// The block's shared state, locked (never held across a statement: reading an index
    /// may read a buffer).
    fn mem(&self) -> MutexGuard<'m, Mem<'a>> {
        // A poisoned lock means an interpreter thread panicked; its state is still the
        // block's (the panic itself is reported where the thread is joined).
        self.mem
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new thread block: fresh (poisoned) shared and local memory.
    fn start_block(&mut self) {
        let mut mem = self.mem();
        for (b, t) in self.prog.buffers.iter().zip(mem.bufs.iter_mut()) {
            if b.role == BufRole::Shared {
                **t = Tensor::poisoned(b.dtype, vec![b.len]);
            }
        }
        mem.local.clear();
        mem.touched.clear();
        mem.sync = tma_state::Sync::default();
        mem.bulk = bulk_store::BulkStores::new(mem.bulk.tracking);
    }

    /// A barrier of the block: accesses before it no longer race with those after it, and
    /// async copies come one barrier closer to landing (those that land are forgotten).
    fn barrier(&mut self) {
        let mut mem = self.mem();
        mem.sync.clocks.barrier();
        let touched = &mut mem.touched;
        touched.retain(|_, t| t.in_flight > 1 || t.read_in_flight > 1 || t.tma.is_some());
        for t in touched.values_mut() {
            *t = Touched {
                in_flight: (t.in_flight - 1).max(0),
                read_in_flight: (t.read_in_flight - 1).max(0),
                tma: t.tma,
                ..Touched::default()
            };
        }
    }

    /// Element `i` of buffer `pos` as seen by the running thread.
    fn read(&self, pos: usize, i: i64) -> Result<V> {
        let b = &self.prog.buffers[pos];
        self.check_bounds("load", pos, i)?;
        let get = |t: &Tensor| {
            if t.dtype().is_float() {
                V::F(t.get_f64(i as usize))
            } else {
                V::I(t.get_i64(i as usize))
            }
        };
        let mut mem = self.mem();
        match b.role {
            BufRole::Local => {
                let t = mem
                    .local
                    .entry((self.tid, pos))
                    .or_insert_with(|| Tensor::poisoned(b.dtype, vec![b.len]));
                Ok(get(t))
            }
            BufRole::Shared => {
                self.touch(&mut mem, pos, i as usize, false)?;
                Ok(get(&*mem.bufs[pos]))
            }
            _ => Ok(get(&*mem.bufs[pos])),
        }
    }

    /// Stores `v` at element `i` of buffer `pos` for the running thread.
    fn write(&mut self, pos: usize, i: i64, v: V) -> Result<()> {
        let b = &self.prog.buffers[pos];
        self.check_bounds("store", pos, i)?;
        let mut mem = self.mem();
        match b.role {
            BufRole::Local => {
                let t = mem
                    .local
                    .entry((self.tid, pos))
                    .or_insert_with(|| Tensor::poisoned(b.dtype, vec![b.len]));
                write(t, i as usize, v)
            }
            BufRole::Shared => {
                if !self.engine_writes {
                    self.touch(&mut mem, pos, i as usize, true)?;
                }
                self.bulk_write(&mut mem.bulk, (pos, i as usize), self.engine_writes)?;
                write(mem.bufs[pos], i as usize, v)
            }
            _ => write(mem.bufs[pos], i as usize, v),
        }
        Ok(())
    }

    fn check_bounds(&self, what: &str, pos: usize, i: i64) -> Result<()> {
        let b = &self.prog.buffers[pos];
        if i < 0 || i as usize >= b.len {
            return Err(IrError::Interp(format!(
                "kernel `{}`: {what} {}[{i}] is out of bounds (len {})",
                self.prog.name, b.name, b.len
            )));
        }
        Ok(())
    }

    /// Records the running thread's access to a shared element; two threads touching it
    /// between barriers, one writing, is a race.
    fn touch(&self, mem: &mut Mem, pos: usize, i: usize, store: bool) -> Result<()> {
        let me = self.tid;
        let Mem { touched, sync, .. } = mem;
        let t = touched.entry((pos, i)).or_default();
        if t.in_flight > 0 {
            return Err(IrError::Interp(format!(
                "kernel `{}`: thread {} {} shared `{}[{i}]` while an async copy into it is in \
                 flight (it lands {} barrier(s) later)",
                self.prog.name,
                thread_name(me),
                if store { "writes" } else { "reads" },
                self.prog.buffers[pos].name,
                t.in_flight,
            )));
        }
        if !store && self.coop.is_some() {
            // A later copy into it must come after this thread has released it.
            sync.clocks
                .record_read(me, (pos, i), self.reads_retire_later);
        }
        if let Some((bar, at, phase)) = t.tma
            && !sync.has_seen(me, (bar, at), phase)
        {
            return Err(IrError::Interp(format!(
                "kernel `{}`: thread {} {} shared `{}[{i}]` while a tensor copy into it is in \
                 flight: it has not waited for phase {phase} of mbarrier `{}[{at}]`",
                self.prog.name,
                thread_name(me),
                if store { "writes" } else { "reads" },
                self.prog.buffers[pos].name,
                self.prog.buffers[bar].name,
            )));
        }
        if store && t.read_in_flight > 0 {
            return Err(IrError::Interp(format!(
                "kernel `{}`: thread {} writes shared `{}[{i}]` while a warpgroup mma reading it \
                 is in flight (it retires {} barrier(s) later)",
                self.prog.name,
                thread_name(me),
                self.prog.buffers[pos].name,
                t.read_in_flight,
            )));
        }
        if self.coop.is_some() {
            // Threads that hand work over through mbarriers: ordered by what each has seen.
            return self.ordered_access(sync, (pos, i), store);
        }
        let other_writer = t.writer.is_some_and(|w| w != me);
        let other_reader = t.readers || t.reader.is_some_and(|r| r != me);
        if other_writer || (store && other_reader) {
            let who = thread_name;
            let other = t.writer.or(t.reader).map_or_else(|| "another".into(), who);
            return Err(IrError::Interp(format!(
                "kernel `{}`: data race on shared `{}[{i}]`: thread {} {} it after thread {other} \
                 touched it, with no barrier between",
                self.prog.name,
                self.prog.buffers[pos].name,
                who(me),
                if store { "writes" } else { "reads" },
            )));
        }
        if store {
            t.writer = Some(me);
        } else if t.reader.is_some_and(|r| r != me) {
            t.readers = true;
        } else {
            t.reader = Some(me);
        }
        Ok(())
    }
}

impl St<'_, '_> {
    /// A shared access in a cooperative thread loop (see [`happens`]): after another
    /// thread's write only if this thread knows of it, and a write after another's read
    /// likewise.
    fn ordered_access(
        &self,
        sync: &mut tma_state::Sync,
        element: (usize, usize),
        store: bool,
    ) -> Result<()> {
        let me = self.tid;
        let clocks = &mut sync.clocks;
        let other = match clocks.unknown_writer(me, element) {
            Some(w) => Some(format!("thread {} wrote it", thread_name(w))),
            None if store => clocks
                .unreleased_reader(me, element)
                .map(|r| format!("thread {} read it", thread_name(r))),
            None => None,
        };
        if let Some(other) = other {
            return Err(IrError::Interp(format!(
                "kernel `{}`: data race on shared `{}[{}]`: thread {} {} it after {other}, with \
                 nothing ordering them (no barrier, no mbarrier arrival after it that this \
                 thread has waited for)",
                self.prog.name,
                self.prog.buffers[element.0].name,
                element.1,
                thread_name(me),
                if store { "writes" } else { "reads" },
            )));
        }
        if store {
            clocks.record_write(me, element);
        }
        Ok(())
    }
}

/// Whether `prog` has tensor stores (whose shared reads the interpreter then follows).
fn has_tensor_stores(prog: &LoopProgram) -> bool {
    super::any_stmt(&prog.body, &|s| matches!(s, Stmt::TensorStore(_)))
}

fn thread_name(t: ThreadId) -> String {
    format!("({}, {}, {})", t[0], t[1], t[2])
}

fn block(st: &mut St, body: &[Stmt]) -> Result<()> {
    for (i, s) in body.iter().enumerate() {
        stmt(st, s)?;
        // A run of warpgroup steps ends with its warpgroup together (cooperative loops).
        if st.coop.is_some()
            && s.is_warpgroup_step()
            && !body.get(i + 1).is_some_and(Stmt::is_warpgroup_step)
        {
            st.gather_warpgroup()?;
        }
    }
    Ok(())
}

fn stmt(st: &mut St, s: &Stmt) -> Result<()> {
    match s {
        Stmt::For(l) => {
            let thread_axis = match l.kind {
                LoopKind::Thread(a) => Some(a.index()),
                _ => None,
            };
            if thread_axis.is_some() {
                if st.thread_depth == 0 {
                    // A new thread loop of the block: a barrier came before it.
                    st.barrier();
                    if coop::needs_turns(l) {
                        return coop::run_thread_loop(st, l);
                    }
                }
                st.thread_depth += 1;
            }
            let nested = st.nested;
            st.nested = match thread_axis {
                Some(_) => 0,
                None if st.thread_depth > 0 => nested + 1,
                None => nested,
            };
            for i in 0..l.extent {
                st.idx.insert(l.var.clone(), i);
                if let Some(a) = thread_axis {
                    st.tid[a] = i;
                }
                let new_block = matches!(l.kind, LoopKind::Block(_));
                if new_block {
                    st.start_block();
                }
                block(st, &l.body)?;
                if new_block {
                    st.end_block()?;
                }
            }
            if let Some(a) = thread_axis {
                st.tid[a] = 0;
                st.thread_depth -= 1;
            }
            st.nested = nested;
            st.idx.remove(&l.var);
        }
        Stmt::Store { buf, index, value } => {
            let i = iexpr(st, index)?;
            let v = vexpr(st, value)?;
            let b = buf_index(st, buf)?;
            st.write(b, i, v)?;
        }
        Stmt::If { cond, then } => {
            if vexpr(st, cond)?.i() != 0 {
                st.nested += 1;
                let done = block(st, then);
                st.nested -= 1;
                done?;
            }
        }
        Stmt::Reduce(r) => {
            let mut acc = vexpr(st, &r.init)?;
            let total: i64 = r.axes.iter().map(|(_, e)| *e).product();
            for flat in 0..total {
                let mut rem = flat;
                for (v, e) in r.axes.iter().rev() {
                    st.idx.insert(v.clone(), rem % e);
                    rem /= e;
                }
                let x = vexpr(st, &r.value)?;
                acc = match (r.op, r.dtype.is_float()) {
                    (ReduceOp::Sum, true) => V::F(r.dtype.round_f64(acc.f() + x.f())),
                    (ReduceOp::Sum, false) => V::I(r.dtype.wrap_i64(acc.i().wrapping_add(x.i()))),
                    (ReduceOp::Max, true) => V::F(fmax(acc.f(), x.f())),
                    (ReduceOp::Min, true) => V::F(fmin(acc.f(), x.f())),
                    (ReduceOp::Max, false) => V::I(acc.i().max(x.i())),
                    (ReduceOp::Min, false) => V::I(acc.i().min(x.i())),
                    (ReduceOp::Prod, true) => V::F(r.dtype.round_f64(acc.f() * x.f())),
                    (ReduceOp::Prod, false) => V::I(r.dtype.wrap_i64(acc.i().wrapping_mul(x.i()))),
                };
            }
            for (v, _) in &r.axes {
                st.idx.remove(v);
            }
            st.accs.push((r.acc.clone(), acc));
            block(st, &r.body)?;
            st.accs.pop();
        }
        // Defined per thread: the expansion is its meaning (see `mma`); an asynchronous
        // step's tiles stay unwritable until it retires (marked once, by its lane 0) — in a
        // loop or guard of a cooperative thread loop, where no barrier comes, until its
        // warpgroup has gathered `retires` times (what `wgmma.wait_group` at the end of each
        // run of steps means): its reads count as done only then.
        Stmt::Mma(m) if st.coop.is_some() && st.nested > 0 => {
            st.reads_retire_later = m.retires.max(1) as u64 - 1;
            let done = block(st, &s.expansion());
            st.reads_retire_later = 0;
            done?;
        }
        Stmt::Mma(m) => {
            block(st, &s.expansion())?;
            if m.retires > 1 && iexpr(st, &m.lane)? == 0 {
                mark_read_in_flight(st, m)?;
            }
        }
        Stmt::WarpFold(_) => block(st, &s.expansion())?,
        Stmt::Mbarrier(m) => st.mbarrier(m)?,
        Stmt::TensorCopy(c) => st.tensor_copy(c)?,
        Stmt::TensorStore(c) => st.tensor_store(c)?,
        Stmt::AsyncProxy(a) => st.async_proxy(a)?,
        // Registers are the GPU's business: no value changes.
        Stmt::SetMaxNReg(_) => {}
        // The expansion, and the elements stay untouchable until the copy lands.
        Stmt::AsyncCopy(c) => {
            block(st, &s.expansion())?;
            let (dst, at) = (buf_index(st, &c.dst)?, iexpr(st, &c.dst_at)?);
            let touched = &mut st.mem().touched;
            for u in 0..c.len {
                touched
                    .entry((dst, (at + u) as usize))
                    .or_default()
                    .in_flight = c.lands;
            }
        }
    }
    Ok(())
}

/// Marks the elements of an asynchronous warpgroup step's operand tiles as read until it
/// retires.
fn mark_read_in_flight(st: &mut St, m: &super::mma::Mma) -> Result<()> {
    let MmaShape::Warpgroup { n } = m.shape else {
        return Ok(());
    };
    for (op, rows, cols) in [(&m.a, WGMMA_M, MMA_K), (&m.b, MMA_K, n)] {
        let pos = buf_index(st, &op.buf)?;
        let mut elements = Vec::new();
        for r in 0..rows {
            for c in 0..cols {
                elements.push(iexpr(st, &op.at(IExpr::c(r), IExpr::c(c)))?);
            }
        }
        let touched = &mut st.mem().touched;
        for i in elements {
            let t = touched.entry((pos, i as usize)).or_default();
            t.read_in_flight = t.read_in_flight.max(m.retires);
        }
    }
    Ok(())
}

/// NaN-propagating max/min, matching `arith.maximumf` / `arith.minimumf`.
fn fmax(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}
fn fmin(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

fn buf_index(st: &St, name: &str) -> Result<usize> {
    st.prog
        .buffers
        .iter()
        .position(|b| b.name == name)
        .ok_or_else(|| IrError::Interp(format!("unknown buffer `{name}`")))
}

fn write(t: &mut Tensor, i: usize, v: V) {
    let d = t.dtype();
    let one = match v {
        V::F(x) => Tensor::from_f64(d, vec![1], &[x]),
        V::I(x) => Tensor::from_i64(d, vec![1], &[x]),
    };
    let s = d.size();
    t.bytes_mut()[i * s..(i + 1) * s].copy_from_slice(one.bytes());
}

fn iexpr(st: &St, e: &IExpr) -> Result<i64> {
    e.evaluate(
        &|leaf| match leaf {
            IExpr::Var(v) => st
                .idx
                .get(v)
                .copied()
                .ok_or_else(|| IrError::Interp(format!("unbound index `{v}`"))),
            IExpr::Of(v) => Ok(vexpr(st, v)?.i()),
            _ => unreachable!("`evaluate` asks for variables and loaded indices only"),
        },
        &|| IrError::Interp("index division by zero".into()),
    )
}

fn vexpr(st: &St, e: &VExpr) -> Result<V> {
    let bt = |name: &str| st.prog.buffer(name).map(|b| b.dtype);
    let dtype = e
        .dtype(&bt)
        .ok_or_else(|| IrError::Interp(format!("cannot type `{e}`")))?;
    let rnd = |x: f64| V::F(dtype.round_f64(x));
    Ok(match e {
        VExpr::Const(Lit::F(x), d) => V::F(d.round_f64(*x)),
        VExpr::Const(Lit::I(x), d) => V::I(d.wrap_i64(*x)),
        VExpr::Load { buf, index } => {
            let i = iexpr(st, index)?;
            st.read(buf_index(st, buf)?, i)?
        }
        VExpr::Acc(n, _) => st
            .accs
            .iter()
            .rev()
            .find(|(a, _)| a == n)
            .map(|(_, v)| *v)
            .ok_or_else(|| IrError::Interp(format!("unbound ${n}")))?,
        VExpr::Unary(op, a) => {
            let x = vexpr(st, a)?;
            if dtype.is_float() {
                let f = x.f();
                rnd(match op {
                    UnOp::Neg => -f,
                    UnOp::Abs => f.abs(),
                    UnOp::Exp => f.exp(),
                    UnOp::Log => f.ln(),
                    UnOp::Sqrt => f.sqrt(),
                    UnOp::Tanh => f.tanh(),
                    UnOp::Erf => crate::interp::erf(f),
                    UnOp::Floor => f.floor(),
                    UnOp::Ceil => f.ceil(),
                    UnOp::Sin => f.sin(),
                    UnOp::Cos => f.cos(),
                    UnOp::Round => f.round_ties_even(),
                    UnOp::Not => (f == 0.0) as i64 as f64,
                })
            } else {
                let i = x.i();
                V::I(dtype.wrap_i64(match op {
                    UnOp::Neg => i.wrapping_neg(),
                    UnOp::Abs => i.wrapping_abs(),
                    UnOp::Not => (i == 0) as i64,
                    _ => i,
                }))
            }
        }
        VExpr::Binary(op, a, b) => {
            let (x, y) = (vexpr(st, a)?, vexpr(st, b)?);
            if dtype.is_float() {
                let (x, y) = (x.f(), y.f());
                rnd(match op {
                    BinOp::Add => x + y,
                    BinOp::Sub => x - y,
                    BinOp::Mul => x * y,
                    BinOp::Div => x / y,
                    BinOp::Pow => x.powf(y),
                    BinOp::Max => fmax(x, y),
                    BinOp::Min => fmin(x, y),
                    BinOp::Rem => x % y,
                    BinOp::And | BinOp::Or | BinOp::Xor => f64::NAN,
                })
            } else {
                let (x, y) = (x.i(), y.i());
                let unsigned = dtype == DType::U8;
                V::I(dtype.wrap_i64(match op {
                    BinOp::Add => x.wrapping_add(y),
                    BinOp::Sub => x.wrapping_sub(y),
                    BinOp::Mul => x.wrapping_mul(y),
                    BinOp::Div => {
                        if y == 0 {
                            return Err(IrError::Interp("integer division by zero".into()));
                        }
                        x.wrapping_div(y)
                    }
                    BinOp::Pow => 0,
                    BinOp::Max if unsigned => (x as u64).max(y as u64) as i64,
                    BinOp::Min if unsigned => (x as u64).min(y as u64) as i64,
                    BinOp::Max => x.max(y),
                    BinOp::Min => x.min(y),
                    BinOp::And => x & y,
                    BinOp::Or => x | y,
                    BinOp::Xor => x ^ y,
                    BinOp::Rem => {
                        if y == 0 {
                            return Err(IrError::Interp("integer remainder by zero".into()));
                        }
                        x.wrapping_rem(y)
                    }
                }))
            }
        }
        VExpr::Cmp(op, a, b) => {
            let (x, y) = (vexpr(st, a)?, vexpr(st, b)?);
            let float = a.dtype(&bt).is_some_and(|d| d.is_float());
            let r = if float {
                cmp(*op, x.f(), y.f())
            } else {
                cmp(*op, x.i(), y.i())
            };
            V::I(r as i64)
        }
        VExpr::ICmp(op, a, b) => V::I(cmp(*op, iexpr(st, a)?, iexpr(st, b)?) as i64),
        VExpr::Select(c, a, b) => {
            if vexpr(st, c)?.i() != 0 {
                vexpr(st, a)?
            } else {
                vexpr(st, b)?
            }
        }
        VExpr::Cast(d, a) => {
            let x = vexpr(st, a)?;
            let src_float = a.dtype(&bt).is_some_and(|s| s.is_float());
            match (src_float, d.is_float()) {
                (_, true) => V::F(d.round_f64(x.f())),
                (true, false) if *d == DType::Bool => V::I((x.f() != 0.0) as i64),
                (true, false) => V::I(d.wrap_i64(x.f() as i64)),
                (false, false) => V::I(d.wrap_i64(x.i())),
            }
        }
        VExpr::Index(i, d) => {
            let x = iexpr(st, i)?;
            if d.is_float() {
                V::F(d.round_f64(x as f64))
            } else {
                V::I(d.wrap_i64(x))
            }
        }
    })
}

fn cmp<T: PartialOrd>(op: CmpOp, a: T, b: T) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
    }
}

/// Integer division rounding toward negative infinity.
pub fn floor_div(a: i64, d: i64) -> i64 {
    let q = a / d;
    if a % d != 0 && ((a < 0) != (d < 0)) {
        q - 1
    } else {
        q
    }
}
