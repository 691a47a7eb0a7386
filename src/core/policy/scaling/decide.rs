//! The actions of one tick.

use super::load::window_load;
use super::{
    BackendNow, Sample, ScaleAction, ScalePolicy, StartCause, StopCause, LIGHT_LOAD_PERCENT,
};
use crate::backend_status::BackendStatus;
use crate::policy::placement::{pick, Placeable};

/// The actions of this tick: every start the minimum and the load ask for, all at once, or at
/// most one stop. `last_action_ms`: when the previous load action was taken (0: never).
pub fn decide(
    policy: &ScalePolicy,
    samples: &[Sample],
    backends: &[BackendNow],
    now_ms: u64,
    last_action_ms: u64,
) -> Vec<ScaleAction> {
    let count = |status| backends.iter().filter(|b| b.status == status).count();
    let up = count(BackendStatus::Up);
    let starting = count(BackendStatus::StartingUp);
    let stopping = count(BackendStatus::ShuttingDown);
    let (min, _) = policy.bounds(backends.len());
    let load = policy
        .scale_up
        .and_then(|scale_up| window_load(scale_up, samples, now_ms));

    // Starts: what the minimum asks for, then what the load asks for beyond it; backends
    // starting count as the capacity they will bring.
    let mut view = backends.to_vec();
    let mut actions = Vec::new();
    let mut start = |wanted: usize, cause: StartCause, view: &mut Vec<BackendNow>| {
        for _ in 0..wanted {
            let Some(index) = first_startable(view) else {
                break;
            };
            view[index].status = BackendStatus::StartingUp;
            actions.push(ScaleAction::Start { index, cause });
        }
    };
    let capacity = up + starting;
    start(min.saturating_sub(capacity), StartCause::Minimum, &mut view);
    if let Some(desired) = load.and_then(|load| policy.wanted(load, backends.len())) {
        let capacity = up + count_in(&view, BackendStatus::StartingUp);
        start(
            desired.saturating_sub(capacity),
            StartCause::Load,
            &mut view,
        );
    }
    if !actions.is_empty() || starting > 0 || stopping > 0 {
        return actions;
    }

    // Stops, one at a time, never while a backend starts or stops.
    if let Some(idle_timeout) = policy.idle_timeout_ms {
        if up > min {
            let idle = stop_candidate(backends, |backend| {
                backend.in_flight == 0 && backend.idle_ms >= idle_timeout
            });
            if let Some(index) = idle {
                return vec![ScaleAction::Stop {
                    index,
                    cause: StopCause::Idle,
                }];
            }
        }
    }
    let (Some(scale_up), Some(load)) = (policy.scale_up, load) else {
        return actions;
    };
    // The window judged shows the backends there are, all serving: a whole window since the
    // last load action and since the last backend came UP.
    let window = scale_up.window_ms;
    let settled = (last_action_ms == 0 || now_ms.saturating_sub(last_action_ms) >= window)
        && backends
            .iter()
            .filter(|backend| backend.status == BackendStatus::Up)
            .all(|backend| backend.up_ms >= window);
    let light = u128::from(load) * 100
        < u128::from(scale_up.target.hundredths()) * u128::from(LIGHT_LOAD_PERCENT) * up as u128;
    if settled && light && up > min.max(1) {
        if let Some(index) = highest_up(backends) {
            actions.push(ScaleAction::Stop {
                index,
                cause: StopCause::LightLoad,
            });
        }
    }
    actions
}

fn count_in(backends: &[BackendNow], status: BackendStatus) -> usize {
    backends.iter().filter(|b| b.status == status).count()
}

/// The backend a start for load or the minimum goes to (`placement`): never one whose
/// supervisord is away (the start would only wait for it).
pub(super) fn first_startable(backends: &[BackendNow]) -> Option<usize> {
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

pub(super) fn highest_up(backends: &[BackendNow]) -> Option<usize> {
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
