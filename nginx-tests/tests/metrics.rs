//! Observability: the `supervisord_metrics` page (Prometheus text format, read by the real
//! Prometheus Python parser), the same figures in the `supervisord_status` JSON, and the
//! `$supervisord_hold_time` / `$supervisord_backend` variables in an access log.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use nginx_tests::raw::RawConnection;
use nginx_tests::status::Status;
use nginx_tests::supervisord::{Program, Supervisord};
use nginx_tests::{
    eventually, free_port, recorded_requests, request, Config, Nginx, Server, Upstream,
};

/// One sample of the page: its name, its labels, its value.
#[derive(Debug, serde::Deserialize)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// Debian's Python, where `python3-prometheus-client` (installed by `.ci/install-deps`) lives;
/// a `python3` found first on the PATH (pyenv) may lack it.
const PYTHON: &str = "/usr/bin/python3";

/// Every sample of `page`, as the Prometheus client library's parser reads it (it fails on a
/// page that breaks the text format).
fn parse_with_prometheus(page: &str) -> Vec<Sample> {
    let script = "import json, sys\n\
                  from prometheus_client.parser import text_string_to_metric_families\n\
                  samples = [{'name': s.name, 'labels': s.labels, 'value': s.value}\n\
                             for family in text_string_to_metric_families(sys.stdin.read())\n\
                             for s in family.samples]\n\
                  print(json.dumps(samples))\n";
    let mut child = Command::new(PYTHON)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 (make deps installs python3-prometheus-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the Prometheus parser refused the page: {}\n{page}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The value of the one sample called `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(value))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0].value
}

fn record_file(port: u16) -> PathBuf {
    let path = std::env::temp_dir().join(format!("ngx-supervisord-metrics-record-{port}"));
    let _ = std::fs::remove_file(&path);
    path
}

#[test]
fn the_metrics_page_parses_and_counts_what_happened() {
    let ports = [free_port(), free_port()];
    let record = record_file(ports[0]);
    // Listens after 300 ms: the first request is held that long at least.
    let supervisord = Supervisord::start(
        "metrics",
        &[
            Program::backend_with(
                "backend0",
                ports[0],
                1,
                &format!("--listen-after 300 --record {}", record.display()),
            ),
            Program::backend("backend1", ports[1], 0),
        ],
        "",
    );
    let config = Config::new()
        .workers(2)
        .upstream(
            Upstream::new("backend")
                .servers(&ports)
                .supervisord(supervisord.address())
                .sync_interval("off"),
        )
        .server(
            Server::new()
                .reuseport()
                .location("/", "proxy_pass http://backend;")
                .location("/_stop/", "supervisord_stop backend;")
                .location("= /_status", "supervisord_status;")
                .location("= /metrics", "supervisord_metrics;")
                .location("= /metrics-denied", "supervisord_metrics;\ndeny all;"),
        );
    let nginx = Nginx::start("metrics", &config);

    // Before anything happened: every counter 0, both backends down.
    let page = nginx.get("/metrics");
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(
        page.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let samples = parse_with_prometheus(&page.body);
    assert_eq!(
        value(
            &samples,
            "ngx_supervisord_backend_starts_total",
            &[("backend", "0"), ("cause", "on_demand")]
        ),
        0.0
    );

    // One cold start with a held request that the backend answers in 400 ms, then direct
    // requests, then a stop by hand.
    let first = nginx.get("/slow/400");
    assert_eq!(first.status, 200, "{first:?}");
    let direct = 4;
    for _ in 0..direct {
        assert_eq!(nginx.get("/").status, 200);
    }
    let sent = 1 + direct;
    assert_eq!(recorded_requests(&record).len(), sent);
    assert_eq!(nginx.get("/_stop/0").status, 200);
    assert!(eventually(10, || {
        nginx
            .supervisord_status("/_status")
            .upstream("backend")
            .backends[0]
            .status
            == Status::Down
    }));

    let page = nginx.get("/metrics");
    assert_eq!(page.status, 200, "{page:?}");
    let samples = parse_with_prometheus(&page.body);
    let server0 = format!("127.0.0.1:{}", ports[0]);
    let backend0 = |name: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![
            ("upstream", "backend"),
            ("backend", "0"),
            ("server", server0.as_str()),
        ];
        labels.extend_from_slice(extra);
        value(&samples, name, &labels)
    };
    let starts = "ngx_supervisord_backend_starts_total";
    let stops = "ngx_supervisord_backend_stops_total";
    assert_eq!(backend0(starts, &[("cause", "on_demand")]), 1.0);
    for cause in ["by_hand", "minimum", "load", "balancer"] {
        assert_eq!(backend0(starts, &[("cause", cause)]), 0.0, "{cause}");
    }
    assert_eq!(backend0(stops, &[("cause", "by_hand")]), 1.0);
    for cause in ["idle", "light_load", "failure", "balancer"] {
        assert_eq!(backend0(stops, &[("cause", cause)]), 0.0, "{cause}");
    }
    assert_eq!(
        backend0("ngx_supervisord_backend_requests_total", &[]),
        sent as f64
    );
    assert_eq!(
        backend0("ngx_supervisord_backend_failed_starts_total", &[]),
        0.0
    );
    assert_eq!(backend0("ngx_supervisord_backend_up", &[]), 0.0);
    assert_eq!(
        backend0("ngx_supervisord_backend_status", &[("status", "down")]),
        1.0
    );
    assert_eq!(
        backend0("ngx_supervisord_backend_status", &[("status", "up")]),
        0.0
    );
    assert_eq!(backend0("ngx_supervisord_backend_in_flight", &[]), 0.0);
    assert_eq!(
        backend0("ngx_supervisord_backend_cold_start_seconds_count", &[]),
        1.0
    );
    let cold_start = backend0("ngx_supervisord_backend_cold_start_seconds_sum", &[]);
    assert!(
        (0.65..10.0).contains(&cold_start),
        "cold start took {cold_start} s; the program listens after 300 ms, answers in 400 ms"
    );
    assert_eq!(
        backend0("ngx_supervisord_backend_ready_seconds_count", &[]),
        1.0
    );
    let ready = backend0("ngx_supervisord_backend_ready_seconds_sum", &[]);
    assert!(
        (0.25..10.0).contains(&ready) && ready + 0.35 <= cold_start,
        "ready after {ready} s, cold start {cold_start} s"
    );
    // Backend 1 was never used.
    let backend1 = |name: &str| value(&samples, name, &[("backend", "1")]);
    assert_eq!(backend1("ngx_supervisord_backend_requests_total"), 0.0);
    assert_eq!(
        backend1("ngx_supervisord_backend_cold_start_seconds_count"),
        0.0
    );
    let upstream = |name: &str| value(&samples, name, &[("upstream", "backend")]);
    assert_eq!(upstream("ngx_supervisord_upstream_hold_seconds_count"), 1.0);
    let held_for = upstream("ngx_supervisord_upstream_hold_seconds_sum");
    // Held until the backend was ready, then answered: the hold and the backend's answer
    // add up to the cold start.
    assert!(
        (0.25..10.0).contains(&held_for) && held_for + 0.35 <= cold_start,
        "held {held_for} s, cold start {cold_start} s"
    );
    assert_eq!(upstream("ngx_supervisord_upstream_held"), 0.0);
    assert_eq!(upstream("ngx_supervisord_upstream_backends_up"), 0.0);
    assert_eq!(
        upstream("ngx_supervisord_upstream_supervisord_reachable"),
        1.0
    );

    // The status JSON shows the same figures.
    let status = nginx.supervisord_status("/_status");
    let json = status.upstream("backend");
    assert_eq!(json.holds.count, 1);
    assert_eq!(json.holds.sum_ms, (held_for * 1000.0).round() as u64);
    let b0 = &json.backends[0];
    assert_eq!(b0.requests, sent as u64);
    assert_eq!(b0.starts.on_demand, 1);
    assert_eq!(b0.stops.by_hand, 1);
    assert_eq!(b0.failed_starts, 0);
    assert_eq!(b0.cold_start_ms.count, 1);
    assert_eq!(b0.cold_start_ms.sum, (cold_start * 1000.0).round() as u64);
    assert_eq!(b0.ready_ms.count, 1);
    assert_eq!(b0.ready_ms.sum, (ready * 1000.0).round() as u64);
    assert_eq!(json.backends[1].requests, 0);
    // One line per step in the error log.
    let log = nginx.error_log();
    assert_eq!(log.matches("starting up -> up").count(), 1, "{log}");
    assert_eq!(supervisord.log().matches("spawned: 'backend0'").count(), 1);
}

#[test]
fn the_metrics_location_keeps_access_rules_and_refuses_other_methods() {
    let port = free_port();
    let supervisord = Supervisord::start("metrics-access", &[], "");
    let config = Config::new()
        .workers(2)
        .upstream(
            Upstream::new("backend")
                .server(format!("127.0.0.1:{port}"))
                .supervisord(supervisord.address())
                .sync_interval("off"),
        )
        .server(
            Server::new()
                .reuseport()
                .location("/", "proxy_pass http://backend;")
                .location("= /metrics", "supervisord_metrics;")
                .location("= /metrics-denied", "supervisord_metrics;\ndeny all;"),
        );
    let nginx = Nginx::start("metrics-access", &config);
    let denied = nginx.get("/metrics-denied");
    assert_eq!(denied.status, 403, "{denied:?}");
    assert!(!denied.body.contains("ngx_supervisord_"), "{denied:?}");
    // HEAD: the headers only.
    let head = request(nginx.port, "HEAD", "/metrics");
    assert_eq!(head.status, 200, "{head:?}");
    assert!(head.body.is_empty(), "{head:?}");
    // POST with a body that looks like a request: one 405, the body read away, and the next
    // request on the connection answered as itself.
    let smuggled = "GET /metrics-denied HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut connection = RawConnection::open(nginx.port);
    connection.send(
        format!(
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        )
        .as_bytes(),
    );
    let refused = connection
        .next_response(Duration::from_secs(5))
        .expect("an answer to POST");
    assert_eq!(refused.status, 405, "{refused:?}");
    assert_eq!(refused.header("Allow"), Some("GET, HEAD"));
    connection.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let next = connection
        .next_response(Duration::from_secs(5))
        .expect("an answer to the next request");
    assert_eq!(next.status, 200, "{next:?}");
    assert!(
        next.body.contains("ngx_supervisord_backend_up{"),
        "{next:?}"
    );
    let extra = connection.rest_until_closed();
    assert!(
        extra.is_empty(),
        "a third answer: {}",
        String::from_utf8_lossy(&extra)
    );
    // Nothing was started by any of this.
    assert_eq!(supervisord.log().matches("spawned:").count(), 0);
}

#[test]
fn log_variables_show_the_hold_time_and_the_backend() {
    let ports = [free_port(), free_port()];
    let supervisord = Supervisord::start(
        "log-variables",
        &[
            Program::backend_with("backend0", ports[0], 1, "--listen-after 300"),
            Program::backend("backend1", ports[1], 0),
        ],
        "",
    );
    let config = Config::new()
        .workers(2)
        .http_raw(
            "log_format held '$request_uri held=$supervisord_hold_time \
             backend=$supervisord_backend status=$status';",
        )
        .upstream(
            Upstream::new("backend")
                .servers(&ports)
                .supervisord(supervisord.address())
                .sync_interval("off"),
        )
        .server(
            Server::new()
                .reuseport()
                .raw("access_log logs/held.log held;")
                .location("/", "proxy_pass http://backend;")
                .location("= /_status", "supervisord_status;"),
        );
    let nginx = Nginx::start("log-variables", &config);
    // Held for the cold start, then straight through, then one that reaches no backend.
    assert_eq!(nginx.get("/first").status, 200);
    assert_eq!(nginx.get("/second").status, 200);
    assert_eq!(nginx.get("/_status").status, 200);
    let path = nginx.prefix.dir.join("logs/held.log");
    let mut lines = Vec::new();
    assert!(eventually(5, || {
        lines = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        lines.len() == 3
    }));
    let line_of = |uri: &str| {
        lines
            .iter()
            .find(|line| line.starts_with(&format!("{uri} ")))
            .unwrap_or_else(|| panic!("no line for {uri}: {lines:?}"))
            .clone()
    };
    let first = line_of("/first");
    let fields: HashMap<&str, &str> = first
        .split(' ')
        .skip(1)
        .filter_map(|field| field.split_once('='))
        .collect();
    assert_eq!(fields["backend"], "0", "{first}");
    assert_eq!(fields["status"], "200", "{first}");
    let held = fields["held"];
    let (whole, millis) = held.split_once('.').unwrap_or_else(|| panic!("{first}"));
    assert_eq!(millis.len(), 3, "millisecond resolution: {first}");
    let held_s: f64 = held.parse().unwrap();
    assert!(
        whole.parse::<u64>().is_ok() && (0.25..10.0).contains(&held_s),
        "held for the 300 ms cold start: {first}"
    );
    // The same time as the status's hold sum (one hold).
    let holds = nginx
        .supervisord_status("/_status")
        .upstream("backend")
        .holds;
    assert_eq!(holds.count, 1);
    assert_eq!(
        format!("{}.{:03}", holds.sum_ms / 1000, holds.sum_ms % 1000),
        held
    );
    assert_eq!(line_of("/second"), "/second held=- backend=0 status=200");
    assert_eq!(line_of("/_status"), "/_status held=- backend=- status=200");
}
