use super::*;
use proptest::prelude::*;
use BackendStatus::*;

fn any_target() -> impl Strategy<Value = Target> {
    prop_oneof![
        (1u64..10_000).prop_map(Target::InFlight),
        (1u64..100_000).prop_map(Target::Rate)
    ]
}

fn any_policy() -> impl Strategy<Value = ScalePolicy> {
    (
        0usize..7,
        1usize..7,
        proptest::option::of((any_target(), 100u64..30_000)),
        proptest::option::of(1u64..60_000),
    )
        .prop_map(
            |(min_servers, max_servers, scale_up, idle_timeout_ms)| ScalePolicy {
                min_servers,
                max_servers,
                scale_up: scale_up.map(|(target, window_ms)| ScaleUp { target, window_ms }),
                idle_timeout_ms,
            },
        )
}

fn any_backend() -> impl Strategy<Value = BackendNow> {
    (
        0u8..4,
        proptest::option::of(1u64..60_000),
        0u64..120_000,
        0u64..120_000,
        -2i64..40,
        0usize..3,
        any::<bool>(),
    )
        .prop_map(
            |(raw, backoff_left_ms, idle_ms, up_ms, in_flight, host, program_missing)| BackendNow {
                status: BackendStatus::from_raw(raw).unwrap(),
                backoff_left_ms,
                program_missing,
                idle_ms,
                up_ms,
                in_flight,
                stoppable: true,
                host,
                host_away: false,
            },
        )
}

/// Samples oldest first, from steps of (time, in flight, held, new requests).
fn any_samples() -> impl Strategy<Value = Vec<Sample>> {
    proptest::collection::vec((1u64..3_000, 0u64..500, 0u64..50, 0u64..5_000), 0..40).prop_map(
        |steps| {
            let (mut at_ms, mut requests) = (1_000, 0);
            steps
                .into_iter()
                .map(|(step_ms, in_flight, held, new_requests)| {
                    at_ms += step_ms;
                    requests += new_requests;
                    Sample {
                        at_ms,
                        in_flight,
                        held,
                        requests,
                    }
                })
                .collect()
        },
    )
}

fn startable(backend: &BackendNow) -> bool {
    backend.status == Down
        && backend.backoff_left_ms.is_none()
        && !backend.program_missing
        && !backend.host_away
}

/// Runs `policy` for `ticks` ticks under a constant load: `load_per_tick` requests in flight
/// (held while no backend is UP) for `in_flight=`, or new requests each tick for `rate=`, as
/// the scaler samples them, a started backend taking `latency.0` ticks to come UP and a stopped
/// one `latency.1` ticks to go DOWN. Returns the actions taken, in order.
fn run_constant_load(
    policy: &ScalePolicy,
    count: usize,
    initially_up: usize,
    load_per_tick: u64,
    latency: (u64, u64),
    ticks: u64,
) -> Vec<ScaleAction> {
    let tick_ms = policy.tick_ms();
    // Each backend with the tick it settles at (or came UP at).
    let mut backends: Vec<(BackendNow, u64)> = (0..count)
        .map(|index| {
            let status = if index < initially_up { Up } else { Down };
            (
                BackendNow {
                    status,
                    backoff_left_ms: None,
                    program_missing: false,
                    idle_ms: 0,
                    up_ms: 0,
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
            backend.up_ms = tick.saturating_sub(*settles_at) * tick_ms;
        }
        let up = backends.iter().filter(|(b, _)| b.status == Up).count() as u64;
        if up > 0 {
            requests += load_per_tick;
        }
        samples.push(Sample {
            at_ms: now,
            in_flight: if up > 0 { load_per_tick } else { 0 },
            held: if up > 0 { 0 } else { load_per_tick },
            requests,
        });
        if samples.len() > SAMPLES_KEPT {
            samples.remove(0);
        }
        let views: Vec<BackendNow> = backends.iter().map(|(b, _)| *b).collect();
        for action in decide(policy, &samples, &views, now, last_action) {
            match action {
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
            actions.push(action);
        }
    }
    actions
}

proptest! {
    #![proptest_config(crate::proptest_config())]

    /// However long the window, the samples the upstream keeps, one a tick (a tick may come
    /// up to a tenth early, when another worker's timer takes it), cover a whole window: load
    /// never goes unmeasured for want of samples.
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
                held: 0,
                requests: 0,
            })
            .collect();
        prop_assert!(window_load(scale_up, &samples, now).is_some());
    }

    /// Whatever the figures: starts never take the backends UP or starting above the maximum
    /// (nor above the servers there are), only start DOWN backends not backing off, each
    /// once, and a tick that starts does not stop; a stop comes alone, never takes the
    /// backends UP below the minimum (nor below one for light load), only stops an UP
    /// backend, for idleness only one without requests for the idle timeout, and never while
    /// a backend starts or stops.
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
        let actions = decide(&policy, &samples, &backends, now, last_action);
        let starts: Vec<(usize, StartCause)> = actions
            .iter()
            .filter_map(|action| match action {
                ScaleAction::Start { index, cause } => Some((*index, *cause)),
                ScaleAction::Stop { .. } => None,
            })
            .collect();
        if !starts.is_empty() {
            prop_assert_eq!(starts.len(), actions.len());
            prop_assert!(up + starting + starts.len() <= max.max(up + starting));
            let mut seen = std::collections::BTreeSet::new();
            for (index, cause) in &starts {
                prop_assert!(seen.insert(*index));
                prop_assert!(startable(&backends[*index]));
                if *cause == StartCause::Minimum {
                    prop_assert!(up + starting < min);
                } else {
                    prop_assert!(policy.scale_up.is_some());
                }
            }
        }
        for action in &actions {
            if let ScaleAction::Stop { index, cause } = *action {
                prop_assert_eq!(actions.len(), 1);
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

    /// A step reaches the desired count in one decision: whatever the load of a whole window,
    /// one decision leaves the backends UP or starting at `ceil(load / target)` (within the
    /// minimum and the maximum), or every startable backend started.
    #[test]
    fn a_step_reaches_the_desired_count_in_one_decision(
        policy in any_policy(),
        backends in proptest::collection::vec(any_backend(), 1..7),
        samples in any_samples(),
        after_last_sample in 0u64..5_000,
    ) {
        let now = samples.last().map_or(1_000, |sample| sample.at_ms) + after_last_sample;
        let actions = decide(&policy, &samples, &backends, now, 0);
        let Some(scale_up) = policy.scale_up else { return Ok(()) };
        let Some(load) = window_load(scale_up, &samples, now) else { return Ok(()) };
        let max = policy.max_servers.min(backends.len());
        let min = policy.min_servers.min(max);
        let desired = desired_count(load, scale_up.target).clamp(min, max);
        let running = backends
            .iter()
            .filter(|b| matches!(b.status, Up | StartingUp))
            .count();
        let started = actions
            .iter()
            .filter(|action| matches!(action, ScaleAction::Start { .. }))
            .count();
        let startable = backends.iter().filter(|b| startable(b)).count();
        prop_assert!(
            running + started >= desired || started == startable,
            "{} running, {} started of {} startable, {} desired",
            running, started, startable, desired
        );
        prop_assert!(running + started <= desired.max(running));
    }

    /// A constant load never flaps: with the same requests in flight, or the same number of
    /// new requests, at every tick, whatever the backends' start and stop times, the policy
    /// moves one way only: once it has started a backend for load it never stops one, and
    /// once it has stopped one it never starts one for load.
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
