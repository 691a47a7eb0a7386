//! The module's variables for `log_format` (and anywhere else variables go):
//! `$supervisord_hold_time`, how long the request was held, in seconds with millisecond
//! resolution (`0.312`), like nginx's `$upstream_connect_time`; and `$supervisord_backend`, the
//! index of the backend the balancer last picked for it. Both are "not found" (`-` in a log)
//! when the request was never held, or never reached a backend of a managed upstream.

use nginx_sys::{
    ngx_conf_t, ngx_http_add_variable, ngx_http_request_t, ngx_http_variable_value_t, ngx_int_t,
    ngx_pnalloc, ngx_str_t, ngx_uint_t, NGX_ERROR, NGX_HTTP_VAR_NOCACHEABLE, NGX_OK,
};

use super::hold::record::log_figures;
use crate::core::render::metrics_text::seconds;

type Getter = unsafe extern "C" fn(
    *mut ngx_http_request_t,
    *mut ngx_http_variable_value_t,
    usize,
) -> ngx_int_t;

const VARIABLES: [(&str, Getter); 2] = [
    ("supervisord_hold_time", hold_time),
    ("supervisord_backend", backend),
];

/// Declares the variables; in preconfiguration, so that `log_format` and the rest of the
/// configuration can name them.
///
/// # Safety
/// `cf` must be the http block's configuration in preconfiguration.
pub unsafe fn add(cf: *mut ngx_conf_t) -> Result<(), ()> {
    for (name, getter) in VARIABLES {
        let mut name = ngx_str_t {
            len: name.len(),
            data: name.as_ptr() as *mut u8,
        };
        // SAFETY: cf is valid (caller's contract); nginx copies the name. Their value changes
        // while the request runs (a request is held, then picked a backend): never cached.
        let variable =
            unsafe { ngx_http_add_variable(cf, &mut name, NGX_HTTP_VAR_NOCACHEABLE as ngx_uint_t) };
        if variable.is_null() {
            return Err(());
        }
        // SAFETY: nginx returned a live variable of this configuration.
        unsafe { (*variable).get_handler = Some(getter) };
    }
    Ok(())
}

unsafe extern "C" fn hold_time(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    // SAFETY: nginx calls a variable's handler with its live request.
    let text = unsafe { log_figures(r) }.0.map(seconds);
    // SAFETY: nginx passes a live request and its variable's value.
    unsafe { set_value(r, v, text) }
}

unsafe extern "C" fn backend(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    // SAFETY: nginx calls a variable's handler with its live request.
    let text = unsafe { log_figures(r) }.1.map(|index| index.to_string());
    // SAFETY: nginx passes a live request and its variable's value.
    unsafe { set_value(r, v, text) }
}

/// # Safety
/// `r` must be live, `v` its variable's value.
unsafe fn set_value(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    text: Option<String>,
) -> ngx_int_t {
    // SAFETY: `v` is the value nginx passed with live `r` to the variable's get handler (this
    // fn's contract), ours to fill during the call.
    let v = unsafe { &mut *v };
    let Some(text) = text else {
        v.set_not_found(1);
        return NGX_OK as ngx_int_t;
    };
    // SAFETY: the request's pool is live; the value lives as long as the request.
    let data = unsafe { ngx_pnalloc((*r).pool, text.len()) } as *mut u8;
    if data.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    // SAFETY: `data` has room for the text.
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), data, text.len()) };
    v.data = data;
    v.set_len(text.len() as _);
    v.set_valid(1);
    v.set_no_cacheable(0);
    v.set_not_found(0);
    NGX_OK as ngx_int_t
}
