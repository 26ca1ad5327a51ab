//! Transition time for 1, 8 and 1,000 threads, busy and sleeping.
//!
//! `cargo bench -p kgraft-host --bench transition` measures, from the start of a transition to
//! its end, how long applying the pair patch takes while N threads either hammer the pair
//! through system calls (busy) or sleep in a long system call that only the kick cuts short.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kgraft_host::engine::{Progress, engine};
use kgraft_host::ffi;
use kgraft_host::threads::{register, sleeping_syscall};
use kgraft_host::workload::pair;
use kgraft_rt::{Callbacks, Func, Patch};

unsafe extern "C" fn enc(x: u64) -> u64 {
    x ^ 0x0123_4567_89ab_cdef
}
unsafe extern "C" fn dec(x: u64) -> u64 {
    x ^ 0x0123_4567_89ab_cdef
}
static FUNCS: [Func; 2] = [
    Func {
        name: c"kgt_encode",
        object: Some(c"kgraft_testmod"),
        sympos: 0,
        new_fn: enc as *const (),
        direct: std::ptr::null(),
    },
    Func {
        name: c"kgt_decode",
        object: Some(c"kgraft_testmod"),
        sympos: 0,
        new_fn: dec as *const (),
        direct: std::ptr::null(),
    },
];
static PAIR: Patch = Patch {
    name: c"pair_v2",
    description: c"benchmark",
    kernel: None,
    replace_all: false,
    replace_all_param: None,
    funcs: &FUNCS,
    shadows: &[],
    callbacks: Callbacks::NONE,
    objects: &[],
    states: &[],
};

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    let p = engine().unwrap().wait(Duration::from_secs(60), |_| {}).unwrap();
    assert!(matches!(p, Progress::Done { .. }), "{p:?}");
    start.elapsed()
}

fn run(threads: usize, sleeping: bool) -> (Duration, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || {
                    let _r = register(&format!("t{i}"));
                    let mut x = i as u64;
                    while !stop.load(Ordering::Relaxed) {
                        if sleeping {
                            // SAFETY: the sleep takes no pointer.
                            sleeping_syscall(|| unsafe { ffi::sys_nap(10_000) });
                        } else {
                            x = x.wrapping_add(1);
                            pair(x);
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut samples = Vec::new();
    for _ in 0..5 {
        let apply = timed(|| engine().unwrap().begin_apply(&PAIR, None).unwrap());
        let remove = timed(|| engine().unwrap().begin_remove("pair_v2").unwrap());
        samples.push((apply, remove));
    }
    stop.store(true, Ordering::Relaxed);
    {
        let reg = kgraft_host::threads::registry().lock().unwrap();
        reg.iter().for_each(|r| r.kick());
    }
    handles.into_iter().for_each(|h| h.join().unwrap());
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    println!("transition time (median of 5), apply / remove of a two-function patch:");
    for threads in [1, 8, 1000] {
        for sleeping in [false, true] {
            let (a, r) = run(threads, sleeping);
            println!(
                "  {threads:>5} {:<8} threads: {:9.3} ms / {:9.3} ms",
                if sleeping { "sleeping" } else { "busy" },
                a.as_secs_f64() * 1e3,
                r.as_secs_f64() * 1e3
            );
        }
    }
}
