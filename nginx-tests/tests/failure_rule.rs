//! Failed requests count as nginx counts them (`max_fails` within `fail_timeout`), and a
//! backend that reaches its limit is checked before anything is done to it: left UP while it
//! accepts connections, DOWN without a stop call when its program is not running, restarted
//! when its program runs but refuses connections. A slow or failing request never takes the
//! other requests down with it.

use nginx_tests::status::Status;
use nginx_tests::supervisord::{Program, Supervisord};
use std::time::Duration;

use nginx_tests::raw::RawConnection;
use nginx_tests::{eventually, free_port, scaled, spawn_requests, Config, Nginx, Server, Upstream};

/// nginx over `servers` (`server` lines), managed by `supervisord` without reconciliation, with
/// the `upstream_extra` directives; `/` passes to it after the `location_extra` lines, with
/// `/_start/`, `= /_status` and the `other_location` `(path, body)` beside. No `reuseport`:
/// each worker counts its own failures, as nginx does, and one client may stay with one.
fn nginx_counting_failures(
    name: &str,
    servers: &[String],
    supervisord: &Supervisord,
    upstream_extra: &[&str],
    location_extra: &str,
    other_location: Option<(&str, &str)>,
) -> Nginx {
    let upstream = servers.iter().fold(
        Upstream::new("backend")
            .supervisord(supervisord.address())
            .sync_interval("off"),
        |upstream, server| upstream.server(server),
    );
    let upstream = upstream.directives(upstream_extra);
    let mut server = Server::new()
        .location(
            "/",
            &format!("{location_extra}\nproxy_pass http://backend;"),
        )
        .location("/_start/", "supervisord_start backend;")
        .location("= /_status", "supervisord_status;");
    if let Some((path, directives)) = other_location {
        server = server.location(path, directives);
    }
    Nginx::start(
        name,
        &Config::new().workers(2).upstream(upstream).server(server),
    )
}

fn start_all(nginx: &Nginx, supervisord: &Supervisord, count: usize) {
    for index in 0..count {
        assert_eq!(nginx.get(&format!("/_start/{index}")).status, 200);
        supervisord.wait_state(&format!("backend{index}"), "RUNNING");
    }
    assert!(eventually(5, || nginx
        .supervisord_status("/_status")
        .upstream("backend")
        .backends
        .iter()
        .all(|backend| backend.status == Status::Up)));
}

/// A supervisord with two backend programs, and their `server` lines (`fail_timeout=1s`).
fn two_backends(name: &str) -> (Supervisord, Vec<String>) {
    let ports = [free_port(), free_port()];
    let supervisord = Supervisord::with_backends(name, &ports, "");
    let servers = ports
        .iter()
        .map(|port| format!("127.0.0.1:{port} fail_timeout=1s"))
        .collect();
    (supervisord, servers)
}

fn stops(supervisord: &Supervisord) -> usize {
    supervisord.log().matches("stopped: backend").count()
}

#[test]
fn a_slow_request_takes_no_backend_and_no_other_request_down() {
    let (supervisord, servers) = two_backends("slow-rule");
    let nginx = nginx_counting_failures(
        "slow-rule",
        &servers,
        &supervisord,
        &[],
        "",
        Some((
            "/impatient/",
            "proxy_read_timeout 300ms;\nproxy_pass http://backend/;",
        )),
    );
    start_all(&nginx, &supervisord, 2);
    // Requests in flight on both backends while a slow one times out on each of them.
    let others = spawn_requests(nginx.port, 12, "/slow/1500");
    assert!(eventually(5, || nginx
        .supervisord_status("/_status")
        .upstream("backend")
        .backends
        .iter()
        .map(|backend| backend.in_flight)
        .sum::<i64>()
        >= 12));
    let slow = nginx.get("/impatient/slow/3000");
    assert_eq!(slow.status, 504, "{slow:?}");
    for handle in others {
        let response = handle.join().unwrap();
        assert_eq!(response.status, 200, "{response:?}");
    }
    assert!(
        eventually(5, || nginx
            .error_log()
            .contains("but it accepts connections; left up")),
        "{}",
        nginx.error_log()
    );
    assert_eq!(nginx.backend_statuses(), vec![Status::Up, Status::Up]);
    assert_eq!(stops(&supervisord), 0, "{}", supervisord.log());
    // nginx's own fail_timeout over (the slow request failed on both backends in its worker:
    // nginx's own 502 there until then), both serve again.
    let served = |count| {
        (0..count)
            .map(|_| {
                let response = nginx.get("/");
                assert!([200, 502].contains(&response.status), "{response:?}");
                format!("{} {}", response.status, response.body.trim())
            })
            .collect::<std::collections::BTreeSet<String>>()
    };
    let both: std::collections::BTreeSet<String> = servers
        .iter()
        .map(|server| {
            let port = server.trim_start_matches("127.0.0.1:").split(' ').next();
            format!("200 backend {}", port.unwrap())
        })
        .collect();
    assert!(eventually(10, || served(10) == both));
}

#[test]
fn an_application_error_passed_on_does_not_stop_the_backend() {
    let (supervisord, servers) = two_backends("status-rule");
    let nginx = nginx_counting_failures(
        "status-rule",
        &servers,
        &supervisord,
        &[],
        "proxy_next_upstream error timeout http_500;",
        None,
    );
    start_all(&nginx, &supervisord, 2);
    // Both backends answer 500; nginx then keeps them out for fail_timeout (its own 502s),
    // but the programs are left alone.
    assert_eq!(nginx.get("/status/500").status, 500);
    for _ in 0..5 {
        let status = nginx.get("/status/500").status;
        assert!(status == 500 || status == 502, "{status}");
    }
    assert!(
        eventually(5, || nginx.error_log().contains("left up")),
        "{}",
        nginx.error_log()
    );
    assert_eq!(nginx.backend_statuses(), vec![Status::Up, Status::Up]);
    assert_eq!(stops(&supervisord), 0, "{}", supervisord.log());
    // Once nginx's fail_timeout is over, served again; nginx's own 502 until then.
    assert!(eventually(10, || {
        let status = nginx.get("/").status;
        assert!(status == 200 || status == 502, "{status}");
        status == 200
    }));
}

#[test]
fn max_fails_counts_failures_and_zero_never_acts_on_traffic() {
    let port = free_port();
    let canary_port = free_port();
    let supervisord = Supervisord::start(
        "max-fails",
        &[
            Program::backend("backend0", port, 0),
            // Never started: nothing listens on its port.
            Program::backend("canary0", canary_port, 0),
        ],
        "",
    );
    // A canary upstream on the same supervisord, taken as up, whose one failure (max_fails 1)
    // is checked: its verdict is the positive signal that a check of backend 0's failures,
    // asked for before by the same worker, would be known by then.
    let canary = Upstream::new("canary")
        .server(format!("127.0.0.1:{canary_port}"))
        .supervisord(supervisord.address())
        .sync_interval("off")
        .inherit_backend_status();
    let nginx = Nginx::start(
        "max-fails",
        &Config::new()
            .workers(2)
            .upstream(
                Upstream::new("backend")
                    .server(format!("127.0.0.1:{port} max_fails=0"))
                    .supervisord(supervisord.address())
                    .sync_interval("off"),
            )
            .upstream(canary)
            .server(
                Server::new()
                    .location("/", "proxy_pass http://backend;")
                    .location("/_start/", "supervisord_start backend;")
                    .location("= /_status", "supervisord_status;")
                    .location("/canary/", "proxy_pass http://canary;"),
            ),
    );
    start_all(&nginx, &supervisord, 1);
    supervisord.crash("backend0");
    supervisord.wait_state("backend0", "EXITED");
    // Five failures and then the canary's, on one connection (one worker).
    let mut connection = RawConnection::open(nginx.port);
    for _ in 0..5 {
        connection.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let response = connection
            .next_response(scaled(Duration::from_secs(10)))
            .expect("an answer");
        assert_eq!(response.status, 502, "{response:?}");
    }
    connection.send(b"GET /canary/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let canary_down = "upstream \"canary\" backend 0";
    assert!(
        eventually(10, || nginx.error_log().lines().any(|line| line
            .contains(canary_down)
            && line.contains("up -> down"))),
        "{}",
        nginx.error_log()
    );
    connection.close();
    // Traffic alone never acts: no check, the backend stays as it is (reconciliation is off).
    assert_eq!(nginx.backend_statuses(), vec![Status::Up]);
    let log = nginx.error_log();
    assert!(
        !log.lines()
            .any(|line| line.contains("upstream \"backend\"") && line.contains("up -> down")),
        "{log}"
    );

    let port = free_port();
    let supervisord = Supervisord::with_backends("max-fails-3", &[port], "");
    let nginx = nginx_counting_failures(
        "max-fails-3",
        &[format!("127.0.0.1:{port} max_fails=3 fail_timeout=30s")],
        &supervisord,
        &[],
        // One worker's count is what matters: keep the connection (and the worker) the same.
        "",
        None,
    );
    start_all(&nginx, &supervisord, 1);
    supervisord.crash("backend0");
    supervisord.wait_state("backend0", "EXITED");
    // Each worker counts its own failures, as nginx does: six failures reach three in one.
    for _ in 0..6 {
        let _ = nginx.get("/");
    }
    assert!(
        eventually(5, || {
            nginx.error_log().contains(
            "3 failed request(s), no connection accepted and its program is not running (supervisord says EXITED): up -> down"
        )
        }),
        "{}",
        nginx.error_log()
    );
    assert_eq!(stops(&supervisord), 0, "{}", supervisord.log());
    // Down: the next request starts it again and gets its answer.
    let response = nginx.get("/");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(supervisord.spawns("backend0"), 2);
}

#[test]
fn a_running_program_that_refuses_connections_is_restarted() {
    let port = free_port();
    // supervisord calls it RUNNING at once, but it listens only after a minute.
    let supervisord = Supervisord::with_backends("refusing", &[port], "--listen-after 60000");
    supervisord.ctl(&["start", "backend0"]);
    supervisord.wait_state("backend0", "RUNNING");
    // Taken as up from the configuration: the module never saw it start.
    let nginx = nginx_counting_failures(
        "refusing",
        &[format!("127.0.0.1:{port}")],
        &supervisord,
        &[
            "supervisord_inherit_backend_status",
            "supervisord_hold_timeout 2s",
        ],
        "",
        None,
    );
    // Refused before anything of it was sent: held again while the check runs, through the
    // restart, until its hold timeout (the restarted program never listens either).
    let first = nginx.get("/");
    assert_eq!(first.status, 503, "{first:?}");
    assert_eq!(first.header("Retry-After"), Some("1"));
    let log = nginx.error_log();
    assert_eq!(
        log.matches("its program runs but accepts no connection; restarting it")
            .count(),
        1,
        "{log}"
    );
    assert!(
        eventually(5, || supervisord.log().contains("stopped: backend0")),
        "{}",
        supervisord.log()
    );
    // Stopped by the check, started again for the held request.
    assert!(eventually(5, || supervisord.spawns("backend0") == 2));
    assert_eq!(log.matches("connect() failed").count(), 1, "{log}");
}
