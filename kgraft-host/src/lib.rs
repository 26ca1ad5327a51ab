//! The user-mode host: a small kernel-like program that kgraft patches live.
//!
//! The host's "kernel" is C (`csrc/host.c`), compiled with the kernel's tracing flags so that
//! every function starts with a fentry NOP. Its threads run "system calls" through a boundary
//! that is their safe point ([`threads`]). The [`engine`] applies patches to that code for real:
//! it finds the sites ([`elf`]), pokes them with the INT3 sequence ([`text`]), routes calls
//! through reality-check trampolines kept near the text ([`pool`]), and moves threads between
//! universes. Patches arrive as shared objects ([`loader`]), through a control socket
//! ([`control`]) that `kgraftc host` talks to.

pub mod control;
pub mod elf;
pub mod engine;
pub mod ffi;
pub mod loader;
pub mod pool;
pub mod shadow;
pub mod state;
pub mod text;
pub mod threads;
pub mod workload;
