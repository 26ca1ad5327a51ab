#[kgraft_macros::replace(name = "foo", objekt = "bar")]
pub unsafe extern "C" fn foo() {}

fn main() {}
