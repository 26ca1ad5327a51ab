//! Hostile inputs: huge files, binary junk, NUL bytes, deep nesting and long operator chains are
//! diagnostics, never a crash.

fn codes(src: &str) -> Vec<String> {
    match kgraft_lang::check("limits.kgp", src) {
        Ok(_) => Vec::new(),
        Err(d) => d.list.into_iter().map(|d| d.code).collect(),
    }
}

const HEAD: &str = "patch limits { description: \"limits\" }\n";

#[test]
fn too_large_is_e0027() {
    let mut src = String::from(HEAD);
    src.push_str(&" ".repeat(kgraft_lang::MAX_SOURCE_LEN));
    assert_eq!(codes(&src), ["E0027"]);
    let Err((_, diags)) = kgraft_lang::check_bytes("limits.kgp", src.as_bytes()) else { panic!("accepted") };
    assert_eq!(diags.list[0].code, "E0027");
}

#[test]
fn not_utf8_is_e0026() {
    let Err((source, diags)) = kgraft_lang::check_bytes("junk.kgp", b"patch x {\xff\xfe\x00") else {
        panic!("accepted")
    };
    assert_eq!(diags.list[0].code, "E0026");
    assert_eq!(diags.list[0].primary_span().map(|s| s.start), Some(9));
    assert_eq!(source.line_col(9), (1, 10));
}

#[test]
fn deep_brackets_are_e0028() {
    for open in ["(", "[", "{"] {
        let close = match open {
            "(" => ")",
            "[" => "]",
            _ => "}",
        };
        let body = format!("{{ {}a{} }}", open.repeat(100_000), close.repeat(100_000));
        let src = format!("{HEAD}replace fn f(a: u64) -> u64 {body}\n");
        assert_eq!(codes(&src), ["E0028"], "{open}");
    }
    let ty = format!("{HEAD}replace fn f(a: {}u8{}) -> u64 {{ 0 }}\n", "Option<".repeat(50_000), ">".repeat(50_000));
    assert_eq!(codes(&ty), ["E0028"]);
}

#[test]
fn long_operator_chains_are_e0028() {
    let chains = [
        format!("{{ {}a }}", "-".repeat(300_000)),
        format!("{{ {}a }}", "&".repeat(300_000)),
        format!("{{ {}a }}", "!".repeat(300_000)),
        format!("{{ let b: {}u8 = 0; 0 }}", "*mut ".repeat(50_000)),
        format!("{{ if a == 0 {{ 0 }} {} else {{ 2 }} }}", "else if a == 1 { 1 } ".repeat(20_000)),
        format!("{{ {}a }}", "|| ".repeat(50_000)),
        format!("{{ {}a }}", "return ".repeat(50_000)),
        format!("{{ {}a }}", "a.b().".repeat(50_000)),
    ];
    for body in chains {
        let src = format!("{HEAD}replace fn f(a: u64) -> u64 {body}\n");
        assert_eq!(codes(&src), ["E0028"], "{}", &body[..40]);
    }
}

#[test]
fn a_chain_within_the_limit_checks_and_lowers() {
    // 1000 unary minus signs: far beyond real code, within the limit, and fine for syn.
    let src = format!("{HEAD}replace fn f(a: i64) -> i64 {{ {}a }}\n", "- ".repeat(1000));
    let checked = kgraft_lang::check("ok.kgp", &src).map_err(|d| format!("{:?}", d.list)).expect("checks");
    kgraft_lang::lower(&checked).map_err(|d| format!("{:?}", d.list)).expect("lowers");
}

#[test]
fn nul_bytes_and_control_characters_are_diagnostics() {
    for junk in ["\0", "\u{1}", "\u{7f}", "\u{feff}\0", "patch\0x { }"] {
        let src = format!("{HEAD}{junk}\nreplace fn f(a: u64) -> u64 {{ a }}\n");
        let got = codes(&src);
        assert!(!got.is_empty(), "{junk:?} accepted");
    }
    // A NUL inside a Rust string literal in a body is fine Rust.
    let src = format!("{HEAD}replace fn f(a: u64) -> u64 {{ let _s = \"a\0b\"; a }}\n");
    assert_eq!(codes(&src), Vec::<String>::new());
}

#[test]
fn many_syntax_errors_stop_at_a_bound() {
    let src = format!("{HEAD}{}", "replace fn f( -> u64 { 0 }\n".repeat(10_000));
    let got = codes(&src);
    assert!(!got.is_empty() && got.len() <= 64, "{} diagnostics", got.len());
}
