//! One look at whether a backend accepts connections: a connection to each of its addresses in
//! turn, each given `CONNECT_WAIT_MS`, until one is accepted. Used when requests to the backend
//! failed, to tell a failing request from a failing backend.

use std::ffi::c_void;
use std::ptr;

use nginx_sys::{
    getsockopt, ngx_add_timer, ngx_close_connection, ngx_connection_log_error_e_NGX_ERROR_INFO,
    ngx_connection_t, ngx_del_timer, ngx_event_connect_peer, ngx_event_get_peer, ngx_event_t,
    ngx_peer_connection_t, ngx_str_t, socklen_t, NGX_AGAIN, NGX_OK, SOL_SOCKET, SO_ERROR,
};

use crate::runtime::worker::quiet_log;
use crate::util::log::cycle_log;

/// A connect that neither succeeds nor fails within this counts as refused.
const CONNECT_WAIT_MS: usize = 500;

pub type Verdict = Box<dyn FnOnce(bool)>;

struct Check {
    addresses: Vec<Vec<u8>>,
    next: usize,
    name: ngx_str_t,
    peer: ngx_peer_connection_t,
    timer: ngx_event_t,
    done: Option<Verdict>,
}

/// Tries `addresses` (raw sockaddrs) one after the other; `done(true)` as soon as one accepts,
/// `done(false)` when none did. `done` runs later or at once, exactly once.
pub fn accepts_connections(addresses: Vec<Vec<u8>>, name: &'static str, done: Verdict) {
    let check = Box::into_raw(Box::new(Check {
        addresses,
        next: 0,
        name: ngx_str_t {
            len: name.len(),
            data: name.as_ptr() as *mut u8,
        },
        // SAFETY: zeroed is a valid unset peer connection and event.
        peer: unsafe { std::mem::zeroed() },
        // SAFETY: as above.
        timer: unsafe { std::mem::zeroed() },
        done: Some(done),
    }));
    // SAFETY: the check is owned by the event loop until `finish`.
    unsafe {
        (*check).timer.handler = Some(on_timeout);
        (*check).timer.data = check as *mut c_void;
        (*check).timer.log = cycle_log();
        try_next(check);
    }
}

/// # Safety
/// `check` must be live (not finished).
unsafe fn try_next(check: *mut Check) {
    // SAFETY: caller's contract.
    let c = unsafe { &mut *check };
    loop {
        let Some(address) = c.addresses.get(c.next) else {
            // SAFETY: ends the check.
            unsafe { finish(check, false) };
            return;
        };
        c.next += 1;
        // SAFETY: zeroed is a valid unset peer connection.
        c.peer = unsafe { std::mem::zeroed() };
        c.peer.sockaddr = address.as_ptr() as *mut _;
        c.peer.socklen = address.len() as socklen_t;
        c.peer.name = &mut c.name;
        c.peer.get = Some(ngx_event_get_peer);
        c.peer.tries = 1;
        // A refusal is the answer looked for, not an error: nginx's own line goes nowhere.
        c.peer.log = quiet_log();
        c.peer
            .set_log_error(ngx_connection_log_error_e_NGX_ERROR_INFO);
        // SAFETY: the peer describes one of the backend's addresses.
        let rc = unsafe { ngx_event_connect_peer(&mut c.peer) };
        if rc == NGX_OK as isize {
            // SAFETY: connected at once: the backend accepts.
            unsafe { finish(check, true) };
            return;
        }
        if rc == NGX_AGAIN as isize {
            let connection = c.peer.connection;
            // SAFETY: the pending connection reports to this check.
            unsafe {
                (*connection).data = check as *mut c_void;
                (*(*connection).write).handler = Some(on_connect_event);
                (*(*connection).read).handler = Some(on_connect_event);
                ngx_add_timer(&mut c.timer, CONNECT_WAIT_MS);
            }
            return;
        }
        // Refused at once: the next address.
    }
}

unsafe extern "C" fn on_connect_event(event: *mut ngx_event_t) {
    // SAFETY: the event's connection carries its live check.
    unsafe {
        let connection = (*event).data as *mut ngx_connection_t;
        let check = (*connection).data as *mut Check;
        let mut error: i32 = 0;
        let mut length = std::mem::size_of::<i32>() as socklen_t;
        let rc = getsockopt(
            (*connection).fd,
            SOL_SOCKET as i32,
            SO_ERROR as i32,
            &mut error as *mut i32 as *mut c_void,
            &mut length,
        );
        if rc == 0 && error == 0 {
            finish(check, true);
        } else {
            close(&mut *check);
            if (*check).timer.timer_set() != 0 {
                ngx_del_timer(&mut (*check).timer);
            }
            try_next(check);
        }
    }
}

unsafe extern "C" fn on_timeout(event: *mut ngx_event_t) {
    // SAFETY: the timer's data is its live check; the timer fired, so it is no longer set.
    unsafe {
        let check = (*event).data as *mut Check;
        close(&mut *check);
        try_next(check);
    }
}

/// # Safety
/// `c` must be a live check.
unsafe fn close(c: &mut Check) {
    if !c.peer.connection.is_null() {
        // SAFETY: the check's own connection.
        unsafe { ngx_close_connection(c.peer.connection) };
        c.peer.connection = ptr::null_mut();
    }
}

/// # Safety
/// `check` must be live; it is freed here.
unsafe fn finish(check: *mut Check, accepted: bool) {
    // SAFETY: `accepts_connections` leaked the check; this takes it back once.
    let mut c = unsafe { Box::from_raw(check) };
    if c.timer.timer_set() != 0 {
        // SAFETY: the check's own timer.
        unsafe { ngx_del_timer(&mut c.timer) };
    }
    // SAFETY: the check's own connection, if any.
    unsafe { close(&mut c) };
    if let Some(done) = c.done.take() {
        done(accepted);
    }
}
