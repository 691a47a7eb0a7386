//! One look at whether a backend accepts connections: a connection to each of its addresses in
//! turn, each given `CONNECT_WAIT_MS`, until one is accepted. Used when requests to the backend
//! failed, to tell a failing request from a failing backend.

use std::ffi::c_void;

use nginx_sys::{
    ngx_add_timer, ngx_connection_t, ngx_del_timer, ngx_event_t, ngx_str_t, socklen_t,
};

use super::peer_conn::{connected, Connect, PeerConn};
use crate::util::log::cycle_log;

/// A connect that neither succeeds nor fails within this counts as refused.
const CONNECT_WAIT_MS: usize = 500;

pub type Verdict = Box<dyn FnOnce(bool)>;

struct Check {
    addresses: Vec<Vec<u8>>,
    next: usize,
    name: ngx_str_t,
    peer: PeerConn,
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
        peer: PeerConn::new(),
        // SAFETY: zeroed is a valid unset event.
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
    // SAFETY: `check` is live (this fn's contract): leaked by `accepts_connections`, freed
    // only by `finish`; only this worker's thread touches it.
    let c = unsafe { &mut *check };
    loop {
        let Some(address) = c.addresses.get(c.next) else {
            // SAFETY: ends the check.
            unsafe { finish(check, false) };
            return;
        };
        c.next += 1;
        // A refusal is the answer looked for, not an error: nginx's own line goes nowhere.
        // SAFETY: the address and name live in the check, which outlives its connection.
        let connect = unsafe {
            c.peer.connect(
                address.as_ptr() as *const _,
                address.len() as socklen_t,
                &c.name,
                check as *mut c_void,
                Some(on_connect_event),
            )
        };
        match connect {
            // SAFETY: connected at once: the backend accepts.
            Connect::Done(_) => return unsafe { finish(check, true) },
            Connect::Pending(_) => {
                // SAFETY: the check's own timer.
                unsafe { ngx_add_timer(&mut c.timer, CONNECT_WAIT_MS) };
                return;
            }
            Connect::Failed(_) => {}
        }
        // Refused at once: the next address.
    }
}

unsafe extern "C" fn on_connect_event(event: *mut ngx_event_t) {
    // SAFETY: the event's connection carries its live check.
    unsafe {
        let connection = (*event).data as *mut ngx_connection_t;
        let check = (*connection).data as *mut Check;
        if connected(connection) {
            finish(check, true);
        } else {
            (*check).peer.close();
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
        (*check).peer.close();
        try_next(check);
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
    c.peer.close();
    if let Some(done) = c.done.take() {
        done(accepted);
    }
}
