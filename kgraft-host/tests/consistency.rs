//! The encode/decode pair under hammering threads: without universes, patching the two
//! functions one after the other lets threads see mismatched pairs; a universe transition never
//! does.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use kgraft_host::engine::Mode;
use kgraft_host::workload::{Config, Workload};

/// How many patch/unpatch rounds each half of the test runs at most.
const ROUNDS: usize = 200;

#[test]
fn without_universes_pairs_mismatch_and_with_them_never() {
    let _s = serial();
    let load = Workload::start(Config { workers: 3, sleepers: 1, kthreads: 1 });
    std::thread::sleep(Duration::from_millis(20));

    // Direct mode, two separate patches one after the other: the window between them, and
    // calls caught between their two halves, give mismatched pairs.
    let before = load.stats.mismatches.load(Ordering::Relaxed);
    assert_eq!(before, 0, "the unpatched pair always matches");
    let start = Instant::now();
    for _ in 0..ROUNDS {
        let mut e = eng();
        e.mode = Mode::Direct;
        apply(&mut e, &ENC_ONLY);
        std::thread::sleep(Duration::from_micros(300));
        apply(&mut e, &DEC_ONLY);
        remove(&mut e, "pair_encode_only");
        std::thread::sleep(Duration::from_micros(300));
        remove(&mut e, "pair_decode_only");
        e.mode = Mode::Universes;
        drop(e);
        if load.stats.mismatches.load(Ordering::Relaxed) > 0 {
            break;
        }
    }
    // Let the calls caught in the last change finish before counting.
    std::thread::sleep(Duration::from_millis(50));
    let direct = load.stats.mismatches.load(Ordering::Relaxed);
    assert!(direct > 0, "without universes the test must see mismatched pairs");
    eprintln!("direct mode: {direct} mismatched pairs in {:?}", start.elapsed());

    // Universes: the same change as one patch, applied and removed, many times.
    let base_pairs = load.stats.pairs.load(Ordering::Relaxed);
    for _ in 0..ROUNDS {
        let mut e = eng();
        apply(&mut e, &PAIR);
        remove(&mut e, "pair_v2");
    }
    let after = load.stats.mismatches.load(Ordering::Relaxed);
    let pairs = load.stats.pairs.load(Ordering::Relaxed) - base_pairs;
    load.stop();
    assert_eq!(after - direct, 0, "a universe transition must produce no mismatched pair");
    assert!(pairs > 1000, "the workers kept calling the pair ({pairs} calls)");
    eprintln!("universes: 0 mismatched pairs in {pairs} calls over {ROUNDS} transitions each way");
}
