//! Crash loops: a program that exits at start-up is started again on a backoff schedule
//! (doubling from 1 s), not for every request; requests held for a start that failed get 502
//! as soon as supervisord reports the exit; requests arriving while every DOWN backend waits
//! out its backoff get 503 with `Retry-After` at once; an upstream with another backend fails
//! over to it. One error line per failed start, none per request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nginx_tests::supervisord::{Program, Supervisord};
use nginx_tests::{free_port, request, Config, Nginx, Server, Upstream};

fn nginx_for(name: &str, ports: &[u16], supervisord: &Supervisord) -> Nginx {
    nginx_syncing(name, ports, supervisord, "1s")
}

fn nginx_syncing(name: &str, ports: &[u16], supervisord: &Supervisord, interval: &str) -> Nginx {
    let upstream = Upstream::new("backend")
        .servers(ports)
        .supervisord(supervisord.address())
        .directive("supervisord_hold_timeout 20s")
        .directive(format!("supervisord_sync_interval {interval}"));
    Nginx::start(
        name,
        &Config::new().workers(2).upstream(upstream).server(
            Server::new()
                .reuseport()
                .location("/", "proxy_pass http://backend;")
                .location("= /_status", "supervisord_status;"),
        ),
    )
}

/// One answer a client loop got.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    took: Duration,
    retry_after: Option<String>,
    body: String,
}

/// `clients` threads sending GET / one after another for `duration`.
fn client_loops(port: u16, clients: usize, duration: Duration) -> Vec<Answer> {
    let answers = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (answers, stop) = (answers.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let response = request(port, "GET", "/");
                    answers.lock().unwrap().push(Answer {
                        status: response.status,
                        took: started.elapsed(),
                        retry_after: response.header("Retry-After").map(str::to_owned),
                        body: response.body.clone(),
                    });
                    // A client that retries quickly, as a browser or a health check would.
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    Arc::try_unwrap(answers).unwrap().into_inner().unwrap()
}

fn crash_loop(name: &str, startsecs: u32) {
    let port = free_port();
    let supervisord = Supervisord::start(
        name,
        &[Program::backend_with(
            "backend0",
            port,
            startsecs,
            "--exit-after 0",
        )],
        "",
    );
    let nginx = nginx_for(name, &[port], &supervisord);
    let answers = client_loops(nginx.port, 4, Duration::from_secs(10));
    let spawns = supervisord.log().matches("spawned: 'backend0'").count();
    let log = nginx.error_log();
    let exits = log.matches("program exits at start-up").count();
    let held_502: Vec<&Answer> = answers.iter().filter(|a| a.status == 502).collect();
    let refused_503: Vec<&Answer> = answers.iter().filter(|a| a.status == 503).collect();
    let slowest_502 = held_502.iter().map(|a| a.took).max().unwrap_or_default();
    eprintln!(
        "crash loop, startsecs={startsecs}: {} requests, {spawns} spawns in 10 s, {} x 502 (slowest {slowest_502:?}), {} x 503, {exits} exit lines",
        answers.len(),
        held_502.len(),
        refused_503.len()
    );
    // Backoff 1 s, 2 s, 4 s (doubling): starts at about 0, 1.2, 3.4 and 7.6 s.
    assert!((3..=5).contains(&spawns), "{spawns} spawns\n{log}");
    // One line per failed start, with supervisord's reason; nothing per request.
    assert!(
        exits == spawns || exits + 1 == spawns,
        "{exits} lines for {spawns} spawns\n{log}"
    );
    assert!(log.contains("supervisord says"), "{log}");
    assert!(!log.contains("[warn]"), "{log}");
    // Every request got an answer at once: 502 for those held for a failed start (as soon as
    // the exit was known), 503 with the backoff left for those that found it waiting.
    assert!(
        answers.iter().all(|a| a.status == 502 || a.status == 503),
        "{answers:?}"
    );
    assert!(!held_502.is_empty() && !refused_503.is_empty());
    assert!(slowest_502 < Duration::from_millis(1500), "{slowest_502:?}");
    for answer in &refused_503 {
        let seconds: u64 = answer.retry_after.as_deref().unwrap_or("").parse().unwrap();
        assert!((1..=8).contains(&seconds), "{answer:?}");
        assert!(answer.took < Duration::from_millis(500), "{answer:?}");
    }
    // Nothing was ever taken as up.
    assert!(!log.contains("taking it as up"), "{log}");
    assert!(!log.contains("-> up"), "{log}");
    nginx.assert_clean_log();
}

#[test]
fn a_program_exiting_at_once_with_startsecs_0_is_started_on_a_backoff_schedule() {
    crash_loop("crash0", 0);
}

#[test]
fn a_program_exiting_at_once_with_startsecs_1_is_started_on_a_backoff_schedule() {
    crash_loop("crash1", 1);
}

#[test]
fn a_program_that_listens_then_exits_fails_its_start() {
    listen_then_exit("listen-exit", "1s");
}

#[test]
fn a_program_that_listens_then_exits_fails_its_start_when_reconciliation_sees_it_first() {
    // Reconciliation reads supervisord far more often than startProcess answers (supervisord
    // replies to a waiting start on its next loop): it finds the program in BACKOFF while the
    // start is still pending, and must report the failed start itself.
    listen_then_exit("listen-exit-sync", "50ms");
}

fn listen_then_exit(name: &str, sync_interval: &str) {
    // Listens, then dies within startsecs=2: the probe saw it accept, supervisord's answer
    // (or reconciliation, whichever comes first) tells the truth.
    let port = free_port();
    let supervisord = Supervisord::start(
        name,
        &[Program::backend_with(
            "backend0",
            port,
            2,
            "--exit-after 500",
        )],
        "",
    );
    let nginx = nginx_syncing(name, &[port], &supervisord, sync_interval);
    let first = nginx.get("/");
    assert_eq!(first.status, 200, "{first:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !nginx.error_log().contains("program exits at start-up") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The next request finds it waiting out its backoff; so does the status.
    let next = nginx.get("/");
    assert_eq!(next.status, 503, "{next:?}");
    assert_eq!(next.header("Retry-After"), Some("1"));
    let status = nginx.supervisord_status("/_status");
    let backend = &status.upstream("backend").backends[0];
    assert!(
        backend.backoff_left_ms.is_some_and(|left| left <= 1000),
        "{backend:?}"
    );
    assert_eq!(backend.idle_ms, None);
    // Whoever saw the exit first reported it; the others, later, stay quiet.
    std::thread::sleep(Duration::from_millis(1500));
    let log = nginx.error_log();
    assert_eq!(log.matches("program exits at start-up").count(), 1, "{log}");
    assert_eq!(
        log.matches("next start on demand in 1 s").count(),
        1,
        "{log}"
    );
    assert_eq!(supervisord.log().matches("spawned: 'backend0'").count(), 1);
    nginx.assert_clean_log();
}

#[test]
fn an_on_demand_start_fails_over_to_a_healthy_backend() {
    let ports = [free_port(), free_port()];
    let supervisord = Supervisord::start(
        "crash-failover",
        &[
            Program::backend_with("backend0", ports[0], 0, "--exit-after 0"),
            Program::backend("backend1", ports[1], 0),
        ],
        "",
    );
    let nginx = nginx_for("crash-failover", &ports, &supervisord);
    let answers = client_loops(nginx.port, 4, Duration::from_secs(4));
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let failed: Vec<&Answer> = answers.iter().filter(|a| a.status != 200).collect();
    eprintln!(
        "failover: {} requests, {ok} x 200, {} failed (held for the broken start)",
        answers.len(),
        failed.len()
    );
    // Only the requests held for the first, broken start failed (at most one per client).
    assert!(failed.len() <= 4, "{failed:?}");
    assert!(failed.iter().all(|a| a.status == 502), "{failed:?}");
    assert!(answers
        .iter()
        .filter(|a| a.status == 200)
        .all(|a| a.body.trim() == format!("backend {}", ports[1])));
    let log = supervisord.log();
    assert_eq!(log.matches("spawned: 'backend0'").count(), 1, "{log}");
    assert_eq!(log.matches("spawned: 'backend1'").count(), 1, "{log}");
    let errors = nginx.error_log();
    assert_eq!(
        errors.matches("program exits at start-up").count(),
        1,
        "{errors}"
    );
    assert_eq!(
        errors
            .matches("waiting out a start backoff; starting backend 1")
            .count(),
        1,
        "{errors}"
    );
    nginx.assert_clean_log();
}
