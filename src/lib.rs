//! Examples and integration tests live in `examples/` and `tests/`.
