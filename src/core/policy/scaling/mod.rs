//! Scaling with load: one decision per upstream and tick, taken by whichever worker takes the
//! tick's turn, from load figures all workers share.
//!
//! - **Minimum** (`supervisord_min_servers`): fewer backends UP or starting than the minimum
//!   starts as many DOWN ones (not waiting out a start backoff) as are missing, at once, load or
//!   not.
//! - **Scale up** (`supervisord_scale_up in_flight=N | rate=N window=T`): the upstream's whole
//!   load, averaged over the last window, asks for `desired = ceil(load / N)` backends (clamped
//!   to the minimum and `supervisord_max_servers`). Load is the requests in flight at the
//!   backends plus the requests held for one, or the requests per second sent to the backends.
//!   Backends starting count as the capacity they will bring: all that are missing are started
//!   together, and none more while they start.
//! - **Idle** (`supervisord_idle_timeout`): the highest-index UP backend without requests for
//!   that long is drained and stopped, never below the minimum.
//! - **Light load**: over the whole window under `LIGHT_LOAD_PERCENT` of N per UP backend, one
//!   UP backend is drained and stopped, never below the minimum nor below one (going to zero is
//!   the idle rule's). One per step: the next only a window later.
//! - With servers on several hosts, starts go where `placement` says, and a stop goes to the
//!   host running the most backends first (its highest-index one). Only backends this nginx
//!   started are stopped (`BackendNow::stoppable`).
//!
//! Against flapping and overshoot: a stop for light load waits until a whole window has passed
//! since the previous load action and since the last backend came UP (so the window it judges
//! shows the backends it has, all serving), and never while a backend starts or stops; the
//! light-load threshold is low enough that the remaining backends stay under the target once
//! one is gone (40 % of N over k backends is at most 80 % of N over k - 1, for k >= 2), and the
//! desired count of a load that just stopped one backend is never above the backends left.

mod decide;
mod load;
mod target;

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

pub use decide::decide;
pub use load::{desired_count, window_load};
pub use target::{decimal, parse_scale_up};

use crate::backend_status::BackendStatus;

/// Below this share of the target per UP backend, over a whole window, one backend is stopped.
pub const LIGHT_LOAD_PERCENT: u64 = 40;

/// The window when `supervisord_scale_up` names none.
pub const DEFAULT_WINDOW_MS: u64 = 10_000;

/// How many load samples a window holds (the tick is the window over this).
pub const SAMPLES_PER_WINDOW: u64 = 10;

/// How many load samples the upstream keeps (a ring in the shared zone): two windows' worth,
/// and the one before each window's start.
pub const SAMPLES_KEPT: usize = 2 * SAMPLES_PER_WINDOW as usize + 2;

/// The shortest tick, whatever the window. There is no longest: the samples kept
/// (`SAMPLES_KEPT`) must cover a whole window, which `SAMPLES_PER_WINDOW` ticks do.
pub const MIN_TICK_MS: u64 = 100;

/// The largest target, in hundredths (1,000,000).
pub const MAX_TARGET_HUNDREDTHS: u64 = 100_000_000;

/// What load means for `supervisord_scale_up`, per backend, in hundredths (`in_flight=1.5` is
/// `InFlight(150)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Requests in flight (or held) per backend.
    InFlight(u64),
    /// Requests per second per backend.
    Rate(u64),
}

impl Target {
    pub fn hundredths(self) -> u64 {
        match self {
            Self::InFlight(n) | Self::Rate(n) => n,
        }
    }

    /// What the load is counted in, for log lines.
    pub fn unit(self) -> &'static str {
        match self {
            Self::InFlight(_) => "requests in flight",
            Self::Rate(_) => "requests/s",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleUp {
    pub target: Target,
    pub window_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScalePolicy {
    pub min_servers: usize,
    pub max_servers: usize,
    pub scale_up: Option<ScaleUp>,
    pub idle_timeout_ms: Option<u64>,
}

impl ScalePolicy {
    /// Whether the policy ever acts (otherwise no tick runs).
    pub fn acts(&self) -> bool {
        self.min_servers > 0 || self.scale_up.is_some() || self.idle_timeout_ms.is_some()
    }

    /// The fewest and the most backends that run for the policy among `servers`.
    pub fn bounds(&self, servers: usize) -> (usize, usize) {
        let max = self.max_servers.min(servers);
        (self.min_servers.min(max), max)
    }

    /// The backends a window's `load` asks for among `servers`, within the bounds; `None`
    /// without `supervisord_scale_up`.
    pub fn wanted(&self, load: u64, servers: usize) -> Option<usize> {
        let (min, max) = self.bounds(servers);
        let scale_up = self.scale_up?;
        Some(desired_count(load, scale_up.target).clamp(min, max))
    }

    /// How often the upstream's load is sampled and the decision taken.
    pub fn tick_ms(&self) -> u64 {
        let window = self.scale_up.map_or(DEFAULT_WINDOW_MS, |s| s.window_ms);
        (window / SAMPLES_PER_WINDOW).max(MIN_TICK_MS)
    }
}

/// The upstream's load at one tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub at_ms: u64,
    /// Requests in flight over all backends and workers.
    pub in_flight: u64,
    /// Requests held for a backend over all workers.
    pub held: u64,
    /// Requests sent to its backends so far (a counter).
    pub requests: u64,
}

/// One backend as the tick finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendNow {
    pub status: BackendStatus,
    /// Left of its start backoff, if it waits one out.
    pub backoff_left_ms: Option<u64>,
    /// supervisord has no program of its name: never started for load or the minimum.
    pub program_missing: bool,
    /// Since its last request ended (or since it came UP, if later).
    pub idle_ms: u64,
    /// Since it came UP (UP backends only).
    pub up_ms: u64,
    pub in_flight: i64,
    /// This nginx started it (or `supervisord none`, where nothing runs to be stopped): only
    /// such a backend is stopped for idleness or light load, so that an idle or passive nginx
    /// never stops what another nginx in front of the same supervisord serves.
    pub stoppable: bool,
    /// Its host (`supervisord` line) and whether that supervisord is away (`placement`).
    pub host: usize,
    pub host_away: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartCause {
    Minimum,
    Load,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopCause {
    Idle,
    LightLoad,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleAction {
    Start { index: usize, cause: StartCause },
    Stop { index: usize, cause: StopCause },
}

impl StartCause {
    pub fn name(self) -> &'static str {
        match self {
            Self::Minimum => "minimum",
            Self::Load => "load",
        }
    }
}

impl StopCause {
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::LightLoad => "light_load",
        }
    }
}
