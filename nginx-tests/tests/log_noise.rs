//! The error log stays readable: one line per event (supervisord unreachable, reachable again,
//! a backend up or never listening), none per readiness probe attempt or per request; and
//! readiness stays quick. Line counts are asserted at `notice`, the harness's level.

use std::time::{Duration, Instant};

use nginx_tests::status::Status;
use nginx_tests::supervisord::{controls_config, Program, Supervisord};
use nginx_tests::{eventually, free_port, request, scaled, Nginx, Upstream};

/// A real backend on a UNIX socket: sleeps `listen_after_ms`, then answers every connection
/// with one HTTP response whose body is `unix backend`.
const UNIX_BACKEND: &str = r#"
import socket, sys, time, os
path, listen_after = sys.argv[1], int(sys.argv[2])
time.sleep(listen_after / 1000)
try:
    os.unlink(path)
except FileNotFoundError:
    pass
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
os.chmod(path, 0o666)  # nginx's workers run as another user
server.listen(64)
while True:
    connection, _ = server.accept()
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(4096)
            if not chunk:
                break
            data += chunk
        if data:
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\nunix backend")
    except OSError:
        pass
    connection.close()
"#;

fn unix_backend_program(
    dir: &std::path::Path,
    socket: &std::path::Path,
    listen_after_ms: u64,
) -> Program {
    let script = dir.join("unix_backend.py");
    std::fs::write(&script, UNIX_BACKEND).unwrap();
    Program::command(
        "backend0",
        &format!(
            "python3 {} {} {listen_after_ms}",
            script.display(),
            socket.display()
        ),
        0,
    )
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ngx-supervisord-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// nginx over the one backend at `server` (`unix:PATH` or `HOST:PORT`), managed by
/// `supervisord`, with the `extra` upstream directives, behind [`controls_config`]'s server.
fn nginx_over(name: &str, server: &str, supervisord: &Supervisord, extra: &[&str]) -> Nginx {
    let upstream = Upstream::new("backend")
        .server(server)
        .supervisord(supervisord.address())
        .directives(extra);
    Nginx::start(name, &controls_config(upstream))
}

fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|line| line.contains(needle)).collect()
}

/// The lines the module or nginx's connect code wrote (not nginx's start-up notices).
fn incident_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| line.contains("supervisord:") || line.contains("connect()"))
        .collect()
}

#[test]
fn a_unix_backend_that_never_listens_is_one_line_not_one_per_probe() {
    let dir = scratch("never-listens");
    let socket = dir.join("app.sock");
    // The program runs but never creates its socket: every probe attempt finds no file.
    let supervisord = Supervisord::start(
        "never-listens",
        &[Program::command("backend0", "sleep 60", 0)],
        "",
    );
    let nginx = nginx_over(
        "never-listens",
        &format!("unix:{}", socket.display()),
        &supervisord,
        &["supervisord_timeout 2s", "supervisord_hold_timeout 1s"],
    );
    let response = nginx.get("/");
    assert_eq!(response.status, 503, "{response:?}");
    // The probe keeps trying (hundreds of attempts) until supervisord_timeout, then the start
    // has failed.
    let gave_up = "accepted no connection within 2000 ms of its start";
    assert!(
        eventually(5, || nginx.error_log().contains(gave_up)),
        "{}",
        nginx.error_log()
    );
    let log = nginx.error_log();
    assert_eq!(lines_with(&log, gave_up).len(), 1, "{log}");
    assert!(lines_with(&log, "connect()").is_empty(), "{log}");
    // One transition notice, the hold timeout, the failed start: nothing per attempt.
    let incidents = incident_lines(&log);
    assert!(incidents.len() <= 4, "{incidents:#?}");
    nginx.assert_clean_log();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_unix_backend_that_listens_late_is_quick_and_quiet() {
    let dir = scratch("listens-late");
    let socket = dir.join("app.sock");
    let supervisord = Supervisord::start(
        "listens-late",
        &[unix_backend_program(&dir, &socket, 1_000)],
        "",
    );
    let nginx = nginx_over(
        "listens-late",
        &format!("unix:{}", socket.display()),
        &supervisord,
        &["supervisord_timeout 10s"],
    );
    let started = Instant::now();
    let response = nginx.get("/");
    let took = started.elapsed();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, "unix backend");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    // Held about as long as the program took to listen, not supervisord_timeout.
    assert!(took < scaled(Duration::from_secs(4)), "{took:?}");
    let log = nginx.error_log();
    assert!(lines_with(&log, "connect()").is_empty(), "{log}");
    assert_eq!(
        lines_with(&log, "starting up -> up (accepts connections)").len(),
        1,
        "{log}"
    );
    let incidents = incident_lines(&log);
    assert!(incidents.len() <= 2, "{incidents:#?}");
    assert_eq!(supervisord.spawns("backend0"), 1);
    nginx.assert_clean_log();
    let _ = std::fs::remove_dir_all(&dir);
}

/// 10 clients, each sending `rounds` requests one after the other; the statuses seen.
fn hammer(port: u16, rounds: usize) -> Vec<u16> {
    let clients: Vec<_> = (0..10)
        .map(|_| {
            std::thread::spawn(move || {
                (0..rounds)
                    .map(|_| request(port, "GET", "/").status)
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    clients
        .into_iter()
        .flat_map(|client| client.join().unwrap())
        .collect()
}

#[test]
fn a_supervisord_outage_is_one_line_and_its_end_another() {
    let port = free_port();
    let mut supervisord = Supervisord::with_backends("outage", &[port], "");
    let nginx = nginx_over(
        "outage",
        &format!("127.0.0.1:{port}"),
        &supervisord,
        &[
            "supervisord_sync_interval 1s",
            "supervisord_hold_timeout 1s",
        ],
    );
    // supervisord goes away (its socket with it) before anything started.
    supervisord.stop_daemon();
    // Three rounds of requests, each held for its 1 s hold timeout: the outage lasts at least
    // three of nginx's attempts to read supervisord (every second).
    let statuses = hammer(nginx.port, 3);
    // Every request was held within its bounds (the start waits for supervisord), then
    // answered 503 with Retry-After; never a 502 for the outage.
    assert_eq!(statuses.len(), 30);
    assert!(statuses.iter().all(|status| *status == 503), "{statuses:?}");
    let log = nginx.error_log();
    let unreachable = lines_with(&log, "cannot reach supervisord at unix:");
    assert_eq!(unreachable.len(), 1, "{log}");
    assert!(unreachable[0].contains("[error]"), "{}", unreachable[0]);
    assert!(lines_with(&log, "connect()").is_empty(), "{log}");
    // Beyond the one line: each request's own hold timeout line, nothing per call.
    let incidents = incident_lines(&log);
    let timeouts = lines_with(&log, "request not held longer").len();
    assert_eq!(timeouts, statuses.len(), "{log}");
    assert!(
        incidents.len() <= timeouts + 3,
        "{} lines for {} requests: {incidents:#?}",
        incidents.len(),
        statuses.len()
    );

    // supervisord is back: the start that waited for it is sent within about a second, and
    // one notice says supervisord answers again.
    supervisord.restart_daemon();
    assert!(eventually(5, || nginx.backend_statuses()[0] == Status::Up));
    let response = nginx.get("/");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body.trim(), format!("backend {port}"));
    let log = nginx.error_log();
    let back = lines_with(&log, "answers again");
    assert!(back.iter().any(|line| line.contains("[notice]")), "{log}");
    assert_eq!(
        lines_with(&log, "supervisord at unix:").len(),
        2,
        "one unreachable and one back line: {log}"
    );
    assert_eq!(
        lines_with(&log, "cannot reach supervisord").len(),
        1,
        "{log}"
    );
    assert_eq!(supervisord.spawns("backend0"), 1);
    nginx.assert_clean_log();
}
