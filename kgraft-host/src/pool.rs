//! A pool of executable slots mapped near the host's text, for trampolines and thunks.
//!
//! A `JMP rel32` at a site reaches ±2 GiB; a patch's code, loaded by `dlopen`, may be much
//! further. Sites therefore jump to slots in this pool, which is mapped close to the text with
//! `MAP_FIXED_NOREPLACE`, and the slots jump on through absolute addresses.

use std::sync::Mutex;

/// The size of a slot.
pub const SLOT: usize = 64;
/// The size of the pool.
const POOL_SIZE: usize = 8 << 20;

/// The pool: a bump region and a free list.
pub struct Pool {
    base: usize,
    state: Mutex<(usize, Vec<usize>)>,
}

impl Pool {
    /// Maps the pool within reach of `near`.
    ///
    /// # Errors
    ///
    /// A message when no free range in reach could be mapped.
    pub fn new(near: usize) -> Result<Pool, String> {
        let start = (near + (64 << 20)) & !0xffff;
        for step in 0..512usize {
            let hint = start + step * (4 << 20);
            // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; the result is
            // checked below.
            let p = unsafe {
                libc::mmap(
                    hint as *mut libc::c_void,
                    POOL_SIZE,
                    libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                if p as usize == hint {
                    return Ok(Pool { base: hint, state: Mutex::new((0, Vec::new())) });
                }
                // SAFETY: an older kernel ignored the flag and mapped elsewhere; unmap that.
                unsafe { libc::munmap(p, POOL_SIZE) };
            }
        }
        Err(format!("could not map a trampoline pool within reach of the text at {near:#x}"))
    }

    /// Takes a slot and fills it with `code`; `None` when the pool is full.
    pub fn alloc(&self, code: &[u8]) -> Option<usize> {
        self.alloc_with(|_| code)
    }

    /// Takes a slot and fills it with the code `make` returns for the slot's address.
    pub fn alloc_with<C: AsRef<[u8]>>(&self, make: impl FnOnce(usize) -> C) -> Option<usize> {
        let addr = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match st.1.pop() {
                Some(a) => a,
                None if st.0 + SLOT <= POOL_SIZE => {
                    st.0 += SLOT;
                    self.base + st.0 - SLOT
                }
                None => return None,
            }
        };
        let code = make(addr);
        let code = code.as_ref();
        assert!(code.len() <= SLOT, "pool slots hold at most {SLOT} bytes");
        // SAFETY: the slot lies in the pool's writable mapping and is unreachable until the
        // caller publishes its address.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), addr as *mut u8, code.len()) };
        Some(addr)
    }

    /// Returns a slot to the pool; no thread may run its code any more.
    pub fn free(&self, addr: usize) {
        // SAFETY: as in `alloc`; filling with INT3 makes a stale jump trap rather than run junk.
        unsafe { std::ptr::write_bytes(addr as *mut u8, 0xcc, SLOT) };
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1.push(addr);
    }
}
