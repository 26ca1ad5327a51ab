//! Compiles the host's C "kernel" with the kernel's tracing flags and links the host non-PIE.

use std::fmt::Write as _;
use std::path::PathBuf;

/// How many generated functions the batch benchmark patches at once.
const MANY: usize = 1000;

/// Runs a build tool, stopping the build with a clear message when it is missing or fails.
fn run(cmd: &mut std::process::Command, what: &str) {
    match cmd.status() {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("{what} failed: {status}"),
        Err(e) => panic!("cannot run {what}: {e}"),
    }
}

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut many = String::from("/* Generated: patch sites for the batch benchmark. */\n");
    many.push_str("#include <stdint.h>\n");
    for i in 0..MANY {
        writeln!(
            many,
            "__attribute__((noinline)) uint64_t kgt_many_{i}(uint64_t x) \
             {{ __asm__ volatile(\"\" : \"+r\"(x)); return x + {i}; }}"
        )
        .expect("writing to a String cannot fail");
    }
    // The second local `kgt_local` (the first is in host.c, which links first).
    many.push_str(
        "static __attribute__((noinline, noclone, used)) uint64_t kgt_local(uint64_t x) \
         { __asm__ volatile(\"\" : \"+r\"(x)); return x + 200; }\n\
         __attribute__((noinline)) uint64_t kgt_local_second(uint64_t x) { return kgt_local(x); }\n",
    );
    let many_path = out.join("many.c");
    std::fs::write(&many_path, many).expect("OUT_DIR is writable");

    let mut build = cc::Build::new();
    build
        .file("csrc/host.c")
        .include("csrc/include")
        .file(&many_path)
        .pic(false)
        .opt_level(2)
        .debug(true)
        .flag("-fno-pie")
        .flag("-pg")
        .flag("-mfentry")
        .flag("-mnop-mcount")
        .flag("-mrecord-mcount")
        .flag("-fno-omit-frame-pointer")
        .flag("-fcf-protection=none")
        .warnings(true);
    let objects = build.compile_intermediates();
    // One relocatable object, given BTF by pahole as the kernel's build gives vmlinux its BTF:
    // kgraftc reads the host's types, prototypes, symbols and fentry sites from the executable
    // exactly as it reads a kernel's (one .BTF section: pahole runs once, on the merged object).
    let merged = out.join("kgthost.o");
    run(std::process::Command::new("ld").arg("-r").arg("-o").arg(&merged).args(&objects), "ld -r (from binutils)");
    run(std::process::Command::new("pahole").arg("-J").arg(&merged), "pahole (Debian: apt-get install dwarves)");
    let archive = out.join("libkgthost.a");
    let _ = std::fs::remove_file(&archive);
    run(build.get_archiver().arg("crs").arg(&archive).arg(&merged), "ar (from binutils)");
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static=kgthost");
    println!("cargo:rerun-if-changed=csrc/host.c");
    println!("cargo:rerun-if-changed=csrc/include");
    println!("cargo:rerun-if-changed=build.rs");

    // The C objects hold absolute addresses, the patches resolve the host's symbols at load
    // time, and the linker must keep the fentry site list (lld drops it by default).
    for arg in ["-no-pie", "-Wl,--export-dynamic", "-Wl,-z,nostart-stop-gc"] {
        println!("cargo:rustc-link-arg={arg}");
    }
}
