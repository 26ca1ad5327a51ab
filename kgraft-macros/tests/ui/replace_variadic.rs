#[kgraft_macros::replace(name = "printk")]
pub unsafe extern "C" fn printk(fmt: *const u8, mut args: ...) -> i32 {
    0
}

fn main() {}
