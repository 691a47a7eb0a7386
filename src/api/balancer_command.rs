//! A command a C balancer sends (`ngx_supervisord_execute`): applied like a command of
//! `/_start`, `/_stop` (the same transitions, drain before a stop) with 1.4's rules for "any"
//! (`core::policy::balancer_api`); a stop waits for the balancer's checker too, within the drain
//! timeout.

use nginx_sys::NGX_LOG_NOTICE;

use crate::conf::balancer_hooks::Checker;
use crate::core::backend_event::BackendEvent;
use crate::core::backend_status::Command;
use crate::core::machine::{Action, Event};
use crate::core::policy::balancer_api::{
    any_command_spacing_ms, pick_any, AnyCandidate, AnySkipped,
};
use crate::core::start::start_watch::PendingStart;
use crate::runtime::UpstreamRuntime;
use crate::supervisord::commander;
use crate::util::log::cycle_log;
use crate::util::time::now_ms;

/// Carries out `command` for backend `target` (`None`: any). Nothing to report back: the C
/// API answers "accepted" whatever happens next, and every outcome is logged.
pub fn send(
    upstream: &'static UpstreamRuntime,
    command: Command,
    target: Option<usize>,
    checker: Option<Checker>,
) {
    let conf = upstream.conf;
    let shared = upstream.shared();
    let now = now_ms();
    let lock = upstream.lock();
    let index = match target {
        Some(index) => index,
        None => {
            let backends: Vec<AnyCandidate> = shared
                .backends()
                .iter()
                .map(|backend| AnyCandidate {
                    status: backend.status(),
                    backing_off: backend.start_backoff().wait_left_ms(now).is_some(),
                    program_missing: backend.program_missing(),
                })
                .collect();
            let last = shared.last_balancer_any_command();
            let since_last = (last != 0).then(|| now.saturating_sub(last));
            let spacing = any_command_spacing_ms(conf.load_interval_ms());
            match pick_any(command, &backends, since_last, spacing) {
                Ok(index) => {
                    lock.note_balancer_any_command(now);
                    index
                }
                Err(skipped) => {
                    drop(lock);
                    log_skipped(upstream, command, skipped);
                    return;
                }
            }
        }
    };
    let before = lock.status(index);
    let step = lock.step(
        index,
        &Event::Asked {
            command,
            mode: conf.mode(),
            cause: Some(match command {
                Command::Start => BackendEvent::StartByBalancer,
                Command::Stop => BackendEvent::StopByBalancer,
            }),
            // A balancer asking again and again for a program that exits at start-up gets
            // it started once per backoff.
            pending: PendingStart::OnDemand,
        },
        now,
    );
    drop(lock);
    if let Some(Action::Declined(decision)) = step.actions.first() {
        ngx::ngx_log_debug!(
            cycle_log(),
            "supervisord: upstream \"{}\" backend {}: balancer's {} while {}: {:?}",
            conf.name,
            index,
            command,
            before,
            decision
        );
        return;
    }
    ngx::ngx_log_error!(
        NGX_LOG_NOTICE,
        cycle_log(),
        "supervisord: upstream \"{}\" backend {} ({}): {} -> {} by the balancer's {}{}",
        conf.name,
        index,
        conf.backends[index].name,
        before,
        step.next.status,
        command,
        if target.is_none() { " any" } else { "" }
    );
    if step.has(&Action::CarryOut(Command::Stop)) {
        upstream.backends[index].stop_checker.set(checker);
    }
    commander::carry_out(upstream, index, &step);
}

fn log_skipped(upstream: &UpstreamRuntime, command: Command, skipped: AnySkipped) {
    ngx::ngx_log_debug!(
        cycle_log(),
        "supervisord: upstream \"{}\": balancer's {} any skipped: {:?}",
        upstream.name(),
        command,
        skipped
    );
}
