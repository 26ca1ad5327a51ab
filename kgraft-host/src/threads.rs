//! The host's threads: registration, the safe point at the syscall boundary, and the kick.
//!
//! Every thread that runs patchable code registers. Its universe is the C thread-local flag that
//! the trampolines read. The thread moves to the goal universe only at a safe point: the entry
//! and the exit of a "system call", or an explicit call in a kernel-thread loop. A thread asleep
//! in a system call is kicked with a signal, which ends the sleep early (`-EINTR`); it then
//! passes the exit safe point and restarts the call, as a task does after kGraft's fake signal.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use kgraft_rt::engine::universe::Goal;

use crate::ffi;

/// The signal that kicks sleeping threads.
pub const KICK_SIGNAL: libc::c_int = libc::SIGUSR2;

/// The universe every thread should reach.
pub static GOAL: Goal = Goal::new();

/// A registered thread.
pub struct ThreadRec {
    /// The thread's name, for straggler reports.
    pub name: String,
    /// The kernel's id of the thread.
    pub tid: i32,
    pthread: libc::pthread_t,
    flag: &'static AtomicU8,
    /// How many safe points the thread has passed.
    pub safe_points: AtomicU64,
    /// When it last passed one, in nanoseconds since the host started.
    pub last_safe_ns: AtomicU64,
    /// Whether it is asleep in a system call.
    pub asleep: AtomicBool,
    /// Whether it runs kernel code: inside a system call, or always for a kernel thread. A
    /// thread in user mode holds no kernel frame and changes universe when it next enters.
    pub in_kernel: AtomicBool,
}

impl ThreadRec {
    /// Returns the thread's universe.
    pub fn universe(&self) -> u8 {
        self.flag.load(Ordering::Acquire)
    }

    /// Returns whether the thread still holds the transition to `goal` back: it is inside the
    /// kernel and has not reached the goal universe.
    pub fn pending(&self, goal: u8) -> bool {
        self.in_kernel.load(Ordering::SeqCst) && self.universe() != goal
    }

    /// Sends the thread the kick signal.
    pub fn kick(&self) {
        // SAFETY: the record is removed before its thread exits (the guard's drop), and the
        // registry lock is held by the caller while it walks the records.
        unsafe { libc::pthread_kill(self.pthread, KICK_SIGNAL) };
    }
}

/// The registered threads.
pub fn registry() -> &'static Mutex<Vec<Arc<ThreadRec>>> {
    static REG: OnceLock<Mutex<Vec<Arc<ThreadRec>>>> = OnceLock::new();
    REG.get_or_init(|| {
        install_kick_handler();
        Mutex::new(Vec::new())
    })
}

/// Returns the nanoseconds since the host started.
pub fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

thread_local! {
    static CURRENT: Cell<Option<&'static ThreadRec>> = const { Cell::new(None) };
}

/// Keeps a thread registered; dropping it deregisters the thread.
pub struct Registration {
    rec: Arc<ThreadRec>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(None));
        let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
        reg.retain(|r| !Arc::ptr_eq(r, &self.rec));
    }
}

/// Registers the calling thread under `name` as a user thread, which runs kernel code only
/// inside [`syscall`]; it starts in the goal universe.
pub fn register(name: &str) -> Registration {
    register_as(name, false)
}

/// Registers the calling thread as a kernel thread: it runs kernel code at any time and
/// changes universe only at the [`safe_point`]s it calls.
pub fn register_kthread(name: &str) -> Registration {
    register_as(name, true)
}

fn register_as(name: &str, kthread: bool) -> Registration {
    // SAFETY: both calls only read the calling thread's identity.
    let (tid, pthread) = unsafe { (libc::gettid(), libc::pthread_self()) };
    // SAFETY: the C thread-local lives as long as the thread, which outlives the registration;
    // only atomic accesses touch it from Rust, and the trampolines only read it.
    let flag: &'static AtomicU8 = unsafe { AtomicU8::from_ptr(ffi::kgt_universe_ptr()) };
    let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
    flag.store(GOAL.get(), Ordering::Release);
    let rec = Arc::new(ThreadRec {
        name: name.to_string(),
        tid,
        pthread,
        flag,
        safe_points: AtomicU64::new(0),
        last_safe_ns: AtomicU64::new(now_ns()),
        asleep: AtomicBool::new(false),
        in_kernel: AtomicBool::new(kthread),
    });
    reg.push(rec.clone());
    drop(reg);
    // SAFETY: the record lives in the registry until the registration is dropped, and the
    // thread-local is cleared in that drop, before the Arc can go away.
    let static_ref: &'static ThreadRec = unsafe { &*Arc::as_ptr(&rec) };
    CURRENT.with(|c| c.set(Some(static_ref)));
    Registration { rec }
}

/// The safe point: the calling thread holds no frame of patchable code, so it may change
/// universe.
#[inline]
pub fn safe_point() {
    CURRENT.with(|c| {
        if let Some(rec) = c.get() {
            GOAL.migrate(rec.flag);
            rec.safe_points.fetch_add(1, Ordering::Release);
            rec.last_safe_ns.store(now_ns(), Ordering::Relaxed);
        }
    });
}

/// Enters the kernel: announces it, then passes the entry safe point.
#[inline]
fn enter() {
    CURRENT.with(|c| {
        if let Some(rec) = c.get() {
            rec.in_kernel.store(true, Ordering::SeqCst);
        }
    });
    safe_point();
}

/// Leaves the kernel: passes the exit safe point, then announces user mode.
#[inline]
fn leave() {
    safe_point();
    CURRENT.with(|c| {
        if let Some(rec) = c.get() {
            rec.in_kernel.store(false, Ordering::SeqCst);
        }
    });
}

/// Runs a "system call": a safe point at entry and at exit, and `call` in between.
#[inline]
pub fn syscall<R>(call: impl FnOnce() -> R) -> R {
    enter();
    let r = call();
    leave();
    r
}

/// Runs a sleeping "system call": the thread counts as asleep while `call` runs.
pub fn sleeping_syscall<R>(call: impl FnOnce() -> R) -> R {
    enter();
    CURRENT.with(|c| {
        if let Some(rec) = c.get() {
            rec.asleep.store(true, Ordering::Release);
        }
    });
    let r = call();
    CURRENT.with(|c| {
        if let Some(rec) = c.get() {
            rec.asleep.store(false, Ordering::Release);
        }
    });
    leave();
    r
}

/// Installs the kick handler: it does nothing but interrupt the sleep (no `SA_RESTART`).
fn install_kick_handler() {
    extern "C" fn on_kick(_sig: libc::c_int) {}
    // SAFETY: a zeroed sigaction with an empty handler and mask is valid.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_kick as *const () as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(KICK_SIGNAL, &sa, std::ptr::null_mut());
    }
}
