//! This crate's own tower middleware, one folder each in tower's
//! `Foo<S>` / `FooLayer` / `ResponseFuture` shape.
//!
//! - [`deadline`]: a client layer that caps the deadline of every call passing
//!   through it.

pub mod deadline;
