//! The load a window shows, and the backends it asks for.

use super::{Sample, ScaleUp, Target};

/// The upstream's whole load over the window that `samples` (oldest first) cover, in
/// hundredths: the mean of the requests in flight plus held at each sample, or the requests per
/// second sent over the window. `None` until the samples cover a whole window.
///
/// The whole load, not a load per backend: what the clients ask for does not change when a
/// backend comes or goes, so a window spanning a start still counts (a load per backend would
/// wait a window after each start, and scale one backend per window).
pub fn window_load(scale_up: ScaleUp, samples: &[Sample], now_ms: u64) -> Option<u64> {
    let newest = samples.last()?;
    let start = now_ms.checked_sub(scale_up.window_ms)?;
    let first = samples.iter().position(|sample| sample.at_ms >= start)?;
    // The window is covered only if a sample at or before its start exists.
    if first == 0 && samples[0].at_ms > start {
        return None;
    }
    let in_window = &samples[first..];
    match scale_up.target {
        Target::InFlight(_) => {
            let total: u64 = in_window
                .iter()
                .map(|sample| (sample.in_flight + sample.held) * 100)
                .sum();
            Some(total / in_window.len() as u64)
        }
        Target::Rate(_) => {
            let base = &samples[first.saturating_sub(1)];
            let elapsed_ms = newest.at_ms.saturating_sub(base.at_ms).max(1);
            let requests = newest.requests.saturating_sub(base.requests);
            Some(requests.saturating_mul(100_000) / elapsed_ms)
        }
    }
}

/// The backends a load of `load` hundredths asks for with `target` per backend:
/// `ceil(load / target)`.
pub fn desired_count(load: u64, target: Target) -> usize {
    let target = target.hundredths().max(1);
    usize::try_from(load.div_ceil(target)).unwrap_or(usize::MAX)
}
