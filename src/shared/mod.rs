//! State shared by every worker: the shared memory zone, its records and its lock.

pub mod lock;
pub mod process;
pub mod records;
pub mod slots;
pub mod zone;

pub use lock::{SharedRecord, ZoneLock};
