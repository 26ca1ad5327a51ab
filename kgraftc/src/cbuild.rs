//! The patch's C file: compiling it for the host, and reporting gcc's errors and warnings at
//! the `.kgp` lines they come from (for the host's compiler and for kbuild's alike).
//!
//! The C file's `#line` directives name the `.kgp` file as the source was named on the command
//! line, and gcc is asked for columns in bytes, so a message `FILE.kgp:LINE:COL: error: ...`
//! points into the `.kgp` file directly.

use std::path::{Path, PathBuf};
use std::process::Command;

use kgraft_lang::{Checked, Diagnostic, Lowered, Severity, Span};

use crate::Failure;
use crate::build::{workspace_root, write_if_changed};
use crate::render::Ui;

/// The flags that make gcc's positions map onto the `.kgp` file and its output parseable.
pub(crate) const DIAGNOSTIC_FLAGS: &[&str] =
    &["-fdiagnostics-column-unit=byte", "-fno-diagnostics-show-caret", "-fdiagnostics-color=never"];

/// Returns the name, without `.c`, of the patch's C file of unit `index` (of `c_units`):
/// `NAME_c`, then `NAME_c1`, `NAME_c2`, ...
pub(crate) fn file_stem(patch: &str, index: usize) -> String {
    if index == 0 { format!("{patch}_c") } else { format!("{patch}_c{index}") }
}

/// Removes from `dir` the C files of `patch` that are not in `keep` (units an earlier version
/// of the patch had), so that no build compiles them.
pub(crate) fn remove_stale(dir: &Path, patch: &str, keep: &[String]) {
    let prefix = format!("{patch}_c");
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".c")) else {
            continue;
        };
        if rest.bytes().all(|b| b.is_ascii_digit()) && !keep.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Returns the line `kgraftc expand` prints between the Rust crate and the C file of unit
/// `index`.
pub(crate) fn separator(lowered: &Lowered, index: usize) -> String {
    let unit = lowered.c_units.get(index).and_then(|u| u.name.as_deref());
    format!(
        "// ---------------------------------------------------------------------------------------\n\
         // {}.c: {}, compiled by gcc next to the crate above.",
        file_stem(&lowered.name, index),
        unit.map_or_else(|| "the patch's C file".to_owned(), |u| format!("the patch's C unit \"{u}\""))
    )
}

/// The host's stand-ins for kernel headers, on C bodies' include path for the host.
pub(crate) fn host_include_dir() -> PathBuf {
    workspace_root().join("kgraft-host").join("csrc").join("include")
}

/// Compiles the C files of `lowered` for the user-mode host into objects in `dir`, reporting
/// gcc's messages on the `.kgp` source; returns the objects, each named after a hash of its C
/// file and the flags so that cargo relinks when either changes.
pub(crate) fn compile_host(dir: &Path, checked: &Checked, lowered: &Lowered, ui: &Ui) -> Result<Vec<PathBuf>, Failure> {
    let include = host_include_dir();
    let mut flags: Vec<String> = ["-c", "-std=gnu11", "-O2", "-fPIC", "-fvisibility=hidden", "-Wall", "-fno-common"]
        .iter()
        .chain(DIAGNOSTIC_FLAGS)
        .map(|s| (*s).to_owned())
        .collect();
    flags.push(format!("-I{}", include.display()));
    let compiler = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let mut objects = Vec::new();
    let mut sources = Vec::new();
    for (index, unit) in lowered.c_units.iter().enumerate() {
        let stem = file_stem(&lowered.name, index);
        let source = dir.join(format!("{stem}.c"));
        write_if_changed(&source, unit.text.as_bytes()).map_err(|e| Failure::Fatal(e.to_string()))?;
        sources.push(format!("{stem}.c"));
        let hash = fnv1a(format!("{}\0{}\0{}", unit.text, flags.join(" "), compiler.to_string_lossy()).as_bytes());
        let object = dir.join(format!("{stem}-{hash:016x}.o"));
        ui.progress(&format!("compiling {stem}.c of `{}` with {}", lowered.name, compiler.to_string_lossy()));
        let mut cc = Command::new(&compiler);
        cc.args(&flags).arg("-o").arg(&object).arg(&source).current_dir(dir).env("LC_ALL", "C").env("LANG", "C");
        let output = crate::process::output(&mut cc)
            .map_err(|e| Failure::io(format!("cannot run the C compiler `{}`", compiler.to_string_lossy()), e))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let errors = report(&stderr, checked, ui);
        if errors || !output.status.success() {
            if !errors {
                return Err(Failure::Fatal(format!(
                    "the C compiler failed on `{}` ({}):\n{}",
                    source.display(),
                    output.status,
                    stderr.trim_end()
                )));
            }
            return Err(Failure::Reported);
        }
        objects.push(object);
    }
    remove_stale(dir, &lowered.name, &sources);
    // Objects of earlier versions of the C are of no further use.
    let stale_prefix = format!("{}_c", lowered.name);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&stale_prefix) && name.ends_with(".o") && !objects.contains(&path) {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(objects)
}

/// Reports gcc's messages about the `.kgp` file found in `output` (warnings and errors, with
/// their notes) and prints the lines that are not about it when there was an error; returns
/// whether there was an error about the `.kgp` file.
pub(crate) fn report(output: &str, checked: &Checked, ui: &Ui) -> bool {
    let (diagnostics, _) = map_output(output, checked);
    let errors = diagnostics.iter().any(|d| d.severity == Severity::Error);
    if !diagnostics.is_empty() {
        ui.emit(&checked.source, &diagnostics);
    }
    errors
}

/// Turns gcc's output into diagnostics on the `.kgp` source; returns them and the other lines.
pub(crate) fn map_output(output: &str, checked: &Checked) -> (Vec<Diagnostic>, Vec<String>) {
    let name = &checked.source.name;
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    let mut other = Vec::new();
    for line in output.lines() {
        let Some((span, level, message)) = line.strip_prefix(name.as_str()).and_then(|rest| parse_line(rest, checked))
        else {
            other.push(line.to_owned());
            continue;
        };
        match level {
            "note" => match diagnostics.pop() {
                // A note about the very place of the message is a note; elsewhere, a label.
                Some(d) if d.primary_span() == Some(span) => diagnostics.push(d.note(message.to_owned())),
                Some(d) => diagnostics.push(d.secondary(span, message)),
                None => other.push(line.to_owned()),
            },
            "error" | "fatal error" | "warning" => {
                let (message, flag) = match message.rsplit_once(" [") {
                    Some((m, f)) if f.starts_with("-W") && f.ends_with(']') => (m, Some(&f[..f.len() - 1])),
                    _ => (message, None),
                };
                let code = match flag {
                    Some(flag) => format!("gcc {flag}"),
                    None => "gcc".to_owned(),
                };
                let mut d = Diagnostic::error(&code, message.to_owned()).primary(span, "");
                if level == "warning" {
                    d.severity = Severity::Warning;
                }
                diagnostics.push(d.note("reported by gcc on the C body"));
            }
            _ => other.push(line.to_owned()),
        }
    }
    (diagnostics, other)
}

/// Parses `:LINE:COL: LEVEL: MESSAGE` into a span of the source.
fn parse_line<'a>(rest: &'a str, checked: &Checked) -> Option<(Span, &'a str, &'a str)> {
    let rest = rest.strip_prefix(':')?;
    let (line, rest) = rest.split_once(':')?;
    let line: usize = line.parse().ok()?;
    let (column, rest) = match rest.split_once(':') {
        Some((c, r)) if c.parse::<usize>().is_ok() => (c.parse::<usize>().ok()?, r),
        _ => (1, rest),
    };
    let (level, message) = rest.trim_start().split_once(": ")?;
    let source = &checked.source;
    let line_start = source.offset(line, 1);
    let line_end = source.text[line_start..].find('\n').map_or(source.text.len(), |i| line_start + i);
    let mut at = (line_start + column.saturating_sub(1)).min(line_end);
    while !source.text.is_char_boundary(at) {
        at -= 1;
    }
    let len = source.text[at..line_end].chars().next().map_or(0, char::len_utf8);
    Some((Span::new(at, at + len), level, message))
}

/// A 64-bit FNV-1a hash, for file names that change when their inputs do.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// Writes the lowered crate's build script, which links the C bodies' objects into the shared
/// object, or removes it when the patch has no C (cargo runs a `build.rs` it finds).
///
/// An object's name changes with its content, so the script changes and cargo relinks when
/// only the C changed.
pub(crate) fn link_script(crate_dir: &Path, objects: &[PathBuf]) -> Result<(), Failure> {
    let path = crate_dir.join("build.rs");
    match objects {
        [_, ..] => {
            let links: String = objects
                .iter()
                .map(|o| {
                    format!("    println!(\"cargo::rustc-link-arg-cdylib={{}}\", {:?});\n", o.display().to_string())
                })
                .collect();
            let script = format!(
                "// Written by kgraftc: links the patch's C bodies into the shared object.\n\
                 fn main() {{\n{links}    println!(\"cargo::rerun-if-changed=build.rs\");\n}}\n"
            );
            write_if_changed(&path, script.as_bytes()).map_err(|e| Failure::Fatal(e.to_string()))
        }
        [] => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Failure::io(format!("cannot remove `{}`", path.display()), e))
            }
            _ => Ok(()),
        },
    }
}
