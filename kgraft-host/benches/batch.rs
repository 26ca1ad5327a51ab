//! Applying 1,000 sites in one batch: time and number of core syncs.
//!
//! `cargo bench -p kgraft-host --bench batch` patches the host's 1,000 generated functions
//! `kgt_many_N` in one patch: directly (one batch of pokes), and as a full transition (a batch
//! to the trampolines, a batch to the new code). For comparison it also applies the same 1,000
//! replacements as 1,000 separate patches, one batch each.

use std::ffi::CString;
use std::time::{Duration, Instant};

use kgraft_host::engine::{Mode, Progress, engine};
use kgraft_host::ffi;
use kgraft_host::threads::register;
use kgraft_rt::{Callbacks, Func, Patch};

const SITES: usize = 1000;

fn patch(name: String, range: std::ops::Range<usize>) -> &'static Patch {
    let new_fn = ffi::kgt_bench_replacement as *const ();
    let funcs: Vec<Func> = range
        .map(|i| Func {
            name: Box::leak(CString::new(format!("kgt_many_{i}")).unwrap().into_boxed_c_str()),
            object: None,
            sympos: 0,
            new_fn,
            direct: std::ptr::null(),
        })
        .collect();
    Box::leak(Box::new(Patch {
        name: Box::leak(CString::new(name).unwrap().into_boxed_c_str()),
        description: c"benchmark",
        kernel: None,
        replace_all: false,
        replace_all_param: None,
        funcs: Box::leak(funcs.into_boxed_slice()),
        shadows: &[],
        callbacks: Callbacks::NONE,
        objects: &[],
        states: &[],
    }))
}

fn wait() {
    let p = engine().unwrap().wait(Duration::from_secs(30), |_| {}).unwrap();
    assert!(matches!(p, Progress::Done { .. } | Progress::Idle), "{p:?}");
}

fn main() {
    let _me = register("bench");
    let one = patch("many".into(), 0..SITES);
    println!("{SITES} sites:");

    let mut best = (Duration::MAX, 0);
    for _ in 0..5 {
        let mut e = engine().unwrap();
        e.mode = Mode::Direct;
        let syncs = e.syncs();
        let start = Instant::now();
        e.begin_apply(one, None).unwrap();
        let t = start.elapsed();
        let n = e.syncs() - syncs;
        e.begin_remove("many").unwrap();
        e.mode = Mode::Universes;
        best = best.min((t, n));
    }
    println!("  one batch, direct:           {:8.3} ms, {} core syncs", best.0.as_secs_f64() * 1e3, best.1);

    let mut best = (Duration::MAX, 0);
    for _ in 0..5 {
        let syncs = engine().unwrap().syncs();
        let start = Instant::now();
        engine().unwrap().begin_apply(one, None).unwrap();
        wait();
        let t = start.elapsed();
        let n = engine().unwrap().syncs() - syncs;
        engine().unwrap().begin_remove("many").unwrap();
        wait();
        best = best.min((t, n));
    }
    println!("  full transition (universes): {:8.3} ms, {} core syncs", best.0.as_secs_f64() * 1e3, best.1);

    let singles: Vec<&'static Patch> = (0..SITES).map(|i| patch(format!("single_{i}"), i..i + 1)).collect();
    let mut e = engine().unwrap();
    e.mode = Mode::Direct;
    let syncs = e.syncs();
    let start = Instant::now();
    for p in &singles {
        e.begin_apply(p, None).unwrap();
    }
    let t = start.elapsed();
    let n = e.syncs() - syncs;
    for i in 0..SITES {
        e.begin_remove(&format!("single_{i}")).unwrap();
    }
    println!("  1,000 patches of one site:   {:8.3} ms, {} core syncs", t.as_secs_f64() * 1e3, n);
}
