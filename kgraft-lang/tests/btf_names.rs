//! A kernel's types come from BTF, which anything may have written: a name that is no Rust
//! identifier (a dot, a dash, a leading digit, a space, nothing at all) is spelled as one, never
//! a panic, and the fields a patch names still work.

use kgraft_lang::kernel::{Composite, Kernel, Member, Object, Ty};

/// A kernel of release `release` whose vmlinux's BTF holds `types`.
fn kernel_of(release: &str, types: Vec<Ty>) -> Kernel {
    let mut kernel = Kernel::default();
    kernel.release = release.into();
    kernel.types = types;
    kernel.objects.insert("vmlinux".into(), Object { has_btf: true, ..Object::default() });
    kernel.index();
    kernel
}

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
    kernel_of("odd", types)
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

/// A kernel whose types refer to themselves in every way BTF allows to be written: a pointer to
/// itself, a typedef loop, a struct holding itself, an array of itself, a const of itself.
fn looping_kernel() -> Kernel {
    let member =
        |name: &str, ty: u32, bit_offset: u32| Member { name: Some(name.into()), ty, bit_offset, bitfield_size: 0 };
    let types = vec![
        Ty::Void,
        Ty::Ptr(1),
        Ty::Typedef { name: "loop_a".into(), ty: 3 },
        Ty::Typedef { name: "loop_b".into(), ty: 2 },
        Ty::Struct(Composite { name: Some("holds_itself".into()), size: 16, members: vec![member("me", 4, 0)] }),
        Ty::Array { elem: 5, len: 2 },
        Ty::Const(6),
        Ty::Struct(Composite {
            name: Some("task".into()),
            size: 64,
            members: vec![
                member("p", 1, 0),
                member("t", 2, 64),
                member("h", 4, 128),
                member("a", 5, 256),
                member("c", 6, 384),
            ],
        }),
    ];
    kernel_of("loops", types)
}

#[test]
fn types_that_refer_to_themselves_end_in_a_result() {
    let src = r#"patch loops { description: "loops" }

replace fn read_task(t: *mut task) -> c_int {
    0
}
"#;
    let checked = kgraft_lang::check("loops.kgp", src).map_err(|d| format!("{:?}", d.list)).expect("checks");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            let kernel = looping_kernel();
            let _ = kgraft_lang::check_against(&checked, &kernel);
            let lowered =
                kgraft_lang::lower_for(&checked, &kernel).map(|l| l.build_source.len()).map_err(|d| d.list.len());
            let _ = tx.send(lowered);
        })
        .expect("a thread");
    let result = rx.recv_timeout(std::time::Duration::from_secs(20));
    assert!(result.is_ok(), "lowering against looping types did not end within 20 s");
}
