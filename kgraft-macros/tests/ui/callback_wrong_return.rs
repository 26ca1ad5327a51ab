#[kgraft_macros::callback(pre_patch)]
unsafe fn refuse() {}

fn main() {}
