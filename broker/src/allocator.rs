//! jemalloc, the allocator of the `broker` binary (and of the benchmark's broker
//! process): it gives freed memory back to the system from a background thread, so the
//! broker's resident memory falls again after a load (glibc's malloc keeps it), and its
//! statistics tell the memory alarm how much the broker really holds.
//!
//! The library never installs an allocator itself; a program opts in with
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: broker::allocator::Jemalloc = broker::allocator::Jemalloc;
//! // and: Broker::builder().memory_probe(broker::allocator::allocated)
//! ```

pub use tikv_jemallocator::Jemalloc;

/// Bytes allocated through jemalloc right now: what the memory alarm compares with the
/// high-water mark when jemalloc is the global allocator. Unlike the resident set it
/// falls as soon as messages are freed, not when pages are given back.
pub fn allocated() -> Option<u64> {
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    let bytes = tikv_jemalloc_ctl::stats::allocated::read().ok()?;
    u64::try_from(bytes).ok()
}
