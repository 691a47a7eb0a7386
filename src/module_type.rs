//! The module's type, through which every part finds its configuration (`Module::main_conf`,
//! `Module::location_conf`...). Kept apart from the module object in `module.rs` so that the
//! HTTP side can look configurations up without depending on the composition root.

use nginx_sys::ngx_module_t;
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf, HttpModuleServerConf};

use crate::conf::{LocationConf, MainConf, UpstreamConf};

extern "C" {
    /// Defined in `module.rs`.
    static ngx_supervisord_module: ngx_module_t;
}

pub struct Module;

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module object is a static that nginx only writes to (index, ctx_index)
        // while loading configuration, before any of our code reads it through this reference.
        unsafe { &*std::ptr::addr_of!(ngx_supervisord_module) }
    }
}

// SAFETY: the configuration types match what create_main_conf/create_srv_conf/create_loc_conf
// allocate for this module (the trait's own defaults, used in `module.rs`).
unsafe impl HttpModuleMainConf for Module {
    type MainConf = MainConf;
}
// SAFETY: create_srv_conf is `Module::create_srv_conf` (`module.rs`), which allocates an
// UpstreamConf for every srv conf of this module (server and upstream blocks).
unsafe impl HttpModuleServerConf for Module {
    type ServerConf = UpstreamConf;
}
// SAFETY: create_loc_conf is `Module::create_loc_conf` (`module.rs`), which allocates a
// LocationConf for every loc conf of this module.
unsafe impl HttpModuleLocationConf for Module {
    type LocationConf = LocationConf;
}

/// This module's configuration of an upstream block, if it has one.
pub fn upstream_conf(
    uscf: &nginx_sys::ngx_http_upstream_srv_conf_t,
) -> Option<&'static mut UpstreamConf> {
    Module::server_conf_mut(uscf)
}
