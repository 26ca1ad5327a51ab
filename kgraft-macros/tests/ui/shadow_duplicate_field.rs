kgraft_rt::opaque_types!(foo_dev);

kgraft_macros::shadow! {
    foo_dev {
        hits: u64 = 0,
        hits: u32 = 0,
    }
}

fn main() {}
