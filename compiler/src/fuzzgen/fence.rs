//! Guard pages around the buffers native code runs on in the oracle, and a report of the
//! case when it touches one.
//!
//! A load that leaves its buffer but whose value a `select` then discards gives the right
//! answer: comparing values cannot see it, yet it reads memory the program does not own (a
//! fault at a page boundary, or a secret of the host's). So the oracle places every buffer of
//! a native run between two `PROT_NONE` pages — once flush against the page after it (reads
//! past the end fault), once flush against the page before it (negative indices fault) — and
//! arms a `SIGSEGV`/`SIGBUS` handler that writes the case as a ready regression file before
//! the process dies (chaining to the handler it replaced: libFuzzer's records the input).

use std::cell::Cell;
use std::sync::Once;

/// Which guard page a buffer sits against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// Its last byte is just before a guard page: reads past the end fault.
    End,
    /// Its first byte is just after a guard page: negative indices fault.
    Start,
}

/// A copy of some bytes between two inaccessible pages.
pub struct FencedBuf {
    map: *mut u8,
    map_len: usize,
    data: *mut u8,
    len: usize,
}

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

impl FencedBuf {
    /// `bytes` copied between guard pages, flush against the one `flush` names.
    pub fn new(bytes: &[u8], flush: Flush) -> Result<FencedBuf, String> {
        let page = page();
        let len = bytes.len();
        let inner = len.div_ceil(page).max(1) * page;
        let map_len = inner + 2 * page;
        // SAFETY: an anonymous private mapping; no file, no fixed address.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(format!("mmap of {map_len} bytes failed"));
        }
        let map = map.cast::<u8>();
        // SAFETY: both ranges are whole pages inside the mapping just made.
        let guarded = unsafe {
            libc::mprotect(map.cast(), page, libc::PROT_NONE) == 0
                && libc::mprotect(map.add(page + inner).cast(), page, libc::PROT_NONE) == 0
        };
        let offset = match flush {
            Flush::Start => page,
            Flush::End => page + inner - len,
        };
        // SAFETY: offset..offset + len lies in the accessible pages of the mapping.
        let data = unsafe { map.add(offset) };
        let buf = FencedBuf {
            map,
            map_len,
            data,
            len,
        };
        if !guarded {
            return Err("mprotect of a guard page failed".into());
        }
        // SAFETY: data is valid for len bytes and does not overlap `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, len) };
        Ok(buf)
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.data
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: data is valid for len bytes while the mapping lives.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }
}

impl Drop for FencedBuf {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `new` with this length and is unmapped once.
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}

thread_local! {
    /// The report written if this thread faults while armed (pointer and length of bytes
    /// owned by an [`Armed`]); a `const` thread-local, so reading it in a signal handler
    /// allocates nothing.
    static REPORT: Cell<(*const u8, usize)> = const { Cell::new((std::ptr::null(), 0)) };
}

/// The handlers replaced, to chain to.
static mut PREVIOUS: [Option<libc::sigaction>; 2] = [None, None];
static INSTALL: Once = Once::new();
const SIGNALS: [libc::c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];

/// While alive, a fault on this thread writes `report` to standard error before the process
/// dies.
pub struct Armed {
    report: Box<[u8]>,
}

impl Armed {
    pub fn new(report: String) -> Armed {
        install();
        let report = report.into_bytes().into_boxed_slice();
        REPORT.with(|r| r.set((report.as_ptr(), report.len())));
        Armed { report }
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        REPORT.with(|r| {
            if r.get().0 == self.report.as_ptr() {
                r.set((std::ptr::null(), 0));
            }
        });
    }
}

fn install() {
    INSTALL.call_once(|| {
        for (i, &sig) in SIGNALS.iter().enumerate() {
            // SAFETY: a zeroed sigaction is a valid starting value; the handler only calls
            // async-signal-safe functions (write, sigaction) and reads a const thread-local.
            // PREVIOUS is written here, once, before the handler can run.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_fault as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut action.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &action, &mut old) == 0 {
                    PREVIOUS[i] = Some(old);
                }
            }
        }
    });
}

extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let (ptr, len) = REPORT.with(|r| r.get());
    if !ptr.is_null() {
        // SAFETY: write is async-signal-safe; ptr..ptr + len is the armed report, alive
        // while armed (this thread is inside the native call the report was armed for).
        unsafe {
            libc::write(2, b"\n".as_ptr().cast(), 1);
            libc::write(2, ptr.cast(), len);
        }
    }
    let i = SIGNALS.iter().position(|&s| s == sig).unwrap_or(0);
    // SAFETY: PREVIOUS was written once before this handler was installed. Chaining: a
    // handler taking siginfo is called with ours; the default or an ignored disposition is
    // restored, and returning re-runs the faulting access under it (the process dies).
    unsafe {
        let previous = (*std::ptr::addr_of!(PREVIOUS))[i];
        match previous {
            Some(old) if old.sa_flags & libc::SA_SIGINFO != 0 && old.sa_sigaction > 1 => {
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    std::mem::transmute(old.sa_sigaction);
                f(sig, info, ctx);
            }
            Some(old) if old.sa_sigaction > 1 => {
                let f: extern "C" fn(libc::c_int) = std::mem::transmute(old.sa_sigaction);
                f(sig);
            }
            _ => {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenced_bytes_round_trip_at_either_end() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        for flush in [Flush::End, Flush::Start] {
            let mut b = FencedBuf::new(&bytes, flush).unwrap();
            assert_eq!(b.bytes(), &bytes[..]);
            let p = b.as_mut_ptr() as usize;
            match flush {
                Flush::End => assert_eq!((p + bytes.len()) % page(), 0),
                Flush::Start => assert_eq!(p % page(), 0),
            }
        }
        assert_eq!(
            FencedBuf::new(&[], Flush::End).unwrap().bytes(),
            &[] as &[u8]
        );
    }
}
