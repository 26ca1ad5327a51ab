//! Writing a lowered crate to a directory, building it with cargo, and reporting rustc's errors
//! at the `.kgp` lines they come from.
//!
//! Every target (`check` here, `build_host.rs`, `build_linux.rs`) writes its crate with
//! [`write_crate`], giving the [`CrateSpec`] of what its manifest needs, and builds it with
//! [`run_cargo`], giving its own cargo command.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kgraft_lang::{Checked, Diagnostic, Lowered, Severity, Span};

use crate::Failure;
use crate::render::Ui;

/// The workspace that holds `kgraft-rt`, `kgraft-macros` and the lock file the patch crates
/// start from.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// What the manifest of a lowered crate says for one target.
pub(crate) struct CrateSpec {
    /// What the crate is built for, named in the manifest's first comment.
    pub(crate) purpose: &'static str,
    /// The library's `crate-type` (`cdylib`, `staticlib`); `None` leaves cargo's default.
    pub(crate) crate_type: Option<&'static str>,
    /// The target feature of `kgraft-rt` (`host` or `kernel`); `None` only type-checks.
    pub(crate) rt_feature: Option<&'static str>,
    /// The `[profile.release]` settings, as keys and TOML values.
    pub(crate) release: &'static [(&'static str, &'static str)],
}

/// The path of the build source inside a lowered crate's directory.
const LIB_PATH: &str = "src/lib.rs";

/// The name of the lowered crate of a patch.
pub(crate) fn crate_name(lowered: &Lowered) -> String {
    format!("kgraft_patch_{}", lowered.name)
}

/// Returns the manifest of the lowered crate of `lowered` for `spec`.
fn manifest(spec: &CrateSpec, lowered: &Lowered) -> String {
    let root = workspace_root();
    let path_of = |krate: &str| root.join(krate).display().to_string().replace('\\', "\\\\").replace('"', "\\\"");
    // No build script, whatever the directory holds, except the one kgraftc itself writes
    // (anew before every build) to link a host patch's C bodies.
    let build = if spec.rt_feature == Some("host") && !lowered.c_units.is_empty() {
        "# kgraftc's own script, rewritten before every build.\nbuild = \"build.rs\""
    } else {
        "# No build script, whatever the directory holds.\nbuild = false"
    };
    let mut text = format!(
        "# Written by kgraftc: the patch `{name}` lowered for {purpose}.\n\
         [package]\nname = \"{krate}\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\
         {build}\n\n\
         [lib]\npath = \"{LIB_PATH}\"\n",
        name = lowered.name,
        purpose = spec.purpose,
        krate = crate_name(lowered),
    );
    if let Some(crate_type) = spec.crate_type {
        text += &format!("crate-type = [\"{crate_type}\"]\n");
    }
    let features = spec.rt_feature.map(|f| format!("\"{f}\"")).unwrap_or_default();
    text += &format!(
        "\n[dependencies]\n\
         kgraft-rt = {{ path = \"{rt}\", default-features = false, features = [{features}] }}\n\
         kgraft-macros = {{ path = \"{macros}\" }}\n",
        rt = path_of("kgraft-rt"),
        macros = path_of("kgraft-macros"),
    );
    if !spec.release.is_empty() {
        text += "\n[profile.release]\n";
        for (key, value) in spec.release {
            text += &format!("{key} = {value}\n");
        }
    }
    text += "\n# A crate of its own, outside any enclosing workspace.\n[workspace]\n";
    text
}

/// Writes the lowered crate into `dir`: `Cargo.toml`, `src/lib.rs` (the build source),
/// `expanded.rs` (the review form, not compiled) and, the first time, `Cargo.lock` copied from
/// the workspace's, so that the crate builds with the versions the workspace was tested with.
///
/// Only files whose content changed are written, so cargo does not recompile an unchanged
/// patch. Returns the manifest's path.
pub(crate) fn write_crate(dir: &Path, spec: &CrateSpec, lowered: &Lowered) -> Result<PathBuf, Failure> {
    let write = |path: PathBuf, bytes: &[u8]| write_if_changed(&path, bytes).map_err(|e| Failure::Fatal(e.to_string()));
    let manifest_path = dir.join("Cargo.toml");
    write(manifest_path.clone(), manifest(spec, lowered).as_bytes())?;
    write(dir.join(LIB_PATH), lowered.build_source.as_bytes())?;
    write(dir.join("expanded.rs"), lowered.expanded.as_bytes())?;
    let lock = dir.join("Cargo.lock");
    if !lock.exists()
        && let Ok(bytes) = std::fs::read(workspace_root().join("Cargo.lock"))
    {
        write(lock, &bytes)?;
    }
    Ok(manifest_path)
}

/// Writes `contents` to `path`, creating its directory, unless the file already holds exactly
/// that, so that tools that compare times (cargo, make) see an unchanged input as unchanged.
///
/// The error names the path.
pub(crate) fn write_if_changed(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    let context = |what: &str, at: &Path, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("cannot {what} `{}`: {e}", at.display()))
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| context("create", parent, e))?;
    }
    std::fs::write(path, contents).map_err(|e| context("write", path, e))
}

/// Returns the cargo that runs kgraftc (`$CARGO`), or the one on the `PATH`.
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// What a successful cargo run produced.
#[derive(Debug, Default)]
pub(crate) struct Built {
    /// The files of the lowered crate's own artifacts (`.so`, `.a`, `.rlib`, ...).
    pub(crate) files: Vec<PathBuf>,
    /// How many warnings were reported.
    pub(crate) warnings: usize,
}

/// Runs a cargo command (with `--message-format json` added) over the lowered crate in `dir`,
/// reporting rustc's diagnostics, errors and warnings, at their `.kgp` positions.
///
/// `cargo` is the command up to its arguments, e.g. `cargo build --release --manifest-path ...`.
/// Messages rustc gives without a position in the crate's source are shown as rustc printed
/// them, except its closing summaries. Cargo's own output is kept and shown only when the build
/// fails without a rustc error to report. Returns the crate's artifacts, `Failure::Reported`
/// when rustc reported errors, or `Failure::Fatal` with cargo's output when cargo failed.
pub(crate) fn run_cargo(
    mut cargo: Command,
    dir: &Path,
    checked: &Checked,
    lowered: &Lowered,
    ui: &Ui,
) -> Result<Built, Failure> {
    cargo.arg("--message-format").arg("json").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let output = crate::process::output(&mut cargo).map_err(|e| Failure::io("cannot run cargo", e))?;
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
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Failure::Fatal(format!(
            "cargo failed to build the patch crate in `{}` ({}):\n{}",
            dir.display(),
            output.status,
            stderr.trim_end()
        )));
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
    let in_lib = |s: &&serde_json::Value| s["file_name"].as_str() == Some(LIB_PATH);
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
        if s["is_primary"].as_bool() != Some(true)
            && let Some(span) = map(s)
        {
            d = d.secondary(span, s["label"].as_str().unwrap_or(""));
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

/// The lowered crate for `--target check`: a library type-checked without a target feature.
const CHECK: CrateSpec = CrateSpec { purpose: "type-checking", crate_type: None, rt_feature: None, release: &[] };

/// `kgraftc build --target check`: type-checks the lowered crate with `cargo check` against
/// `kgraft-rt` without a target feature, reporting rustc's errors on the `.kgp` source.
///
/// The crate goes in `--out`, which must be new, empty or a crate kgraftc wrote (default: the
/// workspace's `target/kgraft/check/NAME`, never a predictable path in a shared temporary
/// directory, where another user's `build.rs` could wait); cargo's target directory is `CARGO_TARGET_DIR` when set, else the workspace's
/// `target/kgraft-check`, shared by every patch so the dependencies build once.
pub(crate) fn check(args: &crate::BuildArgs, ui: &Ui) -> Result<(), Failure> {
    let checked = crate::load(&args.file, ui)?;
    let kernel = crate::check_kernel(&checked, &args.kernel, ui)?;
    let lowered = crate::lower(&checked, kernel.as_ref(), ui)?;
    let dir = match &args.out {
        Some(dir) => dir.clone(),
        None => workspace_root().join("target").join("kgraft").join("check").join(&lowered.name),
    };
    crate::output::check_crate_dir(&dir).map_err(Failure::Fatal)?;
    let _lock =
        crate::lock::take(&dir.join(crate::lock::FILE), &format!("`{}`", lowered.name)).map_err(Failure::Fatal)?;
    let manifest = write_crate(&dir, &CHECK, &lowered)?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target").join("kgraft-check"));
    let mut cargo = cargo();
    cargo.arg("check").arg("--quiet").arg("--manifest-path").arg(&manifest).arg("--target-dir").arg(&target_dir);
    ui.progress(&format!("building `{}` with cargo", lowered.name));
    run_cargo(cargo, &dir, &checked, &lowered, ui)?;
    ui.progress(&format!("`{}` type-checks", lowered.name));
    if !lowered.c_units.is_empty() {
        ui.progress(
            "its C bodies were not compiled: they need the target's headers (build with --target host or linux)",
        );
    }
    Ok(())
}
