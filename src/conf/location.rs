//! Per-location configuration: control locations (`supervisord_start upstream`,
//! `supervisord_stop upstream`), and which supervised upstream a location passes requests to
//! (so that the hold gate knows which requests may wait for a backend).

use std::ffi::{c_char, c_void};
use std::ptr;

use nginx_sys::{
    ngx_conf_t, ngx_http_conf_ctx_t, ngx_http_upstream_srv_conf_t, ngx_uint_t, NGX_HTTP_MODULE,
};

use super::{MainConf, UpstreamConf};
use crate::core::backend_status::Command;
use crate::util::conf_args::{conf_error, directive_args, directive_position};
use crate::util::text::str_lossy;

pub struct LocationConf {
    /// The upstream this location's proxy_pass (fastcgi_pass, uwsgi_pass, scgi_pass, grpc_pass)
    /// names, when it is managed through a real supervisord.
    pub held_upstream: *mut UpstreamConf,
    /// Set in a location with `supervisord_start` or `supervisord_stop`.
    pub command: Option<Command>,
    pub upstream_name: String,
    /// Where the directive was written, for errors found after parsing.
    pub file: String,
    pub line: usize,
    /// Resolved once every upstream is known.
    pub upstream: *mut UpstreamConf,
}

impl Default for LocationConf {
    fn default() -> Self {
        Self {
            held_upstream: ptr::null_mut(),
            command: None,
            upstream_name: String::new(),
            file: String::new(),
            line: 0,
            upstream: ptr::null_mut(),
        }
    }
}

impl LocationConf {
    pub fn directive_name(&self) -> &'static str {
        match self.command {
            Some(Command::Stop) => "supervisord_stop",
            _ => "supervisord_start",
        }
    }

    pub fn upstream(&self) -> &'static UpstreamConf {
        // SAFETY: resolved in postconfiguration (which fails otherwise), lives in the cycle pool.
        unsafe { &*self.upstream }
    }

    /// The supervised upstream requests of this location may be held for.
    pub fn held_upstream(&self) -> Option<&'static UpstreamConf> {
        // SAFETY: set at configuration time to an upstream conf of the same cycle, or null.
        unsafe { self.held_upstream.as_ref() }
    }
}

/// `supervisord_start upstream` / `supervisord_stop upstream`: records the command; the
/// upstream's name is checked once every upstream is known (see `resolve_control_locations`).
///
/// # Safety
/// `cf` and `conf` must be what nginx passes to this module's location directive handler.
pub unsafe fn set_control(
    cf: *mut ngx_conf_t,
    conf: *mut c_void,
    command: Command,
    main: &mut MainConf,
) -> *mut c_char {
    // SAFETY: nginx passes this module's loc conf of the enclosing location.
    let location = unsafe { &mut *(conf as *mut LocationConf) };
    match location.command {
        Some(existing) if existing == command => return c"is duplicate".as_ptr() as *mut c_char,
        Some(_) => {
            return conf_error(
                cf,
                "\"supervisord_start\" and \"supervisord_stop\" cannot be used in one location",
            )
        }
        None => {}
    }
    // SAFETY: called by nginx as a directive handler.
    let (args, (file, line)) = unsafe { (directive_args(cf), directive_position(cf)) };
    location.command = Some(command);
    location.upstream_name = str_lossy(&args[1]);
    location.file = file;
    location.line = line;
    main.control_locations.push(location as *mut LocationConf);
    ptr::null_mut()
}

/// Modules whose location configuration starts with `ngx_http_upstream_conf_t`, itself starting
/// with the upstream's srv conf. Found by name, so that none of them has to be compiled in.
const PASSING_MODULES: [&[u8]; 5] = [
    b"ngx_http_proxy_module",
    b"ngx_http_fastcgi_module",
    b"ngx_http_uwsgi_module",
    b"ngx_http_scgi_module",
    b"ngx_http_grpc_module",
];

/// Finds this module's configuration of an upstream block.
pub type UpstreamLookup = fn(&ngx_http_upstream_srv_conf_t) -> Option<&'static mut UpstreamConf>;

/// Runs for every location once those modules have merged theirs: notes the supervised
/// upstream the location passes to, if any.
///
/// # Safety
/// `cf` and `conf` must be what nginx passes to this module's merge_loc_conf.
pub unsafe fn note_held_upstream(
    cf: *mut ngx_conf_t,
    conf: *mut c_void,
    upstream_conf: UpstreamLookup,
) -> *mut c_char {
    // SAFETY: nginx passes this module's loc conf and, during merging, a cf whose ctx holds the
    // loc confs of the same location for every module.
    unsafe {
        let location = &mut *(conf as *mut LocationConf);
        let cycle = &*(*cf).cycle;
        let ctx = &*((*cf).ctx as *const ngx_http_conf_ctx_t);
        let modules = std::slice::from_raw_parts(cycle.modules, cycle.modules_n);
        for &module in modules {
            if module.is_null() || (*module).type_ != NGX_HTTP_MODULE as ngx_uint_t {
                continue;
            }
            let name = std::ffi::CStr::from_ptr((*module).name).to_bytes();
            if !PASSING_MODULES.contains(&name) {
                continue;
            }
            let module_conf = *ctx.loc_conf.add((*module).ctx_index);
            if module_conf.is_null() {
                continue;
            }
            let uscf = *(module_conf as *const *mut ngx_http_upstream_srv_conf_t);
            if uscf.is_null() || (*uscf).srv_conf.is_null() {
                continue;
            }
            if let Some(upstream) = upstream_conf(&*uscf) {
                if upstream.supervised() {
                    location.held_upstream = upstream;
                    break;
                }
            }
        }
    }
    ptr::null_mut()
}
