//! Disk storage for durable queues: one append-only [`log::QueueLog`] per queue.

pub mod log;
mod segment;
