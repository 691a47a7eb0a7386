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
//! - With servers on several hosts, starts go where `placement` says, and a stop goes to the
//!   host running the most backends first (its highest-index one). Only backends this nginx
//!   started are stopped (`BackendNow::stoppable`).
//!
//! Against flapping: a load action (up or down) waits until the window after the previous
//! action is over (the cool-down equals the window), no action is taken while a backend is
//! starting or stopping, a window counts only if as many backends were UP throughout, and the
//! light-load threshold is low enough that the remaining
//! backends stay under the scale-up threshold once one is gone (40 % of N over k backends is at
//! most 80 % of N over k - 1, for k >= 2).

use super::backend_status::BackendStatus;
use super::placement::{pick, Placeable};

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
        (window / SAMPLES_PER_WINDOW).max(MIN_TICK_MS)
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
    /// supervisord has no program of its name: never started for load or the minimum.
    pub program_missing: bool,
    /// Since its last request ended (or since it came UP, if later).
    pub idle_ms: u64,
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
/// when no backend was UP in it, or when the number of UP backends changed in it.
pub fn window_load(scale_up: ScaleUp, samples: &[Sample], now_ms: u64) -> Option<u64> {
    let newest = samples.last()?;
    let start = now_ms.checked_sub(scale_up.window_ms)?;
    let first = samples.iter().position(|sample| sample.at_ms >= start)?;
    // The window is covered only if a sample at or before its start exists.
    if first == 0 && samples[0].at_ms > start {
        return None;
    }
    let in_window = &samples[first..];
    // The load per backend of a window counts only if as many backends were UP throughout:
    // samples from before a start or stop came into effect would count the load of the old
    // backends as that of the new ones (and start or stop one more).
    if in_window
        .iter()
        .any(|sample| sample.up == 0 || sample.up != newest.up)
    {
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

/// The backend a start for load or the minimum goes to (`placement`): never one whose
/// supervisord is away (the start would only wait for it).
fn first_startable(backends: &[BackendNow]) -> Option<usize> {
    let placeables: Vec<Placeable> = backends
        .iter()
        .map(|backend| Placeable {
            startable: backend.status == BackendStatus::Down
                && backend.backoff_left_ms.is_none()
                && !backend.program_missing
                && !backend.host_away,
            host: backend.host,
            running: matches!(
                backend.status,
                BackendStatus::Up | BackendStatus::StartingUp
            ),
            host_away: backend.host_away,
        })
        .collect();
    pick(&placeables)
}

fn highest_up(backends: &[BackendNow]) -> Option<usize> {
    stop_candidate(backends, |_| true)
}

/// The backend a stop goes to among the stoppable UP ones that `eligible` lets through: on the
/// host running the most of the upstream's backends, the highest-index one there (with one
/// host, the highest-index one).
fn stop_candidate(
    backends: &[BackendNow],
    eligible: impl Fn(&BackendNow) -> bool,
) -> Option<usize> {
    let running_on = |host: usize| {
        backends
            .iter()
            .filter(|backend| {
                backend.host == host
                    && matches!(
                        backend.status,
                        BackendStatus::Up | BackendStatus::StartingUp
                    )
            })
            .count()
    };
    backends
        .iter()
        .enumerate()
        .filter(|(_, backend)| {
            backend.status == BackendStatus::Up && backend.stoppable && eligible(backend)
        })
        .max_by_key(|(index, backend)| (running_on(backend.host), *index))
        .map(|(index, _)| index)
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
            let idle = stop_candidate(backends, |backend| {
                backend.in_flight == 0 && backend.idle_ms >= idle_timeout
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
            program_missing: false,
            idle_ms: 0,
            in_flight: 0,
            stoppable: true,
            host: 0,
            host_away: false,
        }
    }

    #[test]
    fn scale_down_stops_on_the_most_loaded_host_first() {
        let on = |host: usize, status: BackendStatus| BackendNow {
            host,
            idle_ms: 60_000,
            ..backend(status)
        };
        // Host 0 runs two, host 1 one: host 0's highest goes first, though host 1's is higher.
        let backends = [on(0, Up), on(0, Up), on(1, Up)];
        assert_eq!(highest_up(&backends), Some(1));
        let idle_policy = ScalePolicy {
            idle_timeout_ms: Some(1_000),
            ..policy(0, 3, Target::InFlight(4))
        };
        assert_eq!(
            decide(&idle_policy, &[], &backends, 70_000, 0),
            ScaleAction::Stop {
                index: 1,
                cause: StopCause::Idle
            }
        );
        // One host: the highest index, as before.
        let one_host = [on(0, Up), on(0, Down), on(0, Up)];
        assert_eq!(highest_up(&one_host), Some(2));
    }

    #[test]
    fn a_backend_another_nginx_started_is_never_stopped_for_idleness_or_light_load() {
        let idle_policy = ScalePolicy {
            idle_timeout_ms: Some(1_000),
            ..policy(0, 4, Target::InFlight(4))
        };
        let theirs = BackendNow {
            idle_ms: 60_000,
            stoppable: false,
            ..backend(Up)
        };
        let ours = BackendNow {
            idle_ms: 60_000,
            ..backend(Up)
        };
        assert_eq!(
            decide(&idle_policy, &[], &[theirs, theirs], 70_000, 0),
            ScaleAction::Nothing
        );
        assert_eq!(
            decide(&idle_policy, &[], &[ours, theirs], 70_000, 0),
            ScaleAction::Stop {
                index: 0,
                cause: StopCause::Idle
            }
        );
        assert_eq!(highest_up(&[ours, theirs]), Some(0));
        assert_eq!(highest_up(&[theirs, theirs]), None);
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
        // One supervisord has no program for: never started.
        let missing: Vec<BackendNow> = (0..2)
            .map(|_| BackendNow {
                program_missing: true,
                ..backend(Down)
            })
            .collect();
        assert_eq!(decide(&policy, &[], &missing, 10, 0), ScaleAction::Nothing);
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

    /// Found by `properties::the_samples_kept_cover_a_window`: with the tick capped at 1 s,
    /// the samples kept covered 21 s at most, and a longer window (`window=30s`) was never
    /// measured: no load start and no light-load stop, ever.
    #[test]
    fn a_long_window_is_measured() {
        let scale_up = ScaleUp {
            target: Target::InFlight(4),
            window_ms: 30_000,
        };
        let policy = ScalePolicy {
            scale_up: Some(scale_up),
            ..policy(1, 2, Target::InFlight(4))
        };
        assert_eq!(policy.tick_ms(), 3_000);
        let samples: Vec<Sample> = (0..SAMPLES_KEPT as u64)
            .map(|tick| Sample {
                at_ms: 100_000 + tick * policy.tick_ms(),
                in_flight: 10,
                requests: 0,
                up: 1,
            })
            .collect();
        let now = samples.last().unwrap().at_ms;
        assert_eq!(window_load(scale_up, &samples, now), Some(1_000));
        let backends = [backend(Up), backend(Down)];
        assert_eq!(
            decide(&policy, &samples, &backends, now, 0),
            ScaleAction::Start {
                index: 1,
                cause: StartCause::Load
            }
        );
    }

    /// Found by `properties::a_constant_load_never_flaps`: a window still holding samples
    /// from before two minimum starts came into effect counted 81 requests in flight as if
    /// one backend had carried them, started a fourth backend, then stopped it for light load.
    #[test]
    fn a_window_counts_only_once_the_backends_are_settled() {
        let policy = ScalePolicy {
            scale_up: Some(ScaleUp {
                target: Target::InFlight(57),
                window_ms: 300,
            }),
            ..policy(3, 4, Target::InFlight(57))
        };
        let sample = |tick: u64, up| Sample {
            at_ms: tick * 100,
            in_flight: 81,
            requests: 0,
            up,
        };
        let mut samples = vec![sample(1, 1), sample(2, 1), sample(3, 2), sample(4, 3)];
        let backends = [backend(Up), backend(Up), backend(Up), backend(Down)];
        assert_eq!(window_load(policy.scale_up.unwrap(), &samples, 400), None);
        assert_eq!(
            decide(&policy, &samples, &backends, 400, 0),
            ScaleAction::Nothing
        );
        // A whole window with the three UP: 27 in flight each, under the target.
        samples.extend([sample(5, 3), sample(6, 3), sample(7, 3)]);
        assert_eq!(
            window_load(policy.scale_up.unwrap(), &samples, 700),
            Some(2_700)
        );
        assert_eq!(
            decide(&policy, &samples, &backends, 700, 0),
            ScaleAction::Nothing
        );
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

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use BackendStatus::*;

    fn any_target() -> impl Strategy<Value = Target> {
        prop_oneof![
            (1u64..100).prop_map(Target::InFlight),
            (1u64..1_000).prop_map(Target::Rate)
        ]
    }

    fn any_policy() -> impl Strategy<Value = ScalePolicy> {
        (
            0usize..7,
            1usize..7,
            proptest::option::of((any_target(), 100u64..30_000)),
            proptest::option::of(1u64..60_000),
        )
            .prop_map(|(min_servers, max_servers, scale_up, idle_timeout_ms)| {
                ScalePolicy {
                    min_servers,
                    max_servers,
                    scale_up: scale_up.map(|(target, window_ms)| ScaleUp { target, window_ms }),
                    idle_timeout_ms,
                }
            })
    }

    fn any_backend() -> impl Strategy<Value = BackendNow> {
        (
            0u8..4,
            proptest::option::of(1u64..60_000),
            0u64..120_000,
            -2i64..40,
        )
            .prop_map(|(raw, backoff_left_ms, idle_ms, in_flight)| BackendNow {
                status: BackendStatus::from_raw(raw).unwrap(),
                backoff_left_ms,
                program_missing: false,
                idle_ms,
                in_flight,
                stoppable: true,
                host: 0,
                host_away: false,
            })
    }

    /// Samples oldest first, from steps of (time, in flight, new requests, UP backends).
    fn any_samples() -> impl Strategy<Value = Vec<Sample>> {
        proptest::collection::vec((1u64..3_000, 0u64..500, 0u64..5_000, 0u64..7), 0..40).prop_map(
            |steps| {
                let (mut at_ms, mut requests) = (1_000, 0);
                steps
                    .into_iter()
                    .map(|(step_ms, in_flight, new_requests, up)| {
                        at_ms += step_ms;
                        requests += new_requests;
                        Sample {
                            at_ms,
                            in_flight,
                            requests,
                            up,
                        }
                    })
                    .collect()
            },
        )
    }

    /// Runs `policy` for `ticks` ticks under a constant load: `load_per_tick` requests in
    /// flight over the UP backends (for `in_flight=`) or new requests each tick (for `rate=`),
    /// as the scaler samples them, a started backend taking `latency.0` ticks to come UP and a
    /// stopped one `latency.1` ticks to go DOWN. Returns the actions taken, in order.
    fn run_constant_load(
        policy: &ScalePolicy,
        count: usize,
        initially_up: usize,
        load_per_tick: u64,
        latency: (u64, u64),
        ticks: u64,
    ) -> Vec<ScaleAction> {
        let tick_ms = policy.tick_ms();
        let mut backends: Vec<(BackendNow, u64)> = (0..count)
            .map(|index| {
                let status = if index < initially_up { Up } else { Down };
                (
                    BackendNow {
                        status,
                        backoff_left_ms: None,
                        program_missing: false,
                        idle_ms: 0,
                        in_flight: 0,
                        stoppable: true,
                        host: 0,
                        host_away: false,
                    },
                    0,
                )
            })
            .collect();
        let (mut samples, mut actions) = (Vec::new(), Vec::new());
        let (mut requests, mut last_action) = (0, 0);
        for tick in 1..=ticks {
            let now = 10_000 + tick * tick_ms;
            for (backend, settles_at) in &mut backends {
                if tick >= *settles_at {
                    backend.status = match backend.status {
                        StartingUp => Up,
                        ShuttingDown => Down,
                        settled => settled,
                    };
                }
            }
            let up = backends.iter().filter(|(b, _)| b.status == Up).count() as u64;
            // With no backend UP requests wait in the hold gate: none in flight, none sent.
            let in_flight = if up > 0 { load_per_tick } else { 0 };
            if up > 0 {
                requests += load_per_tick;
            }
            samples.push(Sample {
                at_ms: now,
                in_flight,
                requests,
                up,
            });
            if samples.len() > SAMPLES_KEPT {
                samples.remove(0);
            }
            let views: Vec<BackendNow> = backends.iter().map(|(b, _)| *b).collect();
            let action = decide(policy, &samples, &views, now, last_action);
            match action {
                ScaleAction::Nothing => continue,
                ScaleAction::Start { index, cause } => {
                    backends[index] = (
                        BackendNow {
                            status: StartingUp,
                            ..views[index]
                        },
                        tick + latency.0,
                    );
                    if cause == StartCause::Load {
                        last_action = now;
                    }
                }
                ScaleAction::Stop { index, .. } => {
                    backends[index] = (
                        BackendNow {
                            status: ShuttingDown,
                            ..views[index]
                        },
                        tick + latency.1,
                    );
                    last_action = now;
                }
            }
            // A start or stop that takes no time is done by the next tick's sample.
            actions.push(action);
        }
        actions
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// However long the window, the samples the upstream keeps, one a tick (a tick may
        /// come up to a tenth early, when another worker's timer takes it), cover a whole
        /// window: load never goes unmeasured for want of samples.
        #[test]
        fn the_samples_kept_cover_a_window(
            target in any_target(),
            window_ms in MIN_TICK_MS..3_600_000,
            now in 10_000_000u64..1 << 40,
        ) {
            let scale_up = ScaleUp { target, window_ms };
            let policy = ScalePolicy {
                min_servers: 0,
                max_servers: 1,
                scale_up: Some(scale_up),
                idle_timeout_ms: None,
            };
            let earliest_tick = policy.tick_ms() - policy.tick_ms() / 10;
            let samples: Vec<Sample> = (0..SAMPLES_KEPT as u64)
                .rev()
                .map(|ticks_ago| Sample {
                    at_ms: now - ticks_ago * earliest_tick,
                    in_flight: 1,
                    requests: 0,
                    up: 1,
                })
                .collect();
            prop_assert!(window_load(scale_up, &samples, now).is_some());
        }
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// Whatever the figures: a start never takes the backends UP or starting above the
        /// maximum (nor above the servers there are), and only starts a DOWN backend not
        /// backing off; a stop never takes the backends UP below the minimum (nor below one
        /// for light load), only stops an UP backend, and for idleness only one without
        /// requests for the idle timeout; while a backend starts or stops, only the minimum
        /// acts.
        #[test]
        fn never_above_the_maximum_nor_below_the_minimum(
            policy in any_policy(),
            backends in proptest::collection::vec(any_backend(), 1..7),
            samples in any_samples(),
            after_last_sample in 0u64..5_000,
            last_action_ago in proptest::option::of(0u64..60_000),
        ) {
            let now = samples.last().map_or(1_000, |sample| sample.at_ms) + after_last_sample;
            let last_action = last_action_ago.map_or(0, |ago| now.saturating_sub(ago).max(1));
            let count = |status| backends.iter().filter(|b| b.status == status).count();
            let (up, starting) = (count(Up), count(StartingUp));
            let busy = starting + count(ShuttingDown) > 0;
            let max = policy.max_servers.min(backends.len());
            let min = policy.min_servers.min(max);
            match decide(&policy, &samples, &backends, now, last_action) {
                ScaleAction::Nothing => {}
                ScaleAction::Start { index, cause } => {
                    prop_assert!(up + starting < max);
                    prop_assert_eq!(backends[index].status, Down);
                    prop_assert_eq!(backends[index].backoff_left_ms, None);
                    prop_assert!(cause == StartCause::Minimum || !busy);
                    if cause == StartCause::Minimum {
                        prop_assert!(up + starting < min);
                    }
                }
                ScaleAction::Stop { index, cause } => {
                    prop_assert!(!busy);
                    prop_assert_eq!(backends[index].status, Up);
                    prop_assert!(up > min);
                    match cause {
                        StopCause::Idle => {
                            let idle_timeout = policy.idle_timeout_ms.unwrap();
                            prop_assert!(backends[index].in_flight == 0);
                            prop_assert!(backends[index].idle_ms >= idle_timeout);
                        }
                        StopCause::LightLoad => prop_assert!(up > 1),
                    }
                }
            }
        }

        /// A constant load never flaps: with the same requests in flight, or the same number
        /// of new requests, at every tick, whatever the backends' start and stop times, the
        /// policy moves one way only: once it has started a backend for load it never stops
        /// one, and once it has stopped one it never starts one for load.
        #[test]
        fn a_constant_load_never_flaps(
            min_servers in 0usize..4,
            max_servers in 1usize..7,
            count in 1usize..7,
            initially_up in 1usize..7,
            target in any_target(),
            window_ms in 100u64..20_000,
            load_per_tick in 0u64..400,
            start_ticks in 0u64..40,
            stop_ticks in 0u64..20,
        ) {
            let policy = ScalePolicy {
                min_servers,
                max_servers,
                scale_up: Some(ScaleUp { target, window_ms }),
                idle_timeout_ms: None,
            };
            let actions = run_constant_load(
                &policy,
                count,
                initially_up.min(count),
                load_per_tick,
                (start_ticks, stop_ticks),
                30 * SAMPLES_PER_WINDOW,
            );
            let load_actions: Vec<&ScaleAction> = actions
                .iter()
                .filter(|action| {
                    !matches!(action, ScaleAction::Start { cause: StartCause::Minimum, .. })
                })
                .collect();
            let turns = load_actions
                .windows(2)
                .filter(|pair| {
                    matches!(pair[0], ScaleAction::Start { .. })
                        != matches!(pair[1], ScaleAction::Start { .. })
                })
                .count();
            prop_assert_eq!(turns, 0, "{:?}", actions);
        }
    }
}
