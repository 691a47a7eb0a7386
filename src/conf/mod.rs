//! Configuration: the directives, and the checks that can only run once the whole `http {}`
//! block is read (upstream names used by control locations, directives without `supervisord`).

pub mod location;
pub mod upstream;

use std::ffi::{c_char, c_void};
use std::ptr;

use nginx_sys::{
    ngx_array_push, ngx_conf_t, ngx_http_handler_pt, ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE,
    ngx_http_upstream_srv_conf_t, ngx_int_t, ngx_shared_memory_add, ngx_str_t, NGX_ERROR,
    NGX_LOG_EMERG, NGX_OK,
};
use ngx::http::{
    HttpModuleMainConf, HttpModuleServerConf, NgxHttpCoreModule, NgxHttpUpstreamModule,
};

use crate::balancer;
use crate::module::Module;
use crate::shared_zone;

pub use location::LocationConf;
pub use upstream::UpstreamConf;

/// http-level configuration of the module.
#[derive(Default)]
pub struct MainConf {
    /// Every upstream with a `supervisord` directive, in configuration order.
    pub upstreams: Vec<*mut UpstreamConf>,
    /// Control locations whose upstream name is checked once all upstreams are known.
    pub control_locations: Vec<*mut LocationConf>,
}

/// nginx's `NGX_CONF_ERROR`, the value a directive handler returns after logging its error.
pub const CONF_ERROR: *mut c_char = usize::MAX as *mut c_char;

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

pub fn str_bytes(value: &ngx_str_t) -> &[u8] {
    if value.len == 0 || value.data.is_null() {
        return &[];
    }
    // SAFETY: an ngx_str_t points at `len` readable bytes.
    unsafe { std::slice::from_raw_parts(value.data, value.len) }
}

pub fn str_lossy(value: &ngx_str_t) -> String {
    String::from_utf8_lossy(str_bytes(value)).into_owned()
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

/// Runs after every module's http configuration is merged: the upstream balancers exist now,
/// so this is where the module wraps them and creates its shared zone.
///
/// # Safety
/// `cf` must be the http block's configuration as passed to a postconfiguration callback.
pub unsafe fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: cf is valid for the whole call (see above).
    let cf_ref = unsafe { &*cf };
    let Some(main) = Module::main_conf_mut(cf_ref) else {
        return NGX_ERROR as ngx_int_t;
    };
    let Some(upstream_main) = NgxHttpUpstreamModule::main_conf(cf_ref) else {
        return NGX_ERROR as ngx_int_t;
    };
    // SAFETY: the upstream module keeps an array of pointers to every upstream's srv conf.
    let all_upstreams: &[*mut ngx_http_upstream_srv_conf_t] = unsafe {
        std::slice::from_raw_parts(
            upstream_main.upstreams.elts as *const *mut ngx_http_upstream_srv_conf_t,
            upstream_main.upstreams.nelts,
        )
    };

    for &uscf in all_upstreams {
        // SAFETY: entries of the upstreams array are valid srv confs.
        let uscf_ref = unsafe { &mut *uscf };
        // Upstreams created implicitly by proxy_pass to a host name have no module confs.
        if uscf_ref.srv_conf.is_null() {
            continue;
        }
        let Some(upstream) = Module::server_conf_mut(uscf_ref) else {
            continue;
        };
        if upstream.endpoint.is_none() {
            if let Some(directive) = upstream.directive_without_endpoint() {
                log_emerg(
                    cf,
                    &format!(
                        "\"{directive}\" needs \"supervisord\" in upstream \"{}\" in {}:{}",
                        str_lossy(&uscf_ref.host),
                        cstr_lossy(uscf_ref.file_name as *const c_char),
                        uscf_ref.line
                    ),
                );
                return NGX_ERROR as ngx_int_t;
            }
            continue;
        }
        // SAFETY: uscf is an explicit upstream block whose servers are parsed.
        if let Err(message) = unsafe { upstream.attach(uscf) } {
            log_emerg(cf, &message);
            return NGX_ERROR as ngx_int_t;
        }
        balancer::wrap(upstream, uscf_ref);
        main.upstreams.push(upstream as *mut UpstreamConf);
    }

    for &location in &main.control_locations {
        // SAFETY: registered by the start/stop directive handlers; lives in the cycle pool.
        let location = unsafe { &mut *location };
        match find_managed_upstream(all_upstreams, location.upstream_name.as_bytes()) {
            Ok(upstream) => location.upstream = upstream,
            Err(reason) => {
                log_emerg(
                    cf,
                    &format!(
                        "\"{}\" {reason} \"{}\" in {}:{}",
                        location.directive_name(),
                        location.upstream_name,
                        location.file,
                        location.line
                    ),
                );
                return NGX_ERROR as ngx_int_t;
            }
        }
    }

    if main.upstreams.is_empty() {
        return NGX_OK as ngx_int_t;
    }
    // SAFETY: cf is the http block's configuration.
    if unsafe { add_hold_gate(cf) }.is_err() {
        return NGX_ERROR as ngx_int_t;
    }
    // SAFETY: cf is valid, main lives as long as the cycle.
    unsafe { add_shared_zone(cf, main) }
}

fn find_managed_upstream(
    all_upstreams: &[*mut ngx_http_upstream_srv_conf_t],
    name: &[u8],
) -> Result<*mut UpstreamConf, &'static str> {
    for &uscf in all_upstreams {
        // SAFETY: entries of the upstreams array are valid srv confs.
        let uscf_ref = unsafe { &mut *uscf };
        if str_bytes(&uscf_ref.host) != name || uscf_ref.srv_conf.is_null() {
            continue;
        }
        return match Module::server_conf_mut(uscf_ref) {
            Some(upstream) if upstream.endpoint.is_some() => Ok(upstream as *mut UpstreamConf),
            _ => Err("has no \"supervisord\" directive in upstream"),
        };
    }
    Err("names an unknown upstream")
}

/// Installs the hold gate in the precontent phase, after access checks: a request refused by
/// `allow`/`deny` or `auth_basic` is never held and never starts anything.
unsafe fn add_hold_gate(cf: *mut ngx_conf_t) -> Result<(), ()> {
    // SAFETY: cf is valid; the core module's main conf holds the phase handler arrays.
    unsafe {
        let core = NgxHttpCoreModule::main_conf_mut(&*cf).ok_or(())?;
        let handlers =
            &mut core.phases[ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE as usize].handlers;
        let slot = ngx_array_push(handlers) as *mut ngx_http_handler_pt;
        if slot.is_null() {
            return Err(());
        }
        slot.write(Some(crate::hold_gate::gate));
    }
    Ok(())
}

unsafe fn add_shared_zone(cf: *mut ngx_conf_t, main: &mut MainConf) -> ngx_int_t {
    let mut name = ngx::ngx_string!("ngx_supervisord");
    let size = shared_zone::zone_size(main.upstreams.iter().map(|&upstream| {
        // SAFETY: pointers collected above from live srv confs.
        unsafe { (*upstream).backends.len() }
    }));
    let tag = ptr::addr_of!(crate::module::ngx_supervisord_module) as *mut c_void;
    // SAFETY: cf is the configuration being built; name and tag outlive the call.
    let zone = unsafe { ngx_shared_memory_add(cf, &mut name, size, tag) };
    if zone.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    // SAFETY: ngx_shared_memory_add returned a zone entry of this cycle.
    unsafe {
        (*zone).init = Some(shared_zone::init_zone);
        (*zone).data = main as *mut MainConf as *mut c_void;
    }
    NGX_OK as ngx_int_t
}

/// Logs a directive error (nginx adds "in file:line") and returns `NGX_CONF_ERROR`.
pub fn log_conf_error(cf: *mut ngx_conf_t, message: &str) -> *mut c_char {
    ngx::ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", message);
    CONF_ERROR
}

pub fn log_emerg(cf: *mut ngx_conf_t, message: &str) {
    // SAFETY: cf is a valid configuration with a log.
    let log = unsafe { (*cf).log };
    ngx::ngx_log_error!(NGX_LOG_EMERG, log, "{}", message);
}

pub fn cstr_lossy(text: *const c_char) -> String {
    if text.is_null() {
        return String::new();
    }
    // SAFETY: nginx keeps file names as NUL-terminated strings.
    unsafe { std::ffi::CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}
