//! What the status and metrics locations answer.

pub mod metrics_text;
pub mod status_json;
pub mod timings;
