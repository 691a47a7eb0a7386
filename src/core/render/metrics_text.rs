//! The page of `supervisord_metrics`: Prometheus text exposition format 0.0.4, one series per
//! upstream and backend. Plain figures in (read from the shared zone by the handler), text out.
//! Every family is written once, with its HELP and TYPE lines, its samples for every upstream
//! and backend grouped under it (the format requires a family's samples to be together).

use std::fmt::Write;

use crate::backend_event::BackendEvent;
use crate::backend_status::BackendStatus;

use super::timings::Timings;

/// The `Content-Type` of the page.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the page shows of one backend.
pub struct BackendFigures<'a> {
    /// Its `server` line's name (the address as written).
    pub server: &'a str,
    pub status: BackendStatus,
    pub in_flight: i64,
    pub requests: u64,
    /// Per `BackendEvent` (indexed by its `slot()`), how many times it happened.
    pub events: [u64; BackendEvent::COUNT],
    /// Starts that ended UP (from the start command to accepting connections).
    pub ready: Timings,
    /// Cold starts (first held request's arrival to its first response header).
    pub cold_start: Timings,
    /// The address of its supervisord (`None` without one).
    pub supervisord: Option<&'a str>,
}

/// What the page shows of one upstream.
pub struct UpstreamFigures<'a> {
    pub name: &'a str,
    pub held: i64,
    /// Holds that ended.
    pub holds: Timings,
    /// Whether supervisord answers (every one, when it names several); `None` for an
    /// upstream without one.
    pub supervisord_reachable: Option<bool>,
    /// Each of its supervisords (address) and whether it answers.
    pub supervisords: Vec<(&'a str, bool)>,
    pub backends: Vec<BackendFigures<'a>>,
}

const STATUSES: [BackendStatus; 4] = [
    BackendStatus::Down,
    BackendStatus::StartingUp,
    BackendStatus::Up,
    BackendStatus::ShuttingDown,
];

/// A status as a label value (no spaces, as label values usually are).
pub fn status_label(status: BackendStatus) -> &'static str {
    match status {
        BackendStatus::Down => "down",
        BackendStatus::StartingUp => "starting_up",
        BackendStatus::Up => "up",
        BackendStatus::ShuttingDown => "shutting_down",
    }
}

/// A label value escaped as the format asks: backslash, double quote and line feed.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for character in value.chars() {
        match character {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Milliseconds as seconds with millisecond resolution (`1.234`).
pub fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

const PREFIX: &str = "ngx_supervisord_";

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {PREFIX}{name} {help}");
    let _ = writeln!(out, "# TYPE {PREFIX}{name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: &str) {
    out.push_str(PREFIX);
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (position, (label, value)) in labels.iter().enumerate() {
            if position > 0 {
                out.push(',');
            }
            let _ = write!(out, "{label}=\"{}\"", escape_label_value(value));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// Writes one backend family: `value` gives each backend's samples as (extra labels, value).
fn backend_family<F>(
    out: &mut String,
    upstreams: &[UpstreamFigures<'_>],
    (name, kind, help): (&str, &str, &str),
    samples_of: F,
) where
    F: Fn(&BackendFigures<'_>) -> Vec<(Option<(&'static str, &'static str)>, String)>,
{
    family(out, name, kind, help);
    for upstream in upstreams {
        for (index, backend) in upstream.backends.iter().enumerate() {
            let index = index.to_string();
            for (extra, value) in samples_of(backend) {
                let mut labels = vec![
                    ("upstream", upstream.name),
                    ("backend", index.as_str()),
                    ("server", backend.server),
                ];
                labels.extend(extra);
                sample(out, name, &labels, &value);
            }
        }
    }
}

/// Writes one summary of milliseconds per backend as seconds: `figures` gives each backend's.
fn summary_family<F>(
    out: &mut String,
    upstreams: &[UpstreamFigures<'_>],
    (name, help): (&str, &str),
    figures: F,
) where
    F: Fn(&BackendFigures<'_>) -> Timings,
{
    family(out, name, "summary", help);
    for upstream in upstreams {
        for (index, backend) in upstream.backends.iter().enumerate() {
            let index = index.to_string();
            let labels = [
                ("upstream", upstream.name),
                ("backend", index.as_str()),
                ("server", backend.server),
            ];
            let timings = figures(backend);
            sample(
                out,
                &format!("{name}_sum"),
                &labels,
                &seconds(timings.sum_ms),
            );
            sample(
                out,
                &format!("{name}_count"),
                &labels,
                &timings.count.to_string(),
            );
        }
    }
}

fn upstream_family<F>(
    out: &mut String,
    upstreams: &[UpstreamFigures<'_>],
    (name, kind, help): (&str, &str, &str),
    value_of: F,
) where
    F: Fn(&UpstreamFigures<'_>) -> Option<String>,
{
    family(out, name, kind, help);
    for upstream in upstreams {
        if let Some(value) = value_of(upstream) {
            sample(out, name, &[("upstream", upstream.name)], &value);
        }
    }
}

/// Events of one metric (`starts`, `stops`), with their cause labels.
fn events_of(
    backend: &BackendFigures<'_>,
    metric: &str,
) -> Vec<(Option<(&'static str, &'static str)>, String)> {
    BackendEvent::ALL
        .iter()
        .filter(|event| event.metric().0 == metric)
        .map(|event| {
            (
                Some(("cause", event.metric().1)),
                backend.events[event.slot()].to_string(),
            )
        })
        .collect()
}

fn one(value: impl ToString) -> Vec<(Option<(&'static str, &'static str)>, String)> {
    vec![(None, value.to_string())]
}

/// The whole page.
pub fn render(upstreams: &[UpstreamFigures<'_>]) -> String {
    let mut out = String::new();
    backend_family(
        &mut out,
        upstreams,
        (
            "backend_up",
            "gauge",
            "Whether the backend is up (takes requests).",
        ),
        |backend| one(u8::from(backend.status == BackendStatus::Up)),
    );
    backend_family(
        &mut out,
        upstreams,
        (
            "backend_status",
            "gauge",
            "The backend's status: 1 for the current one.",
        ),
        |backend| {
            STATUSES
                .iter()
                .map(|&status| {
                    (
                        Some(("status", status_label(status))),
                        u8::from(backend.status == status).to_string(),
                    )
                })
                .collect()
        },
    );
    backend_family(
        &mut out,
        upstreams,
        (
            "backend_in_flight",
            "gauge",
            "Requests in flight to the backend, over all workers.",
        ),
        |backend| one(backend.in_flight),
    );
    backend_family(
        &mut out,
        upstreams,
        (
            "backend_requests_total",
            "counter",
            "Requests the balancer sent to the backend.",
        ),
        |backend| one(backend.requests),
    );
    backend_family(
        &mut out,
        upstreams,
        (
            "backend_starts_total",
            "counter",
            "Starts of the backend by cause: on_demand (a request found none up), by_hand (/_start, or started outside nginx), minimum (supervisord_min_servers), load (supervisord_scale_up), balancer (a balancer module through the C API).",
        ),
        |backend| events_of(backend, "starts"),
    );
    backend_family(
        &mut out,
        upstreams,
        (
            "backend_stops_total",
            "counter",
            "Stops of the backend by cause: by_hand (/_stop), idle (supervisord_idle_timeout), light_load, failure (the failure rule took it down or restarted it), balancer (a balancer module through the C API).",
        ),
        |backend| events_of(backend, "stops"),
    );
    backend_family(
        &mut out,
        upstreams,
        (
            "backend_failed_starts_total",
            "counter",
            "Starts of the backend that failed.",
        ),
        |backend| one(backend.events[BackendEvent::StartFailed.slot()]),
    );
    summary_family(
        &mut out,
        upstreams,
        (
            "backend_cold_start_seconds",
            "Time from the arrival of the first request held while no backend was up to the \
             first response header it got from the backend.",
        ),
        |backend| backend.cold_start,
    );
    summary_family(
        &mut out,
        upstreams,
        (
            "backend_ready_seconds",
            "Time from a start nginx sent to the backend accepting connections.",
        ),
        |backend| backend.ready,
    );
    upstream_family(
        &mut out,
        upstreams,
        (
            "upstream_held",
            "gauge",
            "Requests held now, over all workers, waiting for a backend to come up.",
        ),
        |upstream| Some(upstream.held.to_string()),
    );
    family(
        &mut out,
        "upstream_hold_seconds",
        "summary",
        "Time requests were held (each hold once it ended: resumed, answered, or the client left).",
    );
    for upstream in upstreams {
        let labels = [("upstream", upstream.name)];
        sample(
            &mut out,
            "upstream_hold_seconds_sum",
            &labels,
            &seconds(upstream.holds.sum_ms),
        );
        sample(
            &mut out,
            "upstream_hold_seconds_count",
            &labels,
            &upstream.holds.count.to_string(),
        );
    }
    upstream_family(
        &mut out,
        upstreams,
        (
            "upstream_supervisord_reachable",
            "gauge",
            "Whether the last call to the upstream's supervisord reached it.",
        ),
        |upstream| {
            upstream
                .supervisord_reachable
                .map(|reachable| u8::from(reachable).to_string())
        },
    );
    family(
        &mut out,
        "backend_supervisord",
        "gauge",
        "1 for the supervisord (address) that manages the backend.",
    );
    for upstream in upstreams {
        for (index, backend) in upstream.backends.iter().enumerate() {
            let Some(supervisord) = backend.supervisord else {
                continue;
            };
            let index = index.to_string();
            let labels = [
                ("upstream", upstream.name),
                ("backend", index.as_str()),
                ("server", backend.server),
                ("supervisord", supervisord),
            ];
            sample(&mut out, "backend_supervisord", &labels, "1");
        }
    }
    family(
        &mut out,
        "supervisord_reachable",
        "gauge",
        "Whether the last call to this supervisord of the upstream reached it.",
    );
    for upstream in upstreams {
        for (supervisord, reachable) in &upstream.supervisords {
            let labels = [("upstream", upstream.name), ("supervisord", *supervisord)];
            sample(
                &mut out,
                "supervisord_reachable",
                &labels,
                &u8::from(*reachable).to_string(),
            );
        }
    }
    upstream_family(
        &mut out,
        upstreams,
        (
            "upstream_backends_up",
            "gauge",
            "Backends of the upstream that are up.",
        ),
        |upstream| {
            Some(
                upstream
                    .backends
                    .iter()
                    .filter(|backend| backend.status == BackendStatus::Up)
                    .count()
                    .to_string(),
            )
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(server: &str, status: BackendStatus) -> BackendFigures<'_> {
        BackendFigures {
            server,
            status,
            in_flight: 0,
            requests: 0,
            events: [0; BackendEvent::COUNT],
            ready: Timings::default(),
            cold_start: Timings::default(),
            supervisord: None,
        }
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(escape_label_value("127.0.0.1:8000"), "127.0.0.1:8000");
    }

    #[test]
    fn seconds_have_millisecond_resolution() {
        assert_eq!(seconds(0), "0.000");
        assert_eq!(seconds(7), "0.007");
        assert_eq!(seconds(1234), "1.234");
        assert_eq!(seconds(60_000), "60.000");
    }

    #[test]
    fn renders_every_family_once_with_its_samples() {
        let mut first = backend("127.0.0.1:8000", BackendStatus::Up);
        first.in_flight = 2;
        first.requests = 5;
        first.events[BackendEvent::StartOnDemand.slot()] = 1;
        first.events[BackendEvent::StopIdle.slot()] = 3;
        first.events[BackendEvent::StartFailed.slot()] = 4;
        first.cold_start = Timings {
            count: 2,
            sum_ms: 1500,
        };
        first.ready = Timings {
            count: 2,
            sum_ms: 620,
        };
        first.supervisord = Some("127.0.0.2:9001");
        let upstreams = [
            UpstreamFigures {
                name: "app",
                held: 1,
                holds: Timings {
                    count: 6,
                    sum_ms: 250,
                },
                supervisord_reachable: Some(false),
                supervisords: vec![("127.0.0.2:9001", true), ("127.0.0.3:9001", false)],
                backends: vec![
                    first,
                    backend("unix:/tmp/b.sock", BackendStatus::StartingUp),
                ],
            },
            UpstreamFigures {
                name: "plain",
                held: 0,
                holds: Timings::default(),
                supervisord_reachable: None,
                supervisords: Vec::new(),
                backends: vec![backend("10.0.0.1", BackendStatus::Down)],
            },
        ];
        let page = render(&upstreams);
        let lines: Vec<&str> = page.lines().collect();
        let app0 = "upstream=\"app\",backend=\"0\",server=\"127.0.0.1:8000\"";
        for expected in [
            format!("ngx_supervisord_backend_up{{{app0}}} 1"),
            "ngx_supervisord_backend_up{upstream=\"app\",backend=\"1\",server=\"unix:/tmp/b.sock\"} 0".to_string(),
            format!("ngx_supervisord_backend_status{{{app0},status=\"up\"}} 1"),
            format!("ngx_supervisord_backend_status{{{app0},status=\"down\"}} 0"),
            "ngx_supervisord_backend_status{upstream=\"app\",backend=\"1\",server=\"unix:/tmp/b.sock\",status=\"starting_up\"} 1".to_string(),
            format!("ngx_supervisord_backend_in_flight{{{app0}}} 2"),
            format!("ngx_supervisord_backend_requests_total{{{app0}}} 5"),
            format!("ngx_supervisord_backend_starts_total{{{app0},cause=\"on_demand\"}} 1"),
            format!("ngx_supervisord_backend_starts_total{{{app0},cause=\"minimum\"}} 0"),
            format!("ngx_supervisord_backend_starts_total{{{app0},cause=\"load\"}} 0"),
            format!("ngx_supervisord_backend_stops_total{{{app0},cause=\"idle\"}} 3"),
            format!("ngx_supervisord_backend_stops_total{{{app0},cause=\"light_load\"}} 0"),
            format!("ngx_supervisord_backend_failed_starts_total{{{app0}}} 4"),
            format!("ngx_supervisord_backend_cold_start_seconds_sum{{{app0}}} 1.500"),
            format!("ngx_supervisord_backend_cold_start_seconds_count{{{app0}}} 2"),
            format!("ngx_supervisord_backend_ready_seconds_sum{{{app0}}} 0.620"),
            format!("ngx_supervisord_backend_ready_seconds_count{{{app0}}} 2"),
            "ngx_supervisord_upstream_held{upstream=\"app\"} 1".to_string(),
            "ngx_supervisord_upstream_hold_seconds_sum{upstream=\"app\"} 0.250".to_string(),
            "ngx_supervisord_upstream_hold_seconds_count{upstream=\"app\"} 6".to_string(),
            "ngx_supervisord_upstream_supervisord_reachable{upstream=\"app\"} 0".to_string(),
            "ngx_supervisord_upstream_backends_up{upstream=\"app\"} 1".to_string(),
            format!("ngx_supervisord_backend_supervisord{{{app0},supervisord=\"127.0.0.2:9001\"}} 1"),
            "ngx_supervisord_supervisord_reachable{upstream=\"app\",supervisord=\"127.0.0.2:9001\"} 1".to_string(),
            "ngx_supervisord_supervisord_reachable{upstream=\"app\",supervisord=\"127.0.0.3:9001\"} 0".to_string(),
            "ngx_supervisord_upstream_backends_up{upstream=\"plain\"} 0".to_string(),
        ] {
            assert!(lines.contains(&expected.as_str()), "missing {expected} in\n{page}");
        }
        // No reachability for an upstream without supervisord.
        assert!(!page.contains("supervisord_reachable{upstream=\"plain\"}"));
        // Every family: one HELP and one TYPE line, then only its own samples.
        let mut families = Vec::new();
        let mut current = String::new();
        for line in &lines {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(!families.contains(&name), "{name} twice");
                families.push(name.clone());
                current = name;
            } else if !line.starts_with('#') {
                assert!(
                    line.starts_with(&current),
                    "{line} outside its family {current}"
                );
            }
        }
        assert_eq!(families.len(), 15);
        assert_eq!(page.matches("# HELP ").count(), families.len());
        assert!(page.ends_with('\n'));
    }

    #[test]
    fn every_status_has_one_series() {
        let upstreams = [UpstreamFigures {
            supervisords: Vec::new(),
            name: "a\"b",
            held: 0,
            holds: Timings::default(),
            supervisord_reachable: Some(true),
            backends: vec![backend("s", BackendStatus::ShuttingDown)],
        }];
        let page = render(&upstreams);
        let statuses: Vec<&str> = page
            .lines()
            .filter(|line| line.starts_with("ngx_supervisord_backend_status{"))
            .collect();
        assert_eq!(statuses.len(), 4);
        assert_eq!(
            statuses.iter().filter(|line| line.ends_with(" 1")).count(),
            1
        );
        assert!(page.contains("status=\"shutting_down\"} 1"));
        assert!(page.contains("upstream=\"a\\\"b\""));
    }
}
