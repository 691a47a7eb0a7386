//! A backend is UP only once it answers. supervisord's RUNNING means the program lived
//! `startsecs`, not that it listens: an app that loads for 8 s is RUNNING after 1. Wherever
//! nginx finds a program running without having seen it listen (nginx started, a reload that
//! changed the server list, a start made outside nginx), the backend is "starting" and probed;
//! requests wait for it and nothing restarts it in the middle of its boot. A program that has
//! not listened by the end of its start phase (`supervisord_timeout`) failed its start: it
//! backs off, and it is left running (it may only be slow).

use std::time::{Duration, Instant};

use nginx_tests::status::{BackendStatus, Status};
use nginx_tests::supervisord::{Program, Supervisord};
use nginx_tests::{eventually, free_port, request, Config, Nginx, Server, Upstream};

/// How long the booting program takes before it listens (the figure).
const BOOT_MS: u64 = 8_000;

fn config(ports: &[u16], supervisord: &Supervisord) -> Config {
    Config::new()
        .workers(2)
        .upstream(
            Upstream::new("backend")
                .servers(ports)
                .supervisord(supervisord.address())
                // Many reads of supervisord during the boot: each one saw RUNNING.
                .sync_interval("300ms")
                .directive("supervisord_hold_timeout 60s"),
        )
        .server(
            Server::new()
                .reuseport()
                .location("/", "proxy_pass http://backend;")
                .location("= /_status", "supervisord_status;"),
        )
}

/// `count` GETs at once; every answer with when it came.
fn requests_at_once(port: u16, count: usize) -> Vec<std::thread::JoinHandle<(u16, Instant)>> {
    (0..count)
        .map(|_| {
            std::thread::spawn(move || {
                let response = request(port, "GET", "/");
                (response.status, Instant::now())
            })
        })
        .collect()
}

fn backend0(nginx: &Nginx) -> BackendStatus {
    nginx.supervisord_status("/_status").upstreams[0].backends[0].clone()
}

fn status_of_backend0(nginx: &Nginx) -> Status {
    backend0(nginx).status
}

/// What a user checks after a boot: every answer 200, after the program listened; one spawn;
/// no error line.
fn assert_served_after_boot(
    nginx: &Nginx,
    supervisord: &Supervisord,
    answers: Vec<std::thread::JoinHandle<(u16, Instant)>>,
    listening_at: Instant,
) {
    for handle in answers {
        let (status, at) = handle.join().unwrap();
        assert_eq!(status, 200, "{}", nginx.error_log());
        assert!(
            at >= listening_at,
            "answered before the program could listen"
        );
    }
    assert_eq!(supervisord.spawns("backend0"), 1, "{}", supervisord.log());
    let log = nginx.error_log();
    assert!(!log.contains("[error]"), "{log}");
    assert!(!log.contains("[warn]"), "{log}");
    assert!(
        log.contains("starting up -> up (accepts connections)"),
        "{log}"
    );
    nginx.assert_clean_log();
}

#[test]
fn nginx_started_while_a_program_boots_holds_requests_and_restarts_nothing() {
    let port = free_port();
    let supervisord = Supervisord::start(
        "phase-start",
        &[Program::backend_with(
            "backend0",
            port,
            1,
            &format!("--listen-after {BOOT_MS}"),
        )],
        "",
    );
    // Started outside nginx; RUNNING once `startsecs` (1 s) passed, listening 7 s later.
    let spawned = Instant::now();
    supervisord.ctl(&["start", "backend0"]);
    assert_eq!(supervisord.state("backend0"), "RUNNING");
    let listening_at = spawned + Duration::from_millis(BOOT_MS);

    let nginx = Nginx::start("phase-start", &config(&[port], &supervisord));
    // nginx's first read of supervisord sees RUNNING: the backend is starting, not up.
    assert!(
        eventually(10, || status_of_backend0(&nginx) == Status::StartingUp),
        "{}",
        nginx.error_log()
    );
    let answers = requests_at_once(nginx.port, 8);
    // Several more reads while it boots change nothing.
    supervisord.wait_for_reads(3);
    assert_eq!(status_of_backend0(&nginx), Status::StartingUp);
    assert_served_after_boot(&nginx, &supervisord, answers, listening_at);
    assert_eq!(status_of_backend0(&nginx), Status::Up);
}

#[test]
fn reloads_that_change_the_server_list_while_a_program_boots_restart_nothing() {
    let (port, other_port) = (free_port(), free_port());
    let supervisord = Supervisord::start(
        "phase-reload",
        &[
            Program::backend_with("backend0", port, 1, &format!("--listen-after {BOOT_MS}")),
            Program::backend("backend1", other_port, 1),
        ],
        "",
    );
    let one = config(&[port], &supervisord);
    let two = config(&[port, other_port], &supervisord);
    let nginx = Nginx::start("phase-reload", &one);
    let spawned = Instant::now();
    supervisord.ctl(&["start", "backend0"]);
    let listening_at = spawned + Duration::from_millis(BOOT_MS);
    // Reloads alternating the two server lists (each change a fresh shared state), with
    // requests sent after each, all while the program boots.
    let mut answers = Vec::new();
    let mut reloads = 0;
    while Instant::now() + Duration::from_millis(1_500) < listening_at && reloads < 12 {
        nginx.reload(if reloads % 2 == 0 { &two } else { &one });
        reloads += 1;
        answers.extend(requests_at_once(nginx.port, 2));
        supervisord.wait_for_reads(1);
    }
    eprintln!("{reloads} reloads while the program booted");
    assert!(
        reloads >= 2,
        "the machine is too slow to reload during the boot"
    );
    assert_served_after_boot(&nginx, &supervisord, answers, listening_at);
    // The other program was never needed: the booting one was waited for.
    assert_eq!(supervisord.spawns("backend1"), 0, "{}", supervisord.log());
}

#[test]
fn a_program_that_never_listens_fails_its_start_at_the_deadline_and_backs_off() {
    let port = free_port();
    let supervisord = Supervisord::start(
        "phase-never",
        &[Program::command("backend0", "/bin/sleep 3600", 1)],
        "",
    );
    let nginx = Nginx::start(
        "phase-never",
        &Config::new()
            .workers(2)
            .upstream(
                Upstream::new("backend")
                    .servers(&[port])
                    .supervisord(supervisord.address())
                    .directives(&["supervisord_timeout 2s", "supervisord_hold_timeout 30s"]),
            )
            .server(
                Server::new()
                    .reuseport()
                    .location("/", "proxy_pass http://backend;")
                    .location("= /_status", "supervisord_status;"),
            ),
    );
    // Held for the start phase (2 s), then 502: the start failed, though supervisord says
    // RUNNING.
    let asked = Instant::now();
    let first = nginx.get("/");
    assert_eq!(first.status, 502, "{first:?}");
    assert!(
        asked.elapsed() >= Duration::from_millis(1_900),
        "{:?}",
        asked.elapsed()
    );
    let failure = "accepted no connection within 2000 ms of its start (supervisord says RUNNING); start failed; status back to down; next start on demand in 1 s";
    nginx.error_log_once_it_has(failure);
    // The program is left running: it may be slow rather than broken.
    assert_eq!(supervisord.state("backend0"), "RUNNING");
    // Within the backoff, a request is answered at once (503, Retry-After), nothing started.
    let asked = Instant::now();
    let during = nginx.get("/");
    if asked.elapsed() < Duration::from_millis(500) {
        assert_eq!(during.status, 503, "{during:?}");
        assert_eq!(during.header("Retry-After"), Some("1"));
    }
    assert_ne!(status_of_backend0(&nginx), Status::Up);
    // After the backoff, the next request's start finds the program started and probes it
    // again: one more failed start, the wait doubled, still one spawn, never UP.
    assert!(eventually(30, || {
        let reply = nginx.get("/");
        assert!(matches!(reply.status, 502 | 503), "{reply:?}");
        backend0(&nginx).failed_starts >= 2
    }));
    let log = nginx.error_log_once_it_has("next start on demand in 2 s");
    assert_eq!(log.matches(failure).count(), 1, "{log}");
    assert_eq!(supervisord.spawns("backend0"), 1, "{}", supervisord.log());
    let failed_starts = backend0(&nginx).failed_starts as usize;
    assert_eq!(
        log.lines().filter(|l| l.contains("[error]")).count(),
        failed_starts,
        "one line per failed start:\n{log}"
    );
    assert!(!log.contains("up (accepts"), "{log}");
    nginx.assert_clean_log();
}
