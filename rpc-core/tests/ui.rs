//! Compile tests of `#[service]`: each mistake in `tests/ui/*.rs` gets one clear error
//! pointing at the offending code, and each trait in `tests/ui/pass/*.rs` compiles
//! (and its `main` runs). Regenerate the expected output with `TRYBUILD=overwrite`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
