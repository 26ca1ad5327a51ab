//! The host's workload: busy workers, sleepers, and kernel threads with explicit safe points.

use std::ffi::c_char;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use crate::ffi;
use crate::threads::{self, register, register_kthread, safe_point, sleeping_syscall, syscall};

/// How many threads of each class the workload runs.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Threads hammering the pair, `/proc/cmdline` and `/proc/kgraft_testmod`.
    pub workers: usize,
    /// Threads that sleep in a system call and need the kick.
    pub sleepers: usize,
    /// Kernel threads, which pass a safe point only where they call it.
    pub kthreads: usize,
}

/// What the workload has seen.
#[derive(Debug, Default)]
pub struct Stats {
    /// Pair calls made.
    pub pairs: AtomicU64,
    /// Pair calls where decode(encode(x)) != x.
    pub mismatches: AtomicU64,
    /// Reads of the text files.
    pub reads: AtomicU64,
    /// Sleeps cut short by a kick.
    pub kicks: AtomicU64,
}

/// The running workload.
pub struct Workload {
    stop: Arc<AtomicBool>,
    /// The counters.
    pub stats: Arc<Stats>,
    handles: Vec<JoinHandle<()>>,
}

/// Reads a text "file" through a system call.
pub fn read_file(which: &str) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let n = match which {
        // SAFETY: the buffer is writable for its whole length.
        "cmdline" => syscall(|| unsafe { ffi::sys_read_cmdline(buf.as_mut_ptr().cast::<c_char>(), buf.len()) }),
        // SAFETY: as above.
        "testmod" => syscall(|| unsafe { ffi::sys_read_testmod(buf.as_mut_ptr().cast::<c_char>(), buf.len()) }),
        _ => return None,
    };
    let n = usize::try_from(n).ok()?.min(buf.len());
    buf.truncate(n);
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// Returns the host's printk log and empties it.
pub fn take_log() -> String {
    let mut buf = vec![0u8; 4096];
    // SAFETY: the buffer is writable for its whole length.
    let n = unsafe { ffi::kgt_log_take(buf.as_mut_ptr().cast::<c_char>(), buf.len()) };
    String::from_utf8_lossy(&buf[..n.min(buf.len())]).into_owned()
}

/// Makes one pair call through a system call; returns whether the pair matched.
pub fn pair(x: u64) -> bool {
    // SAFETY: the pair call has no pointer arguments.
    syscall(|| unsafe { ffi::sys_pair(x) }) == 1
}

impl Workload {
    /// Starts the threads.
    pub fn start(config: Config) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let mut handles = Vec::new();
        for i in 0..config.workers {
            let (stop, stats) = (stop.clone(), stats.clone());
            handles.push(spawn(format!("worker-{i}"), move || {
                let mut x = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = x.rotate_left(7).wrapping_add(0x632b_e59b_d9b4_e019);
                    if !pair(x) {
                        stats.mismatches.fetch_add(1, Ordering::Relaxed);
                    }
                    stats.pairs.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                    if n % 64 == 0 {
                        read_file(if n % 128 == 0 { "cmdline" } else { "testmod" });
                        stats.reads.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for i in 0..config.sleepers {
            let (stop, stats) = (stop.clone(), stats.clone());
            handles.push(spawn(format!("sleeper-{i}"), move || {
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: the sleep takes no pointer.
                    let r = sleeping_syscall(|| unsafe { ffi::sys_nap(100) });
                    if r == -(libc::EINTR as i64) {
                        stats.kicks.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for i in 0..config.kthreads {
            let (stop, stats) = (stop.clone(), stats.clone());
            handles.push(spawn_kthread(format!("kthread-{i}"), move || {
                let mut x = i as u64;
                while !stop.load(Ordering::Relaxed) {
                    // A kernel thread calls kernel functions directly and declares its own safe
                    // points, between units of work.
                    for _ in 0..256 {
                        x = x.wrapping_add(1);
                        // SAFETY: plain integer functions.
                        let ok = unsafe { ffi::kgt_decode(ffi::kgt_encode(x)) } == x;
                        if !ok {
                            stats.mismatches.fetch_add(1, Ordering::Relaxed);
                        }
                        stats.pairs.fetch_add(1, Ordering::Relaxed);
                    }
                    safe_point();
                    std::thread::yield_now();
                }
            }));
        }
        Workload { stop, stats, handles }
    }

    /// Stops the threads and waits for them.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let reg = threads::registry().lock().unwrap_or_else(|e| e.into_inner());
        reg.iter().filter(|r| r.name.starts_with("sleeper-")).for_each(|r| r.kick());
        drop(reg);
        for h in self.handles {
            let _ = h.join();
        }
    }
}

/// Spawns a registered kernel thread.
fn spawn_kthread(name: String, body: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let _reg = register_kthread(&name);
            body();
        })
        .expect("spawning a host thread")
}

/// Spawns a registered thread.
fn spawn(name: String, body: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let _reg = register(&name);
            body();
        })
        .expect("spawning a host thread")
}
