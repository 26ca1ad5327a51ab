//! `#[sympos(near = "NAME")]` bound to each target's kallsyms: the same source lowers to the
//! position each kernel has, and a neighbour a kernel lacks is an error for that kernel.

use kgraft_lang::kernel::{Kernel, Object, Symbol};

const SRC: &str = r#"patch near {
    description: "mode_show by its neighbour",
}

#[sympos(near = "force_show")]
replace fn mode_show(kobj: *mut c_void, attr: *mut c_void, buf: *mut c_char) -> isize {
    0
}
"#;

/// A kernel whose vmlinux kallsyms is `order` (every `mode_show` traceable).
fn kernel(order: &str) -> Kernel {
    let kallsyms: Vec<String> = order.split_whitespace().map(str::to_owned).collect();
    let count = u32::try_from(kallsyms.iter().filter(|n| *n == "mode_show").count()).expect("a count");
    let mut vmlinux = Object { kallsyms, origin: "test".into(), ..Object::default() };
    vmlinux.symbols = Some([("mode_show".to_owned(), Symbol { count, traceable: count })].into_iter().collect());
    let mut kernel = Kernel::default();
    kernel.release = "6.1.0-57-test".into();
    kernel.objects.insert("vmlinux".into(), vmlinux);
    kernel.index();
    kernel
}

#[test]
fn one_source_lowers_to_each_kernels_own_position() {
    let checked = kgraft_lang::check("near.kgp", SRC).expect("the source checks");
    let generic = kernel("a_x mode_show a_y force_show mode_show reboot_z q mode_show");
    let flavour = kernel("c_x mode_show c_y a_x mode_show a_y force_show mode_show reboot_z q mode_show");
    for (k, want) in [(&generic, "sympos = 2"), (&flavour, "sympos = 3")] {
        let diags = kgraft_lang::check_against(&checked, k);
        assert!(!diags.has_errors(), "{diags:?}");
        let lowered = kgraft_lang::lower_for(&checked, k).expect("it lowers");
        assert!(lowered.expanded.contains(want), "no `{want}` in\n{}", lowered.expanded);
    }
}

#[test]
fn a_neighbour_the_kernel_lacks_is_an_error_naming_why() {
    let checked = kgraft_lang::check("near.kgp", SRC).expect("the source checks");
    let other = kernel("a_x mode_show a_y mode_show q");
    let diags = kgraft_lang::check_against(&checked, &other);
    let e = diags.list.iter().find(|d| d.code == "E0043").expect("an E0043");
    assert!(e.message.contains("no `mode_show` of vmlinux is the one nearest `force_show`"), "{e:?}");
    assert!(kgraft_lang::lower_for(&checked, &other).is_err());
}
