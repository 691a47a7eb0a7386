//! State shared by every worker: the shared memory zone, its records and its lock.

pub mod lock;
pub mod records;
pub mod zone;

pub use lock::{SharedRecord, ZoneLock};
