//! Scaling: every tick (`ScalePolicy::tick_ms`), one worker (whichever takes the tick's turn in
//! the shared zone) samples the upstream's load into the shared ring and carries out the
//! actions `core::policy::scaling::decide` takes: start the backends the minimum and the load ask for,
//! all at once, or drain and stop one (idle, light load). Starts count for the start backoff like on-demand starts, so a
//! program that exits at start-up is not started again and again to reach the minimum.

use nginx_sys::{ngx_add_timer, ngx_event_t, ngx_exiting, ngx_quit, ngx_terminate, NGX_LOG_NOTICE};

use super::commander;
use crate::core::backend_event::BackendEvent;
use crate::core::backend_status::{BackendStatus, Command};
use crate::core::machine::{Action, Event};
use crate::core::policy::scaling::{
    decide, decimal, window_load, BackendNow, Sample, ScaleAction, ScalePolicy, StartCause,
    StopCause,
};
use crate::core::start::start_watch::PendingStart;
use crate::runtime::{Host, UpstreamRuntime};
use crate::util::log::cycle_log;
use crate::util::time::now_ms;

/// Starts this worker's scaling tick for an upstream whose policy acts.
pub fn start(upstream: &'static UpstreamRuntime) {
    let policy = upstream.conf.scale_policy();
    if !policy.acts() {
        return;
    }
    upstream.arm_timer(upstream.scale_timer.get(), on_tick, policy.tick_ms(), true);
}

unsafe extern "C" fn on_tick(event: *mut ngx_event_t) {
    // SAFETY: armed by `start`.
    let upstream = unsafe { UpstreamRuntime::of_timer(event) };
    // SAFETY: plain reads of nginx's process flags.
    if unsafe { ngx_exiting != 0 || ngx_quit != 0 || ngx_terminate != 0 } {
        return;
    }
    let policy = upstream.conf.scale_policy();
    // SAFETY: re-arming our own event.
    unsafe { ngx_add_timer(event, policy.tick_ms() as _) };
    let shared = upstream.shared();
    let now = now_ms();
    if !shared.take_scale_tick(now, policy.tick_ms()) {
        return;
    }
    // Nothing is decided before supervisord's view was asked for once (a program already
    // RUNNING is then UP rather than started again), nor while no supervisord can be reached
    // (commands would only wait for it); with several, the backends of one that is away are
    // not started (`host_away`).
    if upstream.conf.supervised() && upstream.hosts().iter().all(Host::away) {
        return;
    }
    tick(upstream, &policy, now);
}

fn tick(upstream: &'static UpstreamRuntime, policy: &ScalePolicy, now: u64) {
    let shared = upstream.shared();
    let lock = upstream.lock();
    let backends: Vec<BackendNow> = shared
        .backends()
        .iter()
        .enumerate()
        .map(|(index, backend)| {
            let status = backend.status();
            BackendNow {
                status,
                backoff_left_ms: backend.start_backoff().wait_left_ms(now),
                program_missing: backend.program_missing(),
                idle_ms: now.saturating_sub(backend.idle_since()),
                up_ms: if status == BackendStatus::Up {
                    now.saturating_sub(backend.up_since())
                } else {
                    0
                },
                in_flight: backend.in_flight(),
                stoppable: backend.started_here() || !upstream.conf.supervised(),
                host: upstream.conf.backends[index].line,
                host_away: upstream.conf.supervised() && upstream.host_of(index).away(),
            }
        })
        .collect();
    lock.push_load_sample(Sample {
        at_ms: now,
        in_flight: backends
            .iter()
            .map(|backend| backend.in_flight.max(0) as u64)
            .sum(),
        held: shared.held().max(0) as u64,
        requests: shared
            .backends()
            .iter()
            .map(|backend| backend.requests())
            .sum(),
    });
    let samples = shared.load_samples();
    let actions = decide(policy, &samples, &backends, now, shared.last_scale_action());
    if actions.is_empty() {
        return;
    }
    let load = policy
        .scale_up
        .and_then(|scale_up| window_load(scale_up, &samples, now));
    let mut steps = Vec::new();
    for action in actions {
        let (index, command, event) = match action {
            ScaleAction::Start {
                index,
                cause: StartCause::Minimum,
            } => (index, Command::Start, BackendEvent::StartMinimum),
            ScaleAction::Start { index, .. } => (index, Command::Start, BackendEvent::StartLoad),
            ScaleAction::Stop {
                index,
                cause: StopCause::Idle,
            } => (index, Command::Stop, BackendEvent::StopIdle),
            ScaleAction::Stop { index, .. } => (index, Command::Stop, BackendEvent::StopLightLoad),
        };
        let before = lock.status(index);
        let step = lock.step(
            index,
            &Event::Asked {
                command,
                mode: upstream.conf.mode(),
                cause: Some(event),
                // Counts for the start backoff, as a request's start does.
                pending: PendingStart::OnDemand,
            },
            now,
        );
        if matches!(step.actions.first(), Some(Action::Declined(_))) {
            continue;
        }
        if event != BackendEvent::StartMinimum {
            lock.note_scale_action(now);
        }
        steps.push((action, index, before, step));
    }
    drop(lock);
    let figures = Figures {
        load,
        up: backends
            .iter()
            .filter(|backend| backend.status == BackendStatus::Up)
            .count(),
        running: backends
            .iter()
            .filter(|backend| {
                matches!(
                    backend.status,
                    BackendStatus::Up | BackendStatus::StartingUp
                )
            })
            .count(),
    };
    for (action, index, before, step) in steps {
        log_action(upstream, policy, action, &figures, before);
        commander::carry_out(upstream, index, &step);
    }
}

/// What the tick saw, for its log lines.
struct Figures {
    /// The window's load, in hundredths.
    load: Option<u64>,
    up: usize,
    /// UP or starting.
    running: usize,
}

/// One line per scaling action, saying why.
fn log_action(
    upstream: &UpstreamRuntime,
    policy: &ScalePolicy,
    action: ScaleAction,
    figures: &Figures,
    before: BackendStatus,
) {
    let conf = upstream.conf;
    let load_text = || match (policy.scale_up, figures.load) {
        (Some(scale_up), Some(load)) => format!(
            "{} {} over {} ms, target {} per backend: {} wanted, {} up, {} up or starting",
            decimal(load),
            scale_up.target.unit(),
            scale_up.window_ms,
            decimal(scale_up.target.hundredths()),
            policy.wanted(load, conf.backends.len()).unwrap_or_default(),
            figures.up,
            figures.running
        ),
        _ => String::new(),
    };
    let (index, why) = match action {
        ScaleAction::Start {
            index,
            cause: StartCause::Minimum,
        } => (
            index,
            format!(
                "{} up or starting, fewer than supervisord_min_servers {}",
                figures.running, policy.min_servers
            ),
        ),
        ScaleAction::Start { index, .. } => (index, format!("load {}", load_text())),
        ScaleAction::Stop {
            index,
            cause: StopCause::Idle,
        } => (
            index,
            format!(
                "no request for supervisord_idle_timeout {} ms",
                policy.idle_timeout_ms.unwrap_or(0)
            ),
        ),
        ScaleAction::Stop { index, .. } => (index, format!("light load {}", load_text())),
    };
    let verb = match action {
        ScaleAction::Start { .. } => "starting",
        ScaleAction::Stop { .. } => "stopping",
    };
    ngx::ngx_log_error!(
        NGX_LOG_NOTICE,
        cycle_log(),
        "supervisord: upstream \"{}\" backend {} ({}): {} -> {}: {}; {} it",
        conf.name,
        index,
        conf.backends[index].name,
        before,
        upstream.shared().backend(index).status(),
        why,
        verb
    );
}
