//! The Linux kernel target end to end: every sample built into a module and proved under qemu.
//!
//! Opt-in: it runs only with `KGRAFT_QEMU=1`, on a machine with the packages listed in
//! `kernel-tests/setup-notes.md` (CI sets it). It drives `kernel-tests/run.sh` with this build's
//! `kgraftc` and checks each scenario's verdict line from the guest's console, and the book's
//! transcripts that the guest typed ([`transcript::HARNESS`]) against what it printed
//! (`KGRAFT_BLESS=1` rewrites them).

mod guest;
mod transcript;

/// The scenarios the guest runs, by the name of their verdict line: the first word of each line
/// of `kernel-tests/scenarios` that is neither blank nor a `#` comment (as `init.sh` reads it).
fn scenarios() -> Vec<String> {
    let list = include_str!("../../kernel-tests/scenarios");
    list.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| !name.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Runs everywhere, without qemu: every listed scenario has its function in `init.sh`, and every
/// scenario function there is listed, so a typo shows before a guest boots.
#[test]
fn the_scenario_list_and_init_sh_agree() {
    let init = include_str!("../../kernel-tests/init.sh");
    let defined: Vec<&str> =
        init.lines().filter_map(|line| line.strip_prefix("scenario_")?.strip_suffix("() {")).collect();
    let listed = scenarios();
    assert!(!listed.is_empty(), "kernel-tests/scenarios lists no scenario");
    for name in &listed {
        assert!(
            defined.contains(&name.as_str()),
            "kernel-tests/scenarios lists {name}, init.sh has no scenario_{name}"
        );
        assert_eq!(
            listed.iter().filter(|n| *n == name).count(),
            1,
            "{name} is listed twice: verdicts need one name each"
        );
    }
    for name in defined {
        assert!(
            listed.iter().any(|n| n == name),
            "init.sh defines scenario_{name}, kernel-tests/scenarios does not list it"
        );
    }
}

#[test]
fn kernel_under_qemu() {
    if !guest::enabled("kernel_under_qemu") {
        return;
    }
    // `KGRAFT_QEMU_CONSOLE=FILE` checks the console of a run made by hand
    // (`kernel-tests/run.sh WORK_DIR` leaves it in `WORK_DIR/console.txt`) instead of booting.
    let run = match std::env::var_os("KGRAFT_QEMU_CONSOLE") {
        Some(file) => guest::Run {
            status: None,
            console: std::fs::read_to_string(&file).expect("the console file of a harness run"),
        },
        None => guest::Run::harness("run.sh", "kernel-tests", &[]),
    };
    for scenario in scenarios() {
        run.assert_passed(&scenario, "the livepatch core");
    }
    let errors: Vec<String> = transcript::HARNESS.iter().flat_map(|name| book_transcript(&run.console, name)).collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    run.assert_success("kernel-tests/run.sh");
}

/// Compares the book's transcript `name` with what the guest printed running its commands
/// (`KGRAFT-BOOK-CMD NAME COMMAND` and `KGRAFT-BOOK NAME LINE`); returns the differences.
fn book_transcript(console: &str, name: &str) -> Vec<String> {
    let t = transcript::Transcript::read(name);
    let (cmd, out) = (format!("KGRAFT-BOOK-CMD {name} "), format!("KGRAFT-BOOK {name}"));
    let mut outputs: Vec<Vec<String>> = Vec::new();
    for line in console.lines() {
        if line.starts_with(&cmd) {
            outputs.push(Vec::new());
        } else if let (Some(rest), Some(current)) = (line.strip_prefix(&out), outputs.last_mut()) {
            let text = rest.strip_prefix(' ').unwrap_or(rest);
            current.extend(transcript::lines(text, &[]));
            if text.is_empty() {
                current.push(String::new());
            }
        }
    }
    if outputs.len() != t.steps.len() {
        return vec![format!("{name}: the guest ran {} of its {} commands", outputs.len(), t.steps.len())];
    }
    transcript::check(&t, &outputs)
}
