//! The watchdog: every `TICK_MS`, in every worker, it frees what dead workers left in the
//! shared zone (their held requests and requests in flight stop counting, records only their
//! configuration used are freed), sends again a start or stop whose worker died, and, while
//! supervisord is unreachable, asks it once a second per upstream whether it is back. When it
//! is (whichever call finds out), starts and stops that waited for it are sent and its view is
//! read at once, for every upstream that names it (one question, one read per supervisord). The decisions are `core::zone::liveness`'s and `core::start::start_handshake`'s.

use nginx_sys::{ngx_add_timer, ngx_event_t, ngx_exiting, ngx_quit, ngx_terminate, NGX_LOG_NOTICE};

use super::{client, commander, reconciler};
use crate::core::backend_status::BackendStatus;
use crate::core::machine::{Action, Event};
use crate::core::start::start_handshake::command_to_resend;
use crate::core::zone::liveness::command_orphaned;
use crate::runtime::{worker, Host, UpstreamRuntime};
use crate::shared::slots;
use crate::util::log::cycle_log;
use crate::util::time::now_ms;

/// A dead worker's counts stop counting within this (plus the time to look).
const TICK_MS: usize = 250;
/// While supervisord is unreachable, one `getState` per upstream this often, over all workers.
const REACH_ATTEMPT_MS: u64 = 1000;

/// Starts the worker's watchdog; once per worker, after its runtime is installed.
pub fn start() {
    let Some(event) = worker::watchdog_timer() else {
        return;
    };
    // SAFETY: the event lives in the worker's runtime; only this thread touches it.
    unsafe {
        (*event).handler = Some(on_tick);
        // nginx's debug log reads an fd through any timer's `data` (as if it were a
        // connection): it must point to readable memory, here the event itself.
        (*event).data = event as *mut std::ffi::c_void;
        (*event).log = cycle_log();
        // Does not keep a gracefully exiting worker alive.
        (*event).set_cancelable(1);
        ngx_add_timer(event, TICK_MS);
    }
}

unsafe extern "C" fn on_tick(event: *mut ngx_event_t) {
    // SAFETY: plain reads of nginx's process flags.
    if unsafe { ngx_exiting != 0 || ngx_quit != 0 || ngx_terminate != 0 } {
        return;
    }
    // SAFETY: re-arming our own event.
    unsafe { ngx_add_timer(event, TICK_MS) };
    let (dead, reclaimed) = slots::check_workers(TICK_MS as u64);
    for worker in &dead {
        slots::report(worker);
    }
    if reclaimed > 0 {
        ngx::ngx_log_debug!(
            cycle_log(),
            "supervisord: {} shared records no configuration uses any more freed",
            reclaimed
        );
    }
    let live = slots::live_tokens();
    let now = now_ms();
    for upstream in worker::upstreams() {
        if !upstream.conf.supervised() {
            continue;
        }
        resend_due(upstream, None, &live, false);
        // One question per supervisord, by the line that leads its host.
        for host in upstream.hosts() {
            let shared = host.shared();
            if std::ptr::eq(host.upstream, upstream)
                && shared.supervisord_unreachable()
                && shared.take_reach_attempt(now, REACH_ATTEMPT_MS)
            {
                // Its outcome is all in the reachability it records (see `client`).
                client::call(host, "supervisor.getState", &[], Box::new(|_| {}));
            }
        }
    }
}

/// supervisord answered again after an outage (in this worker, once per return), for every
/// upstream line of its host.
pub fn on_supervisord_back(host: Host) {
    let live = slots::live_tokens();
    for (upstream, line) in host.members() {
        resend_due(upstream, Some(line), &live, true);
    }
    reconciler::read_now(host);
}

/// Sends again the starts and stops whose worker died, and those that waited for supervisord
/// once it answers (`answered_now`: it just did; otherwise a command parked on a supervisord
/// that was reachable but shutting down is tried again once a second); one worker takes each
/// over, under the lock. `line`: only the backends of that `supervisord` line (all: `None`).
fn resend_due(
    upstream: &'static UpstreamRuntime,
    line: Option<usize>,
    live_tokens: &[u64],
    answered_now: bool,
) {
    let shared = upstream.shared();
    let now = now_ms();
    for (index, backend) in shared.backends().iter().enumerate() {
        if line.is_some_and(|line| upstream.conf.backends[index].line != line) {
            continue;
        }
        let reachable = !upstream.supervisord_unreachable(index);
        let status = backend.status();
        if !matches!(
            status,
            BackendStatus::StartingUp | BackendStatus::ShuttingDown
        ) {
            continue;
        }
        let owner = backend.command_owner();
        let orphaned = command_orphaned(owner, live_tokens.iter().copied());
        let parked = backend.command_parked();
        let due = reachable && (answered_now || backend.command_older_than(now, REACH_ATTEMPT_MS));
        let Some(command) = command_to_resend(status, orphaned, parked, due) else {
            continue;
        };
        let step = upstream.lock().step(
            index,
            &Event::TakenOver {
                status,
                owner,
                parked,
            },
            now,
        );
        if !step.has(&Action::CarryOut(command)) {
            // Another worker took it over meanwhile.
            continue;
        }
        ngx::ngx_log_error!(
            NGX_LOG_NOTICE,
            cycle_log(),
            "supervisord: upstream \"{}\" backend {} ({}): sending its {} again ({})",
            upstream.conf.name,
            index,
            upstream.conf.backends[index].name,
            command,
            if orphaned {
                "the worker process that sent it is gone"
            } else {
                "it waited for supervisord"
            }
        );
        commander::execute(upstream, index, command);
    }
}
