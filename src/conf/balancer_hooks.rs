//! What a C balancer module registers through the C API (`include/ngx_supervisord.h`): the
//! callback types with their C layout. Registered at configuration time, kept in the
//! upstream's configuration, called by the per-worker runtime.

use nginx_sys::{ngx_http_upstream_srv_conf_t, ngx_int_t, ngx_msec_t, ngx_uint_t};

use crate::core::policy::balancer_api::LoadFigures;

/// `ngx_supervisord_backend_pt`: told each backend's new status.
pub type BackendMonitor = unsafe extern "C" fn(
    uscf: *mut ngx_http_upstream_srv_conf_t,
    backend: ngx_uint_t,
    status: ngx_uint_t,
);

/// `ngx_supervisord_load_pt`: told the load of the interval just ended (by value).
pub type LoadMonitor =
    unsafe extern "C" fn(uscf: *mut ngx_http_upstream_srv_conf_t, load: LoadReport);

/// `ngx_supervisord_checker_pt`: NGX_OK when a command for `backend` may be sent now.
pub type Checker =
    unsafe extern "C" fn(uscf: *mut ngx_http_upstream_srv_conf_t, backend: ngx_uint_t) -> ngx_int_t;

/// `ngx_supervisord_load_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadReport {
    pub load: ngx_uint_t,
    pub reqs: ngx_uint_t,
    pub interval: ngx_msec_t,
    pub aservers: ngx_uint_t,
    pub nservers: ngx_uint_t,
}

impl From<LoadFigures> for LoadReport {
    fn from(figures: LoadFigures) -> Self {
        Self {
            load: figures.load as ngx_uint_t,
            reqs: figures.requests as ngx_uint_t,
            interval: figures.interval_ms as ngx_msec_t,
            aservers: figures.up as ngx_uint_t,
            nservers: figures.backends as ngx_uint_t,
        }
    }
}

/// The hooks one upstream's balancer registered; one of each, a later registration replaces
/// an earlier one (as in ngx_supervisord 1.4).
#[derive(Clone, Copy, Default)]
pub struct BalancerHooks {
    pub backend_monitor: Option<BackendMonitor>,
    pub load_monitor: Option<LoadMonitor>,
}

impl BalancerHooks {
    /// The upstream's balancer is one of the C API (it registered a monitor).
    pub fn in_use(&self) -> bool {
        self.backend_monitor.is_some() || self.load_monitor.is_some()
    }
}
