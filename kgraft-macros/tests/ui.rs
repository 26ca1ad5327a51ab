//! The macros' own errors, as a person writing a patch in Rust sees them.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
