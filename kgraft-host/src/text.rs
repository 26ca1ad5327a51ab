//! The host's text: writes through `/proc/self/mem`, core syncs by `membarrier`, and the SIGTRAP
//! handler that sends a thread hitting a site mid-poke where the site's old bytes send it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use kgraft_rt::engine::poke::{Poke, Text};
use kgraft_rt::engine::site::{INT3, decode_jmp};

/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE` (Linux 4.16).
const MEMBARRIER_SYNC_CORE: libc::c_int = 1 << 5;
/// `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE`.
const MEMBARRIER_REGISTER_SYNC_CORE: libc::c_int = 1 << 6;

/// Where a trapped thread resumes, per site of the batch in progress, sorted by site.
struct TrapTable {
    entries: Box<[(usize, usize)]>,
}

/// The table of the batch in progress; null between batches. Tables are never freed, because a
/// trap handler may still be reading one that has been replaced.
static TRAP_TABLE: AtomicPtr<TrapTable> = AtomicPtr::new(null_mut());

/// How many traps the handler has resolved.
pub static TRAPS: AtomicU64 = AtomicU64::new(0);

/// The host's machine code, written live.
pub struct HostText {
    mem: File,
    syncs: AtomicU64,
    /// Writes left before an injected failure, plus one; zero when none is armed.
    fail_in: AtomicU64,
}

impl HostText {
    /// Opens `/proc/self/mem`, registers for core syncs and installs the SIGTRAP handler.
    ///
    /// # Errors
    ///
    /// A message when one of the three fails.
    pub fn new() -> Result<HostText, String> {
        let mem = File::options()
            .read(true)
            .write(true)
            .open("/proc/self/mem")
            .map_err(|e| format!("opening /proc/self/mem: {e}"))?;
        // SAFETY: membarrier takes two integer arguments and a CPU id, and touches no memory.
        let ret = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_REGISTER_SYNC_CORE, 0, 0) };
        if ret != 0 {
            return Err(format!(
                "membarrier(REGISTER_PRIVATE_EXPEDITED_SYNC_CORE) failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        install_trap_handler()?;
        Ok(HostText { mem, syncs: AtomicU64::new(0), fail_in: AtomicU64::new(0) })
    }

    /// Makes the write after `n` more writes fail with `EIO`, once; for tests of the rollback.
    pub fn fail_write_after(&self, n: u64) {
        self.fail_in.store(n + 1, Ordering::SeqCst);
    }

    /// Returns how many core syncs the text has done.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

impl Text for HostText {
    fn read(&self, addr: usize, buf: &mut [u8]) -> Result<(), i32> {
        self.mem.read_exact_at(buf, addr as u64).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    }

    fn write(&self, addr: usize, bytes: &[u8]) -> Result<(), i32> {
        let armed = self.fail_in.load(Ordering::SeqCst);
        if armed > 0 {
            self.fail_in.store(armed - 1, Ordering::SeqCst);
            if armed == 1 {
                return Err(libc::EIO);
            }
        }
        self.mem.write_all_at(bytes, addr as u64).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    }

    fn sync_cores(&self) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as in `new`; registration succeeded there.
        let ret = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_SYNC_CORE, 0, 0) };
        debug_assert_eq!(ret, 0, "membarrier sync after registration cannot fail");
    }

    fn begin(&self, pokes: &[Poke]) {
        let mut entries: Vec<(usize, usize)> =
            pokes.iter().map(|p| (p.site, decode_jmp(p.site, p.old).unwrap_or(p.site + p.old.len()))).collect();
        entries.sort_unstable();
        let table = Box::into_raw(Box::new(TrapTable { entries: entries.into_boxed_slice() }));
        TRAP_TABLE.store(table, Ordering::Release);
    }

    fn end(&self) {
        TRAP_TABLE.store(null_mut(), Ordering::Release);
    }
}

/// Installs the SIGTRAP handler once.
fn install_trap_handler() -> Result<(), String> {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction is a valid starting point; the handler has the SA_SIGINFO
        // signature and only does async-signal-safe work (atomics and plain memory reads).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_trap as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(libc::SIGTRAP, &sa, null_mut()) != 0 {
                result = Err(format!("installing the SIGTRAP handler: {}", std::io::Error::last_os_error()));
            }
        }
    });
    result
}

/// The SIGTRAP handler: resolves a trap on a site that a batch is changing.
///
/// # Safety
///
/// Called by the kernel as an `SA_SIGINFO` handler, with a valid `ucontext_t`.
unsafe extern "C" fn on_trap(_sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes the interrupted context; RIP is one of its general registers.
    let rip = unsafe { &mut (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_RIP as usize] };
    let site = (*rip as usize).wrapping_sub(1);
    let table = TRAP_TABLE.load(Ordering::Acquire);
    if !table.is_null() {
        // SAFETY: tables are never freed.
        let entries = unsafe { &(*table).entries };
        if let Ok(i) = entries.binary_search_by_key(&site, |e| e.0) {
            TRAPS.fetch_add(1, Ordering::Relaxed);
            *rip = entries[i].1 as i64;
            return;
        }
    }
    // The batch that wrote this breakpoint is over: run the site as it now is.
    // SAFETY: `site` is the address of the breakpoint the thread executed, so it is mapped.
    let byte = unsafe { std::ptr::read_volatile(site as *const u8) };
    if byte != INT3 {
        TRAPS.fetch_add(1, Ordering::Relaxed);
        *rip = site as i64;
        return;
    }
    // A breakpoint that is not ours: let the default action (a core dump) happen.
    // SAFETY: restoring the default disposition is async-signal-safe.
    unsafe { libc::signal(libc::SIGTRAP, libc::SIG_DFL) };
}
