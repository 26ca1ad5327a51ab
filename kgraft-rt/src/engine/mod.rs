//! The engine that applies patches: sites, the INT3 poke, universes, the patch stack, shadow data.
//!
//! The engine is `no_std` and allocates through `alloc`; it touches machine code only through
//! the [`poke::Text`] trait, which each platform implements (the user-mode host writes its own
//! text; a kernel engine would use the kernel's text poking). Patch shared objects never enable
//! this module: one process holds one engine, in the host executable.

pub mod poke;
pub mod site;
pub mod stack;
pub mod store;
pub mod universe;
