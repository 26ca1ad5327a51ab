#[kgraft_macros::callback(pre_patch)]
unsafe fn refuse(_obj: &kgraft_rt::Object) {}

fn main() {}
