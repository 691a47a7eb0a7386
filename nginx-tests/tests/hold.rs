//! Start on demand and hold requests until a backend accepts connections, on unpatched nginx:
//! for every kind of *_pass, bounded, answered 502 at once when the start fails, cleaned up when
//! clients leave, kept across reload, and with failed backends stopped and started again.

use std::time::{Duration, Instant};

use nginx_tests::status::{BackendStatus, Status};
use nginx_tests::supervisord::{controls_config, Program, Supervisord};
use nginx_tests::{
    eventually, free_port, scaled, spawn_requests, Config, Nginx, Response, Server, Upstream,
};

/// Upstream `backend` over `ports`, managed through `supervisord`'s socket, without
/// reconciliation; `extra` directives after that.
fn upstream(ports: &[u16], supervisord: &Supervisord, extra: &[&str]) -> Upstream {
    supervisord
        .upstream("backend", ports)
        .sync_interval("off")
        .directives(extra)
}

/// The upstream and one server on the test port that passes to it with `pass`.
fn passing(ports: &[u16], supervisord: &Supervisord, pass: &str) -> Config {
    Config::new()
        .workers(2)
        .upstream(upstream(ports, supervisord, &[]))
        .server(Server::new().location("/", pass))
}

/// nginx with [`upstream`] behind the usual server ([`controls_config`]).
fn proxied(name: &str, ports: &[u16], supervisord: &Supervisord, extra: &[&str]) -> Nginx {
    Nginx::start(name, &controls_config(upstream(ports, supervisord, extra)))
}

/// `count` concurrent GETs, each on its own connection (spread over the workers).
fn concurrent(port: u16, count: usize, path: &'static str) -> Vec<Response> {
    spawn_requests(port, count, path)
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .collect()
}

#[test]
fn first_requests_start_a_backend_and_wait_for_it() {
    let ports = [free_port(), free_port()];
    // Listens after 300 ms, while supervisord only calls it started after 3 s (startsecs).
    let supervisord = Supervisord::start(
        "hold",
        &[
            Program::backend_with("backend0", ports[0], 3, "--listen-after 300"),
            Program::backend("backend1", ports[1], 0),
        ],
        "",
    );
    let nginx = proxied("hold", &ports, &supervisord, &[]);
    let started = Instant::now();
    let responses = concurrent(nginx.port, 30, "/");
    let elapsed = started.elapsed();
    for response in &responses {
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body.trim(), format!("backend {}", ports[0]));
    }
    assert!(
        elapsed < scaled(Duration::from_millis(2500)),
        "held requests waited for supervisord's startsecs ({elapsed:?}), not for readiness"
    );
    assert_eq!(supervisord.spawns("backend0"), 1);
    assert_eq!(
        supervisord.state("backend1"),
        "STOPPED",
        "only one backend was started"
    );
    assert!(nginx
        .error_log()
        .contains("program \"backend0\"): starting up -> up (accepts connections)"));
}

#[test]
fn every_kind_of_pass_is_held() {
    let kinds = [
        ("proxy_pass http://backend;", "http"),
        ("fastcgi_pass backend;", "fastcgi"),
        ("uwsgi_pass backend;", "raw"),
        ("scgi_pass backend;", "raw"),
    ];
    for (pass, protocol) in kinds {
        let port = free_port();
        let args = format!("--listen-after 200 --protocol {protocol}");
        let supervisord = Supervisord::with_backends(protocol, &[port], &args);
        let nginx = Nginx::start("pass", &passing(&[port], &supervisord, pass));
        let response = nginx.get("/");
        assert_eq!(
            response.status,
            200,
            "{pass}: {response:?}\n{}",
            nginx.error_log()
        );
        assert_eq!(response.body.trim(), format!("backend {port}"), "{pass}");
    }
}

#[test]
fn grpc_pass_is_held_too() {
    let port = free_port();
    let supervisord =
        Supervisord::with_backends("grpc", &[port], "--listen-after 200 --protocol raw");
    let nginx = Nginx::start(
        "grpc",
        &passing(&[port], &supervisord, "grpc_pass grpc://backend;"),
    );
    // The test backend does not speak HTTP/2, so the answer is an error; what matters is that
    // the request was held, the program started, and the request then reached it.
    // (A backend answering garbage counts as failed and is then stopped, as in 1.4.)
    let response = nginx.get("/");
    assert_eq!(response.status, 502);
    assert_eq!(supervisord.spawns("backend0"), 1);
    let log = nginx.error_log();
    assert!(!log.contains("no live upstreams"), "{log}");
    assert!(
        log.contains("starting up -> up (accepts connections)"),
        "{log}"
    );
    assert!(
        log.contains("upstream: \"grpc://127.0.0.1:"),
        "the request reached it: {log}"
    );
}

#[test]
fn bounds_limit_and_timeout_give_503_with_retry_after() {
    let port = free_port();
    // Never listens: requests stay held.
    let supervisord = Supervisord::start(
        "bounds",
        &[Program::command("backend0", "/bin/sleep 3600", 0)],
        "",
    );
    let nginx = proxied(
        "bounds",
        &[port],
        &supervisord,
        &[
            "supervisord_hold_limit 4",
            "supervisord_hold_timeout 2s",
            "supervisord_timeout 30s",
        ],
    );
    let held = spawn_requests(nginx.port, 4, "/");
    assert!(eventually(5, || nginx.held("backend") == 4));
    let started = Instant::now();
    let over = nginx.get("/");
    assert_eq!(over.status, 503, "{over:?}");
    assert!(
        started.elapsed() < scaled(Duration::from_secs(1)),
        "refused at once"
    );
    assert_eq!(over.header("Retry-After"), Some("1"));
    assert!(over.body.contains("503 Service"), "{}", over.body);
    for handle in held {
        let response = handle.join().unwrap();
        assert_eq!(response.status, 503, "{response:?}");
        assert_eq!(response.header("Retry-After"), Some("1"));
        assert!(response.body.contains("503 Service"), "{}", response.body);
    }
    assert_eq!(nginx.held("backend"), 0);
    let log = nginx.error_log();
    assert_eq!(log.matches("requests held already").count(), 1, "{log}");
    assert_eq!(
        log.matches("no backend up within 2000 ms").count(),
        4,
        "{log}"
    );
}

#[test]
fn a_failed_start_answers_every_held_request_with_502_at_once() {
    let port = free_port();
    let supervisord =
        Supervisord::start("fail", &[Program::command("backend0", "/bin/false", 1)], "");
    let nginx = proxied(
        "fail",
        &[port],
        &supervisord,
        &["supervisord_hold_timeout 30s"],
    );
    let started = Instant::now();
    let responses = concurrent(nginx.port, 20, "/");
    assert!(responses.iter().all(|r| r.status == 502), "{responses:?}");
    assert!(
        started.elapsed() < scaled(Duration::from_secs(10)),
        "502 came with the failure, not at the hold timeout"
    );
    let log = nginx.error_log();
    // One line for the step, with supervisord's reason, whichever saw the exit first: the
    // start's fault or the state watch.
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("program exits at start-up"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("Exited too quickly"), "{log}");
    assert!(lines[0].contains("start failed"), "{log}");
    assert_eq!(nginx.held("backend"), 0);
}

#[test]
fn clients_that_leave_while_held_are_cleaned_up() {
    let port = free_port();
    let supervisord = Supervisord::with_backends("abort", &[port], "--listen-after 2000");
    let nginx = proxied("abort", &[port], &supervisord, &[]);
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", nginx.port)).unwrap();
        std::io::Write::write_all(&mut stream, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        clients.push(stream);
    }
    assert!(eventually(5, || nginx.held("backend") == 20));
    drop(clients);
    assert!(
        eventually(5, || nginx.held("backend") == 0),
        "{} held",
        nginx.held("backend")
    );
    // The upstream still works: the backend comes up and serves.
    let response = nginx.get("/");
    assert_eq!(response.status, 200, "{response:?}");
    nginx.assert_clean_log();
}

#[test]
fn held_requests_survive_a_reload() {
    let port = free_port();
    let supervisord = Supervisord::with_backends("reload", &[port], "--listen-after 1500");
    let nginx = proxied("reload-held", &[port], &supervisord, &[]);
    let held = spawn_requests(nginx.port, 10, "/");
    assert!(eventually(5, || nginx.held("backend") > 0));
    // Another configuration: without the control locations.
    let server = Server::new()
        .reuseport()
        .location("/", "proxy_pass http://backend;")
        .location("= /_status", "supervisord_status;");
    let upstream = upstream(&[port], &supervisord, &[]);
    nginx.reload(&Config::new().upstream(upstream).server(server));
    for handle in held {
        let response = handle.join().unwrap();
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body.trim(), format!("backend {port}"));
    }
    assert_eq!(supervisord.spawns("backend0"), 1);
}

#[test]
fn a_crashed_backend_goes_down_and_the_first_is_started_again() {
    let ports = [free_port()];
    let supervisord = Supervisord::with_backends("failover", &ports, "");
    let nginx = proxied("failover", &ports, &supervisord, &[]);
    assert_eq!(nginx.get("/").body.trim(), format!("backend {}", ports[0]));
    supervisord.crash("backend0");
    supervisord.wait_state("backend0", "EXITED");
    // The request that meets the dead backend is held again while the check finds the program
    // not running: the backend goes down, without a stop call, and is started again for it.
    let met_the_crash = nginx.get("/");
    assert_eq!(met_the_crash.status, 200, "{met_the_crash:?}");
    assert_eq!(met_the_crash.body.trim(), format!("backend {}", ports[0]));
    assert!(eventually(5, || nginx.error_log().contains(
        "its program is not running (supervisord says EXITED): up -> down"
    )));
    assert!(
        !supervisord.log().contains("stopped: backend0"),
        "{}",
        supervisord.log()
    );
    let response = nginx.get("/");
    assert_eq!(response.status, 200, "{response:?}\n{}", nginx.error_log());
    assert_eq!(supervisord.spawns("backend0"), 2);
    assert_eq!(nginx.error_log().matches("connect() failed").count(), 1);
}

#[test]
fn a_backend_started_again_gets_traffic_at_once() {
    let ports = [free_port(), free_port()];
    let supervisord = Supervisord::with_backends("restart", &ports, "");
    // With a shared peer list (zone) nginx's failure count is the same in every worker.
    let nginx = proxied("restart", &ports, &supervisord, &["zone restart 64k"]);
    for index in 0..2 {
        assert_eq!(nginx.get(&format!("/_start/{index}")).status, 200);
    }
    let both: std::collections::BTreeSet<String> =
        ports.iter().map(|port| format!("backend {port}")).collect();
    let answers = |count: usize| -> std::collections::BTreeSet<String> {
        (0..count)
            .map(|_| nginx.get("/").body.trim().to_string())
            .collect()
    };
    assert!(eventually(5, || answers(8) == both));
    supervisord.crash("backend0");
    supervisord.wait_state("backend0", "EXITED");
    // Requests meeting the dead backend go on to the other one; the dead one goes down.
    assert!(eventually(5, || {
        assert_eq!(nginx.get("/").status, 200, "the other backend answers");
        nginx.error_log().contains("up -> down")
    }));
    assert!(eventually(5, || !nginx
        .supervisord_status("/_status")
        .upstream("backend")
        .any(Status::ShuttingDown)));
    assert_eq!(nginx.get("/_start/0").status, 200);
    supervisord.wait_state("backend0", "RUNNING");
    // Well within nginx's fail_timeout (10 s): the failure before the restart does not count.
    assert!(
        eventually(3, || answers(8) == both),
        "backend0 got no traffic after its restart"
    );
}

#[test]
fn the_status_location_reports_every_backend() {
    let ports = [free_port(), free_port()];
    let supervisord = Supervisord::with_backends("status", &ports, "");
    let nginx = proxied("status", &ports, &supervisord, &[]);
    let status = nginx.supervisord_status("/_status");
    let upstream = status.upstream("backend");
    assert_eq!(upstream.supervisord, supervisord.address());
    assert_eq!(upstream.held, 0);
    let servers = ports.map(|port| format!("127.0.0.1:{port}"));
    let programs = ["backend0", "backend1"];
    // Place and state (`BackendStatus::state`); the counters are checked below.
    let expected = |index: usize, state: Status| {
        (
            index,
            servers[index].as_str(),
            Some(programs[index]),
            state,
            0,
        )
    };
    let states = |backends: &[BackendStatus]| -> Vec<(usize, String, Option<String>, Status, i64)> {
        backends
            .iter()
            .map(|backend| {
                let (index, server, program, status, in_flight) = backend.state();
                (
                    index,
                    server.into(),
                    program.map(Into::into),
                    status,
                    in_flight,
                )
            })
            .collect()
    };
    let owned = |states: [(usize, &str, Option<&str>, Status, i64); 2]| {
        states.map(|(index, server, program, status, in_flight)| {
            (
                index,
                server.to_string(),
                program.map(str::to_string),
                status,
                in_flight,
            )
        })
    };
    assert_eq!(
        states(&upstream.backends),
        owned([expected(0, Status::Down), expected(1, Status::Down)])
    );
    // A request starts the first backend and is held until it is up.
    assert_eq!(nginx.get("/").status, 200);
    let status = nginx.supervisord_status("/_status");
    let backends = &status.upstream("backend").backends;
    assert_eq!(
        states(backends),
        owned([expected(0, Status::Up), expected(1, Status::Down)])
    );
    // Its figures: one start on demand that came up, one request, one hold.
    assert_eq!(backends[0].starts.on_demand, 1);
    assert_eq!(backends[0].requests, 1);
    assert_eq!(backends[0].cold_start_ms.count, 1);
    assert_eq!(backends[1].requests, 0);
    assert_eq!(status.upstream("backend").holds.count, 1);
}
