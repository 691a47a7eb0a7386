//! The balancer wrapper: sits around whatever balancer the upstream uses (round-robin,
//! least_conn, ip_hash, hash, random, or a third-party one) and only lets requests reach
//! backends whose shared status is UP, counting requests in flight per backend.
//!
//! A peer the inner balancer picks but that is not UP is handed back to it as "not used"
//! and the inner balancer is asked again; balancers remember which peers a request has tried,
//! so this ends with an UP peer or with none. With none, the request is held (again) when
//! `core::hold::refused_attempt::no_peer_verdict` says so (every backend went away, as in a
//! supervisord restart); otherwise nginx answers "no live upstreams" (502).

use std::ffi::c_void;
use std::ptr;

use nginx_sys::{
    ngx_close_connection, ngx_destroy_pool, ngx_event_free_peer_pt, ngx_event_get_peer_pt,
    ngx_event_notify_peer_pt, ngx_http_request_t, ngx_http_upstream_rr_peer_t,
    ngx_http_upstream_rr_peers_t, ngx_http_upstream_srv_conf_t, ngx_int_t, ngx_pcalloc,
    ngx_peer_connection_t, ngx_str_t, ngx_uint_t, NGX_BUSY, NGX_DECLINED, NGX_DONE, NGX_ERROR,
    NGX_HTTP_LOCK, NGX_HTTP_PATCH, NGX_HTTP_POST, NGX_HTTP_UPSTREAM_FT_NON_IDEMPOTENT, NGX_OK,
    NGX_PEER_FAILED,
};
use ngx::http::HttpModuleServerConf;

use super::hold::again::{hold_again_if_refused, hold_instead_of_no_peer, AttemptsSoFar};
use super::hold::{peer_init, record};
use crate::conf::UpstreamConf;
use crate::core::backend_status::BackendStatus;
use crate::core::hold::refused_attempt::{forgive_failed_peer, EarlierAttempts};
use crate::module_type::Module;
use crate::runtime::{backend_monitor, worker, UpstreamRuntime};
use crate::supervisord::failure_check;
use crate::util::time::now_ms;

const NO_BACKEND: usize = usize::MAX;

/// Per-request state: the inner balancer's hooks and the backend this request occupies.
struct PeerContext {
    request: *mut ngx_http_request_t,
    upstream: *const UpstreamRuntime,
    inner_data: *mut c_void,
    inner_get: ngx_event_get_peer_pt,
    inner_free: ngx_event_free_peer_pt,
    inner_notify: ngx_event_notify_peer_pt,
    #[cfg(any(ngx_feature = "ssl", ngx_feature = "compat"))]
    inner_set_session: nginx_sys::ngx_event_set_peer_session_pt,
    #[cfg(any(ngx_feature = "ssl", ngx_feature = "compat"))]
    inner_save_session: nginx_sys::ngx_event_save_peer_session_pt,
    current_backend: usize,
    /// What this request's attempts showed so far (none before its first).
    earlier: Option<EarlierAttempts>,
    /// The backend of its last failed attempt (`NO_BACKEND`: none).
    last_failed: usize,
    /// Its last failed attempt was on a cached keepalive connection.
    last_failure_cached: bool,
}

/// Installs the wrapper on an upstream whose balancer nginx has already set up.
pub fn wrap(conf: &mut UpstreamConf, uscf: &mut ngx_http_upstream_srv_conf_t) {
    conf.original_init_peer = uscf.peer.init;
    uscf.peer.init = Some(init_peer);
    conf.uses_nginx_peer_list = has_nginx_peer_list(uscf);
}

/// nginx's own balancers keep a round-robin peer list in peer.data whose name points at the
/// upstream's host. Checked once, at configuration time: `zone` later moves the list into
/// shared memory (with a copy of the name), and it is still the same kind of list.
fn has_nginx_peer_list(uscf: &mut ngx_http_upstream_srv_conf_t) -> bool {
    let host: *mut ngx_str_t = &mut uscf.host;
    let peers = uscf.peer.data as *const ngx_http_upstream_rr_peers_t;
    // SAFETY: peer.data, when set, points at the balancer's data; reading the pointer-sized
    // name field is only trusted when it points at this very upstream's host.
    !peers.is_null() && unsafe { (*peers).name } == host
}

/// nginx's own balancers (round-robin and those built on its peer list: least_conn, ip_hash,
/// hash, random) skip peers flagged `down`. Keeping that flag equal to "not UP" lets them
/// balance over the UP backends exactly as they would over a static list; a `server ... down`
/// line then only gives the backend's initial status. Runs in each worker when the shared
/// generation moved.
fn sync_peer_list(upstream: &UpstreamRuntime, uscf: &mut ngx_http_upstream_srv_conf_t) {
    let conf = upstream.conf;
    if !conf.uses_nginx_peer_list {
        return;
    }
    let shared = upstream.shared();
    // SAFETY: peer.data is nginx's round-robin peer list (checked by has_nginx_peer_list).
    unsafe {
        each_managed_peer(
            conf,
            uscf,
            |peer, index| {
                let backend = shared.backend(index);
                if upstream.backends[index].applied_up_count.get() != backend.up_count() {
                    // A backend that came (back) up starts with a clean slate: failures
                    // counted before it was stopped must not keep it out for fail_timeout.
                    peer.fails = 0;
                }
                peer.down = ngx_uint_t::from(!backend.status().takes_requests());
            },
            // Configured `down` servers were left out of the retry budget; they count now.
            |list| list.tries = list.number,
        );
    }
    for (index, mine) in upstream.backends.iter().enumerate() {
        mine.applied_up_count.set(shared.backend(index).up_count());
    }
}

/// Calls `visit(peer, backend)` for every peer of nginx's peer list, and of its backup list,
/// that is one of the upstream's backends, and `end_list(list)` after each list's peers. Each
/// list is written under its own write lock, as nginx's balancers lock it when it lives in a
/// `zone`.
///
/// # Safety
/// `uscf.peer.data` must be nginx's round-robin peer list (`has_nginx_peer_list`), which stays
/// in place for the cycle; no peer list lock held by this process.
unsafe fn each_managed_peer(
    conf: &UpstreamConf,
    uscf: &mut ngx_http_upstream_srv_conf_t,
    mut visit: impl FnMut(&mut ngx_http_upstream_rr_peer_t, usize),
    mut end_list: impl FnMut(&mut ngx_http_upstream_rr_peers_t),
) {
    let mut peers = uscf.peer.data as *mut ngx_http_upstream_rr_peers_t;
    // SAFETY: peer.data is nginx's round-robin list for the cycle, backup list off `next`, and
    // no list lock is held (this fn's contract); a list in a zone is write-locked while walked.
    unsafe {
        while !peers.is_null() {
            let _lock = PeersWriteLock::acquire(peers);
            let mut peer = (*peers).peer;
            while !peer.is_null() {
                let address = std::slice::from_raw_parts(
                    (*peer).sockaddr as *const u8,
                    (*peer).socklen as usize,
                );
                if let Some(index) = conf.backend_of(address) {
                    visit(&mut *peer, index);
                }
                peer = (*peer).next;
            }
            end_list(&mut *peers);
            peers = (*peers).next;
        }
    }
}

/// The write lock nginx's balancers take on a peer list kept in a `zone`: there the list is in
/// shared memory and every worker's balancer reads and writes it. A list outside a zone
/// belongs to one worker and has no lock (nginx's `ngx_http_upstream_rr_peers_wlock` does
/// nothing then either). Released when dropped.
struct PeersWriteLock {
    #[cfg(ngx_feature = "http_upstream_zone")]
    locked: *mut ngx_http_upstream_rr_peers_t,
}

impl PeersWriteLock {
    /// # Safety
    /// `peers` must be a live nginx round-robin peer list, not already locked by this process.
    unsafe fn acquire(peers: *mut ngx_http_upstream_rr_peers_t) -> Self {
        #[cfg(ngx_feature = "http_upstream_zone")]
        {
            // SAFETY: the caller passes a live peer list; shpool is set only when the zone
            // module moved the list into shared memory, where rwlock guards it.
            unsafe {
                if (*peers).shpool.is_null() {
                    return Self {
                        locked: ptr::null_mut(),
                    };
                }
                nginx_sys::ngx_rwlock_wlock(&mut (*peers).rwlock);
            }
            Self { locked: peers }
        }
        #[cfg(not(ngx_feature = "http_upstream_zone"))]
        {
            let _ = peers;
            Self {}
        }
    }
}

impl Drop for PeersWriteLock {
    fn drop(&mut self) {
        #[cfg(ngx_feature = "http_upstream_zone")]
        if !self.locked.is_null() {
            // SAFETY: acquire took this lock on a list that lives for the cycle.
            unsafe { nginx_sys::ngx_rwlock_unlock(&mut (*self.locked).rwlock) };
        }
    }
}

/// Brings this worker's view of the upstream's peers (nginx's peer list, a C balancer's own
/// through its backend monitor) up to the shared statuses, when they moved since it last did.
/// Runs before the inner balancer picks a peer: in peer.init, and again in peer.get, since a
/// request held in peer.init resumes straight into peer.get, where a balancer that still saw
/// every peer down would answer "no live upstreams".
fn catch_up(upstream: &UpstreamRuntime, uscf: &mut ngx_http_upstream_srv_conf_t) {
    let generation = upstream.shared().generation();
    if upstream.synced_generation.get() == generation {
        return;
    }
    sync_peer_list(upstream, uscf);
    upstream.synced_generation.set(generation);
    backend_monitor::tell_changes(upstream);
}

unsafe extern "C" fn init_peer(
    r: *mut ngx_http_request_t,
    uscf: *mut ngx_http_upstream_srv_conf_t,
) -> ngx_int_t {
    // SAFETY: nginx calls peer.init with the upstream this wrapper was installed on.
    let Some(conf) = Module::server_conf(unsafe { &*uscf }) else {
        return NGX_ERROR as ngx_int_t;
    };
    let (Some(inner_init), Some(upstream)) =
        (conf.original_init_peer, worker::upstream(conf.index))
    else {
        return NGX_ERROR as ngx_int_t;
    };
    // SAFETY: the upstream's srv conf is valid for the cycle.
    catch_up(upstream, unsafe { &mut *uscf });
    // SAFETY: forwarding nginx's own arguments to the balancer we wrapped.
    let rc = peer_init::wrapped(|| unsafe { inner_init(r, uscf) });
    if rc != NGX_OK as ngx_int_t {
        return rc;
    }
    // SAFETY: r is a live request; the context lives in its pool, as long as the request.
    unsafe {
        let peer = &mut (*(*r).upstream).peer;
        let context =
            ngx_pcalloc((*r).pool, std::mem::size_of::<PeerContext>()) as *mut PeerContext;
        if context.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        context.write(PeerContext {
            request: r,
            upstream,
            inner_data: peer.data,
            inner_get: peer.get,
            inner_free: peer.free,
            inner_notify: peer.notify,
            #[cfg(any(ngx_feature = "ssl", ngx_feature = "compat"))]
            inner_set_session: peer.set_session,
            #[cfg(any(ngx_feature = "ssl", ngx_feature = "compat"))]
            inner_save_session: peer.save_session,
            current_backend: NO_BACKEND,
            earlier: None,
            last_failed: NO_BACKEND,
            last_failure_cached: false,
        });
        peer.data = context as *mut c_void;
        peer.get = Some(get_peer);
        peer.free = Some(free_peer);
        // nginx hands notify the peer's data, which is now this wrapper's context.
        if peer.notify.is_some() {
            peer.notify = Some(notify_peer);
        }
        #[cfg(any(ngx_feature = "ssl", ngx_feature = "compat"))]
        {
            if peer.set_session.is_some() {
                peer.set_session = Some(set_session);
            }
            if peer.save_session.is_some() {
                peer.save_session = Some(save_session);
            }
        }
    }
    // SAFETY: r is the live request whose peer.init this is.
    unsafe { peer_init::check(r, upstream) }
}

fn peer_sockaddr(pc: &ngx_peer_connection_t) -> &[u8] {
    if pc.sockaddr.is_null() {
        return &[];
    }
    // SAFETY: a balancer that returned a peer set sockaddr/socklen to its address.
    unsafe { std::slice::from_raw_parts(pc.sockaddr as *const u8, pc.socklen as usize) }
}

unsafe extern "C" fn get_peer(pc: *mut ngx_peer_connection_t, data: *mut c_void) -> ngx_int_t {
    // SAFETY: data is the context init_peer installed; pc is the request's peer connection.
    let (context, pc) = unsafe { (&mut *(data as *mut PeerContext), &mut *pc) };
    // SAFETY: the worker's runtime outlives any request.
    let upstream: &'static UpstreamRuntime = unsafe { &*context.upstream };
    let conf = upstream.conf;
    let (Some(inner_get), Some(inner_free)) = (context.inner_get, context.inner_free) else {
        return NGX_ERROR as ngx_int_t;
    };
    // SAFETY: the upstream's srv conf is valid for the cycle; no peer list lock is held here.
    catch_up(upstream, unsafe { &mut *conf.upstream });
    // SAFETY: nginx's peer.get with the context's own request.
    if let Some(rc) = unsafe { pick_up_peer(context, pc, upstream, inner_get, inner_free) } {
        return rc;
    }
    // SAFETY: the upstream's srv conf is valid for the cycle; no peer list lock is held here.
    if unsafe { forgive_checked_peers(upstream, &mut *conf.upstream) } {
        // SAFETY: still nginx's peer.get for the context's own live request, with the wrapped
        // balancer's hooks; the first pick handed back every peer it refused.
        if let Some(rc) = unsafe { pick_up_peer(context, pc, upstream, inner_get, inner_free) } {
            return rc;
        }
    }
    // SAFETY: the upstream conf's host is a string of the cycle; nginx logs it as the peer
    // (and $upstream_addr shows it for this attempt).
    pc.name = unsafe { &mut (*conf.upstream).host };
    let attempts = AttemptsSoFar {
        request: context.request,
        earlier: context.earlier,
        last_failed: (context.last_failed != NO_BACKEND).then_some(context.last_failed),
        last_failure_cached: context.last_failure_cached,
    };
    // SAFETY: nginx asks for a peer from its upstream code, with the request live and its
    // attempt not finalized; no peer is held by this attempt (each was handed back).
    if unsafe { hold_instead_of_no_peer(&attempts, pc, upstream) } {
        // nginx takes this as a failed connect without a peer: it frees none, has no try
        // left and finalizes the attempt, which is over already (see end_attempt).
        return NGX_DECLINED as ngx_int_t;
    }
    NGX_BUSY as ngx_int_t
}

/// Asks the inner balancer for a peer until it gives one whose backend is UP (`Some` with its
/// answer, or with whatever else than a peer it answered) or has none left (`None`).
///
/// # Safety
/// From nginx's `peer.get`: `pc` is the peer connection of the context's live request;
/// `inner_get` and `inner_free` are the wrapped balancer's.
unsafe fn pick_up_peer(
    context: &mut PeerContext,
    pc: &mut ngx_peer_connection_t,
    upstream: &'static UpstreamRuntime,
    inner_get: unsafe extern "C" fn(*mut ngx_peer_connection_t, *mut c_void) -> ngx_int_t,
    inner_free: unsafe extern "C" fn(*mut ngx_peer_connection_t, *mut c_void, ngx_uint_t),
) -> Option<ngx_int_t> {
    let conf = upstream.conf;
    let shared = upstream.shared();
    // Each refusal makes the inner balancer mark that peer tried; one more round than there
    // are addresses covers balancers that hand the same single peer back.
    let limit = conf
        .backends
        .iter()
        .map(|backend| backend.sockaddrs.len())
        .sum::<usize>()
        + 1;
    for _ in 0..limit {
        // SAFETY: calling the wrapped balancer with its own data.
        let rc = unsafe { inner_get(pc, context.inner_data) };
        if rc == NGX_BUSY as ngx_int_t {
            // Every peer left is failed by nginx's count (`max_fails`).
            return None;
        }
        if rc != NGX_OK as ngx_int_t && rc != NGX_DONE as ngx_int_t {
            return Some(rc);
        }
        let Some(index) = conf.backend_of(peer_sockaddr(pc)) else {
            return Some(rc);
        };
        let backend = shared.backend(index);
        // Counted before the status is read: a drain that takes the backend out and then finds
        // nothing in flight cannot miss a request that got past this check.
        backend.request_started();
        if backend.status().takes_requests() {
            backend.request_sent();
            context.current_backend = index;
            // SAFETY: the context's request is live: nginx asks its peer for it.
            unsafe { record::note_backend(context.request, upstream, index) };
            return Some(rc);
        }
        backend.request_finished();
        // SAFETY: hand the refused peer back unused, as nginx would after a finished request,
        // keeping the request's retry budget intact.
        unsafe { refuse_peer(pc, context.inner_data, inner_free) };
    }
    None
}

/// nginx's peer list keeps a peer out for `fail_timeout` once it failed `max_fails` times,
/// while the module, on that same count, checks the backend and may leave it UP (it accepts
/// connections: a program still alive as supervisord stops its programs one by one, say).
/// When nothing else is left, the module's verdict wins: nginx's count of the backends it
/// checked and left UP is cleared (`core::hold::refused_attempt::forgive_failed_peer`). True when
/// a peer was.
///
/// # Safety
/// `uscf` must be the upstream's srv conf; no peer list lock held by this process.
unsafe fn forgive_checked_peers(
    upstream: &UpstreamRuntime,
    uscf: &mut ngx_http_upstream_srv_conf_t,
) -> bool {
    let conf = upstream.conf;
    if !conf.uses_nginx_peer_list {
        return false;
    }
    let shared = upstream.shared();
    let mut forgiven = false;
    // SAFETY: uses_nginx_peer_list (checked above) says peer.data is nginx's round-robin
    // list; `uscf` is the upstream's srv conf and no peer list lock is held (this fn's contract).
    unsafe {
        each_managed_peer(
            conf,
            uscf,
            |peer, index| {
                let failed_by_count = peer.max_fails != 0 && peer.fails >= peer.max_fails;
                if failed_by_count
                    && forgive_failed_peer(
                        shared.backend(index).status() == BackendStatus::Up,
                        upstream.backends[index].failure_check.get(),
                        upstream.backends[index].failures.get().failures,
                    )
                {
                    peer.fails = 0;
                    forgiven = true;
                }
            },
            |_| {},
        );
    }
    forgiven
}

/// Hands a peer the inner balancer picked but that is not UP back to it, unused.
///
/// # Safety
/// `pc` is the peer connection of a live request, from within nginx's `peer.get`, holding
/// the peer `inner_free` (the wrapped balancer's, with its `inner_data`) gave out.
unsafe fn refuse_peer(
    pc: &mut ngx_peer_connection_t,
    inner_data: *mut c_void,
    inner_free: unsafe extern "C" fn(*mut ngx_peer_connection_t, *mut c_void, ngx_uint_t),
) {
    // A keepalive cache may have handed over an idle connection to this peer.
    if !pc.connection.is_null() {
        // SAFETY: the connection was handed to this request by the balancer and is unused; a
        // kept connection owns its pool (made at its connect), freed with it as nginx does.
        unsafe {
            let pool = (*pc.connection).pool;
            if !pool.is_null() {
                ngx_destroy_pool(pool);
            }
            ngx_close_connection(pc.connection);
        }
        pc.connection = ptr::null_mut();
        pc.set_cached(0);
    }
    let tries = pc.tries;
    // SAFETY: returning the peer to the balancer that gave it out.
    unsafe { inner_free(pc, inner_data, 0) };
    pc.tries = tries;
    // nginx frees a peer again on failure when sockaddr is still set.
    pc.sockaddr = ptr::null_mut();
}

unsafe extern "C" fn free_peer(
    pc: *mut ngx_peer_connection_t,
    data: *mut c_void,
    state: ngx_uint_t,
) {
    // SAFETY: data is the context init_peer installed; pc is the request's peer connection.
    let (context, pc) = unsafe { (&mut *(data as *mut PeerContext), &mut *pc) };
    let backend = context.current_backend;
    let failed = state & NGX_PEER_FAILED as ngx_uint_t != 0;
    // SAFETY: the worker's runtime outlives any request.
    let upstream: &'static UpstreamRuntime = unsafe { &*context.upstream };
    // SAFETY: nginx hands the peer back with the request and its upstream live.
    let seen = unsafe { attempt_seen(context.request, pc) };
    context.earlier = Some(context.earlier.map_or(seen, |earlier| earlier.and(seen)));
    if failed {
        // As nginx reads it to give the try back, before the inner balancer has the peer.
        context.last_failure_cached = pc.cached() != 0;
    }
    if backend != NO_BACKEND {
        // SAFETY: nginx's peer.free runs with `context.request` and its upstream live, handing
        // back the peer of `backend`, as note_response_header needs.
        unsafe { record::note_response_header(context.request, upstream, backend) };
        let shared_backend = upstream.shared().backend(backend);
        shared_backend.request_finished();
        shared_backend.note_request_end(now_ms());
        failure_check::request_finished(upstream, backend, failed);
        context.current_backend = NO_BACKEND;
    }
    if let Some(inner_free) = context.inner_free {
        // SAFETY: forwarding to the wrapped balancer with its own data.
        unsafe { inner_free(pc, context.inner_data, state) };
    }
    if failed && backend != NO_BACKEND {
        context.last_failed = backend;
        // SAFETY: nginx hands the peer back from within its upstream code, with the request
        // live and its upstream attempt not yet finalized.
        unsafe { hold_again_if_refused(context.request, pc, upstream, backend, seen) };
    }
}

/// What the attempt whose peer nginx hands back showed: read before nginx closes its
/// connection or prepares the next attempt.
///
/// # Safety
/// `r` must be the live request whose peer `pc` is, its upstream live.
unsafe fn attempt_seen(r: *mut ngx_http_request_t, pc: &ngx_peer_connection_t) -> EarlierAttempts {
    // SAFETY: `r` and its upstream are live (this fn's contract: nginx hands `pc` back).
    let (request, u) = unsafe { (&*r, &*(*r).upstream) };
    // SAFETY: the upstream's conf is set for as long as the upstream.
    let next_upstream = unsafe { (*u.conf).next_upstream };
    // SAFETY: a connection, when set, is the attempt's own.
    let timed_out = unsafe { pc.connection.as_ref() }
        // SAFETY: a live connection's events are live.
        .is_some_and(|c| unsafe { (*c.write).timedout() != 0 || (*c.read).timedout() != 0 });
    let non_idempotent = (NGX_HTTP_POST | NGX_HTTP_LOCK | NGX_HTTP_PATCH) as ngx_uint_t;
    EarlierAttempts {
        nothing_sent: u.request_sent() == 0,
        resend_allowed: request.method & non_idempotent == 0
            || next_upstream & NGX_HTTP_UPSTREAM_FT_NON_IDEMPOTENT as ngx_uint_t != 0,
        nothing_received: u.buffer.start.is_null() || u.buffer.last == u.buffer.start,
        timed_out,
    }
}

/// Forwards an event nginx tells the peer of (`peer.notify`) to the wrapped balancer, with its
/// own data.
unsafe extern "C" fn notify_peer(
    pc: *mut ngx_peer_connection_t,
    data: *mut c_void,
    kind: ngx_uint_t,
) {
    // SAFETY: data is the context init_peer installed; only set when the inner hook exists.
    let context = unsafe { &*(data as *const PeerContext) };
    if let Some(inner) = context.inner_notify {
        // SAFETY: forwarding to the wrapped balancer with its own data and nginx's arguments.
        unsafe { inner(pc, context.inner_data, kind) };
    }
}

#[cfg(any(ngx_feature = "ssl", ngx_feature = "compat"))]
unsafe extern "C" fn set_session(pc: *mut ngx_peer_connection_t, data: *mut c_void) -> ngx_int_t {
    // SAFETY: data is the context init_peer installed; only set when the inner hook exists.
    let context = unsafe { &*(data as *const PeerContext) };
    match context.inner_set_session {
        // SAFETY: forwarding to the wrapped balancer with its own data.
        Some(inner) => unsafe { inner(pc, context.inner_data) },
        None => NGX_OK as ngx_int_t,
    }
}

#[cfg(any(ngx_feature = "ssl", ngx_feature = "compat"))]
unsafe extern "C" fn save_session(pc: *mut ngx_peer_connection_t, data: *mut c_void) {
    // SAFETY: data is the context init_peer installed; only set when the inner hook exists.
    let context = unsafe { &*(data as *const PeerContext) };
    if let Some(inner) = context.inner_save_session {
        // SAFETY: forwarding to the wrapped balancer with its own data.
        unsafe { inner(pc, context.inner_data) };
    }
}
