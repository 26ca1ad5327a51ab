// A generated kernel type whose layout is not the kernel's does not build: here the kernel
// says `count` is at 16, but this definition puts it at 8.

#[repr(C)]
pub struct seq_file {
    pub buf: *mut u8,
    pub count: usize,
}

kgraft_rt::assert_layout!(seq_file, 16; buf = 0, count = 16);

fn main() {}
