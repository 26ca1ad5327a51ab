//! The Rust compiler for kernel code: one whose library source can build `core` for the kernel.

use std::path::PathBuf;
use std::process::Command;

use super::Error;

/// A Rust compiler and the cargo that drives it.
pub(crate) struct Toolchain {
    /// The compiler (Debian's `rustc-web` installs it as `/usr/bin/rustc`).
    pub(crate) rustc: PathBuf,
    /// The cargo to run it with.
    pub(crate) cargo: PathBuf,
}

/// Finds the compiler: `KGRAFT_KERNEL_RUSTC`, else `/usr/bin/rustc`; it must come with the
/// source of its own library, from which `core` is built for the kernel.
pub(crate) fn find() -> Result<Toolchain, Error> {
    let rustc =
        std::env::var_os("KGRAFT_KERNEL_RUSTC").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/rustc"));
    let install = "install Debian's Rust compiler with its library source \
                   (apt-get install rustc-web rust-web-src), or point KGRAFT_KERNEL_RUSTC at \
                   a rustc whose sysroot holds lib/rustlib/src/rust/library";
    let sysroot = Command::new(&rustc)
        .arg("--print")
        .arg("sysroot")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .ok_or_else(|| Error::new(format!("no Rust compiler for kernel code at {}", rustc.display())).help(install))?;
    let core = sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml");
    if !core.is_file() {
        return Err(Error::new(format!(
            "{} has no library source to build `core` for the kernel from",
            rustc.display()
        ))
        .detail(format!("missing: {}", core.display()))
        .help(install));
    }
    let cargo = std::env::var_os("CARGO").map(PathBuf::from).unwrap_or_else(|| "cargo".into());
    Ok(Toolchain { rustc, cargo })
}
