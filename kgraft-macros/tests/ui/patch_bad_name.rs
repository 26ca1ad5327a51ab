kgraft_macros::patch! {
    name: "Foo-Bar",
    description: "a name the kernel would not accept",
    functions: [],
}

fn main() {}
