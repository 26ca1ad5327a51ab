//! The loader refuses a shared object built with another kgraft-rt, before reading its patch
//! descriptor: the ABI stamp `kgraft_abi_v1` must equal the host's.
//!
//! The shared objects are small C files built here: their descriptors are garbage, so a loader
//! that read one would accept nonsense or crash.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{eng, serial};
use kgraft_host::loader::Library;
use kgraft_rt::patch::{ABI_STAMP, ABI_STAMP_LEN};

/// Compiles `source` into the shared object `dir/name.so`.
fn shared_object(dir: &Path, name: &str, source: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    let so = dir.join(format!("{name}.so"));
    std::fs::write(&c, source).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(cc).args(["-shared", "-fPIC", "-o"]).arg(&so).arg(&c).output().expect("cc runs");
    assert!(out.status.success(), "{name}.c compiles:\n{}", String::from_utf8_lossy(&out.stderr));
    so
}

/// Returns C text defining the stamp symbol with `stamp`, NUL-padded to the stamp's length.
fn stamp_c(stamp: &[u8]) -> String {
    let mut text = format!("const unsigned char kgraft_abi_v1[{ABI_STAMP_LEN}] = {{");
    for b in stamp {
        write!(text, "{b},").unwrap();
    }
    text + "};\n"
}

/// A descriptor that no engine could use: a pointer to zeroes.
const GARBAGE_PATCH: &str = "static const char zeroes[256];\nconst void *kgraft_patch_v1 = zeroes;\n";

/// Returns the text of the host's own stamp.
fn ours() -> String {
    let end = ABI_STAMP.iter().position(|&b| b == 0).unwrap();
    String::from_utf8(ABI_STAMP[..end].to_vec()).unwrap()
}

/// Opens `so`, which must be refused; returns the message.
fn refused(so: &Path) -> String {
    match Library::open(so.to_str().unwrap()) {
        Ok(_) => panic!("{} was accepted", so.display()),
        Err(message) => message,
    }
}

#[test]
fn a_patch_with_a_missing_or_different_abi_stamp_is_refused() {
    let _s = serial();
    let dir = std::env::temp_dir().join(format!("kgraft-loader-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = eng();
    let (patches, sites) = (e.list(), e.sites_report());

    let missing = shared_object(&dir, "missing", GARBAGE_PATCH);
    let message = refused(&missing);
    assert!(message.contains("has no ABI stamp (`kgraft_abi_v1`)"), "{message}");
    assert!(message.contains(&format!("whose stamp is `{}`", ours())), "{message}");

    let other = ours().replacen(&format!("kgraft-rt {}", env!("CARGO_PKG_VERSION")), "kgraft-rt 0.0.0-other", 1);
    assert_ne!(other, ours());
    let different = shared_object(&dir, "different", &(stamp_c(other.as_bytes()) + GARBAGE_PATCH));
    let message = refused(&different);
    assert!(message.contains(&format!("its ABI stamp is `{other}`, this host's is `{}`", ours())), "{message}");

    // The same file with the host's own stamp gets past the check, to the missing descriptor.
    let same = shared_object(&dir, "same", &stamp_c(&ABI_STAMP));
    let message = refused(&same);
    assert!(message.contains("exports no `kgraft_patch_v1`"), "{message}");

    assert_eq!(e.list(), patches, "no patch was applied");
    assert_eq!(e.sites_report(), sites, "no site changed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_refused_patch_file_runs_none_of_its_code() {
    let dir = std::env::temp_dir().join(format!("kgraft-loader-ctor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ran = dir.join("constructor-ran");
    let ctor = format!(
        "#include <stdio.h>\n__attribute__((constructor)) static void ctor(void) {{ \
         FILE *f = fopen({:?}, \"w\"); if (f) fclose(f); }}\n",
        ran.display().to_string()
    );
    let other = ours().replacen("kgraft-rt", "kgraft-rt-other", 1);
    for (name, source) in [
        ("ctor_missing", ctor.clone() + GARBAGE_PATCH),
        ("ctor_different", ctor.clone() + &stamp_c(other.as_bytes()) + GARBAGE_PATCH),
        ("ctor_no_patch", ctor.clone() + &stamp_c(&ABI_STAMP)),
    ] {
        let so = shared_object(&dir, name, &source);
        refused(&so);
        assert!(!ran.exists(), "{name}: the constructor of a refused file ran");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_truncated_or_rewritten_patch_file_never_crashes_the_host() {
    let _s = serial();
    let tool = common::kgraftc();
    let dir = std::env::temp_dir().join(format!("kgraft-loader-cut-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let so = common::build(&tool, "cmdline_banner", &dir);
    let whole = std::fs::read(&so).unwrap();
    let cut = dir.join("cut.so");
    let points: Vec<usize> = (0..13).map(|i| i * whole.len() / 13).chain([whole.len() - 1]).collect();
    // First that no cut crashes the host (the dynamic loader faulted on most), then that each
    // is refused for what it is.
    let messages: Vec<(usize, String)> = points
        .into_iter()
        .map(|at| {
            std::fs::write(&cut, &whole[..at]).unwrap();
            (at, refused(&cut))
        })
        .collect();
    for (at, message) in messages {
        assert!(
            message.contains("truncated") || message.contains("not a shared object"),
            "cut at {at} of {}: {message}",
            whole.len()
        );
    }

    // A loaded patch whose file is rewritten in place (`cp` over it) keeps its own pages.
    let live = dir.join("live.so");
    std::fs::write(&live, &whole).unwrap();
    let (lib, patch) = Library::open(live.to_str().unwrap()).expect("the patch loads");
    std::fs::write(&live, b"").unwrap();
    std::fs::write(&live, vec![0u8; whole.len() / 2]).unwrap();
    assert_eq!(patch.name.to_bytes(), b"cmdline_banner");
    assert!(!patch.description.to_bytes().is_empty());
    lib.close();
    let _ = std::fs::remove_dir_all(&dir);
}
