//! `supervisord_start upstream` and `supervisord_stop upstream`: control locations.

use std::ffi::{c_char, c_void};
use std::ptr;

use nginx_sys::{ngx_command_t, ngx_conf_t, ngx_http_core_loc_conf_t};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};

use super::{directive_args, directive_position, log_conf_error, str_lossy, UpstreamConf};
use crate::control_handler;
use crate::core::backend_status::Command;
use crate::module::Module;

/// A location with `supervisord_start` or `supervisord_stop`.
pub struct ControlLocationConf {
    pub command: Option<Command>,
    pub upstream_name: String,
    /// Where the directive was written, for errors found after parsing.
    pub file: String,
    pub line: usize,
    /// Resolved once every upstream is known.
    pub upstream: *mut UpstreamConf,
}

impl Default for ControlLocationConf {
    fn default() -> Self {
        Self {
            command: None,
            upstream_name: String::new(),
            file: String::new(),
            line: 0,
            upstream: ptr::null_mut(),
        }
    }
}

impl ControlLocationConf {
    pub fn directive_name(&self) -> &'static str {
        match self.command {
            Some(Command::Stop) => "supervisord_stop",
            _ => "supervisord_start",
        }
    }

    pub fn upstream(&'static self) -> &'static UpstreamConf {
        // SAFETY: resolved in postconfiguration (which fails otherwise), lives in the cycle pool.
        unsafe { &*self.upstream }
    }
}

pub unsafe extern "C" fn set_supervisord_start(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: forwarded from nginx's directive call.
    unsafe { set_control(cf, conf, Command::Start) }
}

pub unsafe extern "C" fn set_supervisord_stop(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: forwarded from nginx's directive call.
    unsafe { set_control(cf, conf, Command::Stop) }
}

unsafe fn set_control(cf: *mut ngx_conf_t, conf: *mut c_void, command: Command) -> *mut c_char {
    // SAFETY: nginx passes this module's loc conf of the enclosing location.
    let location = unsafe { &mut *(conf as *mut ControlLocationConf) };
    match location.command {
        Some(existing) if existing == command => return c"is duplicate".as_ptr() as *mut c_char,
        Some(_) => {
            return log_conf_error(
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

    // SAFETY: cf is valid during the directive call.
    let cf_ref = unsafe { &*cf };
    let Some(main) = Module::main_conf_mut(cf_ref) else {
        return log_conf_error(cf, "internal error: no main configuration");
    };
    main.control_locations
        .push(location as *mut ControlLocationConf);
    let Some(core) = NgxHttpCoreModule::location_conf_mut(cf_ref) else {
        return log_conf_error(cf, "internal error: no core location configuration");
    };
    let core: &mut ngx_http_core_loc_conf_t = core;
    core.handler = Some(control_handler::handle);
    ptr::null_mut()
}
