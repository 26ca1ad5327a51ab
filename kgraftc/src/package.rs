//! `kgraftc package FILE.kgp --format deb|rpm -o OUT`: a live patch shipped as distributions
//! ship kernel modules.
//!
//! The package holds the module under `/lib/modules/R/updates/kgraft/`, a helper script
//! `/usr/lib/kgraft/PKG` that loads and unloads it with the kernel's own tools (`insmod`,
//! `rmmod`, sysfs; kgraftc is not needed on the machines that install it), and a systemd unit
//! that runs the helper at boot when the running kernel is R (`ConditionKernelVersion`),
//! enabled by the package itself. It depends on the package of kernel R.
//!
//! The maintainer scripts load the patch at install when the running kernel is R and wait for
//! its transition (reversing it when it does not finish), and unload it at removal. The helper
//! records which module it loaded in `/var/lib/kgraft/PKG`; on upgrade, the new version loads
//! its module first, then removes the old one: a patch built with `replace_all: true` under a
//! new patch name (`foo_v2`) has already replaced the old one atomically by then. A new build
//! under the same patch name cannot be loaded beside the old one; the helper then unloads the
//! old one first and says that the kernel is unpatched in between, and, should the kernel refuse
//! the new build, applies again the copy of the old one it keeps in `/var/lib/kgraft/PKG.ko`. Scripts that run for another
//! root (`dpkg --root`, `DPKG_ROOT` set) do not touch the running kernel.
//!
//! The helper and the maintainer scripts are the shell files of `package/` (templates whose
//! `@NAME@`, `@RELEASE@`, `@PKG@`, `@HELPER@` and `@ENGINE@` are filled in; the test command
//! runs shellcheck on them).
//!
//! The module is built for either engine (`--engine`, or the patch's header): the livepatch
//! core's patches live in `/sys/kernel/livepatch/NAME`, the kgraft engine's in
//! `/sys/kernel/kgraft/NAME`. The helper finds each patch in whichever directory has it (a
//! previous version may have been built for the other engine) and knows when each engine has
//! let go of it: the livepatch core removes the directory, the kgraft engine's stays until the
//! module goes, reading `enabled` 0 and `transition` 0.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::render::Ui;
use crate::{BuildArgs, Failure, Target};

/// The package formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// A Debian package, built with `dpkg-deb`.
    Deb,
    /// An RPM package, built with `rpmbuild`.
    Rpm,
}

/// The arguments of `kgraftc package`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct PackageArgs {
    /// The `.kgp` file.
    pub(crate) file: PathBuf,
    /// The target kernel (`--kdir` names the release the package is for).
    #[command(flatten)]
    pub(crate) kernel: crate::kernel_info::KernelArgs,
    /// A kernel source tree for C bodies' includes (as for `kgraftc build`).
    #[arg(long)]
    pub(crate) ksrc: Option<PathBuf>,
    /// The package format.
    #[arg(long, value_enum)]
    pub(crate) format: Format,
    /// The package file to write (for several kernels, a directory: one package per release,
    /// named `PKG-RELEASE`).
    #[arg(short, long)]
    pub(crate) out: PathBuf,
    /// The package name (default: `kgraft-patch-NAME`, `_` spelled `-`); keep it across
    /// versions of a fix so that an upgrade replaces the loaded patch. For several kernels,
    /// each package is named `NAME-RELEASE`.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// The package version.
    #[arg(long, default_value = "1")]
    pub(crate) pkg_version: String,
    /// The package's maintainer, `Name <email>`.
    #[arg(long, default_value = "kgraft live patches <root@localhost>")]
    pub(crate) maintainer: String,
    /// Signs the module with this key (see `kgraftc build`).
    #[arg(long, requires = "sign_cert", value_name = "KEY")]
    pub(crate) sign_key: Option<PathBuf>,
    /// The certificate of `--sign-key`.
    #[arg(long, requires = "sign_key", value_name = "CERT")]
    pub(crate) sign_cert: Option<PathBuf>,
    /// What applies the patch (as for `kgraftc build`; default: the header's `engine`, else
    /// klp): the package's scripts drive it through that engine's sysfs files.
    #[arg(long, value_enum)]
    pub(crate) engine: Option<crate::Engine>,
}

/// The package name of the patch `patch` when none is given: `kgraft-patch-NAME`, `_` spelled
/// `-`.
pub(crate) fn default_name(patch: &str) -> String {
    format!("kgraft-patch-{}", patch.replace('_', "-").to_lowercase())
}

/// The helper: `load` and `unload`, with the kernel's tools and sysfs only.
const HELPER: &str = include_str!("package/helper.sh");

/// The unit that loads the patch at boot.
const UNIT: &str = "[Unit]
Description=kgraft live patch @NAME@ for Linux @RELEASE@
ConditionKernelVersion=@RELEASE@
@CONDITION@After=systemd-modules-load.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=@HELPER@ load

[Install]
WantedBy=multi-user.target
";

/// The maintainer scripts: load at install, unload at removal only (not on upgrade), clean up.
const POSTINST: &str = include_str!("package/postinst.sh");
const PRERM: &str = include_str!("package/prerm.sh");
const POSTRM: &str = include_str!("package/postrm.sh");

/// The names a package is made of.
struct Names {
    /// The patch (module) name.
    patch: String,
    /// The kernel release.
    release: String,
    /// The package name.
    pkg: String,
    /// The helper's path in the package.
    helper: String,
    /// What applies the patch.
    engine: crate::Engine,
}

impl Names {
    fn fill(&self, template: &str) -> String {
        template
            .replace("@NAME@", &self.patch)
            .replace("@RELEASE@", &self.release)
            .replace("@PKG@", &self.pkg)
            .replace("@HELPER@", &self.helper)
            .replace("@ENGINE@", self.engine_word())
            .replace("@CONDITION@", self.unit_condition())
    }

    fn engine_word(&self) -> &'static str {
        match self.engine {
            crate::Engine::Klp => "klp",
            crate::Engine::Kgraft => "kgraft",
        }
    }

    /// What the unit needs of the kernel beyond its release: the livepatch core, for its
    /// patches (the kgraft engine is in the module).
    fn unit_condition(&self) -> &'static str {
        match self.engine {
            crate::Engine::Klp => "ConditionPathIsDirectory=/sys/kernel/livepatch\n",
            crate::Engine::Kgraft => "",
        }
    }

    /// Who applies the patch, for the packages' descriptions.
    fn applied_by(&self) -> &'static str {
        match self.engine {
            crate::Engine::Klp => "the kernel's livepatch core",
            crate::Engine::Kgraft => "kgraft's own engine, built into the module",
        }
    }
}

/// Whether `name` is a valid package name for both formats.
fn valid_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '+' | '.'))
}

/// Whether `version` is a version both formats take as it is.
fn valid_version(version: &str) -> bool {
    version.starts_with(|c: char| c.is_ascii_digit())
        && version.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~'))
}

fn write(path: &Path, text: &[u8], mode: u32) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Failure::io(format!("cannot create `{}`", parent.display()), e))?;
    }
    std::fs::write(path, text).map_err(|e| Failure::io(format!("cannot write `{}`", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Failure::io(format!("cannot set the mode of `{}`", path.display()), e))
}

/// Writes the files every format installs under `root`; `systemd` is the unit directory.
fn stage(root: &Path, names: &Names, ko: &[u8], systemd: &str) -> Result<(), Failure> {
    let module = root.join(format!("lib/modules/{}/updates/kgraft/{}.ko", names.release, names.patch));
    write(&module, ko, 0o644)?;
    write(&root.join(names.helper.trim_start_matches('/')), names.fill(HELPER).as_bytes(), 0o755)?;
    let units = root.join(systemd.trim_start_matches('/'));
    let unit = format!("{}.service", names.pkg);
    write(&units.join(&unit), names.fill(UNIT).as_bytes(), 0o644)?;
    // The package enables its unit itself: no systemctl at install time, so it works for
    // another root too.
    let wants = units.join("multi-user.target.wants");
    std::fs::create_dir_all(&wants).map_err(|e| Failure::io(format!("cannot create `{}`", wants.display()), e))?;
    std::os::unix::fs::symlink(format!("../{unit}"), wants.join(&unit))
        .map_err(|e| Failure::io(format!("cannot link `{}`", wants.join(&unit).display()), e))
}

/// Runs a packaging tool, failing with its output.
fn run_tool(cmd: &mut Command, what: &str, install: &str) -> Result<(), Failure> {
    let out = crate::process::output(cmd).map_err(|e| {
        Failure::Fatal(format!("cannot run {what} ({e})\nhelp: install it (Debian: apt-get install {install})"))
    })?;
    if !out.status.success() {
        return Err(Failure::Fatal(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim_end()
        )));
    }
    Ok(())
}

fn deb(dir: &Path, names: &Names, ko: &[u8], args: &PackageArgs, description: &str) -> Result<(), Failure> {
    let root = dir.join("deb");
    stage(&root, names, ko, "/lib/systemd/system")?;
    let control = format!(
        "Package: {pkg}\nVersion: {version}\nArchitecture: amd64\nMaintainer: {maintainer}\n\
         Depends: linux-image-{release} | linux-image-{release}-unsigned, kmod\nSection: kernel\nPriority: optional\n\
         Description: live patch {patch} for Linux {release}\n {description}\n .\n Built by kgraftc from {source}; \
         the patch is loaded at install and at boot when the running kernel is {release}, and applied by {by}.\n",
        pkg = names.pkg,
        version = args.pkg_version,
        maintainer = args.maintainer,
        release = names.release,
        patch = names.patch,
        source = args.file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        by = names.applied_by(),
    );
    write(&root.join("DEBIAN/control"), control.as_bytes(), 0o644)?;
    write(&root.join("DEBIAN/postinst"), names.fill(POSTINST).as_bytes(), 0o755)?;
    write(&root.join("DEBIAN/prerm"), names.fill(PRERM).as_bytes(), 0o755)?;
    write(&root.join("DEBIAN/postrm"), names.fill(POSTRM).as_bytes(), 0o755)?;
    run_tool(
        Command::new("dpkg-deb").args(["--root-owner-group", "--build"]).arg(&root).arg(&args.out),
        "dpkg-deb",
        "dpkg",
    )
}

fn rpm(dir: &Path, names: &Names, ko: &[u8], args: &PackageArgs, description: &str) -> Result<(), Failure> {
    let root = dir.join("rpm-root");
    stage(&root, names, ko, "/usr/lib/systemd/system")?;
    // RPM kernels provide `kernel-uname-r = RELEASE`; a release with two dashes (Debian's
    // 6.1.0-56-amd64) is not an RPM version, so the package then requires the kernel's image.
    let requires = if names.release.matches('-').count() <= 1 {
        format!("kernel-uname-r = {}", names.release)
    } else {
        format!("/boot/vmlinuz-{}", names.release)
    };
    let spec = spec(names, &args.pkg_version, description, &requires, &root);
    let spec_path = dir.join(format!("{}.spec", names.pkg));
    write(&spec_path, spec.as_bytes(), 0o644)?;
    let top = dir.join("rpmbuild");
    run_tool(
        Command::new("rpmbuild")
            .arg("-bb")
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .arg("--define")
            .arg("_build_id_links none")
            .arg(&spec_path),
        "rpmbuild",
        "rpm",
    )?;
    let built = top.join(format!("RPMS/x86_64/{}-{}-1.x86_64.rpm", names.pkg, args.pkg_version));
    std::fs::copy(&built, &args.out)
        .map_err(|e| Failure::io(format!("cannot copy `{}` to `{}`", built.display(), args.out.display()), e))?;
    Ok(())
}

/// `text` for an rpm spec: rpmbuild expands `%` everywhere (`%(cmd)` runs a command,
/// `%{lua:...}` a script), so each is doubled.
fn rpm_literal(text: &str) -> String {
    text.replace('%', "%%")
}

/// The spec of the package: every text that does not come from kgraftc itself is literal.
fn spec(names: &Names, version: &str, description: &str, requires: &str, root: &Path) -> String {
    format!(
        "Name: {pkg}\nVersion: {version}\nRelease: 1\nSummary: live patch {patch} for Linux {release}\n\
         License: GPL-2.0-only\nBuildArch: x86_64\nAutoReqProv: no\nRequires: {requires}\n\
         %define debug_package %{{nil}}\n%define __os_install_post %{{nil}}\n%define __strip /bin/true\n\n\
         %description\n{description}\n\nBuilt by kgraftc; the patch is loaded at install and at boot when the \
         running kernel is {release}, and applied by {by}.\n\n\
         %install\nmkdir -p %{{buildroot}}\ncp -a {stage}/. %{{buildroot}}/\n\n\
         %files\n/lib/modules/{release}/updates/kgraft/{patch}.ko\n{helper}\n\
         /usr/lib/systemd/system/{pkg}.service\n/usr/lib/systemd/system/multi-user.target.wants/{pkg}.service\n\n\
         %post\n{same_root}depmod -a {release} 2>/dev/null || :\nif same_root; then\n    {helper} load\nfi\n\n\
         %preun\n{same_root}# $1 is 0 at removal, 1 at upgrade (the new version's %post replaced the patch).\n\
         if [ \"$1\" -eq 0 ] && same_root; then\n    {helper} unload\nfi\n\n\
         %postun\nif [ \"$1\" -eq 0 ]; then\n    depmod -a {release} 2>/dev/null || :\n    rm -f /var/lib/kgraft/{pkg} /var/lib/kgraft/{pkg}.ko\nfi\n",
        pkg = names.pkg,
        patch = names.patch,
        release = rpm_literal(&names.release),
        helper = names.helper,
        stage = rpm_literal(&root.display().to_string()),
        by = names.applied_by(),
        description = rpm_literal(description),
        requires = rpm_literal(requires),
        same_root = rpm_literal(SAME_ROOT),
    )
}

/// A shell function for the rpm scriptlets: whether they run in the running system's root.
/// Under `rpm --root DIR` they run chrooted into DIR, where `insmod` would still reach the
/// running kernel: they leave it alone there (and where `/proc` is not mounted to tell).
const SAME_ROOT: &str = "# Under `rpm --root DIR` this runs chrooted into DIR: the running kernel is not DIR's.\n\
     same_root() { [ \"$(stat -Lc %d:%i / 2>/dev/null)\" = \"$(stat -Lc %d:%i /proc/1/root 2>/dev/null)\" ]; }\n";

/// Runs `kgraftc package`.
pub(crate) fn run(args: &PackageArgs, ui: &Ui) -> Result<(), Failure> {
    if !valid_version(&args.pkg_version) {
        return Err(Failure::Fatal(format!(
            "`{}` is not a package version: start with a digit, then letters, digits, `.`, `+` or `~`",
            args.pkg_version
        )));
    }
    // What reaches a control file or a spec line by line: a newline would start a field (or a
    // section) of its own.
    if let Some(c) = args.maintainer.chars().find(|c| c.is_control()) {
        return Err(Failure::Fatal(format!(
            "--maintainer holds the control character {c:?}: give one line, `Name <email>`"
        )));
    }
    let source = args.file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    if source.chars().any(char::is_control) {
        return Err(Failure::Fatal(format!(
            "the patch file's name {source:?} holds a control character: rename it before packaging"
        )));
    }
    let build = BuildArgs {
        file: args.file.clone(),
        target: Target::Linux,
        kernel: args.kernel.clone(),
        ksrc: args.ksrc.clone(),
        out: None,
        engine: args.engine,
        sign_key: args.sign_key.clone(),
        sign_cert: args.sign_cert.clone(),
    };
    // `-o` naming an input would destroy it.
    crate::output::refuse_input(&args.out, &build.inputs()).map_err(Failure::Fatal)?;
    let checked = crate::load(&args.file, ui)?;
    let pkg = args.name.clone().unwrap_or_else(|| default_name(checked.name()));
    if !valid_package_name(&pkg) {
        return Err(Failure::Fatal(format!(
            "`{pkg}` is not a package name: lower-case letters, digits, `-`, `+` and `.`, two characters or more"
        )));
    }
    let dir = crate::vm::TempDir::new("package", "KGRAFT_PACKAGE_KEEP").map_err(Failure::Fatal)?;
    let ko_path = dir.path().join("patch.ko");
    let (module, release) = crate::build_linux::build_module(build, &ko_path, ui)?;
    let ko = std::fs::read(&ko_path).map_err(|e| Failure::io(format!("cannot read `{}`", ko_path.display()), e))?;
    // The module says which engine applies it, whatever chose it (the option or the header).
    let engine = if module.kgraft { crate::Engine::Kgraft } else { crate::Engine::Klp };
    let names = Names { patch: module.name.clone(), release, helper: format!("/usr/lib/kgraft/{pkg}"), pkg, engine };
    // One line: both formats give continuation lines meanings of their own.
    let description = checked.description().split_whitespace().collect::<Vec<_>>().join(" ");
    let description = if description.is_empty() { format!("The live patch {}.", names.patch) } else { description };
    match args.format {
        Format::Deb => deb(dir.path(), &names, &ko, args, &description)?,
        Format::Rpm => rpm(dir.path(), &names, &ko, args, &description)?,
    }
    eprintln!(
        "packaged {} {} ({} for Linux {}) as {}",
        names.pkg,
        args.pkg_version,
        names.patch,
        names.release,
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rpmbuild expands `%(...)` and `%{lua:...}` anywhere in a spec: a description is text.
    #[test]
    fn a_description_reaches_the_spec_as_text() {
        let dir = std::env::temp_dir().join(format!("kgraft-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory");
        let marker = dir.join("ran");
        let description = format!("Fixes 100% of it. %(touch {}) %{{lua: os.exit(3)}}", marker.display());
        let text = spec(&names(crate::Engine::Klp), "1", &description, "/boot/vmlinuz-x", &dir.join("stage%{nil}"));
        assert!(text.contains(&format!("Fixes 100%% of it. %%(touch {}) %%{{lua: os.exit(3)}}", marker.display())));
        assert!(text.contains("stage%%{nil}/."), "{text}");
        // Where rpm is installed, it reads the spec without running a thing.
        let path = dir.join("p.spec");
        std::fs::write(&path, &text).expect("the spec");
        if let Ok(out) = Command::new("rpmspec").arg("-P").arg(&path).output() {
            let parsed = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert!(parsed.contains(&format!("Fixes 100% of it. %(touch {})", marker.display())), "{parsed}");
            assert!(!marker.exists(), "rpm ran the description's command");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `rpm --root DIR` runs the scriptlets chrooted into DIR: they must not load or unload the
    /// running kernel's patch there.
    #[test]
    fn the_rpm_scriptlets_leave_the_running_kernel_alone_under_another_root() {
        let text = spec(&names(crate::Engine::Klp), "1", "d", "r", Path::new("/stage"));
        let section = |name: &str| {
            let start = text.find(&format!("\n%{name}\n")).expect("the scriptlet");
            let rest = &text[start + name.len() + 3..];
            rest[..rest.find("\n%").unwrap_or(rest.len())].to_owned()
        };
        let (post, preun) = (section("post"), section("preun"));
        assert!(post.contains("if same_root; then\n    /usr/lib/kgraft/kgraft-patch-banner load\nfi"), "{post}");
        assert!(preun.contains("if [ \"$1\" -eq 0 ] && same_root; then"), "{preun}");
        // The function, as rpm hands it to the shell, tells this root from another.
        let function = SAME_ROOT.lines().last().expect("the function");
        let run = |root_check: &str| {
            let script = format!("{function}\n{root_check}");
            Command::new("sh").arg("-c").arg(script).status().expect("sh runs").success()
        };
        if Path::new("/proc/1/root").exists() && run("[ -r /proc/1/root/. ]") {
            assert!(run("same_root"), "the running system's root is its own");
        }
        assert!(text.contains("stat -Lc %%d:%%i"), "rpm would expand %d: {text}");
    }

    #[test]
    fn names_and_versions() {
        assert!(valid_package_name("kgraft-patch-cmdline-banner"));
        assert!(!valid_package_name("kgraft_patch"));
        assert!(!valid_package_name("-x"));
        assert!(valid_version("1"));
        assert!(valid_version("2.1+fix1"));
        assert!(!valid_version("v2"));
        assert!(!valid_version("1-2"));
    }

    fn names(engine: crate::Engine) -> Names {
        Names {
            patch: "cmdline_banner".into(),
            release: "6.1.0-56-amd64".into(),
            pkg: "kgraft-patch-banner".into(),
            helper: "/usr/lib/kgraft/kgraft-patch-banner".into(),
            engine,
        }
    }

    /// `sh -n`: the script parses.
    fn parses(script: &str) {
        let out = Command::new("sh").arg("-n").arg("-c").arg(script).output().expect("sh runs");
        assert!(out.status.success(), "{}\n{script}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn the_scripts_drive_the_engine_the_module_is_for() {
        let klp = names(crate::Engine::Klp);
        let kgraft = names(crate::Engine::Kgraft);
        for n in [&klp, &kgraft] {
            for template in [HELPER, POSTINST, PRERM, POSTRM] {
                let script = n.fill(template);
                assert!(!script.contains('@'), "a placeholder left: {script}");
                parses(&script);
            }
        }
        let (h_klp, h_kg) = (klp.fill(HELPER), kgraft.fill(HELPER));
        assert!(h_klp.contains("\nENGINE=klp\n") && h_kg.contains("\nENGINE=kgraft\n"));
        for h in [&h_klp, &h_kg] {
            // Every sysfs file is reached through the patch's directory, whichever engine has it.
            assert!(!h.contains("$LP/$1/") && !h.contains("$LP/$NAME/") && !h.contains("$LP/$name"), "{h}");
            assert!(h.contains("echo 0 > \"$(pdir \"$1\")/enabled\""), "{h}");
        }
        // Only the livepatch core's patches need the core: the unit asks for it for them alone.
        assert!(klp.fill(UNIT).contains("\nConditionPathIsDirectory=/sys/kernel/livepatch\nAfter="));
        let unit = kgraft.fill(UNIT);
        assert!(
            !unit.contains("livepatch") && unit.contains("ConditionKernelVersion=6.1.0-56-amd64\nAfter="),
            "{unit}"
        );
        assert_eq!(klp.applied_by(), "the kernel's livepatch core");
        assert_eq!(kgraft.applied_by(), "kgraft's own engine, built into the module");
    }

    /// The helper's functions, run against a made-up sysfs: `pdir`, `applied`, `let_go`.
    #[test]
    fn the_helper_finds_a_patch_of_either_engine_and_knows_when_it_is_let_go() {
        let dir = crate::vm::TempDir::new("package-test", "KGRAFT_PACKAGE_KEEP").expect("a temporary directory");
        let sys = dir.path().join("sys/kernel/");
        let (lp, kg) = (sys.join("livepatch"), sys.join("kgraft"));
        let put = |path: std::path::PathBuf, v: &str| {
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("a directory");
            std::fs::write(path, v).expect("a file");
        };
        // a: the kgraft engine's, applied; b: the livepatch core's, disabled but not yet freed;
        // c: the kgraft engine's, off; d: nowhere.
        put(kg.join("a/enabled"), "1\n");
        put(kg.join("a/transition"), "0\n");
        put(lp.join("b/enabled"), "0\n");
        put(lp.join("b/transition"), "0\n");
        put(kg.join("c/enabled"), "0\n");
        put(kg.join("c/transition"), "0\n");
        let probe = "for p in a b c d; do echo \"$p $(pdir $p) $(applied $p && echo applied || echo off) \
                     $(let_go $p && echo gone || echo held)\"; done";
        for (engine, d_dir) in [(crate::Engine::Klp, &lp), (crate::Engine::Kgraft, &kg)] {
            let helper = names(engine).fill(HELPER).replace("/sys/kernel/", &sys.display().to_string());
            let functions = &helper[..helper.find("case \"${1:-}\" in").expect("the helper's commands")];
            let out = Command::new("sh").arg("-c").arg(format!("{functions}\n{probe}")).output().expect("sh runs");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let want = format!(
                "a {kg}/a applied held\nb {lp}/b off held\nc {kg}/c off gone\nd {d}/d off gone\n",
                kg = kg.display(),
                lp = lp.display(),
                d = d_dir.display()
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{engine:?}");
        }
        // The livepatch core let go of b once its directory is gone.
        std::fs::remove_dir_all(lp.join("b")).expect("b removed");
        let helper = names(crate::Engine::Klp).fill(HELPER).replace("/sys/kernel/", &sys.display().to_string());
        let functions = &helper[..helper.find("case \"${1:-}\" in").expect("the helper's commands")];
        let out = Command::new("sh").arg("-c").arg(format!("{functions}\nlet_go b && echo gone")).output().expect("sh");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "gone\n");
    }
}
