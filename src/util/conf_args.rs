//! Directive handling shared by every directive: arguments, where a directive was written,
//! errors in nginx's own format, and nginx's own time syntax.

use std::ffi::c_char;

use nginx_sys::{ngx_conf_t, ngx_parse_size, ngx_parse_time, ngx_str_t, NGX_ERROR, NGX_LOG_EMERG};
use ngx::core::NGX_CONF_ERROR;

use super::text::str_lossy;

/// The arguments of the directive being parsed, the directive's own name first.
///
/// # Safety
/// `cf` must be the configuration nginx passes to a directive handler.
pub unsafe fn directive_args<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    // SAFETY: while a directive is parsed, cf->args is an array of its words.
    unsafe {
        let args = &*(*cf).args;
        std::slice::from_raw_parts(args.elts as *const ngx_str_t, args.nelts)
    }
}

/// Where a directive was written, for errors reported after parsing.
///
/// # Safety
/// `cf` must be the configuration nginx passes to a directive handler.
pub unsafe fn directive_position(cf: *mut ngx_conf_t) -> (String, usize) {
    // SAFETY: during parsing cf->conf_file describes the file being read.
    unsafe {
        let file = &*(*cf).conf_file;
        (str_lossy(&file.file.name), file.line)
    }
}

/// Logs a directive error (nginx adds "in file:line") and returns `NGX_CONF_ERROR`.
pub fn conf_error(cf: *mut ngx_conf_t, message: &str) -> *mut c_char {
    ngx::ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", message);
    NGX_CONF_ERROR
}

/// Logs an error found after parsing; the message names the file and line itself.
pub fn log_emerg(cf: *mut ngx_conf_t, message: &str) {
    // SAFETY: cf is a valid configuration with a log.
    let log = unsafe { (*cf).log };
    ngx::ngx_log_error!(NGX_LOG_EMERG, log, "{}", message);
}

/// As `parse_time_ms`, for a part of a directive's argument (`window=30s`).
pub fn parse_time_text(text: &str) -> Option<u64> {
    parse_time_ms(&ngx_str_t {
        len: text.len(),
        data: text.as_ptr() as *mut u8,
    })
}

/// A time in nginx's syntax (`500ms`, `30s`, `1m30s`, `1d`; a bare number is seconds), in
/// milliseconds, as every nginx directive reads it.
pub fn parse_time_ms(text: &ngx_str_t) -> Option<u64> {
    let mut copy = *text;
    // SAFETY: ngx_parse_time only reads the `len` bytes the string points at.
    let ms = unsafe { ngx_parse_time(&mut copy, 0) };
    (ms != NGX_ERROR as isize && ms >= 0).then_some(ms as u64)
}

/// A size in nginx's syntax (`512`, `64k`, `16m`; no `g`, as nginx's own size directives), in
/// bytes, as every nginx directive reads it.
pub fn parse_size_bytes(text: &ngx_str_t) -> Option<u64> {
    let mut copy = *text;
    // SAFETY: ngx_parse_size only reads the `len` bytes the string points at.
    let size = unsafe { ngx_parse_size(&mut copy) };
    u64::try_from(size).ok()
}
