//! Module signatures: `kgraftc build --target linux --sign-key KEY --sign-cert CERT`.
//!
//! A kernel that enforces signatures (`module.sig_enforce=1`, `CONFIG_MODULE_SIG_FORCE`, or
//! Secure Boot's lockdown) refuses a module unless it carries a signature by a key it trusts.
//! The signature is the one kbuild itself appends: the kernel headers' `scripts/sign-file`,
//! with the hash the kernel's configuration names (`CONFIG_MODULE_SIG_HASH`), so `modinfo`
//! shows the signer, the key and the hash as for the kernel's own modules.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Failure;

/// The marker the kernel's `sign-file` appends after a module's signature.
pub(crate) const SIGNATURE_MARKER: &[u8] = b"~Module signature appended~\n";

/// Returns the value of `CONFIG_NAME` in the kernel build directory's configuration.
fn config_value(kdir: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(kdir.join(".config"))
        .or_else(|_| std::fs::read_to_string(kdir.join("include/config/auto.conf")))
        .ok()?;
    let prefix = format!("CONFIG_{name}=");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| v.trim_matches('"').to_owned())
}

/// Signs `module` in place with `key` and `cert`, using the kernel build directory's
/// `sign-file` and hash.
pub(crate) fn sign(kdir: &Path, key: &Path, cert: &Path, module: &Path) -> Result<(), Failure> {
    let sign_file: PathBuf = kdir.join("scripts/sign-file");
    if !sign_file.is_file() {
        return Err(Failure::Fatal(format!(
            "cannot sign: {} does not exist\nhelp: the kernel's headers package has it (Debian: linux-headers-RELEASE)",
            sign_file.display()
        )));
    }
    for (what, path) in [("key", key), ("certificate", cert)] {
        std::fs::metadata(path)
            .map_err(|e| Failure::io(format!("cannot read the signing {what} `{}`", path.display()), e))?;
    }
    if config_value(kdir, "MODULE_SIG").as_deref() != Some("y") {
        eprintln!(
            "warning: the kernel of {} is built without CONFIG_MODULE_SIG: it does not check module signatures",
            kdir.display()
        );
    }
    let hash = config_value(kdir, "MODULE_SIG_HASH").unwrap_or_else(|| "sha256".into());
    let data = std::fs::read(module).map_err(|e| Failure::io(format!("cannot read `{}`", module.display()), e))?;
    if data.ends_with(SIGNATURE_MARKER) {
        return Err(Failure::Fatal(format!("`{}` is already signed", module.display())));
    }
    let out = Command::new(&sign_file)
        .arg(&hash)
        .arg(key)
        .arg(cert)
        .arg(module)
        .output()
        .map_err(|e| Failure::io(format!("cannot run {}", sign_file.display()), e))?;
    if !out.status.success() {
        return Err(Failure::Fatal(format!(
            "sign-file could not sign `{}` ({}):\n{}{}\nhelp: --sign-key takes the private key (PEM, or a PKCS#11 URI) and \
             --sign-cert its X.509 certificate (PEM or DER)",
            module.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim_end()
        )));
    }
    let signed = std::fs::read(module).map_err(|e| Failure::io(format!("cannot read `{}`", module.display()), e))?;
    if !signed.ends_with(SIGNATURE_MARKER) {
        return Err(Failure::Fatal(format!("sign-file left `{}` without a signature", module.display())));
    }
    eprintln!("signed {} with {} ({hash})", module.display(), cert.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_hash() {
        let dir = std::env::temp_dir().join(format!("kgraft-sign-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        std::fs::write(dir.join(".config"), "CONFIG_MODULE_SIG=y\nCONFIG_MODULE_SIG_HASH=\"sha512\"\n")
            .expect("a file");
        assert_eq!(config_value(&dir, "MODULE_SIG_HASH").as_deref(), Some("sha512"));
        assert_eq!(config_value(&dir, "MODULE_SIG").as_deref(), Some("y"));
        assert_eq!(config_value(&dir, "LIVEPATCH"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
