//! The C side of the host: the "kernel" functions and the system calls that run them.

use std::ffi::{c_char, c_int, c_long, c_void};

/// The host's `struct seq_file`.
#[repr(C)]
pub struct SeqFile {
    /// The buffer.
    pub buf: *mut c_char,
    /// The buffer's size.
    pub size: usize,
    /// The bytes written so far.
    pub count: usize,
}

unsafe extern "C" {
    pub(crate) fn kgt_universe_tpoff() -> c_long;
    pub(crate) fn kgt_universe_ptr() -> *mut u8;
    pub(crate) fn kgt_log_take(buf: *mut c_char, size: usize) -> usize;
    pub(crate) static __start___mcount_loc: usize;
    pub(crate) static __stop___mcount_loc: usize;

    /// Fills `buf` with what `cmdline_proc_show` writes.
    pub fn sys_read_cmdline(buf: *mut c_char, size: usize) -> c_long;
    /// Fills `buf` with what `kgt_describe` writes for the built-in device.
    pub fn sys_read_testmod(buf: *mut c_char, size: usize) -> c_long;
    /// Returns 1 when `kgt_decode(kgt_encode(x)) == x`.
    pub fn sys_pair(x: u64) -> c_long;
    /// Sleeps `ms` milliseconds; `-EINTR` when kicked.
    pub fn sys_nap(ms: c_long) -> c_long;
    /// Spins while `*flag` is non-zero.
    pub fn sys_spin(flag: *const c_int) -> c_long;

    /// The host's `/proc/cmdline` handler.
    pub fn cmdline_proc_show(m: *mut SeqFile, v: *mut c_void) -> c_int;
    /// `kgraft_testmod`'s encoder.
    pub fn kgt_encode(x: u64) -> u64;
    /// `kgraft_testmod`'s decoder.
    pub fn kgt_decode(y: u64) -> u64;
    /// Calls the first local `kgt_local` (sympos 1).
    pub fn kgt_local_first(x: u64) -> u64;
    /// Calls the second local `kgt_local` (sympos 2).
    pub fn kgt_local_second(x: u64) -> u64;
    /// The benchmarks' call target.
    pub fn kgt_bench_target(x: u64) -> u64;
    /// The benchmarks' replacement, in the host's text.
    pub fn kgt_bench_replacement(x: u64) -> u64;
}
