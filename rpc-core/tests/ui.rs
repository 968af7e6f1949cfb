//! Compile-fail tests of `#[service]`: each mistake gets one clear error pointing at
//! the offending code. Regenerate the expected output with `TRYBUILD=overwrite`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
