//! The shared zone's bookkeeping: worker slots, whether a slot's worker still lives, and which
//! records can be freed.

pub mod liveness;
pub mod reclaim;
pub mod worker_slots;
