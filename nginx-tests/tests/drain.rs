//! Draining before a stop, against a real supervisord and real backends: a stopped backend
//! leaves rotation in every worker at once, its requests in flight finish, and only then (or at
//! `supervisord_drain_timeout`) does supervisord stop its program.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nginx_tests::config::line_of;
use nginx_tests::status::Status;
use nginx_tests::supervisord::{controls_config, nginx_with_controls, Program, Supervisord};
use nginx_tests::{
    eventually, free_port, recorded_requests, request_with_body, scaled, Config, Gate, Nginx,
    Response, Server, Upstream,
};

fn record_file(port: u16) -> PathBuf {
    let path = std::env::temp_dir().join(format!("ngx-supervisord-drain-record-{port}"));
    let _ = std::fs::remove_file(&path);
    path
}

fn spawn_mixed(port: u16, count: usize, path: &'static str) -> Vec<JoinHandle<Response>> {
    (0..count)
        .map(|n| {
            std::thread::spawn(move || {
                if n % 2 == 0 {
                    request_with_body(port, "POST", path, 1000)
                } else {
                    request_with_body(port, "GET", path, 0)
                }
            })
        })
        .collect()
}

fn backend_status(nginx: &Nginx, index: usize) -> (Status, i64) {
    let status = nginx.supervisord_status("/_status");
    let backend = &status.upstream("backend").backends[index];
    (backend.status, backend.in_flight)
}

fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

/// Starts backend `index` by hand and waits until nginx has it UP.
fn start_by_hand(nginx: &Nginx, index: usize) {
    assert_eq!(nginx.get(&format!("/_start/{index}")).status, 200);
    assert!(eventually(10, || backend_status(nginx, index).0 == Status::Up));
}

/// One backend on `port` whose requests for `/gated` wait for the gate, started by hand (nginx
/// with the `extra` upstream directives), with `count` of them in flight, half of them POSTs.
fn gated_requests_in_flight(
    name: &str,
    port: u16,
    count: usize,
    extra: &[&str],
) -> (Gate, Supervisord, Nginx, Vec<JoinHandle<Response>>) {
    let ports = [port];
    let gate = Gate::new(name);
    let supervisord = Supervisord::with_backends(name, &ports, &gate.arg());
    let nginx = nginx_with_controls(name, &ports, &supervisord.address(), extra);
    start_by_hand(&nginx, 0);
    let slow = spawn_mixed(nginx.port, count, "/gated");
    assert!(eventually(5, || backend_status(&nginx, 0).1 == count as i64));
    (gate, supervisord, nginx, slow)
}

#[test]
fn a_stop_waits_for_requests_in_flight_and_sends_no_new_ones() {
    let ports = [free_port(), free_port()];
    let records = [record_file(ports[0]), record_file(ports[1])];
    // The slow requests stay in flight until the test opens the gate.
    let gate = Gate::new("drain");
    let supervisord = Supervisord::start(
        "drain",
        &[
            Program::backend_with(
                "backend0",
                ports[0],
                0,
                &format!("--record {} {}", records[0].display(), gate.arg()),
            ),
            Program::backend_with(
                "backend1",
                ports[1],
                0,
                &format!("--record {}", records[1].display()),
            ),
        ],
        "",
    );
    let nginx = nginx_with_controls("drain", &ports, &supervisord.address(), &[]);
    start_by_hand(&nginx, 0);
    assert_eq!(recorded_requests(&records[0]), Vec::<String>::new());

    // 20 slow requests, half of them POSTs, all to backend 0 (the only one up).
    let slow = spawn_mixed(nginx.port, 20, "/gated");
    assert!(
        eventually(5, || backend_status(&nginx, 0).1 == 20),
        "{:?}",
        backend_status(&nginx, 0)
    );
    start_by_hand(&nginx, 1);

    let stop_asked = Instant::now();
    let reply = nginx.get("/_stop/0");
    let stop_answered = Instant::now();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply
            .body
            .contains("up -> shutting down (draining 20 in flight)"),
        "{}",
        reply.body
    );
    assert!(
        stop_answered - stop_asked < scaled(Duration::from_millis(500)),
        "the answer did not wait for the drain"
    );
    // From the answer on, no worker sends backend 0 anything new.
    let backend1 = format!("backend {}", ports[1]);
    for _ in 0..20 {
        let response = nginx.get("/");
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body.trim(), backend1);
    }
    // The program keeps running while its requests are in flight.
    assert_eq!(backend_status(&nginx, 0), (Status::ShuttingDown, 20));
    assert!(
        nginx
            .supervisord_status("/_status")
            .upstream("backend")
            .backends[0]
            .draining
    );
    // nginx has read supervisord since (it reads every second): still nothing stopped.
    supervisord.wait_for_reads(2);
    assert_eq!(backend_status(&nginx, 0), (Status::ShuttingDown, 20));
    assert_eq!(supervisord.state("backend0"), "RUNNING");
    gate.open();
    // A program stopped early would have dropped them (test-backend dies on SIGTERM).
    let backend0 = format!("backend {}", ports[0]);
    for handle in slow {
        let response = handle.join().unwrap();
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body.trim(), backend0);
    }
    let drained_at = Instant::now();
    supervisord.wait_state("backend0", "STOPPED");
    println!(
        "stop answered -> last request done: {} ms; -> STOPPED: {} ms more",
        (drained_at - stop_answered).as_millis(),
        drained_at.elapsed().as_millis()
    );
    assert!(eventually(5, || backend_status(&nginx, 0) == (Status::Down, 0)));

    let mut on_backend0 = recorded_requests(&records[0]);
    on_backend0.sort();
    let mut expected: Vec<String> = (0..10)
        .map(|_| "GET /gated 0".to_string())
        .chain((0..10).map(|_| "POST /gated 1000".to_string()))
        .collect();
    expected.sort();
    assert_eq!(
        on_backend0, expected,
        "backend 0 received only the slow ones"
    );
    assert_eq!(recorded_requests(&records[1]).len(), 20);

    let log = nginx.error_log();
    assert_eq!(count_lines(&log, "): drained; stopping it"), 1, "{log}");
    assert_eq!(count_lines(&log, "drain timed out"), 0, "{log}");
    assert_eq!(
        count_lines(&log, "up -> shutting down by stop (draining 20 in flight)"),
        1,
        "{log}"
    );
    assert_eq!(count_lines(&log, "shutting down -> down"), 1, "{log}");
    assert_eq!(
        count_lines(&supervisord.log(), "stopped: backend0"),
        1,
        "{}",
        supervisord.log()
    );
    nginx.assert_clean_log();
    for record in records {
        let _ = std::fs::remove_file(record);
    }
}

#[test]
fn a_drain_times_out() {
    // The request stays in flight: the gate never opens.
    let (_gate, supervisord, nginx, slow) = gated_requests_in_flight(
        "drain-timeout",
        free_port(),
        1,
        &["supervisord_drain_timeout 500ms"],
    );

    let reply = nginx.get("/_stop/0");
    let stop_answered = Instant::now();
    assert!(
        reply
            .body
            .contains("up -> shutting down (draining 1 in flight)"),
        "{}",
        reply.body
    );
    supervisord.wait_state("backend0", "STOPPED");
    let stopped_after = stop_answered.elapsed();
    println!("stop answered -> STOPPED: {} ms", stopped_after.as_millis());
    assert!(
        stopped_after >= Duration::from_millis(450),
        "stopped after {stopped_after:?}, before the drain timeout"
    );
    assert!(
        stopped_after < scaled(Duration::from_millis(2500)),
        "stopped after {stopped_after:?}"
    );
    // The request still running when the program was stopped is lost: that is what the
    // timeout is for.
    let response = slow.into_iter().next().unwrap().join().unwrap();
    assert_eq!(response.status, 502, "{response:?}");
    let log = nginx.error_log();
    assert_eq!(
        count_lines(
            &log,
            "): drain timed out after 500 ms with 1 in flight; stopping it"
        ),
        1,
        "{log}"
    );
    assert_eq!(count_lines(&log, "drained"), 0, "{log}");
    nginx.assert_clean_log();
}

#[test]
fn an_idle_backend_is_stopped_at_once() {
    let ports = [free_port(), free_port()];
    let supervisord = Supervisord::with_backends("drain-idle", &ports, "");
    let nginx = nginx_with_controls("drain-idle", &ports, &supervisord.address(), &[]);
    start_by_hand(&nginx, 0);
    assert_eq!(nginx.get("/").status, 200);

    let reply = nginx.get("/_stop/any");
    let stop_answered = Instant::now();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.body.contains("backend 0 (127.0.0.1:")
            && reply.body.contains("): up -> shutting down, 0 in flight"),
        "{}",
        reply.body
    );
    supervisord.wait_state("backend0", "STOPPED");
    let stopped_after = stop_answered.elapsed();
    println!("stop answered -> STOPPED: {} ms", stopped_after.as_millis());
    assert!(
        stopped_after < scaled(Duration::from_millis(1500)),
        "{stopped_after:?}"
    );
    let log = nginx.error_log_once_it_has("shutting down -> down");
    assert_eq!(count_lines(&log, "drain"), 0, "{log}");
    assert_eq!(count_lines(&log, "shutting down -> down"), 1, "{log}");
    // A start while nothing drains goes through as usual.
    assert_eq!(nginx.get("/_start/0").status, 200);
    supervisord.wait_state("backend0", "RUNNING");
    nginx.assert_clean_log();
}

#[test]
fn a_start_during_a_drain_is_refused_until_the_stop_is_done() {
    let (gate, supervisord, nginx, slow) =
        gated_requests_in_flight("drain-start", free_port(), 2, &[]);
    assert!(nginx
        .get("/_stop/0")
        .body
        .contains("(draining 2 in flight)"));
    let reply = nginx.get("/_start/0");
    assert_eq!(reply.status, 409, "{reply:?}");
    assert!(
        reply.body.contains("is shutting down; try again"),
        "{}",
        reply.body
    );
    gate.open();
    for handle in slow {
        assert_eq!(handle.join().unwrap().status, 200);
    }
    supervisord.wait_state("backend0", "STOPPED");
    assert!(eventually(5, || backend_status(&nginx, 0).0 == Status::Down));
    assert_eq!(nginx.get("/_start/0").status, 200);
    supervisord.wait_state("backend0", "RUNNING");
    nginx.assert_clean_log();
}

#[test]
fn a_reload_during_a_drain_lets_the_old_worker_finish_it() {
    let port = free_port();
    let (gate, supervisord, nginx, slow) = gated_requests_in_flight("drain-reload", port, 4, &[]);
    assert!(nginx
        .get("/_stop/0")
        .body
        .contains("(draining 4 in flight)"));
    // The same configuration: the shared statuses carry over to the new workers.
    nginx.reload(&controls_config(supervisord.upstream("backend", &[port])));
    // The new workers see the drain; the old ones, still holding the requests, have not
    // stopped the program, also after nginx read supervisord again.
    assert_eq!(backend_status(&nginx, 0).0, Status::ShuttingDown);
    supervisord.wait_for_reads(2);
    assert_eq!(supervisord.state("backend0"), "RUNNING");
    assert_eq!(backend_status(&nginx, 0).0, Status::ShuttingDown);
    gate.open();
    for handle in slow {
        assert_eq!(handle.join().unwrap().status, 200);
    }
    supervisord.wait_state("backend0", "STOPPED");
    assert!(eventually(5, || backend_status(&nginx, 0).0 == Status::Down));
    let log = nginx.error_log();
    assert_eq!(count_lines(&log, "): drained; stopping it"), 1, "{log}");
    assert_eq!(count_lines(&log, "shutting down -> down"), 1, "{log}");
    nginx.assert_clean_log();
}

#[test]
fn the_drain_timeout_needs_supervisord_and_a_time() {
    let test_conf = |directives: &str| {
        let prefix = nginx_tests::Prefix::new("drain-conf");
        let config = Config::new()
            .upstream(Upstream::new("backend").raw(directives))
            .server(Server::on(1).location("/", "proxy_pass http://backend;"));
        let text = prefix.write_config(&config, None);
        let output = prefix.test_conf();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stderr, text)
    };
    for time in ["0", "500ms", "1m30s", "45"] {
        let (ok, stderr, text) = test_conf(&format!(
            "server 127.0.0.1:1;\nsupervisord none;\nsupervisord_drain_timeout {time};"
        ));
        assert!(ok, "{text}\n{stderr}");
    }
    for (directives, error, line) in [
        (
            "server 127.0.0.1:1;\nsupervisord_drain_timeout 5s;",
            "\"supervisord_drain_timeout\" needs \"supervisord\" in upstream \"backend\"",
            "upstream backend",
        ),
        (
            "server 127.0.0.1:1;\nsupervisord none;\nsupervisord_drain_timeout soon;",
            "invalid supervisord_drain_timeout \"soon\": expected a time such as 30s or 500ms",
            "supervisord_drain_timeout soon",
        ),
        (
            "server 127.0.0.1:1;\nsupervisord none;\nsupervisord_drain_timeout 1s;\n\
             supervisord_drain_timeout 2s;",
            "\"supervisord_drain_timeout\" directive is duplicate",
            "supervisord_drain_timeout 2s",
        ),
    ] {
        let (ok, stderr, text) = test_conf(directives);
        assert!(!ok, "{text}\n{stderr}");
        let place = format!("nginx.conf:{}", line_of(&text, line));
        assert!(
            stderr.contains("[emerg]") && stderr.contains(error) && stderr.contains(&place),
            "expected `{error}` at {place}:\n{stderr}\n{text}"
        );
    }
}

/// wrk's summary of POSTs to `/slow/100` on `port` for `seconds`, with `/_stop/0` sent once
/// they are in flight: (requests, non-2xx responses, socket errors).
fn wrk_during_stop(nginx: &Nginx, seconds: u32) -> (u64, u64, u64, String) {
    let script = nginx.prefix.dir.join("post.lua");
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", 1000)\n\
         wrk.headers[\"Content-Type\"] = \"text/plain\"\n",
    )
    .unwrap();
    let wrk = std::process::Command::new("wrk")
        .args(["-t2", "-c16", &format!("-d{seconds}s"), "-s"])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{}/slow/100", nginx.port))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run wrk (.ci/install-deps wrk)");
    // wrk's POSTs under way on backend 0 (in flight there) when the stop comes.
    assert!(eventually(5, || backend_status(nginx, 0).1 > 0));
    let reply = nginx.get("/_stop/0");
    assert_eq!(reply.status, 200, "{reply:?}");
    println!("{}", reply.body.trim());
    let output = wrk.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let number_after = |label: &str| -> u64 {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .map(|rest| {
                rest.trim()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .unwrap_or(0)
    };
    let requests = text
        .lines()
        .find(|line| line.contains("requests in"))
        .and_then(|line| line.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .unwrap_or(0);
    let socket_errors = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("Socket errors:"))
        .map(|rest| {
            rest.split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    (
        requests,
        number_after("Non-2xx or 3xx responses:"),
        socket_errors,
        text,
    )
}

/// The figure of the issue: POSTs under wrk (16 connections) while `/_stop/0` stops one of two
/// backends, with the drain and without it (`supervisord_drain_timeout 0`, as before drains).
/// Needs `wrk` (`.ci/install-deps wrk`): `cargo test -p nginx-tests --test drain -- --ignored`.
#[test]
#[ignore = "a figure, not a check; needs wrk: cargo test -p nginx-tests --test drain -- --ignored"]
fn posts_under_wrk_survive_a_stop() {
    for (name, drain) in [("drain-wrk", None), ("drain-wrk-off", Some("0"))] {
        let ports = [free_port(), free_port()];
        let supervisord = Supervisord::with_backends(name, &ports, "");
        let timeout = drain.map(|value| format!("supervisord_drain_timeout {value}"));
        let extra: Vec<&str> = timeout.iter().map(String::as_str).collect();
        let nginx = nginx_with_controls(name, &ports, &supervisord.address(), &extra);
        for index in 0..2 {
            start_by_hand(&nginx, index);
        }
        let (requests, failed, socket_errors, text) = wrk_during_stop(&nginx, 4);
        println!(
            "{name}: {requests} POSTs, {failed} non-2xx, {socket_errors} socket errors\n{text}"
        );
        supervisord.wait_state("backend0", "STOPPED");
        if drain.is_none() {
            assert!(requests > 100, "{text}");
            assert_eq!((failed, socket_errors), (0, 0), "{text}");
        }
    }
}
