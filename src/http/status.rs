//! `supervisord_status;`: a read-only JSON view of every managed upstream and backend, the same
//! from every worker (it reads the shared zone).

use nginx_sys::{ngx_http_request_t, ngx_int_t, NGX_HTTP_OK};
use ngx::http::Request;

use crate::core::backend_event::BackendEvent;
use crate::core::backend_status::BackendStatus;
use crate::core::render::status_json::{json_string, render_upstream, BackendRow};
use crate::runtime::{worker, UpstreamRuntime};
use crate::util::reply::{refuse_unless_get_or_head, send_text};
use crate::util::time::now_ms;

pub unsafe extern "C" fn handle(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls a content handler with a live request.
    let request = unsafe { Request::from_ngx_http_request(r) };
    if let Some(rc) = refuse_unless_get_or_head(request) {
        return rc;
    }
    let upstreams: Vec<String> = worker::upstreams().iter().map(render).collect();
    let body = format!("{{\"upstreams\":[{}]}}\n", upstreams.join(","));
    // SAFETY: r is live.
    unsafe { send_text(r, NGX_HTTP_OK, &body, &[]) }
}

fn render(upstream: &'static UpstreamRuntime) -> String {
    let conf = upstream.conf;
    let shared = upstream.shared();
    let now = now_ms();
    let backends: Vec<BackendRow> = conf
        .backends
        .iter()
        .enumerate()
        .map(|(index, backend)| {
            let record = shared.backend(index);
            BackendRow {
                server: &backend.name,
                program: conf.supervised().then(|| backend.program.clone()),
                status: record.status(),
                in_flight: record.in_flight(),
                requests: record.requests(),
                events: BackendEvent::ALL.map(|event| record.events(event)),
                ready: record.ready().load(),
                cold_start: record.cold_start().load(),
                backoff_left_ms: record.start_backoff().wait_left_ms(now),
                idle_ms: (record.status() == BackendStatus::Up)
                    .then(|| now.saturating_sub(record.idle_since())),
                started_here: record.started_here(),
                supervisord: conf.supervised().then(|| upstream.host_of(index).display()),
                supervisord_reachable: conf
                    .supervised()
                    .then(|| !upstream.supervisord_unreachable(index)),
            }
        })
        .collect();
    render_upstream(
        &conf.name,
        &json_string(&conf.supervisord_text()),
        conf.supervised()
            .then(|| upstream.hosts().iter().all(|host| !host.unreachable())),
        shared.held(),
        shared.holds().load(),
        &backends,
    )
}
