//! nginx built with the core patches (`make patched`: init_busy and round-robin) and no module
//! loaded must behave as stock nginx: plain round robin, `down` honoured, and all peers down
//! answered 502 at once. The init_busy patch asks `peer.init` again on "no live upstreams";
//! with the stock balancer that finds no peer a second time and must end in nginx's own 502,
//! not in a loop, a hang or a crash.
//!
//! Runs only with `NGX_SUPERVISORD_PATCHED=1` (`make patched-test` sets it, and points
//! `NGX_SUPERVISORD_NGINX` at `build/patched/sbin/nginx`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nginx_tests::patched;
use nginx_tests::{
    free_port, recorded_requests, request, Backend, Config, Nginx, Server, Upstream,
};

/// A test-backend recording what it receives, and where.
fn recording_backend(name: &str) -> (Backend, PathBuf) {
    let port = free_port();
    let record = std::env::temp_dir().join(format!(
        "ngx-supervisord-record-{name}-{port}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&record);
    let backend = Backend::start_with_args(port, &["--record", record.to_str().unwrap()]);
    (backend, record)
}

fn start(name: &str, upstream: Upstream) -> Nginx {
    Nginx::start(
        name,
        &Config::new()
            .without_module()
            .workers(2)
            .error_log_level("debug")
            .upstream(upstream)
            .server(
                Server::new()
                    .reuseport()
                    .location("/", "proxy_pass http://backend;"),
            ),
    )
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

#[test]
fn round_robin_reaches_both_backends() {
    if !patched::enabled() {
        return;
    }
    let (first, first_record) = recording_backend("rr0");
    let (second, second_record) = recording_backend("rr1");
    let nginx = start(
        "patched-rr",
        Upstream::new("backend").servers(&[first.port, second.port]),
    );

    let mut bodies = BTreeSet::new();
    for i in 0..20 {
        let response = request(nginx.port, "GET", &format!("/rr/{i}"));
        assert_eq!(response.status, 200, "{response:?}");
        bodies.insert(response.body.trim().to_string());
    }
    let received = (
        recorded_requests(&first_record),
        recorded_requests(&second_record),
    );
    assert!(
        !received.0.is_empty() && !received.1.is_empty(),
        "{received:?}"
    );
    assert_eq!(received.0.len() + received.1.len(), 20, "{received:?}");
    assert_eq!(bodies.len(), 2, "responses from both backends: {bodies:?}");
    assert_eq!(count(&nginx.error_log(), "no live upstreams"), 0);
}

#[test]
fn down_server_gets_nothing() {
    if !patched::enabled() {
        return;
    }
    let (up, up_record) = recording_backend("up");
    let (down, down_record) = recording_backend("down");
    let nginx = start(
        "patched-down",
        Upstream::new("backend")
            .server(format!("127.0.0.1:{}", up.port))
            .server(format!("127.0.0.1:{} down", down.port)),
    );

    for i in 0..10 {
        let response = request(nginx.port, "GET", &format!("/down/{i}"));
        assert_eq!(response.status, 200, "{response:?}");
    }
    assert_eq!(recorded_requests(&up_record).len(), 10);
    assert_eq!(recorded_requests(&down_record), Vec::<String>::new());
}

/// Every request gets one 502 at once; the patch's second `peer.init` shows in the debug log
/// once per request, and "no live upstreams" twice (the first attempt, and the one the
/// recursion guard lets fall through to nginx's 502).
#[test]
fn all_peers_down_is_502_without_a_loop() {
    if !patched::enabled() {
        return;
    }
    let (first, first_record) = recording_backend("alldown0");
    let (second, second_record) = recording_backend("alldown1");
    let nginx = start(
        "patched-all-down",
        Upstream::new("backend")
            .server(format!("127.0.0.1:{} down", first.port))
            .server(format!("127.0.0.1:{} down", second.port)),
    );

    const REQUESTS: usize = 6;
    for i in 0..REQUESTS {
        let started = Instant::now();
        let response = request(nginx.port, "GET", &format!("/all-down/{i}"));
        assert_eq!(response.status, 502, "{response:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }
    let log = nginx.error_log();
    assert_eq!(
        count(&log, "http next upstream, init peer again"),
        REQUESTS,
        "the patched FT_NOLIVE path ran once per request"
    );
    assert_eq!(count(&log, "[error]"), 2 * REQUESTS);
    assert_eq!(count(&log, "no live upstreams"), 2 * REQUESTS);
    assert_eq!(
        recorded_requests(&first_record).len() + recorded_requests(&second_record).len(),
        0
    );
    nginx.assert_clean_log();
}

/// Backends that refuse connections: the first requests fail over both peers (502 after
/// "connect() failed"), then both peers are marked failed and the next ones find no live
/// upstream; every request gets its 502 at once either way.
#[test]
fn all_peers_failed_is_502_without_a_loop() {
    if !patched::enabled() {
        return;
    }
    let ports = [free_port(), free_port()];
    let nginx = start(
        "patched-all-failed",
        Upstream::new("backend").servers(&ports),
    );

    for i in 0..6 {
        let started = Instant::now();
        let response = request(nginx.port, "GET", &format!("/all-failed/{i}"));
        assert_eq!(response.status, 502, "{response:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }
    let log = nginx.error_log();
    assert!(count(&log, "connect() failed") >= 2, "{log}");
    assert!(
        count(&log, "http next upstream, init peer again") >= 1,
        "{log}"
    );
    assert_eq!(
        count(&log, "no live upstreams"),
        2 * count(&log, "http next upstream, init peer again")
    );
    nginx.assert_clean_log();
}
