#[kgraft_macros::replace(name = "foo")]
pub fn foo() {}

fn main() {}
