//! The runtime every kgraft live patch links against.
//!
//! A patch crate (lowered from a `.kgp` source, or written by hand with `kgraft-macros`) builds
//! one [`Patch`] descriptor: the replacement functions with their targets, the shadow data it
//! attaches to kernel objects, and its callbacks. What happens to that descriptor depends on the
//! target feature: with `host` the user-mode host's loader reads it from the shared object, with
//! `kernel` the module registers it with the kernel's livepatch core. With neither, the crate
//! only type-checks, which is what `kgraftc check` and the compiler's own tests use.
#![no_std]

#[cfg(all(feature = "host", feature = "kernel"))]
compile_error!("kgraft-rt: the features `host` and `kernel` select the target; enable one");

#[cfg(any(feature = "engine", test))]
extern crate alloc;

pub mod bits;
pub mod contract;
#[cfg(any(feature = "engine", test))]
pub mod engine;
mod export;
#[cfg(feature = "kernel")]
#[doc(hidden)]
pub mod kernel;
pub mod layout;
pub mod patch;
pub mod prelude;
pub mod printk;
pub mod rules;
pub mod shadow;
pub mod state;
pub mod syscall;
pub mod transition;

/// C sources a patch module compiles with kbuild, by the option that asks for them.
pub mod csrc {
    /// The kernel-facing half of kgraft's own engine (`--engine kgraft`), see
    /// `kernel::kgraft`.
    pub const KERNEL_ENGINE: &str = include_str!("kernel/engine.c");
}

pub use patch::{Callbacks, Func, ModuleState, Object, ObjectDecl, Patch, ShadowDecl};
