//! The functions of `include/ngx_supervisord.h`, exported with C linkage. Thin: they find the
//! upstream a balancer means and hand over to the HTTP side (holding) or `balancer_command`.

use std::ptr;

use nginx_sys::{
    ngx_http_request_t, ngx_http_upstream_srv_conf_t, ngx_int_t, ngx_uint_t, NGX_DECLINED,
    NGX_ERROR, NGX_LOG_ERR, NGX_OK,
};

use super::balancer_command;
use crate::conf::balancer_hooks::{BackendMonitor, Checker, LoadMonitor};
use crate::conf::UpstreamConf;
use crate::core::backend_status::Command;
use crate::http::hold::peer_init;
use crate::module_type::upstream_conf;
use crate::runtime::{backend_monitor, worker, UpstreamRuntime};
use crate::util::log::cycle_log;

/// The module's configuration of `uscf`, when it is an `upstream {}` block (implicit
/// upstreams, made by `proxy_pass http://host`, have none).
///
/// # Safety
/// `uscf` must be null or a live upstream srv conf.
unsafe fn configuration(
    uscf: *mut ngx_http_upstream_srv_conf_t,
) -> Option<&'static mut UpstreamConf> {
    // SAFETY: `uscf` is null or a live upstream srv conf (this fn's contract).
    let uscf = unsafe { uscf.as_ref() }?;
    if uscf.srv_conf.is_null() {
        return None;
    }
    upstream_conf(uscf)
}

/// This worker's runtime of `uscf`, when a `supervisord` directive manages it.
///
/// # Safety
/// As `configuration`.
unsafe fn managed(uscf: *mut ngx_http_upstream_srv_conf_t) -> Option<&'static UpstreamRuntime> {
    // SAFETY: `uscf` is null or a live upstream srv conf (this fn's contract).
    let conf = unsafe { configuration(uscf) }?;
    conf.endpoint.as_ref()?;
    worker::upstream(conf.index).filter(|upstream| ptr::eq(upstream.conf, conf))
}

/// `ngx_supervisord_check_servers`: see the header.
///
/// # Safety
/// nginx's contract for peer.init: `r` is the live request whose balancer's peer.init runs.
#[no_mangle]
pub unsafe extern "C" fn ngx_supervisord_check_servers(r: *mut ngx_http_request_t) -> ngx_int_t {
    if peer_init::inside_wrapped_init() {
        // The module's balancer wrapper around this balancer holds, if need be, once every
        // balancer it wraps said NGX_OK.
        return NGX_OK as ngx_int_t;
    }
    // SAFETY: `r` is the live request whose peer.init runs (this fn's contract); nginx sets
    // `r->upstream` before it calls peer.init (ngx_http_upstream_init_request).
    let upstream = unsafe { r.as_ref().and_then(|r| r.upstream.as_ref()) };
    let Some(u) = upstream else {
        ngx::ngx_log_error!(
            NGX_LOG_ERR,
            cycle_log(),
            "supervisord: ngx_supervisord_check_servers() called without an upstream request"
        );
        return NGX_DECLINED as ngx_int_t;
    };
    let mut uscf = u.upstream;
    if uscf.is_null() && !u.conf.is_null() {
        // SAFETY: the upstream's conf, set by the handler that created it.
        uscf = unsafe { (*u.conf).upstream };
    }
    // SAFETY: null or the request's live upstream.
    match unsafe { managed(uscf) } {
        Some(upstream) => {
            // As in 1.4, the balancer's view is brought up to date first.
            backend_monitor::tell_changes(upstream);
            // SAFETY: `r` is the live request whose balancer's peer.init runs (this fn's
            // contract), as peer_init::check requires.
            unsafe { peer_init::check(r, upstream) }
        }
        None => NGX_OK as ngx_int_t,
    }
}

/// `ngx_supervisord_execute`: see the header.
///
/// # Safety
/// `uscf` must be null or a live upstream srv conf; `checker`, if any, must follow the
/// header's contract.
#[no_mangle]
pub unsafe extern "C" fn ngx_supervisord_execute(
    uscf: *mut ngx_http_upstream_srv_conf_t,
    cmd: ngx_uint_t,
    backend: ngx_int_t,
    checker: Option<Checker>,
) -> ngx_int_t {
    // SAFETY: `uscf` is null or a live upstream srv conf (this fn's contract).
    let Some(upstream) = (unsafe { managed(uscf) }) else {
        return NGX_OK as ngx_int_t;
    };
    let command = match cmd {
        1 => Command::Start,
        2 => Command::Stop,
        _ => return NGX_DECLINED as ngx_int_t,
    };
    let target = match backend {
        -1 => None,
        index if index >= 0 && (index as usize) < upstream.conf.backends.len() => {
            Some(index as usize)
        }
        _ => return NGX_DECLINED as ngx_int_t,
    };
    balancer_command::send(upstream, command, target, checker);
    NGX_OK as ngx_int_t
}

/// `ngx_supervisord_add_backend_monitor`: see the header.
///
/// # Safety
/// Called at configuration time with a live upstream srv conf (or null).
#[no_mangle]
pub unsafe extern "C" fn ngx_supervisord_add_backend_monitor(
    uscf: *mut ngx_http_upstream_srv_conf_t,
    monitor: Option<BackendMonitor>,
) -> ngx_int_t {
    let Some(monitor) = monitor else {
        return NGX_ERROR as ngx_int_t;
    };
    // SAFETY: `uscf` is null or a live upstream srv conf (this fn's contract).
    if let Some(conf) = unsafe { configuration(uscf) } {
        conf.hooks.backend_monitor = Some(monitor);
    }
    NGX_OK as ngx_int_t
}

/// `ngx_supervisord_add_load_monitor`: see the header.
///
/// # Safety
/// As `ngx_supervisord_add_backend_monitor`.
#[no_mangle]
pub unsafe extern "C" fn ngx_supervisord_add_load_monitor(
    uscf: *mut ngx_http_upstream_srv_conf_t,
    monitor: Option<LoadMonitor>,
) -> ngx_int_t {
    let Some(monitor) = monitor else {
        return NGX_ERROR as ngx_int_t;
    };
    // SAFETY: `uscf` is null or a live upstream srv conf (this fn's contract).
    if let Some(conf) = unsafe { configuration(uscf) } {
        conf.hooks.load_monitor = Some(monitor);
    }
    NGX_OK as ngx_int_t
}
