//! The nginx module object: directive table, configuration callbacks, and the `ngx_modules`
//! export that lets `load_module` find it.

use std::ptr::{addr_of, addr_of_mut};

use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_cycle_t, ngx_http_module_t, ngx_int_t, ngx_module_t, ngx_uint_t,
    NGX_CONF_NOARGS, NGX_CONF_TAKE1, NGX_CONF_TAKE12, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET,
    NGX_HTTP_MODULE, NGX_HTTP_SRV_CONF_OFFSET, NGX_HTTP_UPS_CONF, NGX_OK,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf, HttpModuleServerConf};
use ngx::ngx_string;

use crate::conf::{self, LocationConf, MainConf, UpstreamConf};
use crate::reconciler;

pub struct Module;

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module object is a static that nginx only writes to (index, ctx_index)
        // while loading configuration, before any of our code reads it through this reference.
        unsafe { &*addr_of!(ngx_supervisord_module) }
    }

    unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        // SAFETY: nginx passes the configuration being parsed.
        unsafe { conf::postconfiguration(cf) }
    }
}

// SAFETY: the configuration types match what create_main_conf/create_srv_conf/create_loc_conf
// below allocate for this module.
unsafe impl HttpModuleMainConf for Module {
    type MainConf = MainConf;
}
// SAFETY: as above.
unsafe impl HttpModuleServerConf for Module {
    type ServerConf = UpstreamConf;
}
// SAFETY: as above.
unsafe impl HttpModuleLocationConf for Module {
    type LocationConf = LocationConf;
}

static MODULE_CONTEXT: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: None,
    postconfiguration: Some(Module::postconfiguration),
    create_main_conf: Some(Module::create_main_conf),
    init_main_conf: None,
    create_srv_conf: Some(Module::create_srv_conf),
    merge_srv_conf: None,
    create_loc_conf: Some(Module::create_loc_conf),
    merge_loc_conf: Some(conf::location::merge_loc_conf),
};

const fn directive(
    name: nginx_sys::ngx_str_t,
    type_: u32,
    set: unsafe extern "C" fn(
        *mut ngx_conf_t,
        *mut ngx_command_t,
        *mut std::ffi::c_void,
    ) -> *mut std::ffi::c_char,
    conf: ngx_uint_t,
) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: type_ as ngx_uint_t,
        set: Some(set),
        conf,
        offset: 0,
        post: std::ptr::null_mut(),
    }
}

static mut COMMANDS: [ngx_command_t; 11] = [
    directive(
        ngx_string!("supervisord"),
        NGX_HTTP_UPS_CONF | NGX_CONF_TAKE12,
        conf::upstream::set_supervisord,
        NGX_HTTP_SRV_CONF_OFFSET,
    ),
    directive(
        ngx_string!("supervisord_name"),
        NGX_HTTP_UPS_CONF | NGX_CONF_TAKE1,
        conf::upstream::set_supervisord_name,
        NGX_HTTP_SRV_CONF_OFFSET,
    ),
    directive(
        ngx_string!("supervisord_inherit_backend_status"),
        NGX_HTTP_UPS_CONF | NGX_CONF_NOARGS,
        conf::upstream::set_inherit_backend_status,
        NGX_HTTP_SRV_CONF_OFFSET,
    ),
    directive(
        ngx_string!("supervisord_timeout"),
        NGX_HTTP_UPS_CONF | NGX_CONF_TAKE1,
        conf::upstream::set_timeout,
        NGX_HTTP_SRV_CONF_OFFSET,
    ),
    directive(
        ngx_string!("supervisord_sync_interval"),
        NGX_HTTP_UPS_CONF | NGX_CONF_TAKE1,
        conf::upstream::set_sync_interval,
        NGX_HTTP_SRV_CONF_OFFSET,
    ),
    directive(
        ngx_string!("supervisord_hold_limit"),
        NGX_HTTP_UPS_CONF | NGX_CONF_TAKE1,
        conf::upstream::set_hold_limit,
        NGX_HTTP_SRV_CONF_OFFSET,
    ),
    directive(
        ngx_string!("supervisord_hold_timeout"),
        NGX_HTTP_UPS_CONF | NGX_CONF_TAKE1,
        conf::upstream::set_hold_timeout,
        NGX_HTTP_SRV_CONF_OFFSET,
    ),
    directive(
        ngx_string!("supervisord_start"),
        NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
        conf::location::set_supervisord_start,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    directive(
        ngx_string!("supervisord_stop"),
        NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
        conf::location::set_supervisord_stop,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    directive(
        ngx_string!("supervisord_status"),
        NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
        conf::location::set_supervisord_status,
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
    init_process: Some(init_process),
    ..ngx_module_t::default()
};

/// Each worker starts its reconciliation timers.
unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx passes the running cycle; without an http block there is no main conf.
    let Some(main) = Module::main_conf(unsafe { &*cycle }) else {
        return NGX_OK as ngx_int_t;
    };
    for &upstream in &main.upstreams {
        // SAFETY: upstream confs live as long as the cycle, i.e. the worker.
        reconciler::start(unsafe { &*upstream });
    }
    NGX_OK as ngx_int_t
}

ngx::ngx_modules!(ngx_supervisord_module);
