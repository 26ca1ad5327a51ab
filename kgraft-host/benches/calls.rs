//! Cost of a call through each kind of site, as a ratio to an unpatched call in the same run.
//!
//! `cargo bench -p kgraft-host --bench calls` prints ns per call for: the unpatched function
//! (its fentry NOP), the patched function (the site's direct JMP), the function during a
//! transition (the reality-check trampoline), and, for comparison, an ftrace-like handler that
//! looks the replacement up on every call (the kernel livepatch's way).

use std::ffi::CStr;
use std::hint::black_box;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::{Duration, Instant};

use kgraft_host::engine::{Progress, engine};
use kgraft_host::ffi;
use kgraft_host::threads::{register, sleeping_syscall, syscall};
use kgraft_rt::{Callbacks, Func, Patch};

const CALLS: u64 = 20_000_000;

/// Returns the best ns per call over several runs of `CALLS` calls.
fn measure() -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let mut x = 0u64;
        for _ in 0..CALLS {
            // SAFETY: a plain integer function.
            x = unsafe { ffi::kgt_bench_target(black_box(x)) };
        }
        black_box(x);
        best = best.min(start.elapsed().as_nanos() as f64 / CALLS as f64);
    }
    best
}

/// The table an ftrace-like handler searches on every call: (site's function, replacement).
static OPS: AtomicPtr<Vec<(usize, usize)>> = AtomicPtr::new(std::ptr::null_mut());

/// Looks the replacement of the function at `ip` up, as an ftrace handler does per call.
extern "C" fn lookup(ip: usize) -> usize {
    // SAFETY: the table is set before the site is patched and never freed.
    let ops = unsafe { &*OPS.load(Ordering::Acquire) };
    match ops.binary_search_by_key(&ip, |e| e.0) {
        Ok(i) => ops[i].1,
        Err(_) => std::process::abort(),
    }
}

/// The address of `kgt_bench_target`, the key the handler looks up.
static TARGET_IP: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());

/// The ftrace-like caller: saves the argument registers, asks the handler where to go, and
/// jumps there with the registers restored.
#[unsafe(naked)]
unsafe extern "C" fn ftrace_caller() {
    core::arch::naked_asm!(
        "push rdi", "push rsi", "push rdx", "push rcx", "push r8", "push r9", "push rax",
        "mov rdi, qword ptr [rip + {ip}]",
        "call {lookup}",
        "mov r11, rax",
        "pop rax", "pop r9", "pop r8", "pop rcx", "pop rdx", "pop rsi", "pop rdi",
        "jmp r11",
        ip = sym TARGET_IP,
        lookup = sym lookup,
    );
}

/// A patch of `kgt_bench_target` whose replacement is `new_fn`.
fn bench_patch(name: &'static CStr, new_fn: *const ()) -> &'static Patch {
    let funcs: &'static [Func] = Box::leak(Box::new([Func {
        name: c"kgt_bench_target",
        object: None,
        sympos: 0,
        new_fn,
        direct: std::ptr::null(),
    }]));
    Box::leak(Box::new(Patch {
        name,
        description: c"benchmark",
        kernel: None,
        replace_all: false,
        replace_all_param: None,
        funcs,
        shadows: &[],
        callbacks: Callbacks::NONE,
        objects: &[],
        states: &[],
    }))
}

/// Copies `kgt_bench_replacement` (position-independent) far from the text, out of `rel32`
/// reach, where a patch's shared object usually lands.
fn far_replacement() -> *const () {
    let len = {
        let e = engine().unwrap();
        e.symbols().lookup("kgt_bench_replacement", 0).unwrap().size
    };
    let near = ffi::kgt_bench_replacement as *const () as usize;
    let hint = (near + (64usize << 30)) & !0xfff;
    // SAFETY: a fresh anonymous mapping; MAP_FIXED_NOREPLACE never replaces one.
    let page = unsafe {
        libc::mmap(
            hint as *mut libc::c_void,
            4096,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    assert_ne!(page, libc::MAP_FAILED, "a page far from the text");
    // SAFETY: the function's bytes are readable text; the page is writable and 4 KiB long.
    unsafe { std::ptr::copy_nonoverlapping(near as *const u8, page.cast::<u8>(), len.min(4096)) };
    page as *const ()
}

/// Measures the patched and the in-transition call to `replacement`.
fn patched_and_transition(replacement: *const ()) -> (f64, f64) {
    engine().unwrap().begin_apply(bench_patch(c"bench_direct", replacement), None).unwrap();
    finish();
    syscall(|| ());
    let direct = measure();
    engine().unwrap().begin_remove("bench_direct").unwrap();
    finish();

    // A thread asleep in a system call with the kick blocked holds the transition open
    // without taking a core from the measurement.
    let spinner = std::thread::spawn(move || {
        // SAFETY: blocks one signal for this thread only.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, kgraft_host::threads::KICK_SIGNAL);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        let _r = register("straggler");
        // SAFETY: the sleep takes no pointer.
        sleeping_syscall(|| unsafe { ffi::sys_nap(3000) });
    });
    std::thread::sleep(Duration::from_millis(50));
    engine().unwrap().begin_apply(bench_patch(c"bench_transition", replacement), None).unwrap();
    syscall(|| ());
    let p = engine().unwrap().poll().unwrap();
    assert!(matches!(p, Progress::Waiting { .. }), "the spinner holds the transition: {p:?}");
    let transition = measure();
    spinner.join().unwrap();
    finish();
    engine().unwrap().begin_remove("bench_transition").unwrap();
    finish();
    (direct, transition)
}

fn finish() {
    let p = engine().unwrap().wait(Duration::from_secs(30), |_| {}).unwrap();
    assert!(matches!(p, Progress::Done { .. }), "{p:?}");
}

fn main() {
    let _me = register("bench");
    let replacement = ffi::kgt_bench_replacement as *const ();
    let unpatched = measure();

    let (direct, transition) = patched_and_transition(replacement);
    let (far, far_transition) = patched_and_transition(far_replacement());

    let target = ffi::kgt_bench_target as *const () as usize;
    TARGET_IP.store(target as *mut (), Ordering::Release);
    let table = Box::leak(Box::new(vec![(target - 0x1000, 0), (target, replacement as usize), (target + 0x1000, 0)]));
    OPS.store(table, Ordering::Release);
    engine().unwrap().begin_apply(bench_patch(c"bench_ftrace", ftrace_caller as *const ()), None).unwrap();
    finish();
    syscall(|| ());
    let ftrace = measure();
    engine().unwrap().begin_remove("bench_ftrace").unwrap();
    finish();

    println!("ns per call of kgt_bench_target ({CALLS} calls, best of 5, loop included):");
    for (what, ns) in [
        ("unpatched (fentry NOP)", unpatched),
        ("patched (direct JMP)", direct),
        ("patched, far (JMP to a thunk)", far),
        ("in transition (trampoline)", transition),
        ("in transition, far", far_transition),
        ("ftrace-like lookup per call", ftrace),
    ] {
        println!("  {what:<30} {ns:6.2} ns   x{:.2}", ns / unpatched);
    }
}
