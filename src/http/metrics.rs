//! `supervisord_metrics;`: the Prometheus page of every managed upstream and backend, the same
//! from every worker (it reads the shared zone). The text is `core::render::metrics_text`'s.

use nginx_sys::{ngx_http_request_t, ngx_int_t, NGX_HTTP_OK};
use ngx::http::Request;

use crate::core::backend_event::BackendEvent;
use crate::core::render::metrics_text::{render, BackendFigures, UpstreamFigures, CONTENT_TYPE};
use crate::runtime::{worker, UpstreamRuntime};
use crate::util::reply::{refuse_unless_get_or_head, send_typed};

pub unsafe extern "C" fn handle(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls a content handler with a live request.
    let request = unsafe { Request::from_ngx_http_request(r) };
    if let Some(rc) = refuse_unless_get_or_head(request) {
        return rc;
    }
    let upstreams: Vec<UpstreamFigures<'_>> = worker::upstreams().iter().map(figures).collect();
    let body = render(&upstreams);
    // SAFETY: r is live.
    unsafe { send_typed(r, NGX_HTTP_OK, CONTENT_TYPE, &body, &[]) }
}

fn figures(upstream: &'static UpstreamRuntime) -> UpstreamFigures<'static> {
    let conf = upstream.conf;
    let shared = upstream.shared();
    UpstreamFigures {
        name: &conf.name,
        held: shared.held(),
        holds: shared.holds().load(),
        supervisord_reachable: conf
            .supervised()
            .then(|| upstream.hosts().iter().all(|host| !host.unreachable())),
        supervisords: upstream
            .hosts()
            .iter()
            .map(|host| (host.display(), !host.unreachable()))
            .collect(),
        backends: conf
            .backends
            .iter()
            .enumerate()
            .map(|(index, backend)| {
                let record = shared.backend(index);
                BackendFigures {
                    server: &backend.name,
                    status: record.status(),
                    in_flight: record.in_flight(),
                    requests: record.requests(),
                    events: BackendEvent::ALL.map(|event| record.events(event)),
                    ready: record.ready().load(),
                    cold_start: record.cold_start().load(),
                    supervisord: conf.supervised().then(|| upstream.host_of(index).display()),
                }
            })
            .collect(),
    }
}
