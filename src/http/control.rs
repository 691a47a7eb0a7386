//! The content handler of `supervisord_start` / `supervisord_stop` locations:
//! `GET /loc/N` or `/loc/any` runs the command and answers with a one-line text body. With a
//! real supervisord the answer means "accepted": the status is STARTING_UP or SHUTTING_DOWN
//! and this worker's commander carries the command out. A stop with requests in flight to the
//! backend is answered at once as draining: the backend is out of rotation already, its program
//! is stopped once they are done (see `commander::stop_after_drain`).

use nginx_sys::{
    ngx_http_request_t, ngx_int_t, NGX_HTTP_CONFLICT, NGX_HTTP_INTERNAL_SERVER_ERROR,
    NGX_HTTP_NOT_FOUND, NGX_HTTP_OK, NGX_LOG_NOTICE,
};
use ngx::http::{HttpModuleLocationConf, Request};

use crate::core::backend_event::BackendEvent;
use crate::core::backend_status::{BackendStatus, Command};
use crate::core::commands::{select_backend, Decision, SelectError};
use crate::core::config::control_uri::parse_selector;
use crate::core::machine::{Action, Event};
use crate::core::start::reachability::control_failure_status;
use crate::core::start::start_watch::PendingStart;
use crate::module_type::Module;
use crate::runtime::{worker, UpstreamRuntime};
use crate::supervisord::commander::{self, StopBegun};
use crate::util::reply::{refuse_unless_get_or_head, send_text};
use crate::util::text::str_bytes;
use crate::util::time::now_ms;

struct Reply {
    status: u32,
    body: String,
    /// `Retry-After`, in seconds, for a 503.
    retry_after_s: Option<u64>,
}

impl Reply {
    fn new(status: u32, body: String) -> Self {
        Self {
            status,
            body,
            retry_after_s: None,
        }
    }
}

pub unsafe extern "C" fn handle(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls a content handler with a live request.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let Some(location) = Module::location_conf(request) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let (Some(command), false) = (location.command, location.upstream.is_null()) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let Some(upstream) = worker::upstream(location.upstream().index) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let uri = AsRef::<ngx_http_request_t>::as_ref(request).uri;
    if let Some(rc) = refuse_unless_get_or_head(request) {
        return rc;
    }
    let reply = run(command, upstream, str_bytes(&uri), request);
    let retry_after = reply.retry_after_s.map(|seconds| seconds.to_string());
    let headers: Vec<(&str, &str)> = retry_after
        .iter()
        .map(|seconds| ("Retry-After", seconds.as_str()))
        .collect();
    // SAFETY: r is live.
    unsafe { send_text(r, reply.status, &reply.body, &headers) }
}

fn run(
    command: Command,
    upstream: &'static UpstreamRuntime,
    path: &[u8],
    request: &Request,
) -> Reply {
    let conf = upstream.conf;
    let selector = match parse_selector(path, conf.backends.len()) {
        Ok(selector) => selector,
        Err(error) => {
            return Reply::new(
                NGX_HTTP_NOT_FOUND,
                format!(
                    "{command}: {error}: upstream \"{}\" has backends 0 to {} and \"any\"\n",
                    conf.name,
                    conf.backends.len() - 1
                ),
            )
        }
    };
    let mode = conf.mode();
    let lock = upstream.lock();
    let program_missing: Vec<bool> = upstream
        .shared()
        .backends()
        .iter()
        .map(|backend| backend.program_missing())
        .collect();
    let index = match select_backend(command, selector, &lock.statuses(), &program_missing) {
        Ok(index) => index,
        Err(SelectError::NoCandidate) => {
            let wanted = match command {
                Command::Start => "down",
                Command::Stop => "up",
            };
            return Reply::new(
                NGX_HTTP_CONFLICT,
                format!(
                    "{command} any: no backend of upstream \"{}\" is {wanted}\n",
                    conf.name
                ),
            );
        }
    };
    let before = lock.status(index);
    let step = lock.step(
        index,
        &Event::Asked {
            command,
            mode,
            cause: Some(match command {
                Command::Start => BackendEvent::StartByHand,
                Command::Stop => BackendEvent::StopByHand,
            }),
            pending: PendingStart::ByHand,
        },
        now_ms(),
    );
    drop(lock);
    ngx::ngx_log_debug!(
        request.log(),
        "supervisord: upstream \"{}\" backend {}: {} while {}: {:?}",
        conf.name,
        index,
        command,
        before,
        step.actions
    );
    if step.has(&Action::Declined(Decision::Conflict)) {
        return Reply::new(
            NGX_HTTP_CONFLICT,
            format!(
                "{command}: upstream \"{}\" backend {index} is {before}; try again once it is settled\n",
                conf.name
            ),
        );
    }
    let after = step.next.status;
    for action in &step.actions {
        if !matches!(action, Action::CarryOut(_)) {
            commander::carry_out_effect(upstream, index, action);
        }
    }
    let backend = &conf.backends[index];
    let mut draining = None;
    if step.has(&Action::CarryOut(command)) {
        let sent = match command {
            Command::Start => commander::try_execute(upstream, index, command),
            Command::Stop => commander::stop_after_drain(upstream, index).map(|begun| {
                if let StopBegun::Draining { in_flight } = begun {
                    draining = Some(in_flight);
                }
            }),
        };
        if let Err(error) = sent {
            // Nothing reached supervisord; the commander put the status back. The outage's
            // one line is in the error log already (`client`).
            let status = control_failure_status(&error, upstream.supervisord_unreachable(index));
            let what = if status == 503 {
                "supervisord cannot be reached for now"
            } else {
                "supervisord call failed"
            };
            return Reply {
                retry_after_s: (status == 503).then_some(1),
                ..Reply::new(
                    u32::from(status),
                    format!(
                        "{command}: upstream \"{}\" backend {index} ({}): {what}: {error}; status back to {}\n",
                        conf.name,
                        backend.name,
                        upstream.shared().backend(index).status()
                    ),
                )
            };
        }
    }
    let draining_note = draining
        .map(|in_flight| format!(" (draining {in_flight} in flight)"))
        .unwrap_or_default();
    if after != before {
        ngx::ngx_log_error!(
            NGX_LOG_NOTICE,
            request.log(),
            "supervisord: upstream \"{}\" backend {} ({}): {} -> {} by {}{}",
            conf.name,
            index,
            backend.name,
            before,
            after,
            command,
            draining_note
        );
    }
    Reply::new(
        NGX_HTTP_OK,
        describe(command, upstream, index, before, after, &draining_note),
    )
}

fn describe(
    command: Command,
    upstream: &UpstreamRuntime,
    index: usize,
    before: BackendStatus,
    after: BackendStatus,
    draining_note: &str,
) -> String {
    let change = if before == after {
        format!("already {after}")
    } else {
        format!("{before} -> {after}{draining_note}")
    };
    let in_flight = upstream.shared().backend(index).in_flight();
    let held = upstream.shared().held();
    format!(
        "{command}: upstream \"{}\" backend {index} ({}): {change}, {in_flight} in flight, {held} held\n",
        upstream.conf.name, upstream.conf.backends[index].name
    )
}
