//! Holding requests: whether a request waits for a start, and whether one its backend refused
//! is held again.

pub mod hold_verdict;
pub mod refused_attempt;
