//! Transitions in the host: kicks, stragglers and reversal, stacking, refusals, shadow data.

mod common;

use std::ffi::{c_int, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use kgraft_host::engine::{Direction, Engine, Progress};
use kgraft_host::ffi;
use kgraft_host::threads::{register, sleeping_syscall, syscall};
use kgraft_host::workload::read_file;
use kgraft_rt::engine::poke::Text;
use kgraft_rt::engine::site::NOP5;
use kgraft_rt::{Callbacks, Func, Patch, ShadowDecl};

/// Returns the first 64 bytes of each named function: what must not change after a refusal.
fn snapshot(e: &Engine, names: &[&str]) -> Vec<Vec<u8>> {
    names
        .iter()
        .map(|n| {
            let sym = e.symbols().lookup(n, 0).expect("a host function").clone();
            let mut buf = vec![0u8; 64];
            e.text().read(sym.addr, &mut buf).expect("readable text");
            buf
        })
        .collect()
}

/// Calls the encoder through a system call.
fn encode(x: u64) -> u64 {
    // SAFETY: a plain integer function.
    syscall(|| unsafe { ffi::kgt_encode(x) })
}

/// Calls the decoder through a system call.
fn decode(x: u64) -> u64 {
    // SAFETY: a plain integer function.
    syscall(|| unsafe { ffi::kgt_decode(x) })
}

#[test]
fn sleeping_threads_migrate_after_the_kick() {
    let _s = serial();
    let kicks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicI32::new(0));
    let mut handles = Vec::new();
    for i in 0..3 {
        let (kicks, stop) = (kicks.clone(), stop.clone());
        handles.push(std::thread::spawn(move || {
            let _r = register(&format!("deep-sleeper-{i}"));
            while stop.load(Ordering::Relaxed) == 0 {
                // A minute-long sleep: only the kick ends it early.
                // SAFETY: the sleep takes no pointer.
                if sleeping_syscall(|| unsafe { ffi::sys_nap(60_000) }) == -(libc::EINTR as i64) {
                    kicks.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(50));
    let mut e = eng();
    e.begin_apply(&PAIR, None).expect("applies");
    let p = e.wait(Duration::from_secs(10), |_| {}).expect("polls");
    assert!(matches!(p, Progress::Done { direction: Direction::Patch, .. }), "{p:?}");
    assert!(kicks.load(Ordering::Relaxed) >= 3, "each sleeper was kicked out of its sleep");
    remove(&mut e, "pair_v2");
    drop(e);
    stop.store(1, Ordering::Relaxed);
    let reg = kgraft_host::threads::registry().lock().unwrap();
    reg.iter().filter(|r| r.name.starts_with("deep-sleeper")).for_each(|r| r.kick());
    drop(reg);
    handles.into_iter().for_each(|h| h.join().unwrap());
}

#[test]
fn a_straggler_is_reported_and_the_transition_reversed() {
    let _s = serial();
    let _me = register("test-main");
    let spin = Arc::new(AtomicI32::new(1));
    let spin2 = spin.clone();
    let spinner = std::thread::spawn(move || {
        let _r = register("spinner");
        // A system call that does not return until told: its thread never reaches a safe point.
        // SAFETY: the flag outlives the call.
        syscall(|| unsafe { ffi::sys_spin(spin2.as_ptr()) });
    });
    std::thread::sleep(Duration::from_millis(20));
    let mut e = eng();
    let before = snapshot(&e, &["kgt_encode", "kgt_decode"]);
    e.begin_apply(&PAIR, None).expect("applies");
    let p = e.wait(Duration::from_millis(300), |_| {}).expect("polls");
    let Progress::Waiting { stragglers, .. } = p else { panic!("the spinner must hold the transition: {p:?}") };
    assert_eq!(stragglers.len(), 1, "{stragglers:?}");
    assert_eq!(stragglers[0].name, "spinner");
    assert!(stragglers[0].since_safe_point >= Duration::from_millis(250), "{stragglers:?}");
    // Mid-transition, this thread is in the new universe: it runs the new pair.
    assert_eq!(encode(1), 1 ^ NEW_KEY);
    e.reverse().expect("a transition is in progress");
    let p = e.wait(Duration::from_secs(10), |_| {}).expect("polls");
    assert!(matches!(p, Progress::Done { direction: Direction::Unpatch, .. }), "{p:?}");
    assert_eq!(encode(1), 1 ^ OLD_KEY);
    assert!(e.list().is_empty(), "the reversed patch is gone");
    assert_eq!(snapshot(&e, &["kgt_encode", "kgt_decode"]), before);
    drop(e);
    spin.store(0, Ordering::Release);
    spinner.join().unwrap();
}

const KEY_A: u64 = 0xa;
const KEY_B: u64 = 0xb;
const KEY_C: u64 = 0xc;
const KEY_D: u64 = 0xd;
unsafe extern "C" fn enc_a(x: u64) -> u64 {
    x ^ KEY_A
}
unsafe extern "C" fn enc_b(x: u64) -> u64 {
    x ^ KEY_B
}
unsafe extern "C" fn dec_b(x: u64) -> u64 {
    x ^ KEY_B
}
unsafe extern "C" fn enc_c(x: u64) -> u64 {
    x ^ KEY_C
}
unsafe extern "C" fn dec_d(x: u64) -> u64 {
    x ^ KEY_D
}
static FA: [Func; 1] = [func(c"kgt_encode", enc_a as *const ())];
static FB: [Func; 2] = [func(c"kgt_encode", enc_b as *const ()), func(c"kgt_decode", dec_b as *const ())];
static FC: [Func; 1] = [func(c"kgt_encode", enc_c as *const ())];
static FD: [Func; 1] = [func(c"kgt_decode", dec_d as *const ())];
static PA: Patch = patch(c"stack_a", &FA, false);
static PB: Patch = patch(c"stack_b", &FB, false);
static PC: Patch = patch(c"stack_c", &FC, false);
static PD: Patch = patch(c"stack_d", &FD, true);

#[test]
fn stacking_middle_removal_and_replace_all() {
    let _s = serial();
    let _me = register("test-main");
    let mut e = eng();
    let before = snapshot(&e, &["kgt_encode", "kgt_decode"]);
    apply(&mut e, &PA);
    apply(&mut e, &PB);
    apply(&mut e, &PC);
    assert_eq!((encode(0), decode(0)), (KEY_C, KEY_B), "the newest patch wins");
    remove(&mut e, "stack_b");
    assert_eq!((encode(0), decode(0)), (KEY_C, OLD_KEY), "removing the middle patch");
    remove(&mut e, "stack_c");
    assert_eq!((encode(0), decode(0)), (KEY_A, OLD_KEY), "the patch below shows again");
    apply(&mut e, &PB);
    apply(&mut e, &PD);
    assert_eq!((encode(0), decode(0)), (OLD_KEY, KEY_D), "replace_all drops every patch below");
    let names: Vec<String> = e.list().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["stack_d"]);
    remove(&mut e, "stack_d");
    assert_eq!((encode(0), decode(0)), (OLD_KEY, OLD_KEY));
    assert_eq!(snapshot(&e, &["kgt_encode", "kgt_decode"]), before, "the text is as it was");
}

static POST_CALLS: AtomicUsize = AtomicUsize::new(0);
unsafe fn refuse(_obj: &kgraft_rt::Object) -> c_int {
    -22
}
unsafe fn post(_obj: &kgraft_rt::Object) {
    POST_CALLS.fetch_add(1, Ordering::SeqCst);
}
static REFUSING: Patch = Patch {
    name: c"refusing",
    description: c"pre_patch says no",
    kernel: None,
    replace_all: false,
    replace_all_param: None,
    funcs: &PAIR_FUNCS,
    shadows: &[],
    callbacks: Callbacks {
        pre_patch: Some(refuse),
        post_patch: Some(post),
        pre_unpatch: None,
        post_unpatch: Some(post),
    },
    objects: &[],
    states: &[],
};
unsafe extern "C" fn bench_v2(x: u64) -> u64 {
    x
}
static DAMAGED_FUNCS: [Func; 2] = [
    func(c"kgt_encode", encode_v2 as *const ()),
    Func {
        name: c"kgt_bench_target",
        object: None,
        sympos: 0,
        new_fn: bench_v2 as *const (),
        direct: std::ptr::null(),
    },
];
static DAMAGED: Patch = patch(c"damaged", &DAMAGED_FUNCS, false);
static FOREIGN_FUNCS: [Func; 1] = [Func {
    name: c"kgt_encode",
    object: Some(c"ext4"),
    sympos: 0,
    new_fn: encode_v2 as *const (),
    direct: std::ptr::null(),
}];
static FOREIGN: Patch = patch(c"foreign", &FOREIGN_FUNCS, false);

#[test]
fn refusals_leave_the_text_byte_for_byte() {
    let _s = serial();
    let _me = register("test-main");
    let names = ["kgt_encode", "kgt_decode", "kgt_bench_target"];
    let mut e = eng();
    let before = snapshot(&e, &names);

    // A pre_patch that refuses: nothing changes, no other callback runs.
    let err = e.begin_apply(&REFUSING, None).unwrap_err();
    assert!(err.contains("pre_patch refused"), "{err}");
    assert_eq!(POST_CALLS.load(Ordering::SeqCst), 0);
    assert!(e.list().is_empty());
    assert_eq!(snapshot(&e, &names), before);

    // A module the host does not have.
    let err = e.begin_apply(&FOREIGN, None).unwrap_err();
    assert!(err.contains("module `ext4` is not loaded"), "{err}");

    // A site with unexpected bytes: refused before anything is written.
    let site = e.site_of("kgt_bench_target").unwrap();
    let odd = [0x2e, 0x0f, 0x1f, 0x40, 0x00]; // another 5-byte NOP
    e.text().write(site, &odd).unwrap();
    e.text().sync_cores();
    let damaged = snapshot(&e, &names);
    let err = e.begin_apply(&DAMAGED, None).unwrap_err();
    assert!(err.contains(&format!("patch site {site:#x} holds 2e 0f 1f 40 00, expected 0f 1f 44 00 00")), "{err}");
    assert_eq!(snapshot(&e, &names), damaged);
    e.text().write(site, &NOP5).unwrap();
    e.text().sync_cores();

    // A write that fails in the middle of a batch, at every position of both batches.
    for n in 0..12 {
        e.text().fail_write_after(n);
        let r = e.begin_apply(&PAIR, None);
        if r.is_ok() {
            // The failure is armed for the final batch: the transition stays in progress with
            // the trampolines in place until a later poll succeeds.
            let p = e.wait(Duration::from_secs(10), |_| {});
            if p.is_err() {
                let p = e.wait(Duration::from_secs(10), |_| {}).expect("the retry succeeds");
                assert!(matches!(p, Progress::Done { .. }), "{p:?}");
            }
            remove(&mut e, "pair_v2");
        }
        e.text().fail_write_after(u64::MAX - 1);
        assert_eq!(snapshot(&e, &names), before, "after a failure at write {n}");
        assert!(e.list().is_empty());
        assert_eq!((encode(5), decode(5)), (5 ^ OLD_KEY, 5 ^ OLD_KEY));
    }
}

/// The shadow fields of a `kgt_dev` in the shadow test.
struct Reads {
    n: AtomicU64,
}
static DTORS: AtomicUsize = AtomicUsize::new(0);
const READS_ID: u64 = 0x5eed;
unsafe extern "C" fn reads_dtor(_obj: *mut c_void, data: *mut c_void) {
    DTORS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the store passes data the constructor wrote.
    unsafe { data.cast::<Reads>().drop_in_place() };
}
unsafe extern "C" fn reads_ctor(_obj: *mut c_void, data: *mut c_void, _c: *mut c_void) -> c_int {
    // SAFETY: the store passes room for the fields.
    unsafe { data.cast::<Reads>().write(Reads { n: AtomicU64::new(0) }) };
    0
}
unsafe extern "C" fn describe_v2(dev: *mut c_void, m: *mut ffi::SeqFile) {
    // SAFETY: the store hands out `Reads` under READS_ID, made by the constructor.
    let reads = unsafe {
        &*kgraft_host::shadow::klp_shadow_get_or_alloc(
            dev,
            READS_ID,
            size_of::<Reads>(),
            0,
            Some(reads_ctor),
            std::ptr::null_mut(),
        )
        .cast::<Reads>()
    };
    let n = reads.n.fetch_add(1, Ordering::Relaxed) + 1;
    let line = std::ffi::CString::new(format!("kgt v2 reads={n}\n")).unwrap();
    // SAFETY: `m` is the seq_file of the read in progress.
    unsafe { seq_puts(m, line.as_ptr()) };
}
unsafe extern "C" {
    fn seq_puts(m: *mut ffi::SeqFile, s: *const std::ffi::c_char);
}
static SHADOW_FUNCS: [Func; 1] = [func(c"kgt_describe", describe_v2 as *const ())];
static SHADOW_DECLS: [ShadowDecl; 1] =
    [ShadowDecl { type_name: c"kgt_dev", id: READS_ID, size: size_of::<Reads>(), dtor: reads_dtor, owned: true }];
static SHADOWED: Patch = Patch {
    name: c"shadowed",
    description: c"counts reads in shadow data",
    kernel: None,
    replace_all: false,
    replace_all_param: None,
    funcs: &SHADOW_FUNCS,
    shadows: &SHADOW_DECLS,
    callbacks: Callbacks::NONE,
    objects: &[],
    states: &[],
};

#[test]
fn shadow_data_under_concurrency_and_freed_with_the_patch() {
    let _s = serial();
    let mut e = eng();
    apply(&mut e, &SHADOWED);
    drop(e);
    const THREADS: usize = 4;
    const READS: usize = 2000;
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            std::thread::spawn(move || {
                let _r = register(&format!("reader-{i}"));
                for _ in 0..READS {
                    let text = read_file("testmod").unwrap();
                    assert!(text.starts_with("kgt v2 reads="), "{text}");
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    let _me = register("test-main");
    let last = read_file("testmod").unwrap();
    assert_eq!(last, format!("kgt v2 reads={}\n", THREADS * READS + 1), "no read was lost");
    assert_eq!(kgraft_host::shadow::SHADOW.count(READS_ID), 1);
    let mut e = eng();
    remove(&mut e, "shadowed");
    assert_eq!(kgraft_host::shadow::SHADOW.count(READS_ID), 0, "freed with the patch");
    assert_eq!(DTORS.load(Ordering::SeqCst), 1, "the destructor ran");
    assert_eq!(read_file("testmod").unwrap(), "kgt kgt0 v1\n");
}

unsafe extern "C" fn local_v2(x: u64) -> u64 {
    x + 300
}
static LOCAL_ANY: [Func; 1] = [func(c"kgt_local", local_v2 as *const ())];
static LOCAL_2: [Func; 1] =
    [Func { name: c"kgt_local", object: None, sympos: 2, new_fn: local_v2 as *const (), direct: std::ptr::null() }];
static LOCAL_9: [Func; 1] =
    [Func { name: c"kgt_local", object: None, sympos: 9, new_fn: local_v2 as *const (), direct: std::ptr::null() }];
static PATCH_LOCAL_ANY: Patch = patch(c"local_any", &LOCAL_ANY, false);
static PATCH_LOCAL_2: Patch = patch(c"local_2", &LOCAL_2, false);
static PATCH_LOCAL_9: Patch = patch(c"local_9", &LOCAL_9, false);

#[test]
fn sympos_picks_one_of_two_local_functions() {
    let _s = serial();
    let _me = register("test-main");
    let calls = || {
        // SAFETY: plain integer functions.
        syscall(|| unsafe { (ffi::kgt_local_first(0), ffi::kgt_local_second(0)) })
    };
    assert_eq!(calls(), (100, 200));
    let mut e = eng();
    let err = e.begin_apply(&PATCH_LOCAL_ANY, None).unwrap_err();
    assert!(err.contains("`kgt_local` names 2 functions in the host; give its sympos"), "{err}");
    let err = e.begin_apply(&PATCH_LOCAL_9, None).unwrap_err();
    assert!(err.contains("sympos 9 of `kgt_local` is out of range"), "{err}");
    apply(&mut e, &PATCH_LOCAL_2);
    assert_eq!(calls(), (100, 300), "only the second one is replaced");
    remove(&mut e, "local_2");
    assert_eq!(calls(), (100, 200));
}
