//! Patch and unpatch the pair many times while threads call it: no crash, and every result is
//! the old or the new behaviour, never anything else.
//!
//! `KGRAFT_STRESS_CYCLES` sets the number of cycles (default 10,000).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use common::*;
use kgraft_host::ffi;
use kgraft_host::threads::{register, register_kthread, safe_point, syscall};

#[test]
fn many_patch_unpatch_cycles_under_load() {
    let _s = serial();
    let cycles: usize = std::env::var("KGRAFT_STRESS_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let stop = Arc::new(AtomicBool::new(false));
    let (old_seen, new_seen, bad) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut handles = Vec::new();
    for i in 0..3u64 {
        let (stop, old_seen, new_seen, bad) = (stop.clone(), old_seen.clone(), new_seen.clone(), bad.clone());
        handles.push(std::thread::spawn(move || {
            // Two user threads going through system calls, one kernel thread.
            let kthread = i == 2;
            let _r = if kthread { register_kthread("stress-kthread") } else { register(&format!("stress-{i}")) };
            let mut x = i;
            while !stop.load(Ordering::Relaxed) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let call = || {
                    // SAFETY: plain integer functions.
                    let y = unsafe { ffi::kgt_encode(x) };
                    // SAFETY: as above.
                    let back = unsafe { ffi::kgt_decode(y) };
                    (y, back)
                };
                let (y, back) = if kthread {
                    let r = call();
                    safe_point();
                    r
                } else {
                    syscall(call)
                };
                if y == x ^ OLD_KEY && back == x {
                    old_seen.fetch_add(1, Ordering::Relaxed);
                } else if y == x ^ NEW_KEY && back == x {
                    new_seen.fetch_add(1, Ordering::Relaxed);
                } else {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let start = Instant::now();
    for _ in 0..cycles {
        let mut e = eng();
        apply(&mut e, &PAIR);
        remove(&mut e, "pair_v2");
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    handles.into_iter().for_each(|h| h.join().unwrap());
    let (o, n, b) = (old_seen.load(Ordering::Relaxed), new_seen.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    eprintln!("{cycles} cycles in {elapsed:?}: {o} old results, {n} new results, {b} others");
    assert_eq!(b, 0, "every result is the old or the new behaviour");
    assert!(o > 0 && n > 0, "both behaviours were seen ({o} old, {n} new)");
    let e = eng();
    assert!(e.list().is_empty());
    let site = e.site_of("kgt_encode").unwrap();
    assert_eq!(e.read_site(site).unwrap(), kgraft_rt::engine::site::NOP5);
}
