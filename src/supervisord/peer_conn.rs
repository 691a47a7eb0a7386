//! The module's one way to open an outbound connection: to supervisord (`client`), and to a
//! backend's address to see whether it accepts (`readiness`, `connect_check`). It wraps
//! nginx's peer connection so that every caller connects alike: nginx's own lines for a
//! refused or missing peer go to the quiet log (the callers log one line per outcome, not per
//! attempt), its send/recv lines at `info`.

use std::ffi::c_void;
use std::ptr;

use nginx_sys::{
    getsockopt, ngx_close_connection, ngx_connection_log_error_e_NGX_ERROR_INFO, ngx_connection_t,
    ngx_event_connect_peer, ngx_event_get_peer, ngx_event_handler_pt, ngx_peer_connection_t,
    ngx_socket_errno, ngx_str_t, sockaddr, socklen_t, NGX_AGAIN, NGX_OK, SOL_SOCKET, SO_ERROR,
};

use crate::runtime::worker::quiet_log;

/// How a connect began.
pub enum Connect {
    /// Connected at once (loopback, a UNIX socket).
    Done(*mut ngx_connection_t),
    /// Under way: the connection's read and write events call the handler given.
    Pending(*mut ngx_connection_t),
    /// Failed at once, with the system's error.
    Failed(std::io::Error),
}

/// One outbound connection and what nginx needs to make it. Lives where its events can find
/// it (a boxed owner) until closed.
pub struct PeerConn {
    peer: ngx_peer_connection_t,
}

impl PeerConn {
    pub fn new() -> Self {
        Self {
            // SAFETY: zeroed is nginx's "unset" peer connection.
            peer: unsafe { std::mem::zeroed() },
        }
    }

    /// Connects to `address` (`length` bytes of sockaddr), named `name` in nginx's lines;
    /// a pending connection's events carry `data` and call `handler`.
    ///
    /// # Safety
    /// `address` and `name` must outlive the connection; `data` must stay valid for
    /// `handler` as long as the connection is open; any previous connection is closed.
    pub unsafe fn connect(
        &mut self,
        address: *const sockaddr,
        length: socklen_t,
        name: *const ngx_str_t,
        data: *mut c_void,
        handler: ngx_event_handler_pt,
    ) -> Connect {
        self.close();
        // SAFETY: zeroed is nginx's "unset" peer connection.
        self.peer = unsafe { std::mem::zeroed() };
        self.peer.sockaddr = address as *mut _;
        self.peer.socklen = length;
        self.peer.name = name as *mut _;
        self.peer.get = Some(ngx_event_get_peer);
        self.peer.tries = 1;
        self.peer.log = quiet_log();
        self.peer
            .set_log_error(ngx_connection_log_error_e_NGX_ERROR_INFO);
        // SAFETY: the peer describes a live address (caller's contract).
        let rc = unsafe { ngx_event_connect_peer(&mut self.peer) };
        let connection = self.peer.connection;
        if rc == NGX_OK as isize {
            return Connect::Done(connection);
        }
        if rc == NGX_AGAIN as isize {
            // SAFETY: nginx returned a live pending connection; its events report to `data`.
            unsafe {
                (*connection).data = data;
                (*(*connection).write).handler = handler;
                (*(*connection).read).handler = handler;
            }
            return Connect::Pending(connection);
        }
        self.peer.connection = ptr::null_mut();
        Connect::Failed(std::io::Error::from_raw_os_error(ngx_socket_errno()))
    }

    /// The open connection, if any.
    pub fn connection(&self) -> *mut ngx_connection_t {
        self.peer.connection
    }

    /// Takes over a connection opened before (a kept-alive one); closing is then ours.
    pub fn adopt(&mut self, connection: *mut ngx_connection_t) {
        self.peer.connection = connection;
    }

    /// Lets go of the connection without closing it (kept alive by its owner).
    pub fn release(&mut self) -> *mut ngx_connection_t {
        std::mem::replace(&mut self.peer.connection, ptr::null_mut())
    }

    pub fn close(&mut self) {
        let connection = self.release();
        if !connection.is_null() {
            // SAFETY: an open connection of ours, closed once.
            unsafe { ngx_close_connection(connection) };
        }
    }
}

/// Whether a pending connect that signalled an event succeeded.
///
/// # Safety
/// `connection` must be live.
pub unsafe fn connected(connection: *mut ngx_connection_t) -> bool {
    let mut error: i32 = 0;
    let mut length = std::mem::size_of::<i32>() as socklen_t;
    // SAFETY: a live connection's descriptor; the buffers are ours.
    let rc = unsafe {
        getsockopt(
            (*connection).fd,
            SOL_SOCKET as i32,
            SO_ERROR as i32,
            &mut error as *mut i32 as *mut c_void,
            &mut length,
        )
    };
    rc == 0 && error == 0
}
