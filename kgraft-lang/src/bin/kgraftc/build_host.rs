//! `kgraftc build --target host`: a shared object for the user-mode host.
//!
//! The lowered crate is written to a build directory under the workspace's `target/`, built as
//! a `cdylib` against `kgraft-rt` with the `host` feature, and copied to the output path. The
//! crates of every patch share one target directory, so a second build only compiles the patch.
//! rustc's errors in the crate are mapped back to the `.kgp` source and shown as diagnostics.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kgraft_lang::{Diagnostic, Lowered};

use crate::render::Ui;
use crate::{BuildArgs, Failure};

/// Returns the directory of the kgraft crates the patch crate depends on.
fn source_dir() -> PathBuf {
    match std::env::var_os("KGRAFT_SOURCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

/// Builds the patch for the user-mode host.
pub(crate) fn run(args: &BuildArgs, ui: &Ui) -> Result<(), Failure> {
    let checked = crate::load(&args.file, ui)?;
    let lowered = crate::lower(&checked, ui)?;
    let src = source_dir();
    let work = src.join("target").join("kgraft").join("host");
    let crate_dir = work.join(&lowered.name);
    std::fs::create_dir_all(&crate_dir)
        .map_err(|e| Failure::io(format!("cannot create `{}`", crate_dir.display()), e))?;
    write_if_changed(&crate_dir.join("Cargo.toml"), &manifest(&lowered.name, &src))?;
    write_if_changed(&crate_dir.join("lib.rs"), &lowered.build_source)?;
    let target_dir = work.join("target");
    eprintln!("   Compiling {} for the user-mode host", lowered.name);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--release", "--message-format=json", "--manifest-path"])
        .arg(crate_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Failure::io("cannot run cargo", e))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let diags = rustc_diagnostics(&stdout, &lowered);
    if !diags.is_empty() {
        ui.emit(&checked.source, &diags);
    }
    if !output.status.success() {
        if diags.iter().any(|d| d.severity == kgraft_lang::Severity::Error) {
            return Err(Failure::Reported);
        }
        return Err(Failure::Fatal(format!(
            "building the patch crate in `{}` failed:\n{}",
            crate_dir.display(),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let built = target_dir.join("release").join(format!("lib{}.so", lowered.name));
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("{}.so", lowered.name)));
    std::fs::copy(&built, &out)
        .map_err(|e| Failure::io(format!("cannot copy `{}` to `{}`", built.display(), out.display()), e))?;
    eprintln!("    Finished {}", out.display());
    Ok(())
}

/// Returns the manifest of the patch crate.
fn manifest(name: &str, src: &Path) -> String {
    let rt = src.join("kgraft-rt");
    let macros = src.join("kgraft-macros");
    format!(
        r#"# Written by kgraftc: the patch `{name}` lowered for the user-mode host.
[package]
name = "{name}"
version = "0.0.0"
edition = "2024"
publish = false

[lib]
path = "lib.rs"
crate-type = ["cdylib"]

[dependencies]
kgraft-rt = {{ path = "{rt}", features = ["host"] }}
kgraft-macros = {{ path = "{macros}" }}

[profile.release]
panic = "abort"
opt-level = 2
debug = 0

[workspace]
"#,
        rt = rt.display(),
        macros = macros.display(),
    )
}

/// Writes `text` to `path` unless it already holds it, so that cargo sees no change.
fn write_if_changed(path: &Path, text: &str) -> Result<(), Failure> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    std::fs::write(path, text).map_err(|e| Failure::io(format!("cannot write `{}`", path.display()), e))
}

/// Turns rustc's JSON messages about the patch crate into diagnostics on the `.kgp` source.
fn rustc_diagnostics(stdout: &str, lowered: &Lowered) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for line in stdout.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["reason"] != "compiler-message" || v["target"]["src_path"].as_str().is_none_or(|p| !p.ends_with("lib.rs"))
        {
            continue;
        }
        let pkg = v["package_id"].as_str().unwrap_or("");
        if !pkg.contains(&lowered.name) {
            continue;
        }
        let msg = &v["message"];
        // Only errors: the lowered crate's warnings are the generator's business.
        if msg["level"].as_str() != Some("error") {
            continue;
        }
        let code = msg["code"]["code"].as_str().unwrap_or("rustc");
        let text = msg["message"].as_str().unwrap_or("rustc reported an error").to_owned();
        if text.starts_with("aborting due to") {
            continue;
        }
        let mut d = Diagnostic::error(code, text);
        let spans = msg["spans"].as_array().cloned().unwrap_or_default();
        let mut primary_done = false;
        for s in spans.iter().filter(|s| s["file_name"].as_str().is_some_and(|f| f.ends_with("lib.rs"))) {
            let Some(start) = s["byte_start"].as_u64() else { continue };
            let Some(mut span) = lowered.map_offset(start as usize) else { continue };
            // Widen the span to the end of rustc's, when both ends map into the same piece.
            let end = s["byte_end"].as_u64().unwrap_or(start) as usize;
            if end > start as usize {
                if let Some(last) = lowered.map_offset(end - 1) {
                    if last.end > span.start && last.end - span.start == end - start as usize {
                        span = kgraft_lang::Span::new(span.start, last.end);
                    }
                }
            }
            let label = s["label"].as_str().unwrap_or("").to_owned();
            if s["is_primary"].as_bool() == Some(true) && !primary_done {
                d = d.primary(span, label);
                primary_done = true;
            } else {
                d = d.secondary(span, label);
            }
        }
        for child in msg["children"].as_array().into_iter().flatten() {
            if let Some(m) = child["message"].as_str() {
                match child["level"].as_str() {
                    Some("help") => d = d.help(m),
                    _ => d = d.note(m),
                }
            }
        }
        out.push(d);
    }
    out
}
