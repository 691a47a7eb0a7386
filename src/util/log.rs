//! The log of the running cycle, for lines that belong to no request.

use nginx_sys::ngx_log_t;

pub fn cycle_log() -> *mut ngx_log_t {
    ngx::log::ngx_cycle_log().as_ptr()
}
