//! Held again: a request its backend failed without an answer (a closed port, a connection
//! reset or closed as the program died) is held again instead of answered 502, when nginx would
//! send it again to another server (nothing of it sent, or an idempotent method, or
//! `proxy_next_upstream ... non_idempotent`) and has none left. Once per request, within the
//! hold bounds; a client that leaves meanwhile is let go.

use std::path::PathBuf;
use std::thread::JoinHandle;

use nginx_tests::raw::RawConnection;
use nginx_tests::supervisord::{controls_server, Supervisord};
use nginx_tests::{
    eventually, free_port, recorded_requests, request_with_body, Config, Gate, Nginx, Response,
};

/// nginx over the one backend on `port`, taken as up from the configuration and held for at
/// most 3 s, behind [`controls_server`] with the `proxy` lines (`proxy_next_upstream ...;`, or
/// nothing) for what it passes.
fn nginx_inheriting(name: &str, port: u16, supervisord: &Supervisord, proxy: &str) -> Nginx {
    let upstream = supervisord
        .upstream("backend", &[port])
        .inherit_backend_status()
        .directive("supervisord_hold_timeout 3s");
    let server = controls_server("backend").raw(proxy);
    Nginx::start(name, &Config::new().upstream(upstream).server(server))
}

fn record_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{name}-{}.record", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// A running backend (taken as up from the configuration), a slow request in flight to it,
/// and its program killed meanwhile: what the client got, what the backend received.
fn crash_with_request_in_flight(
    name: &str,
    method: &'static str,
    proxy: &str,
) -> (Response, Vec<String>, Nginx, Supervisord) {
    let port = free_port();
    let record = record_path(name);
    // The request stays in flight until the program is killed; the gate opens for the one
    // started again.
    let gate = Gate::new(name);
    let args = format!("--record {} {}", record.display(), gate.arg());
    let supervisord = Supervisord::with_backends(name, &[port], &args);
    supervisord.ctl(&["start", "backend0"]);
    supervisord.wait_state("backend0", "RUNNING");
    let nginx = nginx_inheriting(name, port, &supervisord, proxy);
    let nginx_port = nginx.port;
    let in_flight: JoinHandle<Response> =
        std::thread::spawn(move || request_with_body(nginx_port, method, "/gated", 100));
    assert!(eventually(5, || recorded_requests(&record).len() == 1));
    supervisord.crash("backend0");
    gate.open();
    let response = in_flight.join().unwrap();
    let lines = recorded_requests(&record);
    let _ = std::fs::remove_file(&record);
    (response, lines, nginx, supervisord)
}

#[test]
fn a_get_in_flight_when_its_program_crashes_is_sent_again_once_it_is_back() {
    let (response, received, nginx, supervisord) =
        crash_with_request_in_flight("again-get", "GET", "");
    assert_eq!(response.status, 200, "{response:?}\n{}", nginx.error_log());
    // Received by the program that crashed, then by the one started again for it (and, should
    // the dying program still have accepted the second try, by it too).
    assert!(received.len() >= 2, "{received:?}");
    assert!(received.iter().all(|line| line == "GET /gated 100"));
    assert_eq!(supervisord.spawns("backend0"), 2);
    let log = nginx.error_log();
    // The check found the program gone (or, in the instant before supervisord saw it go,
    // running without accepting: restarted).
    assert!(
        log.contains("its program is not running (supervisord says EXITED): up -> down")
            || log.contains("accepts no connection; restarting it"),
        "{log}"
    );
    // nginx's own line for each broken attempt, and nothing at error level besides.
    assert!(log.matches("[error]").count() <= 2, "{log}");
    assert!(log
        .lines()
        .filter(|line| line.contains("[error]"))
        .all(|line| line.contains("from upstream")));
    assert_eq!(nginx.held("backend"), 0);
    nginx.assert_clean_log();
}

#[test]
fn a_post_in_flight_when_its_program_crashes_is_not_sent_again() {
    // It may have done its work: nginx would not send it to another server either.
    let (response, received, nginx, supervisord) =
        crash_with_request_in_flight("again-post", "POST", "");
    assert_eq!(response.status, 502, "{response:?}");
    assert_eq!(received, vec!["POST /gated 100"]);
    // Started again by the next request only, not for this one. (supervisord says "exited",
    // or "stopped" when the failure check, in the instant before supervisord saw the process
    // go, found it RUNNING and not accepting, and stopped it.)
    assert!(eventually(3, || {
        let log = supervisord.log();
        log.contains("exited: backend0") || log.contains("stopped: backend0")
    }));
    assert_eq!(supervisord.spawns("backend0"), 1);
    assert_eq!(nginx.held("backend"), 0);
    nginx.assert_clean_log();
}

#[test]
fn a_post_in_flight_is_sent_again_where_the_operator_allows_it() {
    let (response, received, nginx, supervisord) = crash_with_request_in_flight(
        "again-post-allowed",
        "POST",
        "proxy_next_upstream error timeout non_idempotent;",
    );
    assert_eq!(response.status, 200, "{response:?}\n{}", nginx.error_log());
    assert!(received.len() >= 2, "{received:?}");
    assert!(received.iter().all(|line| line == "POST /gated 100"));
    assert_eq!(supervisord.spawns("backend0"), 2);
    nginx.assert_clean_log();
}

#[test]
fn a_request_held_again_is_let_go_when_its_client_leaves() {
    // supervisord calls it RUNNING at once, but it listens only after a minute: the check
    // restarts it, and the request refused meanwhile waits for it, until its client leaves.
    let port = free_port();
    let supervisord = Supervisord::with_backends("again-gone", &[port], "--listen-after 60000");
    supervisord.ctl(&["start", "backend0"]);
    supervisord.wait_state("backend0", "RUNNING");
    let nginx = nginx_inheriting("again-gone", port, &supervisord, "");
    let mut client = RawConnection::open(nginx.port);
    client.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(eventually(3, || nginx.held("backend") == 1));
    client.close();
    assert!(eventually(3, || nginx.held("backend") == 0));
    // No loop: the one refused connect (the restarted program never listens), also once the
    // check's verdict is out, supervisord has answered what nginx asked and nginx has read it
    // twice since.
    assert!(
        eventually(5, || nginx
            .error_log()
            .contains("accepts no connection; restarting it")),
        "{}",
        nginx.error_log()
    );
    supervisord.wait_for_answers();
    supervisord.wait_for_reads(2);
    let log = nginx.error_log();
    assert_eq!(log.matches("connect() failed").count(), 1, "{log}");
    nginx.assert_clean_log();
}
