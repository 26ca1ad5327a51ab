//! Writing and building a lowered crate.
