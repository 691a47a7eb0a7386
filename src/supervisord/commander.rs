//! The commander: carries a start or stop out through supervisord for the worker that won the
//! transition (DOWN -> STARTING_UP, UP -> SHUTTING_DOWN) and settles the backend's status with
//! the outcome. Exactly one call per transition, whichever worker took it.
//!
//! What an answer does is the backend state machine's (`core::machine`); the commander turns
//! the answer into its event and carries out the step. A start is settled UP by the readiness
//! probe (the backend accepts connections), not by supervisord's answer: supervisord calls a
//! program RUNNING before it listens.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use nginx_sys::{ngx_add_timer, ngx_event_t, NGX_LOG_ERR, NGX_LOG_NOTICE, NGX_LOG_WARN};

use super::readiness::{self, SharedHandshake};
use super::{client, reconciler};
use crate::core::backend_status::{BackendStatus, Command};
use crate::core::machine::{Action, Answer, Event, Step, Tell};
use crate::core::policy::drain::{
    drain_step, stop_call_due_ms, DrainStep, DRAIN_CHECK_INTERVAL_MS,
};
use crate::core::protocol::call_outcome::{already_there, command_succeeded, CallError};
use crate::core::protocol::command_reply::ReplyLog;
use crate::core::protocol::process_state::{parse_process_info, ProcessDetail};
use crate::core::protocol::xmlrpc::Param;
use crate::core::start::reachability::supervisord_away;
use crate::core::start::start_backoff::StartBackoff;
use crate::runtime::UpstreamRuntime;
use crate::util::log::cycle_log;
use crate::util::time::now_ms;

/// Sends `command` for backend `index`, which this worker holds in the command's
/// transitional status (`core::machine`); nobody waits for the outcome.
pub fn execute(upstream: &'static UpstreamRuntime, index: usize, command: Command) {
    // A failure at once is settled and logged like any other; this caller answers nobody.
    send(upstream, index, command, false, |_| {});
}

/// As `execute`, for a caller that answers someone: `Err` with the reason when the call failed
/// at once (e.g. supervisord's socket cannot be reached), in which case the backend's status
/// is already settled back.
pub fn try_execute(
    upstream: &'static UpstreamRuntime,
    index: usize,
    command: Command,
) -> Result<(), CallError> {
    let calling = Rc::new(Cell::new(true));
    let failed_at_once: Rc<RefCell<Option<CallError>>> = Rc::default();
    send(upstream, index, command, true, {
        let (calling, failed_at_once) = (calling.clone(), failed_at_once.clone());
        move |error| {
            if calling.get() {
                *failed_at_once.borrow_mut() = Some(error);
            }
        }
    });
    calling.set(false);
    let failed = failed_at_once.borrow_mut().take();
    match failed {
        Some(reason) => Err(reason),
        None => Ok(()),
    }
}

// Draining before a stop. The worker that moved a backend UP -> SHUTTING_DOWN took it out of
// rotation for every worker with that move (only UP backends get new requests); it then sends
// stopProcess only once the backend's requests in flight over all workers are done, or once
// `supervisord_drain_timeout` has passed (`core::policy::drain`). The wait is a timer in this worker's
// runtime (one per backend), so that whoever asked for the stop is answered at once.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopBegun {
    /// Nothing was in flight: stopProcess is on its way.
    Sent,
    /// `in_flight` requests were running: stopProcess is sent once they are done.
    Draining { in_flight: i64 },
    /// The backend was settled meanwhile (it is not SHUTTING_DOWN any more): nothing to stop.
    Settled,
}

/// Stops backend `index`, which this worker has just moved to SHUTTING_DOWN: at once when
/// nothing is in flight to it, else after draining. `Err` with the reason when a stop sent at
/// once failed at once (the commander has put the status back).
pub fn stop_after_drain(
    upstream: &'static UpstreamRuntime,
    index: usize,
) -> Result<StopBegun, CallError> {
    let conf = upstream.conf;
    let now = now_ms();
    let backend = upstream.shared().backend(index);
    let step = drain_step(
        backend.status(),
        backend.in_flight(),
        balancer_allows_stop(upstream, index),
        now,
        now,
        conf.drain_timeout_ms(),
    );
    if step != DrainStep::Wait {
        upstream.backends[index].stop_checker.set(None);
    }
    ngx::ngx_log_debug!(
        cycle_log(),
        "supervisord: upstream \"{}\" backend {}: stop, {} in flight: {:?}",
        conf.name,
        index,
        backend.in_flight(),
        step
    );
    match step {
        DrainStep::Wait => {
            let lock = upstream.lock();
            // The stop call goes later than a stop usually begins; reconciliation must not
            // take the live drain for a command whose worker is gone.
            let due_ms = stop_call_due_ms(now, conf.drain_timeout_ms());
            let step = lock.step(index, &Event::Draining { due_ms }, now);
            if step.next.status != BackendStatus::ShuttingDown {
                // Settled by another worker in the meantime: nothing of ours to stop.
                return Ok(StopBegun::Settled);
            }
            drop(lock);
            watch(upstream, index, now);
            Ok(StopBegun::Draining {
                in_flight: backend.in_flight(),
            })
        }
        DrainStep::StopTimedOut { in_flight } => {
            log_stop(upstream, index, in_flight, true);
            try_execute(upstream, index, Command::Stop).map(|()| StopBegun::Sent)
        }
        DrainStep::StopDrained => {
            try_execute(upstream, index, Command::Stop).map(|()| StopBegun::Sent)
        }
        DrainStep::Abandoned => Ok(StopBegun::Settled),
    }
}

/// Whether the C balancer that asked for this stop (`ngx_supervisord_execute` with a checker)
/// lets it go now; true when no checker waits.
fn balancer_allows_stop(upstream: &UpstreamRuntime, index: usize) -> bool {
    let Some(checker) = upstream.backends[index].stop_checker.get() else {
        return true;
    };
    // SAFETY: the balancer gave this checker for this upstream's srv conf, which lives as long
    // as the configuration; its contract is ngx_supervisord.h's.
    let rc = unsafe { checker(upstream.conf.upstream, index as nginx_sys::ngx_uint_t) };
    rc == nginx_sys::NGX_OK as nginx_sys::ngx_int_t
}

fn watch(upstream: &'static UpstreamRuntime, index: usize, now: u64) {
    let drain = &upstream.backends[index].drain;
    drain.started_ms.set(now);
    // Not cancelable: a worker that exits gracefully (reload) finishes its drains first,
    // bounded by the drain timeout, as it finishes its requests in flight.
    upstream.arm_timer(drain.event.get(), on_timer, DRAIN_CHECK_INTERVAL_MS, false);
}

unsafe extern "C" fn on_timer(event: *mut ngx_event_t) {
    // SAFETY: armed by `watch`.
    let upstream = unsafe { UpstreamRuntime::of_timer(event) };
    let Some(index) = upstream
        .backends
        .iter()
        .position(|backend| backend.drain.event.get() == event)
    else {
        return;
    };
    let conf = upstream.conf;
    let backend = upstream.shared().backend(index);
    let in_flight = backend.in_flight();
    let step = drain_step(
        backend.status(),
        in_flight,
        in_flight > 0 || balancer_allows_stop(upstream, index),
        upstream.backends[index].drain.started_ms.get(),
        now_ms(),
        conf.drain_timeout_ms(),
    );
    if step != DrainStep::Wait {
        upstream.backends[index].stop_checker.set(None);
    }
    ngx::ngx_log_debug!(
        cycle_log(),
        "supervisord: upstream \"{}\" backend {}: draining, {} in flight: {:?}",
        conf.name,
        index,
        in_flight,
        step
    );
    match step {
        // SAFETY: re-arming our own event.
        DrainStep::Wait => unsafe { ngx_add_timer(event, DRAIN_CHECK_INTERVAL_MS as _) },
        DrainStep::StopDrained => {
            log_stop(upstream, index, 0, false);
            execute(upstream, index, Command::Stop);
        }
        DrainStep::StopTimedOut { in_flight } => {
            log_stop(upstream, index, in_flight, true);
            execute(upstream, index, Command::Stop);
        }
        // Whoever settled it logged why.
        DrainStep::Abandoned => {}
    }
}

/// The one notice of a drain: when the stop is sent, and with how much still in flight.
fn log_stop(upstream: &UpstreamRuntime, index: usize, in_flight: i64, timed_out: bool) {
    let conf = upstream.conf;
    let how = if in_flight > 0 {
        format!(
            "drain timed out after {} ms with {in_flight} in flight",
            conf.drain_timeout_ms()
        )
    } else if timed_out {
        format!(
            "drain timed out after {} ms, the balancer's checker still refusing",
            conf.drain_timeout_ms()
        )
    } else {
        "drained".to_string()
    };
    ngx::ngx_log_error!(
        NGX_LOG_NOTICE,
        cycle_log(),
        "supervisord: upstream \"{}\" backend {} ({}): {}; stopping it",
        conf.name,
        index,
        conf.backends[index].name,
        how
    );
}

/// `caller_waits`: someone (a control request) is answered with the outcome at once.
fn send(
    upstream: &'static UpstreamRuntime,
    index: usize,
    command: Command,
    caller_waits: bool,
    on_failure: impl FnOnce(CallError) + 'static,
) {
    let conf = upstream.conf;
    let program = conf.backends[index].program.clone();
    let host = upstream.host_of(index);
    let method = match command {
        Command::Start => "supervisor.startProcess",
        Command::Stop => "supervisor.stopProcess",
    };
    let params = [Param::Str(&program), Param::Bool(true)];
    let program_for_log = program.clone();
    let handshake = SharedHandshake::default();
    let sent_ms = now_ms();
    if command == Command::Start {
        readiness::start(upstream, index, handshake.clone());
    }
    client::call(
        host,
        method,
        &params,
        Box::new(move |result| {
            let outcome = command_succeeded(command, &result);
            let answer = Answer {
                command,
                outcome: outcome.clone(),
                already: already_there(command, &result),
                caller_waits,
                probing: handshake.get().probing,
                supervisord_unreachable: host.unreachable(),
                shared_in_host: upstream.program_shared_in_host(index),
                sent_ms,
            };
            let step = upstream
                .lock()
                .step(index, &Event::Answered(answer), now_ms());
            if command == Command::Start {
                let mut state = handshake.get();
                state.reply_due = false;
                state.parked = matches!(step.tell(), Some(Tell::Parked { .. }));
                handshake.set(state);
            }
            carry_out(upstream, index, &step);
            if step.has(&Action::AskWhyItExited) {
                // supervisord's reason goes into the one line of this step; the start is
                // settled with it.
                let program = program_for_log.clone();
                client::call(
                    host,
                    "supervisor.getProcessInfo",
                    &[Param::Str(&program)],
                    Box::new(move |info| {
                        // supervisord gone or going as it answered the start: it stopped the
                        // program with itself.
                        let away = info.as_ref().err().is_some_and(|error| {
                            supervisord_away(Command::Start, error, host.unreachable(), false)
                        });
                        let detail = info.ok().and_then(|value| parse_process_info(&value).ok());
                        settle_exit(upstream, index, outcome, detail, away);
                    }),
                );
                return;
            }
            let Some(tell) = step.tell() else {
                return;
            };
            let error = outcome.err();
            if let (Some(error), Tell::Reply { .. }) = (&error, tell) {
                on_failure(error.clone());
            }
            let error = error.map(|error| error.to_string()).unwrap_or_default();
            match *tell {
                Tell::Parked { quiet } => {
                    log_parked(upstream, index, command, &error, step.next.status, quiet);
                }
                Tell::ConfirmedForProbe => {
                    ngx::ngx_log_debug!(
                        cycle_log(),
                        "supervisord: upstream \"{}\" backend {}: start confirmed, readiness probe settles it",
                        conf.name,
                        index
                    );
                }
                Tell::Reply {
                    log,
                    before,
                    after,
                    backoff,
                } => log_reply(
                    upstream,
                    index,
                    command,
                    log,
                    (before, after),
                    &error,
                    backoff,
                ),
                _ => {}
            }
        }),
    );
}

/// The line of supervisord's answer to `command`, settled from `before` to `after`.
fn log_reply(
    upstream: &UpstreamRuntime,
    index: usize,
    command: Command,
    log: ReplyLog,
    (before, after): (BackendStatus, BackendStatus),
    error: &str,
    backoff: Option<StartBackoff>,
) {
    let conf = upstream.conf;
    let backend = &conf.backends[index];
    let program = &backend.program;
    let next_start = backoff.map(readiness::next_start_note).unwrap_or_default();
    match log {
        ReplyLog::Transition => {
            ngx::ngx_log_error!(
                NGX_LOG_NOTICE,
                cycle_log(),
                "supervisord: upstream \"{}\" backend {} ({}, program \"{}\"): {} -> {}",
                conf.name,
                index,
                backend.name,
                program,
                before,
                after
            );
        }
        ReplyLog::SettledMeanwhile => {
            ngx::ngx_log_debug!(
                cycle_log(),
                "supervisord: upstream \"{}\" backend {}: {} done, but the backend was settled {} meanwhile",
                conf.name,
                index,
                command,
                before
            );
        }
        ReplyLog::ToldByOutage => {
            ngx::ngx_log_debug!(
                cycle_log(),
                "supervisord: upstream \"{}\" backend {}: {} failed: {}; status back to {}{}",
                conf.name,
                index,
                command,
                error,
                after,
                next_start
            );
        }
        ReplyLog::EndedAfterSettlement => {
            ngx::ngx_log_debug!(
                cycle_log(),
                "supervisord: upstream \"{}\" backend {}: start ended with {} after the backend was settled {} meanwhile",
                conf.name,
                index,
                error,
                before
            );
        }
        ReplyLog::Failed => {
            ngx::ngx_log_error!(
                NGX_LOG_ERR,
                cycle_log(),
                "supervisord: upstream \"{}\" backend {} ({}, program \"{}\"): {} failed: {}; status back to {}{}",
                conf.name,
                index,
                backend.name,
                program,
                command,
                error,
                after,
                next_start
            );
        }
    }
}

/// Carries out what a step of the backend state machine asks of this worker, but its line
/// (the caller's, who knows the words): the command it now holds (without anyone waiting for
/// the outcome), the probe of a start phase it took, the counts, the wake of held requests.
pub fn carry_out(upstream: &'static UpstreamRuntime, index: usize, step: &Step) {
    for action in &step.actions {
        match action {
            Action::CarryOut(Command::Start) => {
                execute(upstream, index, Command::Start);
            }
            Action::CarryOut(Command::Stop) => {
                // A stop that failed at once was put back and logged.
                let _: Result<StopBegun, CallError> = stop_after_drain(upstream, index);
            }
            _ => carry_out_effect(upstream, index, action),
        }
    }
}

/// The effects of a step that no caller words or waits for.
pub fn carry_out_effect(upstream: &'static UpstreamRuntime, index: usize, action: &Action) {
    if upstream.carry_out_local(index, action) {
        return;
    }
    match action {
        Action::ProbeStart => readiness::watch_hand_start(upstream, index),
        Action::ReadHostNow => reconciler::read_now(upstream.host_of(index)),
        _ => {}
    }
}

/// A start whose fault says the program exits at start-up (`detail`: what supervisord says of
/// it now, if it could be read). The start is over: DOWN, requests waiting for it get 502, and
/// an on-demand start counts for the backoff. Also when the readiness probe had made it UP
/// meanwhile (it listened, then died within `startsecs`). One line for the step.
fn settle_exit(
    upstream: &'static UpstreamRuntime,
    index: usize,
    outcome: Result<(), CallError>,
    detail: Option<ProcessDetail>,
    supervisord_away: bool,
) {
    let conf = upstream.conf;
    let state = detail.as_ref().and_then(|detail| detail.state);
    let step = upstream.lock().step(
        index,
        &Event::ExitExplained {
            state,
            supervisord_away,
        },
        now_ms(),
    );
    carry_out(upstream, index, &step);
    match step.tell() {
        Some(Tell::SettledMeanwhile { status }) => {
            ngx::ngx_log_debug!(
                cycle_log(),
                "supervisord: upstream \"{}\" backend {}: start ended with {:?} after the backend was settled {} meanwhile",
                conf.name,
                index,
                outcome,
                status
            );
        }
        Some(Tell::RefusedByAStop { from, to }) => {
            ngx::ngx_log_error!(
                NGX_LOG_NOTICE,
                cycle_log(),
                "supervisord: upstream \"{}\" backend {} ({}, program \"{}\"): start refused while supervisord stops the program (supervisord says {}): {} -> {}",
                conf.name,
                index,
                conf.backends[index].name,
                conf.backends[index].program,
                state.map_or("nothing: it is going away", |state| state.name()),
                from,
                to
            );
        }
        Some(Tell::FailedStart { backoff }) => {
            let error = outcome.err().map(|e| e.to_string());
            let reason = detail.map_or_else(|| "nothing more".into(), |detail| detail.reason());
            readiness::log_failed_start(
                upstream,
                index,
                &readiness::exit_text(&reason),
                error.as_deref(),
                *backoff,
            );
        }
        _ => {}
    }
}

/// The line of a command that waits for supervisord in its transitional status (see
/// `core::start::start_handshake::park_until_reachable`); the watchdog sends it again once
/// supervisord answers. `quiet`: the outage's one line tells it already.
fn log_parked(
    upstream: &'static UpstreamRuntime,
    index: usize,
    command: Command,
    error: &str,
    status: BackendStatus,
    quiet: bool,
) {
    let conf = upstream.conf;
    if quiet {
        ngx::ngx_log_debug!(
            cycle_log(),
            "supervisord: upstream \"{}\" backend {}: {} failed: {}; stays {} until supervisord answers again",
            conf.name,
            index,
            command,
            error,
            status
        );
    } else {
        ngx::ngx_log_error!(
            NGX_LOG_WARN,
            cycle_log(),
            "supervisord: upstream \"{}\" backend {} ({}, program \"{}\"): {} failed: {}; stays {}, sent again once supervisord answers",
            conf.name,
            index,
            conf.backends[index].name,
            conf.backends[index].program,
            command,
            error,
            status
        );
    }
}
