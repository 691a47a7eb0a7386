//! Scaling with load: one decision per upstream and tick, taken by whichever worker takes the
//! tick's turn, from load figures all workers share.
//!
//! - **Minimum** (`supervisord_min_servers`): fewer backends UP or starting than the minimum
//!   starts the first DOWN one not waiting out a start backoff, at once, load or not.
//! - **Scale up** (`supervisord_scale_up in_flight=N | rate=N window=T`): over the last window,
//!   the mean requests in flight per UP backend (or requests per second per UP backend) above N
//!   starts the first DOWN backend not backing off, up to `supervisord_max_servers`.
//! - **Idle** (`supervisord_idle_timeout`): the highest-index UP backend without requests for
//!   that long is drained and stopped, never below the minimum.
//! - **Light load**: over the whole window under `LIGHT_LOAD_PERCENT` of N per UP backend, the
//!   highest-index UP backend is drained and stopped, never below the minimum nor below one
//!   (going to zero is the idle rule's).
//!
//! Against flapping: a load action (up or down) waits until the window after the previous
//! action is over (the cool-down equals the window), no action is taken while a backend is
//! starting or stopping, and the light-load threshold is low enough that the remaining
//! backends stay under the scale-up threshold once one is gone (40 % of N over k backends is at
//! most 80 % of N over k - 1, for k >= 2).

use super::backend_status::BackendStatus;

/// Below this share of the target per UP backend, over a whole window, one backend is stopped.
pub const LIGHT_LOAD_PERCENT: u64 = 40;

/// The window when `supervisord_scale_up` names none.
pub const DEFAULT_WINDOW_MS: u64 = 10_000;

/// How many load samples a window holds (the tick is the window over this).
pub const SAMPLES_PER_WINDOW: u64 = 10;

/// The bounds of the tick, whatever the window.
pub const MIN_TICK_MS: u64 = 100;
pub const MAX_TICK_MS: u64 = 1_000;

/// What load means for `supervisord_scale_up`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Mean requests in flight per UP backend.
    InFlight(u64),
    /// Requests per second per UP backend.
    Rate(u64),
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

    /// How often the upstream's load is sampled and the decision taken.
    pub fn tick_ms(&self) -> u64 {
        let window = self.scale_up.map_or(DEFAULT_WINDOW_MS, |s| s.window_ms);
        (window / SAMPLES_PER_WINDOW).clamp(MIN_TICK_MS, MAX_TICK_MS)
    }
}

/// The upstream's load at one tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub at_ms: u64,
    /// Requests in flight over all backends and workers.
    pub in_flight: u64,
    /// Requests sent to its backends so far (a counter).
    pub requests: u64,
    /// Backends UP.
    pub up: u64,
}

/// One backend as the tick finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendNow {
    pub status: BackendStatus,
    /// Left of its start backoff, if it waits one out.
    pub backoff_left_ms: Option<u64>,
    /// Since its last request ended (or since it came UP, if later).
    pub idle_ms: u64,
    pub in_flight: i64,
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
    Nothing,
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

/// Reads `supervisord_scale_up`'s arguments (`in_flight=N` or `rate=N`, then optionally
/// `window=time`); `parse_time` reads a time in nginx's syntax into milliseconds.
pub fn parse_scale_up(
    args: &[&str],
    parse_time: impl Fn(&str) -> Option<u64>,
) -> Result<ScaleUp, String> {
    let mut target = None;
    let mut window_ms = None;
    for arg in args {
        let (name, value) = arg
            .split_once('=')
            .ok_or_else(|| format!("invalid parameter \"{arg}\""))?;
        let number = || {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .ok_or_else(|| format!("invalid {name} \"{value}\": expected a number from 1"))
        };
        match name {
            "in_flight" | "rate" if target.is_some() => {
                return Err("only one of in_flight= and rate= may be given".into())
            }
            "in_flight" => target = Some(Target::InFlight(number()?)),
            "rate" => target = Some(Target::Rate(number()?)),
            "window" if window_ms.is_some() => return Err("duplicate window=".into()),
            "window" => {
                window_ms = Some(
                    parse_time(value)
                        .filter(|ms| *ms >= MIN_TICK_MS)
                        .ok_or_else(|| {
                            format!("invalid window \"{value}\": expected a time of 100ms or more")
                        })?,
                )
            }
            _ => return Err(format!("invalid parameter \"{arg}\"")),
        }
    }
    Ok(ScaleUp {
        target: target.ok_or("in_flight= or rate= is required")?,
        window_ms: window_ms.unwrap_or(DEFAULT_WINDOW_MS),
    })
}

/// The load over the window that `samples` (oldest first) cover, per UP backend: hundredths of
/// requests in flight, or of requests per second. `None` until the samples cover a whole window,
/// or when no backend was UP in it.
pub fn window_load(scale_up: ScaleUp, samples: &[Sample], now_ms: u64) -> Option<u64> {
    let newest = samples.last()?;
    let start = now_ms.checked_sub(scale_up.window_ms)?;
    let first = samples.iter().position(|sample| sample.at_ms >= start)?;
    // The window is covered only if a sample at or before its start exists.
    if first == 0 && samples[0].at_ms > start {
        return None;
    }
    let in_window = &samples[first..];
    if in_window.iter().any(|sample| sample.up == 0) {
        return None;
    }
    match scale_up.target {
        Target::InFlight(_) => {
            let per_up: u64 = in_window
                .iter()
                .map(|sample| sample.in_flight * 100 / sample.up)
                .sum();
            Some(per_up / in_window.len() as u64)
        }
        Target::Rate(_) => {
            let base = &samples[first.saturating_sub(1)];
            let elapsed_ms = newest.at_ms.saturating_sub(base.at_ms).max(1);
            let requests = newest.requests.saturating_sub(base.requests);
            let mean_up: u64 =
                in_window.iter().map(|sample| sample.up).sum::<u64>() / in_window.len() as u64;
            Some(requests * 100_000 / elapsed_ms / mean_up.max(1))
        }
    }
}

fn target_value(target: Target) -> u64 {
    match target {
        Target::InFlight(n) | Target::Rate(n) => n,
    }
}

fn first_startable(backends: &[BackendNow]) -> Option<usize> {
    backends.iter().position(|backend| {
        backend.status == BackendStatus::Down && backend.backoff_left_ms.is_none()
    })
}

fn highest_up(backends: &[BackendNow]) -> Option<usize> {
    backends
        .iter()
        .rposition(|backend| backend.status == BackendStatus::Up)
}

/// The one action of this tick. `last_action_ms`: when the previous load action was taken (0:
/// never).
pub fn decide(
    policy: &ScalePolicy,
    samples: &[Sample],
    backends: &[BackendNow],
    now_ms: u64,
    last_action_ms: u64,
) -> ScaleAction {
    let count = |status| backends.iter().filter(|b| b.status == status).count();
    let up = count(BackendStatus::Up);
    let starting = count(BackendStatus::StartingUp);
    let stopping = count(BackendStatus::ShuttingDown);
    let max = policy.max_servers.min(backends.len());
    let min = policy.min_servers.min(max);
    if up + starting < min {
        return first_startable(backends).map_or(ScaleAction::Nothing, |index| {
            ScaleAction::Start {
                index,
                cause: StartCause::Minimum,
            }
        });
    }
    if starting > 0 || stopping > 0 {
        return ScaleAction::Nothing;
    }
    if let Some(idle_timeout) = policy.idle_timeout_ms {
        if up > min {
            let idle = backends.iter().rposition(|backend| {
                backend.status == BackendStatus::Up
                    && backend.in_flight == 0
                    && backend.idle_ms >= idle_timeout
            });
            if let Some(index) = idle {
                return ScaleAction::Stop {
                    index,
                    cause: StopCause::Idle,
                };
            }
        }
    }
    let Some(scale_up) = policy.scale_up else {
        return ScaleAction::Nothing;
    };
    let cooled_down =
        last_action_ms == 0 || now_ms.saturating_sub(last_action_ms) >= scale_up.window_ms;
    if !cooled_down {
        return ScaleAction::Nothing;
    }
    let Some(load) = window_load(scale_up, samples, now_ms) else {
        return ScaleAction::Nothing;
    };
    let target = target_value(scale_up.target) * 100;
    if load > target && up < max {
        if let Some(index) = first_startable(backends) {
            return ScaleAction::Start {
                index,
                cause: StartCause::Load,
            };
        }
    }
    if load * 100 < target * LIGHT_LOAD_PERCENT && up > min.max(1) {
        if let Some(index) = highest_up(backends) {
            return ScaleAction::Stop {
                index,
                cause: StopCause::LightLoad,
            };
        }
    }
    ScaleAction::Nothing
}

#[cfg(test)]
mod tests {
    use super::*;
    use BackendStatus::*;

    fn backend(status: BackendStatus) -> BackendNow {
        BackendNow {
            status,
            backoff_left_ms: None,
            idle_ms: 0,
            in_flight: 0,
        }
    }

    fn policy(min: usize, max: usize, target: Target) -> ScalePolicy {
        ScalePolicy {
            min_servers: min,
            max_servers: max,
            scale_up: Some(ScaleUp {
                target,
                window_ms: 1_000,
            }),
            idle_timeout_ms: None,
        }
    }

    #[test]
    fn the_minimum_is_started_without_load_and_skips_backing_off_backends() {
        let policy = ScalePolicy {
            min_servers: 2,
            max_servers: 4,
            scale_up: None,
            idle_timeout_ms: None,
        };
        let mut backends = vec![backend(Down); 4];
        backends[0].backoff_left_ms = Some(500);
        assert_eq!(
            decide(&policy, &[], &backends, 10, 0),
            ScaleAction::Start {
                index: 1,
                cause: StartCause::Minimum
            }
        );
        backends[1].status = StartingUp;
        assert_eq!(
            decide(&policy, &[], &backends, 10, 0),
            ScaleAction::Start {
                index: 2,
                cause: StartCause::Minimum
            }
        );
        backends[2].status = Up;
        assert_eq!(decide(&policy, &[], &backends, 10, 0), ScaleAction::Nothing);
        // All backing off: nothing to start now.
        let all_off: Vec<BackendNow> = (0..2)
            .map(|_| BackendNow {
                backoff_left_ms: Some(100),
                ..backend(Down)
            })
            .collect();
        assert_eq!(decide(&policy, &[], &all_off, 10, 0), ScaleAction::Nothing);
    }

    #[test]
    fn scale_up_arguments_are_read_as_documented() {
        let time = |text: &str| {
            text.strip_suffix('s')
                .and_then(|n| n.parse::<u64>().ok())
                .map(|s| s * 1000)
        };
        assert_eq!(
            parse_scale_up(&["in_flight=4"], time),
            Ok(ScaleUp {
                target: Target::InFlight(4),
                window_ms: DEFAULT_WINDOW_MS
            })
        );
        assert_eq!(
            parse_scale_up(&["rate=50", "window=30s"], time),
            Ok(ScaleUp {
                target: Target::Rate(50),
                window_ms: 30_000
            })
        );
        for bad in [
            &["window=5s"][..],
            &["in_flight=0"],
            &["in_flight=x"],
            &["in_flight=2", "rate=3"],
            &["in_flight=2", "window=soon"],
            &["in_flight=2", "window=5s", "window=6s"],
            &["burst=2"],
            &["in_flight"],
        ] {
            assert!(parse_scale_up(bad, time).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn window_load_needs_a_whole_window() {
        let scale_up = ScaleUp {
            target: Target::InFlight(4),
            window_ms: 1_000,
        };
        let sample = |at_ms, in_flight| Sample {
            at_ms,
            in_flight,
            requests: 0,
            up: 2,
        };
        assert_eq!(window_load(scale_up, &[], 2_000), None);
        assert_eq!(window_load(scale_up, &[sample(1_500, 8)], 2_000), None);
        let samples = [sample(900, 100), sample(1_000, 8), sample(1_500, 12)];
        // Samples at or after the window's start: (8/2 + 12/2) / 2 = 5 requests per backend.
        assert_eq!(window_load(scale_up, &samples, 2_000), Some(500));
    }

    #[test]
    fn rate_load_is_requests_per_second_per_up_backend() {
        let scale_up = ScaleUp {
            target: Target::Rate(10),
            window_ms: 1_000,
        };
        let sample = |at_ms, requests| Sample {
            at_ms,
            in_flight: 0,
            requests,
            up: 2,
        };
        let samples = [sample(1_000, 100), sample(1_500, 110), sample(2_000, 140)];
        // 40 requests in 1 s over 2 backends: 20/s each.
        assert_eq!(window_load(scale_up, &samples, 2_000), Some(2_000));
    }

    /// Runs `policy` over a load trace: `load(t)` is the requests in flight at tick t (100 ms
    /// apart); backends start and stop at once. Returns the UP count after each tick.
    fn simulate(
        policy: &ScalePolicy,
        count: usize,
        ticks: u64,
        load: impl Fn(u64) -> u64,
    ) -> Vec<usize> {
        let mut backends = vec![backend(Down); count];
        let mut samples: Vec<Sample> = Vec::new();
        let mut last_action = 0;
        let mut requests = 0;
        let mut ups = Vec::new();
        for tick in 1..=ticks {
            let now = tick * 100;
            let up = backends.iter().filter(|b| b.status == Up).count() as u64;
            let in_flight = load(tick);
            requests += in_flight;
            for b in backends.iter_mut().filter(|b| b.status == Up) {
                b.in_flight = (in_flight / up.max(1)) as i64;
                b.idle_ms = if in_flight == 0 { b.idle_ms + 100 } else { 0 };
            }
            samples.push(Sample {
                at_ms: now,
                in_flight,
                requests,
                up,
            });
            match decide(policy, &samples, &backends, now, last_action) {
                ScaleAction::Start { index, cause } => {
                    backends[index].status = Up;
                    backends[index].idle_ms = 0;
                    if cause == StartCause::Load {
                        last_action = now;
                    }
                }
                ScaleAction::Stop { index, .. } => {
                    backends[index].status = Down;
                    last_action = now;
                }
                ScaleAction::Nothing => {}
            }
            ups.push(backends.iter().filter(|b| b.status == Up).count());
        }
        ups
    }

    fn changes(ups: &[usize]) -> usize {
        ups.windows(2).filter(|pair| pair[0] != pair[1]).count()
    }

    #[test]
    fn a_load_step_scales_up_to_the_maximum_then_back_down() {
        let policy = policy(1, 4, Target::InFlight(4));
        // 2 in flight, then 32 for 6 s, then 2 again.
        let ups = simulate(
            &policy,
            4,
            200,
            |t| if (30..90).contains(&t) { 32 } else { 2 },
        );
        assert_eq!(ups[20], 1);
        assert_eq!(ups[85], 4, "{ups:?}");
        assert_eq!(*ups.last().unwrap(), 1, "{ups:?}");
        // One backend per window at most, up and down: 3 up, 3 down.
        assert_eq!(changes(&ups), 6, "{ups:?}");
    }

    #[test]
    fn steady_load_never_flaps() {
        let policy = policy(1, 4, Target::InFlight(4));
        // Between the thresholds for any number of backends it settles on: 7 in flight.
        for steady in [3u64, 5, 7, 9, 12, 15] {
            let ups = simulate(&policy, 4, 400, |_| steady);
            let settled = &ups[100..];
            assert_eq!(changes(settled), 0, "{steady} in flight: {ups:?}");
        }
    }

    #[test]
    fn noisy_load_around_a_threshold_does_not_flap() {
        let policy = policy(1, 4, Target::InFlight(4));
        // 7-9 in flight, alternating: two backends carry it, under the threshold.
        let ups = simulate(&policy, 4, 400, |t| 7 + (t % 3));
        assert!(changes(&ups[100..]) == 0, "{ups:?}");
    }

    #[test]
    fn idle_backends_stop_down_to_the_minimum_highest_first() {
        let policy = ScalePolicy {
            min_servers: 1,
            max_servers: 3,
            scale_up: None,
            idle_timeout_ms: Some(1_000),
        };
        let mut backends = vec![backend(Up); 3];
        for b in &mut backends {
            b.idle_ms = 2_000;
        }
        assert_eq!(
            decide(&policy, &[], &backends, 5_000, 0),
            ScaleAction::Stop {
                index: 2,
                cause: StopCause::Idle
            }
        );
        backends[2].status = Down;
        backends[1].in_flight = 1;
        assert_eq!(
            decide(&policy, &[], &backends, 5_000, 0),
            ScaleAction::Stop {
                index: 0,
                cause: StopCause::Idle
            }
        );
        backends[1].in_flight = 0;
        backends[1].idle_ms = 10;
        backends[0].status = Down;
        // The one left is the minimum.
        assert_eq!(
            decide(&policy, &[], &backends, 5_000, 0),
            ScaleAction::Nothing
        );
        // A stop under way: nothing else meanwhile.
        backends[2].status = ShuttingDown;
        backends[1].idle_ms = 5_000;
        assert_eq!(
            decide(&policy, &[], &backends, 5_000, 0),
            ScaleAction::Nothing
        );
    }

    #[test]
    fn the_maximum_caps_load_starts() {
        let policy = policy(1, 2, Target::InFlight(1));
        let ups = simulate(&policy, 4, 100, |_| 50);
        assert_eq!(*ups.iter().max().unwrap(), 2);
    }

    #[test]
    fn the_tick_follows_the_window_within_bounds() {
        let mut policy = policy(0, 2, Target::InFlight(1));
        assert_eq!(policy.tick_ms(), 100);
        policy.scale_up = Some(ScaleUp {
            target: Target::Rate(5),
            window_ms: 5_000,
        });
        assert_eq!(policy.tick_ms(), 500);
        policy.scale_up = None;
        assert_eq!(policy.tick_ms(), 1_000);
        assert!(!ScalePolicy {
            min_servers: 0,
            max_servers: 2,
            scale_up: None,
            idle_timeout_ms: None
        }
        .acts());
    }
}
