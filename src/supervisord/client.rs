//! The supervisord client: one XML-RPC exchange at a time per connection, driven by nginx's
//! event loop in the worker (no threads). TCP or UNIX socket, Basic auth, HTTP/1.1 keep-alive
//! (one idle connection kept per supervisord and worker), one deadline per exchange, a size cap on
//! replies (`supervisord_max_reply_size`, a reply over it reported once), `text/xml` checked. Any error or a 401 closes the connection; the next exchange
//! connects again. An exchange that finds its kept connection closed by supervisord before
//! any reply retries once on a fresh connection.

use std::ffi::c_void;
use std::ptr;

use nginx_sys::{
    ngx_add_timer, ngx_close_connection, ngx_connection_t, ngx_del_timer, ngx_event_t, ngx_exiting,
    ngx_handle_read_event, ngx_handle_write_event, ngx_socket_errno, NGX_AGAIN, NGX_LOG_ERR,
    NGX_LOG_NOTICE, NGX_OK,
};

use super::peer_conn::{Connect, PeerConn};
use crate::core::protocol::call_outcome::{interpret_response, CallError};
use crate::core::protocol::http_exchange::{encode_request, parse_response, HttpError, Progress};
use crate::core::protocol::reply_limit::{method_mark, ReplySize};
use crate::core::protocol::xmlrpc::{encode_call, Param, Value};
use crate::core::start::reachability::{
    reach_after_call, reach_change, while_unreachable, CallStage, Reach, ReachChange,
};
use crate::runtime::host::Host;
use crate::runtime::line_runtime::LineRuntime;
use crate::util::log::cycle_log;

pub type Completion = Box<dyn FnOnce(Result<Value, CallError>)>;

/// Runs in the worker that sees supervisord answer again after an outage, once per return.
pub type ReachableAgain = fn(Host);

thread_local! {
    static ON_REACHABLE_AGAIN: std::cell::Cell<Option<ReachableAgain>> =
        const { std::cell::Cell::new(None) };
}

/// Sets what runs when supervisord answers again (the watchdog sends parked commands and
/// reads supervisord's view at once).
pub fn on_reachable_again(hook: ReachableAgain) {
    ON_REACHABLE_AGAIN.with(|cell| cell.set(Some(hook)));
}

struct Exchange {
    host: Host,
    method: &'static str,
    request: Vec<u8>,
    sent: usize,
    received: Vec<u8>,
    peer: PeerConn,
    deadline: ngx_event_t,
    done: Option<Completion>,
    /// The connection came from the idle slot (it may have been closed by supervisord).
    reused: bool,
    /// The shared reachability's flip count when the call began.
    reach_epoch: u64,
}

/// Calls `method` on the supervisord of `host`; `done` runs exactly once, later or at once.
pub fn call(host: Host, method: &'static str, params: &[Param<'_>], done: Completion) {
    // The host's settings are its lead upstream's (the others' agree, `conf::assign_hosts`).
    let conf = host.upstream.conf;
    let line = host.conf();
    let endpoint = &line.resolved;
    ngx::ngx_log_debug!(
        cycle_log(),
        "supervisord: upstream \"{}\": calling {} on {}",
        conf.name,
        method,
        endpoint.display
    );
    let body = encode_call(method, params);
    let request = encode_request(&endpoint.host_header, line.credentials.as_ref(), &body);
    let exchange = Box::new(Exchange {
        host,
        method,
        request,
        sent: 0,
        received: Vec::new(),
        peer: PeerConn::new(),
        // SAFETY: zeroed is the "unset" value of this plain C struct.
        deadline: unsafe { std::mem::zeroed() },
        done: Some(done),
        reused: false,
        reach_epoch: host.shared().reach_epoch(),
    });
    let exchange = Box::into_raw(exchange);
    // SAFETY: the exchange is owned by the event loop from here until `finish` frees it.
    unsafe {
        let deadline = &mut (*exchange).deadline;
        deadline.handler = Some(on_deadline);
        deadline.data = exchange as *mut c_void;
        deadline.log = cycle_log();
        ngx_add_timer(deadline, conf.timeout_ms() as _);
        start(exchange);
    }
}

/// Sends the call: on the host's idle connection if it has one, else on a new one.
///
/// # Safety
/// `exchange` is live (leaked by `call`, not finished yet).
unsafe fn start(exchange: *mut Exchange) {
    // SAFETY: the caller passes a live exchange.
    let ex = unsafe { &mut *exchange };
    let idle = ex.host.runtime().idle_connection.replace(ptr::null_mut());
    if !idle.is_null() {
        ex.reused = true;
        // SAFETY: a parked connection is open and owned by the idle slot we just emptied.
        unsafe {
            attach(exchange, idle);
            on_write((*idle).write);
        }
        return;
    }
    ex.reused = false;
    let endpoint = &ex.host.conf().resolved;
    // nginx's own connect line (`[crit]` for a missing socket, `[error]` when refused) would
    // come back with every call of an outage; the module logs one line per outage instead.
    // SAFETY: the address is the cycle's; the exchange outlives its connection.
    let connect = unsafe {
        ex.peer.connect(
            endpoint.sockaddr,
            endpoint.socklen,
            &endpoint.peer_name,
            exchange as *mut c_void,
            Some(on_write),
        )
    };
    let (connection, at_once) = match connect {
        Connect::Done(connection) => (connection, true),
        Connect::Pending(connection) => (connection, false),
        Connect::Failed(error) => {
            let failure = if error.kind() == std::io::ErrorKind::PermissionDenied {
                CallError::NoAccess(endpoint.display.clone())
            } else {
                CallError::Transport(format!(
                    "connect to {} failed: {}",
                    endpoint.display,
                    error.to_string().to_lowercase()
                ))
            };
            // SAFETY: the exchange is live; no connection is attached.
            unsafe { finish(exchange, Err(failure)) };
            return;
        }
    };
    // SAFETY: the connection is this exchange's.
    unsafe {
        attach(exchange, connection);
        if at_once {
            on_write((*connection).write);
        }
    }
}

/// # Safety
/// `exchange` is live and `connection` an open connection to its supervisord that nothing
/// else uses: from now on its events call back into this exchange.
unsafe fn attach(exchange: *mut Exchange, connection: *mut ngx_connection_t) {
    // SAFETY: both are live; the connection's events call back into this exchange.
    unsafe {
        (*exchange).peer.adopt(connection);
        (*connection).data = exchange as *mut c_void;
        (*connection).set_idle(0);
        let log = cycle_log();
        (*connection).log = log;
        (*(*connection).read).log = log;
        (*(*connection).write).log = log;
        (*(*connection).read).handler = Some(on_read);
        (*(*connection).write).handler = Some(on_write);
    }
}

fn os_error_text() -> String {
    std::io::Error::from_raw_os_error(ngx_socket_errno())
        .to_string()
        .to_lowercase()
}

unsafe extern "C" fn on_write(wev: *mut ngx_event_t) {
    // SAFETY: write events of an attached connection carry it in `data`, and it carries us.
    let (connection, exchange) = unsafe {
        let connection = (*wev).data as *mut ngx_connection_t;
        (connection, (*connection).data as *mut Exchange)
    };
    // SAFETY: the connection's handlers are `attach`'s, so its exchange is live: `finish_keeping`
    // closes the connection or parks it (other data, handlers) before it frees the exchange.
    let ex = unsafe { &mut *exchange };
    // SAFETY: reading a field of the live connection.
    let Some(send) = (unsafe { (*connection).send }) else {
        // SAFETY: `exchange` is live (its connection's handler is ours); not used after
        // fail_transport frees it.
        unsafe { fail_transport(exchange, "connection cannot send".into()) };
        return;
    };
    while ex.sent < ex.request.len() {
        let rest = &ex.request[ex.sent..];
        // SAFETY: sending from our own buffer on our connection.
        let n = unsafe { send(connection, rest.as_ptr() as *mut u8, rest.len()) };
        if n == NGX_AGAIN as isize {
            // SAFETY: wev belongs to the live connection.
            if unsafe { ngx_handle_write_event(wev, 0) } != NGX_OK as isize {
                // SAFETY: `exchange` is live (its connection's handler is ours); not used after
                // fail_transport frees it.
                unsafe { fail_transport(exchange, "cannot wait for the socket".into()) };
            }
            return;
        }
        if n < 0 {
            let cause = os_error_text();
            // SAFETY: `exchange` is live (its connection's handler is ours); not used after
            // fail_or_retry, which finishes it or sends it again.
            unsafe { fail_or_retry(exchange, format!("send failed: {cause}")) };
            return;
        }
        ex.sent += n as usize;
    }
    // SAFETY: the request is out; from now on only reading matters.
    unsafe {
        (*(*connection).write).handler = Some(ignore_event);
        let rev = (*connection).read;
        if (*rev).ready() != 0 {
            on_read(rev);
        } else if ngx_handle_read_event(rev, 0) != NGX_OK as isize {
            fail_transport(exchange, "cannot wait for the socket".into());
        }
    }
}

unsafe extern "C" fn ignore_event(_event: *mut ngx_event_t) {}

unsafe extern "C" fn on_read(rev: *mut ngx_event_t) {
    // SAFETY: read events of an attached connection carry it in `data`, and it carries us.
    let (connection, exchange) = unsafe {
        let connection = (*rev).data as *mut ngx_connection_t;
        (connection, (*connection).data as *mut Exchange)
    };
    // SAFETY: the connection's handlers are `attach`'s, so its exchange is live: `finish_keeping`
    // closes the connection or parks it (other data, handlers) before it frees the exchange.
    let ex = unsafe { &mut *exchange };
    if ex.sent < ex.request.len() {
        // A read event before the request is out: the peer spoke first or closed.
        // SAFETY: reading a flag of the live event.
        if unsafe { (*rev).eof() } == 0 {
            return;
        }
    }
    // SAFETY: reading a field of the live connection.
    let Some(recv) = (unsafe { (*connection).recv }) else {
        // SAFETY: `exchange` is live (its connection's handler is ours); not used after
        // fail_transport frees it.
        unsafe { fail_transport(exchange, "connection cannot receive".into()) };
        return;
    };
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // SAFETY: receiving into a local buffer on our connection.
        let n = unsafe { recv(connection, chunk.as_mut_ptr(), chunk.len()) };
        if n == NGX_AGAIN as isize {
            // SAFETY: rev belongs to the live connection.
            if unsafe { ngx_handle_read_event(rev, 0) } != NGX_OK as isize {
                // SAFETY: `exchange` is live (its connection's handler is ours); not used after
                // fail_transport frees it.
                unsafe { fail_transport(exchange, "cannot wait for the socket".into()) };
            }
            return;
        }
        if n == 0 {
            // SAFETY: `exchange` is live (its connection's handler is ours); not used after
            // fail_or_retry, which finishes it or sends it again.
            unsafe { fail_or_retry(exchange, "connection closed by supervisord".into()) };
            return;
        }
        if n < 0 {
            let cause = os_error_text();
            // SAFETY: `exchange` is live (its connection's handler is ours); not used after
            // fail_or_retry, which finishes it or sends it again.
            unsafe { fail_or_retry(exchange, format!("receive failed: {cause}")) };
            return;
        }
        ex.received.extend_from_slice(&chunk[..n as usize]);
        match parse_response(&ex.received, ex.host.upstream.conf.max_reply_size()) {
            Ok(Progress::Incomplete) => continue,
            Ok(Progress::Complete(response)) => {
                note_reply_size(ex.host, ex.method, ReplySize::Fits, 0);
                let result = interpret_response(&response);
                // Only a peer that speaks XML-RPC gets another request on this connection.
                let keep = response.reusable
                    && response.status == 200
                    && !matches!(result, Err(CallError::NotXml | CallError::Malformed(_)));
                // SAFETY: `exchange` is live and finished only here; neither it nor `ex` is
                // used after.
                unsafe { finish_keeping(exchange, result, keep) };
                return;
            }
            Err(error) => {
                let error = match error {
                    HttpError::ReplyTooLarge { size, limit } => {
                        note_reply_size(ex.host, ex.method, ReplySize::OverLimit, size);
                        CallError::ReplyTooLarge { size, limit }
                    }
                    HttpError::TooLarge(_) => CallError::Malformed(error.to_string()),
                    HttpError::Malformed(_) => CallError::Malformed(error.to_string()),
                };
                // SAFETY: `exchange` is live and finished only here; neither it nor `ex` is
                // used after.
                unsafe { finish(exchange, Err(error)) };
                return;
            }
        }
    }
}

/// Records how a reply of `method` compared with the upstream's size limit; the worker that
/// first sees it over the limit logs it, once for all workers until a reply of that call fits
/// again (`core::protocol::reply_limit`).
fn note_reply_size(host: Host, method: &str, size: ReplySize, bytes: usize) {
    if !host.shared().note_reply_size(method_mark(method), size) {
        return;
    }
    let conf = host.upstream.conf;
    ngx::ngx_log_error!(
        NGX_LOG_ERR,
        cycle_log(),
        "supervisord: {}: the reply of supervisord at {} to {} is {} bytes, more than supervisord_max_reply_size ({} bytes); it is refused until supervisord_max_reply_size is raised (about 1.3 KiB per program)",
        host.members_text(),
        host.display(),
        method,
        bytes,
        conf.max_reply_size()
    );
}

unsafe extern "C" fn on_deadline(event: *mut ngx_event_t) {
    // SAFETY: the deadline's data is its exchange.
    let exchange = unsafe { (*event).data as *mut Exchange };
    // SAFETY: the timer fired, so it is no longer set; finish must not delete it.
    unsafe { finish(exchange, Err(CallError::TimedOut)) };
}

/// A kept connection that supervisord closed in the meantime gets one fresh try.
///
/// # Safety
/// `exchange` is live; it is finished or sent again here.
unsafe fn fail_or_retry(exchange: *mut Exchange, cause: String) {
    // SAFETY: `exchange` is live (this fn's contract: leaked by `call`, not finished).
    let ex = unsafe { &mut *exchange };
    if ex.reused && ex.received.is_empty() {
        // SAFETY: the failed connection is ours to close.
        unsafe { close_connection(ex) };
        ex.sent = 0;
        // SAFETY: the slot was emptied when this exchange took its connection, so this
        // connects anew.
        unsafe { start(exchange) };
        return;
    }
    // SAFETY: `exchange` is still live (this fn's contract), and not used after
    // fail_transport frees it.
    unsafe { fail_transport(exchange, cause) };
}

/// Ends the call with the transport's failure (a cut, if it was sent whole).
///
/// # Safety
/// `exchange` is live; it is finished here and must not be used after.
unsafe fn fail_transport(exchange: *mut Exchange, cause: String) {
    // SAFETY: `exchange` is live (this fn's contract).
    let error = match unsafe { (*exchange).stage() } {
        CallStage::Sent => CallError::Cut(cause),
        _ => CallError::Transport(cause),
    };
    // SAFETY: `exchange` is live and finished here (this fn's contract); not used after.
    unsafe { finish(exchange, Err(error)) };
}

/// # Safety
/// The exchange's connection, if any, is open and owned by it (no other exchange or idle
/// slot refers to it).
unsafe fn close_connection(ex: &mut Exchange) {
    ex.peer.close();
}

/// # Safety
/// As `finish_keeping`.
unsafe fn finish(exchange: *mut Exchange, result: Result<Value, CallError>) {
    // SAFETY: `exchange` was leaked by `call` and is finished once, here (this fn's
    // contract, which is finish_keeping's).
    unsafe { finish_keeping(exchange, result, false) };
}

/// Takes the exchange back, closes or keeps its connection (`keep`: idle for the next call),
/// and hands `result` to its callback.
///
/// # Safety
/// `exchange` was leaked by `call` and is finished exactly once: nothing (its events, its
/// timer) refers to it afterwards.
unsafe fn finish_keeping(exchange: *mut Exchange, result: Result<Value, CallError>, keep: bool) {
    // SAFETY: the exchange was leaked by `call`; this is its single owner taking it back.
    let mut ex = unsafe { Box::from_raw(exchange) };
    if ex.deadline.timer_set() != 0 {
        // SAFETY: our own timer.
        unsafe { ngx_del_timer(&mut ex.deadline) };
    }
    let connection = ex.peer.connection();
    // A worker shutting down closed its idle connections once, when it began to: one parked
    // after that (a call its last drain made) would be left open when it exits.
    // SAFETY: a plain read of nginx's process flag.
    let exiting = unsafe { ngx_exiting != 0 };
    if keep
        && !exiting
        && !connection.is_null()
        && ex.host.runtime().idle_connection.get().is_null()
    {
        // SAFETY: the connection is healthy and now owned by the idle slot.
        unsafe { park(ex.host.runtime(), connection) };
        ex.peer.release();
    } else {
        // SAFETY: ours to close.
        unsafe { close_connection(&mut ex) };
    }
    ngx::ngx_log_debug!(
        cycle_log(),
        "supervisord: supervisord at {}: {} {}",
        ex.host.display(),
        ex.method,
        match &result {
            Ok(_) => "answered".to_string(),
            Err(error) => format!("failed: {error}"),
        }
    );
    let change = note_reachability(ex.host, ex.stage(), ex.reach_epoch, &result);
    if let Some(done) = ex.done.take() {
        done(result);
    }
    if change == ReachChange::BecameReachable {
        if let Some(hook) = ON_REACHABLE_AGAIN.with(std::cell::Cell::get) {
            hook(ex.host);
        }
    }
}

impl Exchange {
    fn stage(&self) -> CallStage {
        if !self.received.is_empty() {
            CallStage::Answered
        } else if self.sent >= self.request.len() {
            CallStage::Sent
        } else {
            CallStage::NotSent
        }
    }
}

/// Records what the call says about supervisord's reachability in the shared zone; the worker
/// that changes it logs the change, once for all workers.
fn note_reachability(
    host: Host,
    stage: CallStage,
    reach_epoch_at_call: u64,
    result: &Result<Value, CallError>,
) -> ReachChange {
    let Some(reach) = reach_after_call(stage, result.is_ok()) else {
        return ReachChange::Unchanged;
    };
    let unreachable = reach == Reach::Unreachable;
    if !unreachable {
        host.shared().note_answered();
    }
    // The common case, nothing new, without the lock.
    if host.shared().supervisord_unreachable() == unreachable {
        return ReachChange::Unchanged;
    }
    let lock = host.lock();
    let shared = host.shared();
    let change = reach_change(
        shared.supervisord_unreachable(),
        Some(reach),
        shared.reach_epoch() != reach_epoch_at_call,
    );
    if change != ReachChange::Unchanged {
        lock.flip_supervisord_unreachable(host.line, unreachable);
    }
    drop(lock);
    let address = host.display();
    let upstreams = host.members_text();
    match change {
        ReachChange::BecameUnreachable => {
            let (cause, consequence) = match result {
                Err(error) => (error.to_string(), while_unreachable(error)),
                Ok(_) => (String::new(), ""),
            };
            ngx::ngx_log_error!(
                NGX_LOG_ERR,
                cycle_log(),
                "supervisord: {}: cannot reach supervisord at {}: {}; {}",
                upstreams,
                address,
                cause,
                consequence
            );
        }
        ReachChange::BecameReachable => {
            ngx::ngx_log_error!(
                NGX_LOG_NOTICE,
                cycle_log(),
                "supervisord: {}: supervisord at {} answers again",
                upstreams,
                address
            );
        }
        ReachChange::Unchanged => {}
    }
    change
}

/// Keeps an open connection idle for the host's next call.
///
/// # Safety
/// `connection` is open, owned by no exchange, and its events are this worker's.
unsafe fn park(line: &'static LineRuntime, connection: *mut ngx_connection_t) {
    // SAFETY: the connection is open; while idle its events only close it.
    unsafe {
        (*connection).data = line as *const LineRuntime as *mut c_void;
        (*connection).set_idle(1);
        (*(*connection).read).handler = Some(on_idle_event);
        (*(*connection).write).handler = Some(ignore_event);
        line.idle_connection.set(connection);
        if ngx_handle_read_event((*connection).read, 0) != NGX_OK as isize {
            drop_idle(line, connection);
        }
    }
}

/// Anything on an idle connection (supervisord closing it, stray bytes, or nginx asking idle
/// connections to close at shutdown) ends it.
unsafe extern "C" fn on_idle_event(rev: *mut ngx_event_t) {
    // SAFETY: an idle connection's data is its line's runtime.
    unsafe {
        let connection = (*rev).data as *mut ngx_connection_t;
        let line = &*((*connection).data as *const LineRuntime);
        if (*connection).close() == 0 && (*rev).ready() == 0 {
            return;
        }
        drop_idle(line, connection);
    }
}

/// # Safety
/// `connection` is open and owned by no exchange (idle, or never handed out); it is closed
/// here and must not be used after.
unsafe fn drop_idle(line: &LineRuntime, connection: *mut ngx_connection_t) {
    if line.idle_connection.get() == connection {
        line.idle_connection.set(ptr::null_mut());
    }
    // SAFETY: the idle slot owned this connection.
    unsafe { ngx_close_connection(connection) };
}
