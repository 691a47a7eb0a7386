//! The composition root: the module object, its directive table, and the wiring that runs once
//! the configuration is read (postconfiguration) and once per worker (init_process). The only
//! file that knows every part; no part knows it.

use std::ffi::{c_char, c_void};
use std::ptr::{self, addr_of, addr_of_mut};

use nginx_sys::{
    ngx_array_push, ngx_command_t, ngx_conf_t, ngx_cycle_t, ngx_http_core_loc_conf_t,
    ngx_http_handler_pt, ngx_http_module_t, ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE, ngx_int_t,
    ngx_module_t, ngx_process, ngx_uint_t, NGX_CONF_NOARGS, NGX_CONF_TAKE1, NGX_CONF_TAKE12,
    NGX_CONF_TAKE123, NGX_ERROR, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MODULE,
    NGX_HTTP_SRV_CONF_OFFSET, NGX_HTTP_UPS_CONF, NGX_LOG_EMERG, NGX_LOG_WARN, NGX_OK,
    NGX_PROCESS_SINGLE, NGX_PROCESS_WORKER,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::ngx_string;

use crate::api::load_monitor;
use crate::conf::{self, location, upstream};
use crate::core::backend_status::Command;
use crate::http::hold::gate;
use crate::http::{balancer, control, metrics, status, variables};
use crate::module_type::{upstream_conf, Module};
use crate::runtime::{backend_monitor, worker};
use crate::shared::slots;
use crate::shared::zone::{self, Claim};
use crate::supervisord::{client, reconciler, scaler, watchdog};
use crate::util::conf_args::{conf_error, log_emerg};

static MODULE_CONTEXT: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(preconfiguration),
    postconfiguration: Some(postconfiguration),
    create_main_conf: Some(Module::create_main_conf),
    init_main_conf: None,
    create_srv_conf: Some(Module::create_srv_conf),
    merge_srv_conf: None,
    create_loc_conf: Some(Module::create_loc_conf),
    merge_loc_conf: Some(merge_loc_conf),
};

type DirectiveHandler =
    unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char;

const fn directive(
    name: nginx_sys::ngx_str_t,
    type_: u32,
    set: DirectiveHandler,
    conf: ngx_uint_t,
) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: type_ as ngx_uint_t,
        set: Some(set),
        conf,
        offset: 0,
        post: ptr::null_mut(),
    }
}

const fn upstream_directive(
    name: nginx_sys::ngx_str_t,
    type_: u32,
    set: DirectiveHandler,
) -> ngx_command_t {
    directive(
        name,
        NGX_HTTP_UPS_CONF | type_,
        set,
        NGX_HTTP_SRV_CONF_OFFSET,
    )
}

static mut COMMANDS: [ngx_command_t; 19] = [
    upstream_directive(
        ngx_string!("supervisord"),
        NGX_CONF_TAKE123,
        upstream::set_supervisord,
    ),
    upstream_directive(
        ngx_string!("supervisord_name"),
        NGX_CONF_TAKE1,
        upstream::set_supervisord_name,
    ),
    upstream_directive(
        ngx_string!("supervisord_inherit_backend_status"),
        NGX_CONF_NOARGS,
        upstream::set_inherit_backend_status,
    ),
    upstream_directive(
        ngx_string!("supervisord_timeout"),
        NGX_CONF_TAKE1,
        upstream::set_timeout,
    ),
    upstream_directive(
        ngx_string!("supervisord_sync_interval"),
        NGX_CONF_TAKE1,
        upstream::set_sync_interval,
    ),
    upstream_directive(
        ngx_string!("supervisord_hold_limit"),
        NGX_CONF_TAKE1,
        upstream::set_hold_limit,
    ),
    upstream_directive(
        ngx_string!("supervisord_hold_timeout"),
        NGX_CONF_TAKE1,
        upstream::set_hold_timeout,
    ),
    upstream_directive(
        ngx_string!("supervisord_drain_timeout"),
        NGX_CONF_TAKE1,
        upstream::set_drain_timeout,
    ),
    upstream_directive(
        ngx_string!("supervisord_min_servers"),
        NGX_CONF_TAKE1,
        upstream::set_min_servers,
    ),
    upstream_directive(
        ngx_string!("supervisord_max_servers"),
        NGX_CONF_TAKE1,
        upstream::set_max_servers,
    ),
    upstream_directive(
        ngx_string!("supervisord_scale_up"),
        NGX_CONF_TAKE12,
        upstream::set_scale_up,
    ),
    upstream_directive(
        ngx_string!("supervisord_idle_timeout"),
        NGX_CONF_TAKE1,
        upstream::set_idle_timeout,
    ),
    upstream_directive(
        ngx_string!("supervisord_load_interval"),
        NGX_CONF_TAKE1,
        upstream::set_load_interval,
    ),
    upstream_directive(
        ngx_string!("supervisord_max_reply_size"),
        NGX_CONF_TAKE1,
        upstream::set_max_reply_size,
    ),
    directive(
        ngx_string!("supervisord_start"),
        NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
        set_supervisord_start,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    directive(
        ngx_string!("supervisord_stop"),
        NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
        set_supervisord_stop,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    directive(
        ngx_string!("supervisord_status"),
        NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
        set_supervisord_status,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    directive(
        ngx_string!("supervisord_metrics"),
        NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
        set_supervisord_metrics,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    ngx_command_t::empty(),
];

#[used]
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_supervisord_module: ngx_module_t = ngx_module_t {
    ctx: addr_of!(MODULE_CONTEXT) as *mut _,
    commands: addr_of_mut!(COMMANDS) as *mut ngx_command_t,
    type_: NGX_HTTP_MODULE as ngx_uint_t,
    init_module: Some(init_module),
    init_process: Some(init_process),
    exit_process: Some(exit_process),
    ..ngx_module_t::default()
};

ngx::ngx_modules!(ngx_supervisord_module);

fn zone_tag() -> *mut c_void {
    addr_of!(ngx_supervisord_module) as *mut c_void
}

unsafe extern "C" fn set_supervisord_start(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls this location directive's handler (LOC_CONF_OFFSET) with the live
    // `cf` and `conf`, this module's LocationConf, as set_control needs.
    unsafe { set_control(cf, conf, Command::Start) }
}

unsafe extern "C" fn set_supervisord_stop(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls this location directive's handler (LOC_CONF_OFFSET) with the live
    // `cf` and `conf`, this module's LocationConf, as set_control needs.
    unsafe { set_control(cf, conf, Command::Stop) }
}

/// # Safety
/// `cf` and `conf` must be what nginx passes to a location directive handler of this module.
unsafe fn set_control(cf: *mut ngx_conf_t, conf: *mut c_void, command: Command) -> *mut c_char {
    // SAFETY: cf is valid during the directive call.
    let cf_ref = unsafe { &*cf };
    let Some(main) = Module::main_conf_mut(cf_ref) else {
        return conf_error(cf, "internal error: no main configuration");
    };
    // SAFETY: `cf` and `conf` are what nginx passed to this module's location directive
    // handler (this fn's contract), as location::set_control needs.
    let rc = unsafe { location::set_control(cf, conf, command, main) };
    if !rc.is_null() {
        return rc;
    }
    let Some(core) = NgxHttpCoreModule::location_conf_mut(cf_ref) else {
        return conf_error(cf, "internal error: no core location configuration");
    };
    let core: &mut ngx_http_core_loc_conf_t = core;
    core.handler = Some(control::handle);
    ptr::null_mut()
}

/// `supervisord_status;`: the location answers the JSON status of every managed upstream.
unsafe extern "C" fn set_supervisord_status(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls this location directive's handler with the live `cf`, as
    // set_content_handler needs.
    unsafe { set_content_handler(cf, status::handle) }
}

/// `supervisord_metrics;`: the location answers the Prometheus page of every managed upstream.
unsafe extern "C" fn set_supervisord_metrics(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls this location directive's handler with the live `cf`, as
    // set_content_handler needs.
    unsafe { set_content_handler(cf, metrics::handle) }
}

/// Makes `handler` the location's content handler, unless it has one already.
///
/// # Safety
/// `cf` must be what nginx passes to a location directive handler.
unsafe fn set_content_handler(
    cf: *mut ngx_conf_t,
    handler: unsafe extern "C" fn(*mut nginx_sys::ngx_http_request_t) -> ngx_int_t,
) -> *mut c_char {
    // SAFETY: cf is valid during the directive call.
    let Some(core) = NgxHttpCoreModule::location_conf_mut(unsafe { &*cf }) else {
        return conf_error(cf, "internal error: no core location configuration");
    };
    let core: &mut ngx_http_core_loc_conf_t = core;
    if core.handler.is_some() {
        return c"is duplicate or conflicts with another content handler".as_ptr() as *mut c_char;
    }
    core.handler = Some(handler);
    ptr::null_mut()
}

unsafe extern "C" fn merge_loc_conf(
    cf: *mut ngx_conf_t,
    _parent: *mut c_void,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls merge_loc_conf with the live `cf` and this module's LocationConf of
    // the location being merged, as note_held_upstream needs.
    unsafe { location::note_held_upstream(cf, conf, upstream_conf) }
}

/// Runs before the http block is read: declares the module's variables.
unsafe extern "C" fn preconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: nginx passes the http block's configuration.
    match unsafe { variables::add(cf) } {
        Ok(()) => NGX_OK as ngx_int_t,
        Err(()) => NGX_ERROR as ngx_int_t,
    }
}

/// Runs after every module's http configuration is merged: the upstream balancers exist now,
/// so this is where the module learns the servers, wraps the balancers, installs the hold gate
/// and declares its shared zone.
unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: nginx passes the http block's configuration, valid for the whole call.
    match unsafe { wire(cf) } {
        Ok(()) => NGX_OK as ngx_int_t,
        Err(message) => {
            if !message.is_empty() {
                log_emerg(cf, &message);
            }
            NGX_ERROR as ngx_int_t
        }
    }
}

/// # Safety
/// `cf` must be the http block's configuration in postconfiguration.
unsafe fn wire(cf: *mut ngx_conf_t) -> Result<(), String> {
    // SAFETY: cf is valid (caller's contract).
    let main = Module::main_conf_mut(unsafe { &*cf }).ok_or("no main configuration")?;
    // SAFETY: `cf` is the http block's configuration in postconfiguration (this fn's
    // contract): every upstream block is parsed, as collect_upstreams needs.
    unsafe { conf::collect_upstreams(cf, main, upstream_conf) }?;
    // SAFETY: `cf` is the http block's configuration in postconfiguration (this fn's
    // contract): every upstream block is parsed, as resolve_control_locations needs.
    unsafe { conf::resolve_control_locations(cf, main, upstream_conf) }?;
    if main.upstreams.is_empty() {
        return Ok(());
    }
    for &upstream in &main.upstreams {
        // SAFETY: collected above from live srv confs of this cycle.
        let upstream = unsafe { &mut *upstream };
        let uscf = upstream.upstream;
        // SAFETY: the upstream block's srv conf, whose balancer is set up by now.
        balancer::wrap(upstream, unsafe { &mut *uscf });
    }
    // SAFETY: cf is the http block's configuration.
    unsafe { add_hold_gate(cf) }.map_err(|()| String::new())?;
    let claims = main
        .upstreams()
        .map(|upstream| Claim {
            identity: upstream.identity,
            initial_statuses: upstream.initial_statuses(),
        })
        .collect();
    // SAFETY: cf is the http block's configuration.
    unsafe { zone::register(cf, zone_tag(), claims) }.map_err(|()| String::new())
}

/// Installs the hold gate as the last handler of the precontent phase: after access checks (a
/// request refused by `allow`/`deny` or `auth_basic` is never held and never starts anything)
/// and after `try_files` and `mirror` (a request they answer or send elsewhere never waits).
/// nginx runs a phase's handlers from the end of its array to the start, so the gate goes in
/// first place, whichever modules registered theirs before or after this one.
///
/// # Safety
/// `cf` must be the http block's configuration in postconfiguration.
unsafe fn add_hold_gate(cf: *mut ngx_conf_t) -> Result<(), ()> {
    // SAFETY: cf is valid; the core module's main conf holds the phase handler arrays, whose
    // elements are handler pointers.
    unsafe {
        let core = NgxHttpCoreModule::main_conf_mut(&*cf).ok_or(())?;
        let handlers =
            &mut core.phases[ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE as usize].handlers;
        if ngx_array_push(handlers).is_null() {
            return Err(());
        }
        let first = handlers.elts as *mut ngx_http_handler_pt;
        ptr::copy(first, first.add(1), handlers.nelts - 1);
        first.write(Some(gate::gate));
    }
    Ok(())
}

/// Runs in the master once the whole configuration is read, also under `nginx -t` and on
/// reload: the workers' user is known by now, so unreachable supervisord sockets are reported.
unsafe extern "C" fn init_module(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx passes the new cycle; without an http block there is no main conf.
    if let Some(main) = Module::main_conf(unsafe { &*cycle }) {
        // SAFETY: the cycle's configuration is complete in init_module.
        unsafe { conf::socket_access::warn_unreachable_sockets(cycle, main) };
    }
    NGX_OK as ngx_int_t
}

/// Each worker builds its runtime and starts its reconciliation timers.
unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx passes the running cycle; without an http block there is no main conf.
    let Some(main) = Module::main_conf(unsafe { &*cycle }) else {
        return NGX_OK as ngx_int_t;
    };
    if main.upstreams.is_empty() {
        return NGX_OK as ngx_int_t;
    }
    // SAFETY: `cycle` is the running cycle nginx passed to init_process, live for the call.
    let view = zone::find(unsafe { &*cycle }, zone_tag());
    let (records, generation) = view
        .as_ref()
        .map_or((&[][..], 0), |view| (view.records, view.generation));
    // SAFETY: a plain read of nginx's process kind. Only workers count requests (cache
    // helpers run init_process too).
    let counts_requests =
        unsafe { ngx_process == NGX_PROCESS_WORKER as _ || ngx_process == NGX_PROCESS_SINGLE as _ };
    if let Some(view) = view.as_ref().filter(|_| counts_requests) {
        // SAFETY: the zone's pool, in init_process.
        if let slots::Claimed::Untracked = unsafe { slots::claim(view.pool, view.generation) } {
            // SAFETY: the cycle's log is valid.
            let log = unsafe { (*cycle).log };
            ngx::ngx_log_error!(
                NGX_LOG_WARN,
                log,
                "supervisord: the shared zone has no room for this worker's slot; should it die, what it counts is never freed, and shared records are no longer reclaimed"
            );
        }
    }
    // SAFETY: the worker's running cycle.
    if let Err(reason) = unsafe { worker::install(cycle, main.upstreams(), records, generation) } {
        // SAFETY: the cycle's log is valid.
        let log = unsafe { (*cycle).log };
        ngx::ngx_log_error!(NGX_LOG_EMERG, log, "supervisord: {}", reason);
        return NGX_ERROR as ngx_int_t;
    }
    // The client, lowest of the supervisord side, learns that supervisord answers again;
    // what to do then (send waiting commands, read its view) is the watchdog's.
    client::on_reachable_again(watchdog::on_supervisord_back);
    for upstream in worker::upstreams() {
        reconciler::start(upstream);
        scaler::start(upstream);
        backend_monitor::start(upstream);
        load_monitor::start(upstream);
    }
    watchdog::start();
    NGX_OK as ngx_int_t
}

/// A worker that exits frees its slot (one that dies is freed by the others' watchdog).
unsafe extern "C" fn exit_process(_cycle: *mut ngx_cycle_t) {
    slots::release();
}
