//! Failed requests count as nginx counts them (`max_fails` within `fail_timeout`), and a
//! backend that reaches its limit is checked before anything is done to it: left UP while it
//! accepts connections, DOWN without a stop call when its program is not running, restarted
//! when its program runs but refuses connections. A slow or failing request never takes the
//! other requests down with it.

use nginx_tests::status::Status;
use nginx_tests::supervisord::{Program, Supervisord};
use nginx_tests::{eventually, free_port, spawn_requests, Config, Nginx, Server, Upstream};

fn nginx_for(
    name: &str,
    servers: &[String],
    supervisord: &Supervisord,
    upstream_extra: &[&str],
    location_extra: &str,
) -> Nginx {
    nginx_with(
        name,
        servers,
        supervisord,
        upstream_extra,
        location_extra,
        None,
    )
}

/// As `nginx_for`, with one more location `(path, body)`.
fn nginx_with(
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
    let upstream = upstream_extra
        .iter()
        .fold(upstream, |upstream, line| upstream.directive(line));
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
    let supervisord = Supervisord::start(
        name,
        &[
            Program::backend("backend0", ports[0], 0),
            Program::backend("backend1", ports[1], 0),
        ],
        "",
    );
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
    let nginx = nginx_with(
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
    // nginx's own fail_timeout over, both serve again.
    // nginx counts fail_timeout in whole seconds.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    for _ in 0..10 {
        assert_eq!(nginx.get("/").status, 200);
    }
}

#[test]
fn an_application_error_passed_on_does_not_stop_the_backend() {
    let (supervisord, servers) = two_backends("status-rule");
    let nginx = nginx_for(
        "status-rule",
        &servers,
        &supervisord,
        &[],
        "proxy_next_upstream error timeout http_500;",
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
    // nginx counts fail_timeout in whole seconds.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(nginx.get("/").status, 200);
}

#[test]
fn max_fails_counts_failures_and_zero_never_acts_on_traffic() {
    let port = free_port();
    let supervisord = Supervisord::start("max-fails", &[Program::backend("backend0", port, 0)], "");
    let nginx = nginx_for(
        "max-fails",
        &[format!("127.0.0.1:{port} max_fails=0")],
        &supervisord,
        &[],
        "",
    );
    start_all(&nginx, &supervisord, 1);
    supervisord.crash("backend0");
    supervisord.wait_state("backend0", "EXITED");
    for _ in 0..5 {
        assert_eq!(nginx.get("/").status, 502);
    }
    // Traffic alone never acts: no check, the backend stays as it is (reconciliation is off).
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(nginx.backend_statuses(), vec![Status::Up]);
    assert!(
        !nginx.error_log().contains("up -> down"),
        "{}",
        nginx.error_log()
    );

    let port = free_port();
    let supervisord =
        Supervisord::start("max-fails-3", &[Program::backend("backend0", port, 0)], "");
    let nginx = nginx_for(
        "max-fails-3",
        &[format!("127.0.0.1:{port} max_fails=3 fail_timeout=30s")],
        &supervisord,
        &[],
        // One worker's count is what matters: keep the connection (and the worker) the same.
        "",
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
    assert_eq!(supervisord.log().matches("spawned: 'backend0'").count(), 2);
}

#[test]
fn a_running_program_that_refuses_connections_is_restarted() {
    let port = free_port();
    // supervisord calls it RUNNING at once, but it listens only after a minute.
    let supervisord = Supervisord::start(
        "refusing",
        &[Program::backend_with(
            "backend0",
            port,
            0,
            "--listen-after 60000",
        )],
        "",
    );
    supervisord.ctl(&["start", "backend0"]);
    supervisord.wait_state("backend0", "RUNNING");
    // Taken as up from the configuration: the module never saw it start.
    let nginx = nginx_for(
        "refusing",
        &[format!("127.0.0.1:{port}")],
        &supervisord,
        &[
            "supervisord_inherit_backend_status",
            "supervisord_hold_timeout 2s",
        ],
        "",
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
    assert!(eventually(5, || supervisord
        .log()
        .matches("spawned: 'backend0'")
        .count()
        == 2));
    assert_eq!(log.matches("connect() failed").count(), 1, "{log}");
}
