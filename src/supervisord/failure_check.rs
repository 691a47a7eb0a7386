//! Failed requests, counted per backend as nginx counts them (`max_fails` within
//! `fail_timeout`); a backend that reaches its limit is checked (does it accept connections?
//! is its program running?) and only then left UP, taken DOWN or restarted
//! (`core::start::failure` decides).

use nginx_sys::{NGX_LOG_NOTICE, NGX_LOG_WARN};

use super::{client, commander, connect_check};
use crate::core::backend_status::{BackendStatus, Command};
use crate::core::machine::{Action, Event, Tell};
use crate::core::protocol::process_state::{parse_all_process_info, process_named, running_for_s};
use crate::core::start::failure::{worth_checking, FailureAction, ProgramSeen};
use crate::runtime::UpstreamRuntime;
use crate::util::log::cycle_log;
use crate::util::time::now_ms;

/// A request to backend `index` ended, `failed` or not (nginx's NGX_PEER_FAILED).
pub fn request_finished(upstream: &'static UpstreamRuntime, index: usize, failed: bool) {
    let mine = &upstream.backends[index];
    let mut count = mine.failures.get();
    if !failed {
        count.record_success();
        mine.failures.set(count);
        return;
    }
    let conf = upstream.conf;
    let limit = conf.backends[index].failure_limit;
    let reached = count.record_failure(now_ms(), limit);
    mine.failures.set(count);
    let failures = count.failures;
    ngx::ngx_log_debug!(
        cycle_log(),
        "supervisord: upstream \"{}\" backend {}: failed request {} of max_fails {}",
        conf.name,
        index,
        failures,
        limit.max_fails
    );
    if !reached
        || upstream.backends[index].failure_check.get()
        || !worth_checking(conf.mode(), upstream.shared().backend(index).status())
    {
        return;
    }
    upstream.backends[index].failure_check.set(true);
    let backend = &conf.backends[index];
    connect_check::accepts_connections(
        backend.sockaddrs.clone(),
        backend.name.as_str(),
        Box::new(move |accepts| {
            if accepts {
                conclude(
                    upstream,
                    index,
                    failures,
                    true,
                    (ProgramSeen::Unknown, false, 0),
                );
                return;
            }
            client::call(
                upstream.host_of(index),
                "supervisor.getAllProcessInfo",
                &[],
                Box::new(move |result| {
                    let program_name = &upstream.conf.backends[index].program;
                    // Whole seconds by supervisord's clock: a program started within the start
                    // phase by someone else is followed rather than restarted (`machine`).
                    let young = result
                        .as_ref()
                        .ok()
                        .and_then(|value| running_for_s(value, program_name))
                        .is_some_and(|running_s| {
                            running_s.saturating_mul(1000) <= upstream.conf.timeout_ms()
                        });
                    let (program, pid) = match result
                        .map_err(|error| error.to_string())
                        .and_then(|value| parse_all_process_info(&value))
                    {
                        Ok(processes) => {
                            let process = process_named(&processes, program_name);
                            (
                                ProgramSeen::Known(process.map(|process| process.state)),
                                process.map_or(0, |process| process.pid),
                            )
                        }
                        Err(_) => (ProgramSeen::Unknown, 0),
                    };
                    conclude(upstream, index, failures, false, (program, young, pid));
                }),
            );
        }),
    );
}

fn conclude(
    upstream: &'static UpstreamRuntime,
    index: usize,
    failures: u32,
    accepts: bool,
    (program, young, pid): (ProgramSeen, bool, i64),
) {
    upstream.backends[index].failure_check.set(false);
    let conf = upstream.conf;
    let backend = &conf.backends[index];
    let step = upstream.lock().step(
        index,
        &Event::FailureChecked {
            mode: conf.mode(),
            accepts,
            program,
            young,
            pid,
        },
        now_ms(),
    );
    let Some(&Tell::Failure { action, before }) = step.tell() else {
        return;
    };
    for effect in &step.actions {
        if !matches!(effect, Action::CarryOut(_)) {
            commander::carry_out_effect(upstream, index, effect);
        }
    }
    if action != FailureAction::Ignore {
        let mine = &upstream.backends[index];
        let mut count = mine.failures.get();
        count.record_success();
        mine.failures.set(count);
    }
    // Requests held again while the check ran (`core::hold::refused_attempt`) learn its outcome now.
    upstream.reevaluate_held_now();
    let seen = match program {
        ProgramSeen::Known(Some(state)) => {
            format!(
                "its program is not running (supervisord says {})",
                state.name()
            )
        }
        ProgramSeen::Known(None) => "supervisord has no such program".to_string(),
        ProgramSeen::Unknown => "supervisord cannot be asked".to_string(),
    };
    match action {
        FailureAction::LeaveUp => {
            ngx::ngx_log_error!(
                NGX_LOG_NOTICE,
                cycle_log(),
                "supervisord: upstream \"{}\" backend {} ({}): {} failed request(s), but it accepts connections; left up",
                conf.name,
                index,
                backend.name,
                failures
            );
        }
        FailureAction::MarkDown => {
            ngx::ngx_log_error!(
                NGX_LOG_WARN,
                cycle_log(),
                "supervisord: upstream \"{}\" backend {} ({}): {} failed request(s), no connection accepted and {}: up -> down",
                conf.name,
                index,
                backend.name,
                failures,
                seen
            );
        }
        FailureAction::Follow(status) => {
            ngx::ngx_log_error!(
                NGX_LOG_WARN,
                cycle_log(),
                "supervisord: upstream \"{}\" backend {} ({}): {} failed request(s): {} outside nginx (supervisord says {}): up -> {}",
                conf.name,
                index,
                backend.name,
                failures,
                if status == BackendStatus::StartingUp {
                    "its program is being started"
                } else {
                    "its program is being stopped"
                },
                match program {
                    ProgramSeen::Known(Some(state)) => state.name(),
                    _ => "?",
                },
                status
            );
        }
        FailureAction::Restart => {
            ngx::ngx_log_error!(
                NGX_LOG_WARN,
                cycle_log(),
                "supervisord: upstream \"{}\" backend {} ({}): {} failed request(s) and its program runs but accepts no connection; restarting it",
                conf.name,
                index,
                backend.name,
                failures
            );
            commander::execute(upstream, index, Command::Stop);
        }
        FailureAction::Ignore => {
            ngx::ngx_log_debug!(
                cycle_log(),
                "supervisord: upstream \"{}\" backend {}: failure check found it {} ({}): nothing to do",
                conf.name,
                index,
                before,
                seen
            );
        }
    }
}
