//! Crash loops: a program that exits at start-up is started again on a backoff schedule
//! (doubling from 1 s), not for every request; requests held for a start that failed get 502
//! as soon as supervisord reports the exit; requests arriving while every DOWN backend waits
//! out its backoff get 503 with `Retry-After` at once; an upstream with another backend fails
//! over to it. One error line per failed start, none per request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nginx_tests::supervisord::{nginx_with_controls, Program, Supervisord};
use nginx_tests::{eventually, free_port, request, scaled, Nginx};

/// nginx over `ports`, requests held for up to 20 s, supervisord read every `interval`.
fn nginx_syncing(name: &str, ports: &[u16], supervisord: &Supervisord, interval: &str) -> Nginx {
    let sync = format!("supervisord_sync_interval {interval}");
    let extra = ["supervisord_hold_timeout 20s", &sync];
    nginx_with_controls(name, ports, &supervisord.address(), &extra)
}

/// One answer a client loop got.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    took: Duration,
    retry_after: Option<String>,
    body: String,
}

/// `clients` threads sending GET / one after another until `done` (checked every 50 ms with
/// the answers so far) holds; fails if it does not within 30 s (scaled).
fn client_loops(port: u16, clients: usize, mut done: impl FnMut(&[Answer]) -> bool) -> Vec<Answer> {
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
    let deadline = Instant::now() + scaled(Duration::from_secs(30));
    while !done(&answers.lock().unwrap()) {
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            panic!("the clients' condition never held");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
    let nginx = nginx_syncing(name, &[port], &supervisord, "1s");
    // Until the fourth start (after backoffs of 1, 2 and 4 s), with requests all along.
    let answers = client_loops(nginx.port, 4, |_| supervisord.spawns("backend0") >= 4);
    let spawns = supervisord.spawns("backend0");
    let spawned_at = supervisord.spawn_times("backend0");
    let log = nginx.error_log();
    let exits = log.matches("program exits at start-up").count();
    let held_502: Vec<&Answer> = answers.iter().filter(|a| a.status == 502).collect();
    let refused_503: Vec<&Answer> = answers.iter().filter(|a| a.status == 503).collect();
    let slowest_502 = held_502.iter().map(|a| a.took).max().unwrap_or_default();
    eprintln!(
        "crash loop, startsecs={startsecs}: {} requests, {spawns} spawns at {spawned_at:?}, {} x 502 (slowest {slowest_502:?}), {} x 503, {exits} exit lines",
        answers.len(),
        held_502.len(),
        refused_503.len()
    );
    // Backoff 1 s, 2 s, 4 s (doubling): each start at least that long after the one before
    // (the backoff counts from the failure, which comes after the start).
    assert_eq!(spawns, 4, "{}", supervisord.log());
    for (gap, backoff) in spawned_at.windows(2).zip([1000, 2000, 4000]) {
        assert!(
            gap[1] - gap[0] >= Duration::from_millis(backoff),
            "starts at {spawned_at:?}: not {backoff} ms apart\n{log}"
        );
    }
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
    assert!(
        slowest_502 < scaled(Duration::from_millis(1500)),
        "{slowest_502:?}"
    );
    for answer in &refused_503 {
        let seconds: u64 = answer.retry_after.as_deref().unwrap_or("").parse().unwrap();
        assert!((1..=8).contains(&seconds), "{answer:?}");
        assert!(
            answer.took < scaled(Duration::from_millis(500)),
            "{answer:?}"
        );
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
    assert!(
        eventually(5, || nginx
            .error_log()
            .contains("program exits at start-up")),
        "{}",
        nginx.error_log()
    );
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
    // Whoever saw the exit first reported it; the others, later, stay quiet: supervisord has
    // answered the start, and nginx has read its view twice since.
    supervisord.wait_for_answers();
    supervisord.wait_for_reads(2);
    let log = nginx.error_log();
    assert_eq!(log.matches("program exits at start-up").count(), 1, "{log}");
    assert_eq!(
        log.matches("next start on demand in 1 s").count(),
        1,
        "{log}"
    );
    assert_eq!(supervisord.spawns("backend0"), 1);
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
    let nginx = nginx_syncing("crash-failover", &ports, &supervisord, "1s");
    // Requests until backend 0's backoff is over and 40 more were answered: none starts it
    // again while backend 1 serves.
    let mut backoff_over_at = None;
    let answers = client_loops(nginx.port, 4, |answers| {
        if backoff_over_at.is_none() {
            let status = nginx.supervisord_status("/_status");
            let backend0 = &status.upstream("backend").backends[0];
            if backend0.failed_starts >= 1 && backend0.backoff_left_ms.is_none() {
                backoff_over_at = Some(answers.len());
            }
        }
        backoff_over_at.is_some_and(|at| answers.len() >= at + 40)
    });
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
