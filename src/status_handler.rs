//! `supervisord_status;`: a read-only JSON view of every managed upstream and backend, the same
//! from every worker (it reads the shared zone).

use nginx_sys::{
    ngx_http_discard_request_body, ngx_http_request_t, ngx_int_t, NGX_HTTP_GET, NGX_HTTP_HEAD,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_ALLOWED, NGX_HTTP_OK, NGX_OK,
};
use ngx::http::HttpModuleMainConf;

use crate::conf::UpstreamConf;
use crate::core::process_state::program_name;
use crate::core::status_json::{json_string, render_upstream, BackendView};
use crate::http_reply::send_text;
use crate::module::Module;

pub unsafe extern "C" fn handle(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls a content handler with a live request.
    let request = unsafe { &mut *r };
    if request.method & (NGX_HTTP_GET | NGX_HTTP_HEAD) as usize == 0 {
        // SAFETY: r is live.
        return unsafe {
            send_text(
                r,
                NGX_HTTP_NOT_ALLOWED,
                "supervisord_status: only GET and HEAD are allowed\n",
                &[("Allow", "GET, HEAD")],
            )
        };
    }
    // SAFETY: r is live.
    let rc = unsafe { ngx_http_discard_request_body(r) };
    if rc != NGX_OK as ngx_int_t {
        return rc;
    }
    let Some(main) = Module::main_conf(request) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let upstreams: Vec<String> = main
        .upstreams
        .iter()
        // SAFETY: upstream confs of this cycle.
        .map(|&upstream| render(unsafe { &*upstream }))
        .collect();
    let body = format!("{{\"upstreams\":[{}]}}\n", upstreams.join(","));
    // SAFETY: r is live.
    unsafe { send_text(r, NGX_HTTP_OK, &body, &[]) }
}

fn render(upstream: &UpstreamConf) -> String {
    let shared = upstream.shared();
    let managed = upstream.supervisord.is_some();
    let backends: Vec<BackendView> = upstream
        .backends
        .iter()
        .enumerate()
        .map(|(index, backend)| BackendView {
            server: &backend.name,
            program: managed.then(|| program_name(upstream.program_prefix(), index)),
            status: shared.backend(index).status(),
            in_flight: shared.backend(index).in_flight(),
        })
        .collect();
    render_upstream(
        &upstream.name,
        &json_string(
            &upstream
                .endpoint
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_default(),
        ),
        shared.held(),
        &backends,
    )
}
