//! How many times something took a while, and how long in total: the summaries the status JSON
//! and the metrics page show (`sum_ms / count` is the mean).

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    pub count: u64,
    pub sum_ms: u64,
}
