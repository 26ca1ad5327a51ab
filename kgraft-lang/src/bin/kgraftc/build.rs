//! Writing a lowered crate to a directory, building it with cargo, and reporting rustc's errors
//! at the `.kgp` lines they come from.
//!
//! The target-specific builds (`build_host.rs`, `build_linux.rs`) call [`write_crate`] with the
//! manifest text their target needs, then [`run_cargo`] with their cargo command.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kgraft_lang::{Checked, Diagnostic, Lowered, Severity, Span};

use crate::Failure;
use crate::render::Ui;

/// The workspace that holds `kgraft-rt` and `kgraft-macros`.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// What goes into a lowered crate's directory besides `src/lib.rs`.
pub(crate) struct CrateSpec<'a> {
    /// The directory; created if missing, its `Cargo.toml` and `src/lib.rs` overwritten.
    pub(crate) dir: &'a Path,
    /// Features of `kgraft-rt` (`host` or `kernel`; none only type-checks).
    pub(crate) rt_features: &'a [&'a str],
    /// More manifest text appended as is (a `[lib]` section with `crate-type`, profiles, ...).
    pub(crate) manifest_extra: &'a str,
}

/// The name of the lowered crate of a patch.
pub(crate) fn crate_name(lowered: &Lowered) -> String {
    format!("kgraft_patch_{}", lowered.name)
}

/// Writes the lowered crate: `Cargo.toml`, `src/lib.rs` (the build source) and `expanded.rs`
/// (the review form, not compiled).
pub(crate) fn write_crate(spec: &CrateSpec<'_>, lowered: &Lowered) -> Result<PathBuf, Failure> {
    let root = workspace_root();
    let path_of = |krate: &str| root.join(krate).display().to_string().replace('\\', "\\\\").replace('"', "\\\"");
    let features = spec.rt_features.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", ");
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n\
         [dependencies]\nkgraft-rt = {{ path = \"{rt}\", default-features = false, features = [{features}] }}\n\
         kgraft-macros = {{ path = \"{macros}\" }}\n\n\
         # A crate of its own, outside any enclosing workspace.\n[workspace]\n\n{extra}",
        name = crate_name(lowered),
        rt = path_of("kgraft-rt"),
        macros = path_of("kgraft-macros"),
        extra = spec.manifest_extra,
    );
    let src = spec.dir.join("src");
    std::fs::create_dir_all(&src).map_err(|e| Failure::io(format!("cannot create `{}`", src.display()), e))?;
    let write = |path: PathBuf, text: &str| {
        std::fs::write(&path, text).map_err(|e| Failure::io(format!("cannot write `{}`", path.display()), e))
    };
    write(spec.dir.join("Cargo.toml"), &manifest)?;
    write(src.join("lib.rs"), &lowered.build_source)?;
    write(spec.dir.join("expanded.rs"), &lowered.expanded)?;
    Ok(spec.dir.join("Cargo.toml"))
}

/// What a successful cargo run produced.
#[derive(Debug, Default)]
pub(crate) struct Built {
    /// The files of the lowered crate's own artifacts (`.so`, `.a`, `.rlib`, ...).
    pub(crate) files: Vec<PathBuf>,
    /// How many warnings were reported.
    pub(crate) warnings: usize,
}

/// Runs a cargo command (with `--message-format json` added) over the lowered crate, reporting
/// rustc's diagnostics at their `.kgp` positions.
///
/// `cargo` is the command up to its arguments, e.g. `cargo build --release --manifest-path ...`;
/// its standard error (cargo's progress) is passed through. Returns the crate's artifacts, or
/// `Failure::Reported` when rustc reported errors.
pub(crate) fn run_cargo(mut cargo: Command, checked: &Checked, lowered: &Lowered, ui: &Ui) -> Result<Built, Failure> {
    cargo.arg("--message-format").arg("json").stdout(Stdio::piped()).stderr(Stdio::inherit());
    ui.progress(&format!("building `{}` with cargo", lowered.name));
    let output = cargo.output().map_err(|e| Failure::io("cannot run cargo", e))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let own = crate_name(lowered);
    let mut built = Built::default();
    let mut diagnostics = Vec::new();
    let mut unmapped = Vec::new();
    for line in stdout.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        match msg["reason"].as_str() {
            Some("compiler-message") => {
                if msg["target"]["name"].as_str() != Some(own.as_str()) {
                    if let Some(r) = msg["message"]["rendered"].as_str() {
                        unmapped.push(r.to_owned());
                    }
                    continue;
                }
                match map_message(&msg["message"], lowered) {
                    Some(d) => diagnostics.push(d),
                    None => {
                        // Summaries ("aborting due to ...", "For more information ...") add nothing
                        // to the mapped diagnostics.
                        let summary = msg["message"]["spans"].as_array().is_some_and(|s| s.is_empty())
                            && msg["message"]["children"].as_array().is_some_and(|c| c.is_empty());
                        if let Some(r) = msg["message"]["rendered"].as_str().filter(|_| !summary) {
                            unmapped.push(r.to_owned());
                        }
                    }
                }
            }
            Some("compiler-artifact") if msg["target"]["name"].as_str() == Some(own.as_str()) => {
                if let Some(files) = msg["filenames"].as_array() {
                    built.files.extend(files.iter().filter_map(|f| f.as_str()).map(PathBuf::from));
                }
            }
            _ => {}
        }
    }
    built.warnings = diagnostics.iter().filter(|d| d.severity == Severity::Warning).count();
    let errors = diagnostics.iter().any(|d| d.severity == Severity::Error);
    if !diagnostics.is_empty() {
        ui.emit(&checked.source, &diagnostics);
    }
    for r in &unmapped {
        eprint!("{r}");
    }
    if errors {
        return Err(Failure::Reported);
    }
    if !output.status.success() {
        return Err(Failure::Fatal(format!("cargo failed ({})", output.status)));
    }
    Ok(built)
}

/// Turns one rustc message about the lowered crate's `src/lib.rs` into a diagnostic on the
/// `.kgp` source; `None` when it has no span in that file (it is then shown as rustc printed it).
pub(crate) fn map_message(message: &serde_json::Value, lowered: &Lowered) -> Option<Diagnostic> {
    let severity = match message["level"].as_str()? {
        "error" | "error: internal compiler error" => Severity::Error,
        "warning" => Severity::Warning,
        _ => return None,
    };
    let spans = message["spans"].as_array()?;
    let in_lib = |s: &&serde_json::Value| s["file_name"].as_str().is_some_and(|f| f.ends_with("src/lib.rs"));
    let primary = spans.iter().filter(in_lib).find(|s| s["is_primary"].as_bool() == Some(true))?;
    let map = |s: &serde_json::Value| -> Option<Span> {
        let start = s["byte_start"].as_u64()? as usize;
        let end = s["byte_end"].as_u64()? as usize;
        lowered.map_range(start, end)
    };
    let code = match message["code"]["code"].as_str() {
        Some(c) => format!("rustc {c}"),
        None => "rustc".to_owned(),
    };
    let mut d = Diagnostic {
        code,
        severity,
        message: message["message"].as_str().unwrap_or("rustc reported an error").to_owned(),
        labels: Vec::new(),
        notes: Vec::new(),
        help: None,
    };
    d = d.primary(map(primary)?, primary["label"].as_str().unwrap_or(""));
    for s in spans.iter().filter(in_lib) {
        if s["is_primary"].as_bool() != Some(true) {
            if let Some(span) = map(s) {
                d = d.secondary(span, s["label"].as_str().unwrap_or(""));
            }
        }
    }
    for child in message["children"].as_array().into_iter().flatten() {
        let text = child["message"].as_str().unwrap_or("");
        match child["level"].as_str() {
            Some("help") if d.help.is_none() => d.help = Some(text.to_owned()),
            _ if !text.is_empty() => d.notes.push(text.to_owned()),
            _ => {}
        }
    }
    Some(d)
}

/// `kgraftc build --target check`: type-checks the lowered crate with `cargo check` against
/// `kgraft-rt` without a target feature, reporting rustc's errors on the `.kgp` source.
///
/// The crate goes in `--out` (default: a directory under the system's temporary directory);
/// cargo's target directory is `CARGO_TARGET_DIR` when set, else the workspace's
/// `target/kgraft-check`, shared by every patch so the dependencies build once.
pub(crate) fn check(args: &crate::BuildArgs, ui: &Ui) -> Result<(), Failure> {
    let checked = crate::load(&args.file, ui)?;
    let lowered = crate::lower(&checked, ui)?;
    let dir = match &args.out {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("kgraftc-check-{}", lowered.name)),
    };
    let spec = CrateSpec { dir: &dir, rt_features: &[], manifest_extra: "" };
    let manifest = write_crate(&spec, &lowered)?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target").join("kgraft-check"));
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.arg("check").arg("--quiet").arg("--manifest-path").arg(&manifest).arg("--target-dir").arg(&target_dir);
    run_cargo(cargo, &checked, &lowered, ui)?;
    ui.progress(&format!("`{}` type-checks", lowered.name));
    Ok(())
}
