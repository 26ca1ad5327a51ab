//! kgraft's own engine in the kernel (`--engine kgraft`), end to end under qemu.
//!
//! Opt-in like `kernel_qemu`: it runs only with `KGRAFT_QEMU=1`. It drives
//! `kernel-tests/engine.sh` with this build's `kgraftc` and checks each scenario's verdict line
//! from the guest's console; the benchmark's figures (`KGRAFT-BENCH`) are printed, not judged.
//! Then it runs the main harness again with every sample built for the kgraft engine
//! (`ENGINE=kgraft kernel-tests/run.sh`) and checks every scenario of `kernel-tests/scenarios`
//! not marked `klp-only`, and `kernel-tests/nolp.sh`: a kernel built without the livepatch core
//! (its build is the longest step), the samples applied by the engine there. The boots run one
//! after the other: timing-sensitive scenarios would suffer from a second emulated machine
//! beside them.

mod guest;

/// One emulated machine at a time: the test harness may run the two tests at once, and
/// timing-sensitive scenarios would suffer from a second machine beside them.
static GUEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The scenarios of `kernel-tests/scenarios` that run with the kgraft engine: every listed one
/// not marked `klp-only`.
fn main_scenarios_for_kgraft(list: &str) -> Vec<&str> {
    list.lines()
        .filter(|l| !l.split_whitespace().any(|w| w == "klp-only"))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| !name.starts_with('#'))
        .collect()
}

#[test]
fn kgraft_engine_under_qemu() {
    if !guest::enabled("kgraft_engine_under_qemu") {
        return;
    }
    let _one_guest_at_a_time = GUEST.lock().unwrap_or_else(|e| e.into_inner());
    let init =
        std::fs::read_to_string(guest::root().join("kernel-tests/engine-init.sh")).expect("engine-init.sh is readable");
    let scenarios = guest::init_scenarios(&init);
    assert!(scenarios.len() >= 8, "engine-init.sh lists {} scenarios", scenarios.len());
    let run = guest::Run::harness("engine.sh", "kernel-tests-engine", &[]);
    for line in run.console.lines().filter(|l| l.starts_with("KGRAFT-BENCH") || l.starts_with("KGRAFT-PAIR")) {
        eprintln!("{line}");
    }
    for scenario in scenarios {
        run.assert_passed(scenario, "the engine's boot");
    }
    run.assert_success("kernel-tests/engine.sh");
}

#[test]
fn main_scenarios_with_the_kgraft_engine_under_qemu() {
    if !guest::enabled("main_scenarios_with_the_kgraft_engine_under_qemu") {
        return;
    }
    let _one_guest_at_a_time = GUEST.lock().unwrap_or_else(|e| e.into_inner());
    let list =
        std::fs::read_to_string(guest::root().join("kernel-tests/scenarios")).expect("the scenario list is readable");
    let scenarios = main_scenarios_for_kgraft(&list);
    assert!(scenarios.len() >= 10, "only {} scenarios run with the kgraft engine", scenarios.len());
    let run = guest::Run::harness("run.sh", "kernel-tests-kgraft", &[("ENGINE", "kgraft")]);
    for scenario in scenarios {
        run.assert_passed(scenario, "the kgraft engine");
    }
    run.assert_success("ENGINE=kgraft kernel-tests/run.sh");
}

#[test]
fn kgraft_engine_without_the_livepatch_core_under_qemu() {
    if !guest::enabled("kgraft_engine_without_the_livepatch_core_under_qemu") {
        return;
    }
    let _one_guest_at_a_time = GUEST.lock().unwrap_or_else(|e| e.into_inner());
    let init =
        std::fs::read_to_string(guest::root().join("kernel-tests/nolp-init.sh")).expect("nolp-init.sh is readable");
    let scenarios = guest::init_scenarios(&init);
    assert!(scenarios.len() >= 5, "nolp-init.sh lists {} scenarios", scenarios.len());
    // The kernel is built once into the work directory and kept while its configuration holds.
    let run = guest::Run::harness("nolp.sh", "kernel-tests-nolp", &[]);
    for scenario in scenarios {
        run.assert_passed(scenario, "a kernel without the livepatch core");
    }
    run.assert_success("kernel-tests/nolp.sh");
}
