//! The hold gate: a precontent-phase handler on locations that pass requests to an upstream
//! managed through supervisord. When no backend is UP it holds the request (`verdict` says
//! whether, and sets off the start), in whichever worker it arrived, until a backend is UP; the
//! request then goes on to the balancer as usual.

use nginx_sys::{
    ngx_http_request_t, ngx_int_t, NGX_AGAIN, NGX_DECLINED, NGX_HTTP_SERVICE_UNAVAILABLE,
    NGX_LOG_WARN,
};
use ngx::http::{HttpModuleLocationConf, Request};

use super::record::enqueue;
use super::verdict::{hold_step, HoldStep, RETRY_AFTER};
use super::wake::start_hold;
use crate::module_type::Module;
use crate::runtime::{init_busy, worker};
use crate::util::reply::error_status;

/// The precontent-phase handler; it runs after every other precontent handler (`try_files`,
/// `mirror`), so a request that will not reach the upstream is never held and starts nothing.
/// An error status returned here goes to nginx's own error path: the phase engine stops, the
/// body is read away, `error_page` applies.
pub unsafe extern "C" fn gate(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx runs phase handlers with a live request.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let Some(conf) = Module::location_conf(request).and_then(|location| location.held_upstream())
    else {
        return NGX_DECLINED as ngx_int_t;
    };
    let Some(upstream) = worker::upstream(conf.index) else {
        return NGX_DECLINED as ngx_int_t;
    };
    if conf.hooks.in_use() && init_busy::available() {
        // A balancer of the C API holds in its peer.init (`ngx_supervisord_check_servers`), as
        // with ngx_supervisord 1.4.
        return NGX_DECLINED as ngx_int_t;
    }
    let failures_seen = upstream.shared().failed_starts();
    match hold_step(request, upstream, failures_seen) {
        HoldStep::Proceed => return NGX_DECLINED as ngx_int_t,
        HoldStep::Answer(rc) => return rc,
        HoldStep::Hold => {}
    }
    if !request.is_main() && init_busy::available() {
        // Held by the balancer's peer.init instead (`peer_init_hold`), without touching the
        // connection's events, which it shares with the main request.
        return NGX_DECLINED as ngx_int_t;
    }
    if !request.is_main() {
        // A subrequest shares its connection, its events and its pool with the main request,
        // which waits for it in a phase of its own: it is not held (see README), but the start
        // it set off serves the next request.
        ngx::ngx_log_error!(
            NGX_LOG_WARN,
            request.log(),
            "supervisord: upstream \"{}\": no backend up, subrequest not held (only main requests are), answering 503",
            conf.name
        );
        return error_status(request, NGX_HTTP_SERVICE_UNAVAILABLE, RETRY_AFTER);
    }
    if let Err(rc) = enqueue(request, upstream, failures_seen, "") {
        return rc;
    }
    // SAFETY: r is live and now queued.
    unsafe { start_hold(r, upstream) };
    NGX_AGAIN as ngx_int_t
}
