//! A kernel's types come from BTF, which anything may have written: a name that is no Rust
//! identifier (a dot, a dash, a leading digit, a space, nothing at all) is spelled as one, never
//! a panic, and the fields a patch names still work.

use kgraft_lang::kernel::{Composite, Kernel, Member, Object, Ty};

/// A kernel with `struct task` whose members and member types have names of every odd kind.
fn odd_kernel() -> Kernel {
    let int = |name: &str| Ty::Int { name: name.into(), size: 4, signed: true, boolean: false };
    let member = |name: &str, ty: u32, bit_offset: u32, bitfield_size: u32| Member {
        name: Some(name.into()),
        ty,
        bit_offset,
        bitfield_size,
    };
    let types = vec![
        Ty::Void,
        // 1: an int with an odd name.
        int("int"),
        // 2: a struct whose name is not an identifier, and whose members' are not either.
        Ty::Struct(Composite {
            name: Some("odd.name-1".into()),
            size: 8,
            members: vec![member("1st", 1, 0, 0), member("", 1, 32, 0)],
        }),
        // 3: a forward declaration, 4: a typedef, both odd.
        Ty::Fwd { name: "fwd name".into(), union: false },
        Ty::Typedef { name: "t-d".into(), ty: 1 },
        Ty::Ptr(3),
        // 6: the struct the patch reads.
        Ty::Struct(Composite {
            name: Some("task".into()),
            size: 32,
            members: vec![
                member("ok", 1, 0, 0),
                member("a.b", 2, 64, 0),
                member("x-y", 1, 128, 3),
                member("é", 4, 160, 0),
                member("p", 5, 192, 0),
            ],
        }),
    ];
    let mut kernel = Kernel::default();
    kernel.release = "odd".into();
    kernel.types = types;
    kernel.objects.insert("vmlinux".into(), Object { has_btf: true, ..Object::default() });
    kernel.index();
    kernel
}

#[test]
fn odd_btf_names_are_spelled_as_identifiers_not_a_panic() {
    let src = r#"patch odd { description: "odd names" }

replace fn read_task(t: *mut task) -> c_int {
    (*t).ok
}
"#;
    let checked = kgraft_lang::check("odd.kgp", src).map_err(|d| format!("{:?}", d.list)).expect("checks");
    let kernel = odd_kernel();
    let lowered = kgraft_lang::lower_for(&checked, &kernel).map_err(|d| format!("{:?}", d.list)).expect("lowers");
    let code = &lowered.build_source;
    assert!(code.contains("pub ok: i32"), "{code}");
    // Every identifier of the generated code parses: the crate is valid Rust.
    syn::parse_file(code).unwrap_or_else(|e| panic!("{e}\n{code}"));
}
