//! Readiness: while a backend is STARTING_UP, the worker that started it tries TCP (or UNIX
//! socket) connections to every address of the backend in rounds, every millisecond at first
//! (`core::start::probe_schedule`); the first accepted one makes it UP and wakes the requests this
//! worker holds at once. Held requests so resume the moment the program listens, on whichever
//! of its addresses, not after supervisord's `startsecs`. Attempts are not logged (nginx's own
//! `connect() failed` lines go to the worker's quiet log), only the outcome.
//! The start phase ends `supervisord_timeout` after the start: a program that accepted no
//! connection by then failed its start, whatever supervisord says of it (RUNNING only means it
//! lived `startsecs`), and the backend waits out a start backoff; the program is left running
//! (it may just be slow), and the next start after the backoff finds it started and probes it
//! again.
//!
//! Meanwhile the same worker watches the program's state (`getProcessInfo`, see
//! `core::start::start_watch`): a program that exits at start-up (EXITED, BACKOFF, FATAL) fails the
//! start at once, with supervisord's reason in the log; requests held for it get 502.

use std::cell::Cell;
use std::ffi::c_void;
use std::rc::Rc;

use nginx_sys::{
    ngx_add_timer, ngx_connection_t, ngx_del_timer, ngx_event_t, ngx_exiting, ngx_quit, ngx_str_t,
    ngx_terminate, socklen_t, NGX_LOG_NOTICE,
};

use super::client;
use super::peer_conn::{connected, Connect, PeerConn};
use crate::core::backend_status::BackendStatus;
use crate::core::machine::{Event, Tell};
use crate::core::protocol::process_state::{parse_process_info, ProcessState};
use crate::core::protocol::xmlrpc::Param;
use crate::core::start::probe_schedule::delay_after_round_ms;
use crate::core::start::start_backoff::StartBackoff;
use crate::core::start::start_handshake::{at_probe_deadline, AtProbeDeadline, StartHandshake};
use crate::core::start::start_watch::{exited_at_start_up, WATCH_FIRST_MS, WATCH_INTERVAL_MS};
use crate::runtime::UpstreamRuntime;
use crate::util::log::cycle_log;
use crate::util::time::now_ms;

/// The handshake of one start, shared by the commander and the readiness probe.
pub type SharedHandshake = Rc<Cell<StartHandshake>>;

/// A connect that neither succeeds nor fails within this is abandoned and tried again.
const CONNECT_WAIT_MS: usize = 200;

/// The program's state as the watch last read it, shared by the watch and the probe.
type LastState = Rc<Cell<Option<ProcessState>>>;

/// One start being carried out (or watched) by this worker.
#[derive(Clone)]
struct StartRef {
    upstream: &'static UpstreamRuntime,
    index: usize,
    /// The backend's change count when the start began: a later change settled it.
    changes_at_start: u64,
    /// When the start began (nginx's monotonic msec), for the cold-start time.
    began_ms: u64,
    last_state: LastState,
    /// What the commander and the probe tell each other of this start. While supervisord
    /// has yet to answer nginx's `startProcess` (`reply_due`), its answer (a fault when the
    /// program dies within `startsecs`) settles a failure, with its reason.
    handshake: SharedHandshake,
    /// nginx sent this start (it was not seen made outside nginx): it has a cold-start time.
    sent_by_nginx: bool,
}

impl StartRef {
    fn still_starting(&self) -> bool {
        let backend = self.upstream.shared().backend(self.index);
        backend.status() == BackendStatus::StartingUp && backend.changes() == self.changes_at_start
    }

    /// The watch settles an exit itself only when no answer to a `startProcess` is due: the
    /// start was confirmed (`startsecs=0`: the program exits after supervisord said RUNNING)
    /// or made by hand.
    fn watch_settles_exits(&self) -> bool {
        !self.handshake.get().reply_due
    }
}

struct Probe {
    start: StartRef,
    upstream: &'static UpstreamRuntime,
    index: usize,
    give_up_at: u64,
    peer: PeerConn,
    name: ngx_str_t,
    timer: ngx_event_t,
    attempts: u64,
    /// The round under way (one connect per address), counted from 1.
    round: u64,
    /// The address of the backend this round tries now.
    address: usize,
}

/// Starts probing backend `index`, which has just been moved to STARTING_UP by this worker,
/// and watching its program's state.
pub fn start(upstream: &'static UpstreamRuntime, index: usize, handshake: SharedHandshake) {
    begin(upstream, index, handshake, true);
}

fn begin(
    upstream: &'static UpstreamRuntime,
    index: usize,
    handshake: SharedHandshake,
    reply_due: bool,
) {
    let mut state = handshake.get();
    state.reply_due = reply_due;
    handshake.set(state);
    let start = StartRef {
        upstream,
        index,
        changes_at_start: upstream.shared().backend(index).changes(),
        began_ms: now_ms(),
        last_state: LastState::default(),
        handshake: handshake.clone(),
        sent_by_nginx: reply_due,
    };
    watch(start.clone());
    let conf = upstream.conf;
    if conf.backends[index].sockaddrs.is_empty() {
        return;
    }
    let name = &conf.backends[index].name;
    let mut state = handshake.get();
    state.probing = true;
    handshake.set(state);
    let probe = Box::into_raw(Box::new(Probe {
        start,
        upstream,
        index,
        give_up_at: now_ms() + conf.timeout_ms(),
        peer: PeerConn::new(),
        name: ngx_str_t {
            len: name.len(),
            data: name.as_ptr() as *mut u8,
        },
        // SAFETY: zeroed is a valid unset event (no handler, no timer), filled in below.
        timer: unsafe { std::mem::zeroed() },
        attempts: 0,
        round: 1,
        address: 0,
    }));
    // SAFETY: the probe is owned by the event loop until `finish`.
    unsafe {
        let p = &mut *probe;
        p.timer.handler = Some(on_timer);
        p.timer.data = probe as *mut c_void;
        p.timer.log = cycle_log();
        try_connect(probe);
    }
}

/// Probes and watches a program that reconciliation found STARTING outside nginx (a hand
/// `start` or `restart`), moved to STARTING_UP by this worker: requests wait for it and resume
/// the moment it listens. Its failure ends their wait and backs off as any failed start.
pub fn watch_hand_start(upstream: &'static UpstreamRuntime, index: usize) {
    begin(upstream, index, SharedHandshake::default(), false);
}

fn still_starting(probe: &Probe) -> bool {
    probe.start.still_starting()
}

/// # Safety
/// `probe` is live (leaked by `begin`, not finished yet).
unsafe fn try_connect(probe: *mut Probe) {
    // SAFETY: `probe` is live (this fn's contract): leaked by `begin`, freed only by
    // `finish`; only this worker's thread touches it.
    let p = unsafe { &mut *probe };
    if !still_starting(p) {
        // SAFETY: ends the probe.
        unsafe { finish(probe) };
        return;
    }
    let past_deadline = now_ms() >= p.give_up_at;
    let at_deadline = at_probe_deadline(p.start.handshake.get());
    if past_deadline && at_deadline == AtProbeDeadline::Leave {
        // SAFETY: ends the probe; the start is sent again once supervisord answers.
        unsafe { finish(probe) };
        return;
    }
    if past_deadline && at_deadline == AtProbeDeadline::Fail {
        // The start phase is over without an accepted connection: whatever supervisord says
        // (RUNNING only means the program lived `startsecs`), the start failed.
        let conf = p.upstream.conf;
        let state = p.start.last_state.get();
        let what = format!(
            "accepted no connection within {} ms of its start (supervisord says {})",
            conf.timeout_ms(),
            state.map_or("nothing yet", ProcessState::name)
        );
        fail_start(&p.start, &what, None);
        // SAFETY: ends the probe.
        unsafe { finish(probe) };
        return;
    }
    let addresses = &p.upstream.conf.backends[p.index].sockaddrs;
    while p.address < addresses.len() {
        let address = &addresses[p.address];
        p.attempts += 1;
        ngx::ngx_log_debug!(
            cycle_log(),
            "supervisord: upstream \"{}\" backend {}: readiness probe attempt {} (round {}, address {})",
            p.upstream.name(),
            p.index,
            p.attempts,
            p.round,
            p.address
        );
        // Refusals are expected while the program starts: nginx's own line for each goes
        // nowhere, the probe logs its outcome.
        // SAFETY: the address and name live in the configuration and the probe, which outlive
        // the connection.
        let connect = unsafe {
            p.peer.connect(
                address.as_ptr() as *const _,
                address.len() as socklen_t,
                &p.name,
                probe as *mut c_void,
                Some(on_connect_event),
            )
        };
        match connect {
            Connect::Done(_) => {
                p.peer.close();
                // SAFETY: connected at once (loopback): the backend listens.
                unsafe { ready(probe, "accepts connections") };
                return;
            }
            Connect::Pending(_) => {
                // SAFETY: the probe's own timer.
                unsafe { ngx_add_timer(&mut p.timer, CONNECT_WAIT_MS) };
                return;
            }
            Connect::Failed(_) => {}
        }
        // Refused (not listening yet) or another error: the next address.
        p.address += 1;
    }
    // SAFETY: `p` is the live probe (not finished above), `p.timer` its own event.
    unsafe { end_round(p) };
}

/// No address accepted in this round: the next one starts after a pause.
///
/// # Safety
/// `p` is a live probe; its timer event is its own.
unsafe fn end_round(p: &mut Probe) {
    let delay = delay_after_round_ms(p.round);
    p.round += 1;
    p.address = 0;
    // SAFETY: re-arming the probe's own timer.
    unsafe { ngx_add_timer(&mut p.timer, delay) };
}

/// The connect to the current address failed: on to the next one, or the round ends.
///
/// # Safety
/// `probe` is live and has no connection open.
unsafe fn next_address(probe: *mut Probe) {
    // SAFETY: `probe` is live (this fn's contract): leaked by `begin`, freed only by `finish`.
    let p = unsafe { &mut *probe };
    p.address += 1;
    if p.address < p.upstream.conf.backends[p.index].sockaddrs.len() {
        // SAFETY: `probe` is live (this fn's contract); `p` is not used after.
        unsafe { try_connect(probe) };
    } else {
        // SAFETY: `p` is the live probe (this fn's contract), `p.timer` its own event.
        unsafe { end_round(p) };
    }
}

unsafe extern "C" fn on_timer(event: *mut ngx_event_t) {
    // SAFETY: the timer's data is its probe.
    let probe = unsafe { (*event).data as *mut Probe };
    // SAFETY: the probe is live: `finish` deletes its timer before freeing it; next_address
    // gets it with its connection closed, as it requires.
    unsafe {
        if (*probe).peer.connection().is_null() {
            // The pause between two rounds is over.
            try_connect(probe);
        } else {
            // A pending connect that took too long is abandoned.
            (*probe).peer.close();
            next_address(probe);
        }
    }
}

unsafe extern "C" fn on_connect_event(event: *mut ngx_event_t) {
    // SAFETY: the event's connection carries its probe.
    unsafe {
        let connection = (*event).data as *mut ngx_connection_t;
        let probe = (*connection).data as *mut Probe;
        let p = &mut *probe;
        if p.timer.timer_set() != 0 {
            ngx_del_timer(&mut p.timer);
        }
        let accepted = connected(connection);
        p.peer.close();
        if accepted {
            ready(probe, "accepts connections");
        } else {
            next_address(probe);
        }
    }
}

/// The backend accepts connections: the start phase ends UP.
///
/// # Safety
/// `probe` is live; it is finished here and must not be used after.
unsafe fn ready(probe: *mut Probe, why: &str) {
    // SAFETY: `probe` is live (this fn's contract): leaked by `begin`, freed only by `finish`.
    let p = unsafe { &mut *probe };
    let sent_ms = p.start.sent_by_nginx.then_some(p.start.began_ms);
    let step = p
        .upstream
        .lock()
        .step(p.index, &Event::Accepted { sent_ms }, now_ms());
    for action in &step.actions {
        p.upstream.carry_out_local(p.index, action);
    }
    if let Some(Tell::Moved { from, to }) = step.tell() {
        let conf = p.upstream.conf;
        ngx::ngx_log_error!(
            NGX_LOG_NOTICE,
            cycle_log(),
            "supervisord: upstream \"{}\" backend {} ({}, program \"{}\"): {} -> {} ({})",
            conf.name,
            p.index,
            conf.backends[p.index].name,
            conf.backends[p.index].program,
            from,
            to,
            why
        );
    }
    // SAFETY: ends the probe.
    unsafe { finish(probe) };
}

/// # Safety
/// `probe` was leaked by `begin` and is finished exactly once: nothing (its connection,
/// its timer) refers to it afterwards.
unsafe fn finish(probe: *mut Probe) {
    // SAFETY: the probe was leaked by `begin`; this takes it back once.
    let mut p = unsafe { Box::from_raw(probe) };
    if p.timer.timer_set() != 0 {
        // SAFETY: the probe's own timer.
        unsafe { ngx_del_timer(&mut p.timer) };
    }
    p.peer.close();
}

/// Reads the program's state every `WATCH_INTERVAL_MS` while its start is under way.
struct Watch {
    start: StartRef,
    timer: ngx_event_t,
    /// A `getProcessInfo` call is out; the watch outlives it.
    calling: Cell<bool>,
}

fn watch(start: StartRef) {
    if !start.upstream.conf.supervised() {
        return;
    }
    let watch = Box::into_raw(Box::new(Watch {
        start,
        // SAFETY: zeroed is a valid unset event.
        timer: unsafe { std::mem::zeroed() },
        calling: Cell::new(false),
    }));
    // SAFETY: the watch is owned by its timer until `on_watch_timer` frees it.
    unsafe {
        let w = &mut *watch;
        w.timer.handler = Some(on_watch_timer);
        w.timer.data = watch as *mut c_void;
        w.timer.log = cycle_log();
        // A gracefully exiting worker does not wait for it.
        w.timer.set_cancelable(1);
        ngx_add_timer(&mut w.timer, WATCH_FIRST_MS as _);
    }
}

unsafe extern "C" fn on_watch_timer(event: *mut ngx_event_t) {
    // SAFETY: the timer's data is its watch, alive until freed here.
    let watch = unsafe { (*event).data as *mut Watch };
    // SAFETY: the watch is live: only this handler frees it, and then leaves its timer unset.
    let w = unsafe { &mut *watch };
    // SAFETY: plain reads of nginx's process flags.
    let exiting = unsafe { ngx_exiting != 0 || ngx_quit != 0 || ngx_terminate != 0 };
    if (exiting || !w.start.still_starting()) && !w.calling.get() {
        // SAFETY: leaked by `watch`; its timer has fired and no call refers to it.
        drop(unsafe { Box::from_raw(watch) });
        return;
    }
    if !exiting && !w.calling.get() && w.start.still_starting() {
        w.calling.set(true);
        let program = w.start.upstream.conf.backends[w.start.index]
            .program
            .clone();
        let start = w.start.clone();
        let calling = watch;
        client::call(
            start.upstream.host_of(start.index),
            "supervisor.getProcessInfo",
            &[Param::Str(&program)],
            Box::new(move |result| {
                // SAFETY: the watch is freed only by its timer, never while `calling` is set.
                unsafe { (*calling).calling.set(false) };
                let Ok(detail) = result
                    .map_err(drop)
                    .and_then(|v| parse_process_info(&v).map_err(drop))
                else {
                    return;
                };
                start.last_state.set(detail.state);
                if detail.state.is_some_and(exited_at_start_up)
                    && start.still_starting()
                    && start.watch_settles_exits()
                {
                    let what = exit_text(&detail.reason());
                    fail_start(&start, &what, None);
                }
            }),
        );
    }
    // SAFETY: re-arming the watch's own timer.
    unsafe { ngx_add_timer(&mut w.timer, WATCH_INTERVAL_MS as _) };
}

/// The start failed (`what` happened, in the words of the log line): it is over (DOWN),
/// requests waiting for it get 502, and the backend waits out its start backoff whoever asked
/// for the start. One line for the step.
fn fail_start(start: &StartRef, what: &str, error: Option<&str>) {
    let upstream = start.upstream;
    let step = upstream.lock().step(
        start.index,
        &Event::StartFailed {
            start: start.changes_at_start,
        },
        now_ms(),
    );
    for action in &step.actions {
        upstream.carry_out_local(start.index, action);
    }
    if let Some(Tell::FailedStart { backoff }) = step.tell() {
        log_failed_start(upstream, start.index, what, error, *backoff);
    }
}

/// How a program that exits at start-up reads in a failed start's line; `reason` is
/// supervisord's account (`core::protocol::process_state::ProcessDetail::reason`).
pub fn exit_text(reason: &str) -> String {
    format!("program exits at start-up (supervisord says {reason})")
}

/// The one line of a failed start: what happened, the start call's `error` when it had one,
/// when the next on-demand start may come.
pub fn log_failed_start(
    upstream: &UpstreamRuntime,
    index: usize,
    what: &str,
    error: Option<&str>,
    backoff: StartBackoff,
) {
    let conf = upstream.conf;
    ngx::ngx_log_error!(
        nginx_sys::NGX_LOG_ERR,
        cycle_log(),
        "supervisord: upstream \"{}\" backend {} ({}, program \"{}\"): {}; start failed{}; status back to down{}",
        conf.name,
        index,
        conf.backends[index].name,
        conf.backends[index].program,
        what,
        error.map(|error| format!(": {error}")).unwrap_or_default(),
        next_start_note(backoff)
    );
}

/// `; next start on demand in N s`, for the log line of a failed start.
pub fn next_start_note(backoff: StartBackoff) -> String {
    format!(
        "; next start on demand in {} s",
        backoff.delay_ms().div_ceil(1000)
    )
}
