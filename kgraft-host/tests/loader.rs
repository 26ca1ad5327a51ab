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
    assert!(
        message.contains(&format!("its ABI stamp is `{other}`, this host's is `{}`", ours())),
        "{message}"
    );

    // The same file with the host's own stamp gets past the check, to the missing descriptor.
    let same = shared_object(&dir, "same", &stamp_c(&ABI_STAMP));
    let message = refused(&same);
    assert!(message.contains("exports no `kgraft_patch_v1`"), "{message}");

    assert_eq!(e.list(), patches, "no patch was applied");
    assert_eq!(e.sites_report(), sites, "no site changed");
    let _ = std::fs::remove_dir_all(&dir);
}
