//! Every failed start backs off, whatever its cause: a name supervisord does not have, a fault,
//! a reply that is not XML-RPC, an HTTP error, a 401. Under steady requests from 8 clients,
//! supervisord gets at most one `startProcess` per backoff step (1 s, 2 s, 4 s...), the error
//! log at most one line per step, and every request is answered at once (502 for the failed
//! start, 503 with `Retry-After` while the backend waits out its backoff), never held until
//! its hold timeout. A name supervisord reported missing is not started at all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nginx_tests::supervisord::{nginx_with_controls, FakeSupervisord, Program, Supervisord};
use nginx_tests::{free_port, request, Nginx};

/// How long the clients keep asking.
const LOAD: Duration = Duration::from_secs(5);
/// Backoff steps start at 0, 1, 3 and 7 s: within `LOAD` at most 3 starts, one more for a
/// step that begins as the load ends.
const MOST_STARTS: usize = 4;

/// Requests wait for a start for up to 20 s: each is answered at once only if nginx answers it
/// at once.
const HOLD: &str = "supervisord_hold_timeout 20s";

/// 8 clients ask for `LOAD`; the statuses they got, and the longest wait for one.
fn steady_load(port: u16) -> (Vec<u16>, Duration) {
    let running = Arc::new(AtomicBool::new(true));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let running = running.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut longest = Duration::ZERO;
                while running.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    seen.push(request(port, "GET", "/").status);
                    longest = longest.max(asked.elapsed());
                }
                (seen, longest)
            })
        })
        .collect();
    std::thread::sleep(LOAD);
    running.store(false, Ordering::Relaxed);
    let mut statuses = Vec::new();
    let mut longest = Duration::ZERO;
    for client in clients {
        let (seen, wait) = client.join().unwrap();
        statuses.extend(seen);
        longest = longest.max(wait);
    }
    (statuses, longest)
}

/// What every case checks: answered at once (within the call time-out when supervisord hangs),
/// never 200, a bounded number of starts and of error lines.
fn assert_backs_off(nginx: &Nginx, expected_line: &str, longest_allowed: Duration) {
    let (statuses, longest) = steady_load(nginx.port);
    let log = nginx.error_log();
    eprintln!("{} requests, longest answer {:?}", statuses.len(), longest);
    assert!(
        statuses.iter().all(|status| matches!(status, 502 | 503)),
        "{statuses:?}"
    );
    assert!(statuses.len() > 8, "{statuses:?}");
    assert!(longest < longest_allowed, "a request waited {longest:?}");
    assert!(log.contains(expected_line), "{log}");
    assert!(!log.contains("no backend up within"), "{log}");
    let errors = log.lines().filter(|l| l.contains("[error]")).count();
    assert!(
        (1..=MOST_STARTS + 1).contains(&errors),
        "{errors} error lines:\n{log}"
    );
    nginx.assert_clean_log();
}

#[test]
fn a_name_supervisord_does_not_have_is_never_started() {
    let port = free_port();
    let supervisord = Supervisord::with_backends("bad-name", &[port], "");
    // A typo: supervisord has "backend0", nginx asks for "bakend0".
    let nginx = nginx_with_controls(
        "bad-name",
        &[free_port()],
        &supervisord.address(),
        &[HOLD, "supervisord_name bakend"],
    );
    let (statuses, longest) = steady_load(nginx.port);
    let starts = supervisord.calls("supervisor.startProcess");
    eprintln!(
        "{} requests, {starts} startProcess calls, longest answer {longest:?}",
        statuses.len()
    );
    assert!(statuses.iter().all(|status| *status == 502), "{statuses:?}");
    assert!(
        longest < Duration::from_secs(2),
        "a request waited {longest:?}"
    );
    // At most the start of a request that came before nginx's first read of supervisord.
    assert!(starts <= 1, "{}", supervisord.log());
    let log = nginx.error_log();
    assert_eq!(
        log.matches("supervisord has no program \"bakend0\"")
            .count(),
        1,
        "{log}"
    );
    let errors = log.lines().filter(|l| l.contains("[error]")).count();
    assert!(errors <= 2, "{log}");
    assert_eq!(supervisord.spawns("backend0"), 0);
    nginx.assert_clean_log();
}

#[test]
fn wrong_credentials_back_off() {
    let port = free_port();
    let supervisord = Supervisord::with_backends("unauthorized", &[port], "");
    let nginx = nginx_with_controls(
        "unauthorized",
        &[free_port()],
        &format!("127.0.0.1:{} admin:Wr0ngSecret", supervisord.port),
        &[HOLD],
    );
    // supervisord logs no call it refused: nginx's lines count them (one per failed start).
    assert_backs_off(&nginx, "401 unauthorized", Duration::from_secs(2));
    let log = nginx.error_log();
    let starts = log.matches("start failed: 401 unauthorized").count();
    assert!((1..=MOST_STARTS).contains(&starts), "{log}");
    assert!(!log.contains("Wr0ngSecret"), "the password was logged");
}

/// Faults a real supervisord cannot produce on demand, from the fake one.
#[test]
fn broken_answers_back_off() {
    for (mode, expected) in [
        ("badxml", "malformed XML-RPC response"),
        ("html", "reply is not text/xml"),
        ("garbage", "malformed HTTP response"),
        ("status500", "HTTP status 500"),
    ] {
        let fake = FakeSupervisord::start(mode);
        let nginx = nginx_with_controls(
            &format!("broken-{mode}"),
            &[free_port()],
            &format!("127.0.0.1:{}", fake.port),
            &[HOLD, "supervisord_timeout 3s"],
        );
        assert_backs_off(&nginx, expected, Duration::from_secs(2));
        let starts = fake.calls("supervisor.startProcess");
        eprintln!("{mode}: {starts} startProcess calls");
        assert!((1..=MOST_STARTS).contains(&starts), "{mode}: {starts}");
    }
}

#[test]
fn a_supervisord_that_never_answers_backs_off() {
    let fake = FakeSupervisord::start("hang");
    let nginx = nginx_with_controls(
        "broken-hang",
        &[free_port()],
        &format!("127.0.0.1:{}", fake.port),
        &[HOLD, "supervisord_timeout 1s"],
    );
    // Each start waits for its call's time-out (1 s) before its requests get 502.
    assert_backs_off(&nginx, "start failed: timed out", Duration::from_secs(3));
    let starts = fake.calls("supervisor.startProcess");
    assert!((1..=MOST_STARTS).contains(&starts), "{starts}");
}

#[test]
fn the_minimum_is_not_kept_with_a_program_supervisord_does_not_have() {
    let port = free_port();
    let supervisord = Supervisord::with_backends("bad-name-min", &[port], "");
    let nginx = nginx_with_controls(
        "bad-name-min",
        &[free_port()],
        &supervisord.address(),
        &[
            HOLD,
            "supervisord_name bakend",
            "supervisord_min_servers 1",
            "supervisord_sync_interval 300ms",
        ],
    );
    // Reads of supervisord over more than two backoff steps (1 s, then 2 s).
    let began = Instant::now();
    while began.elapsed() < Duration::from_millis(3_500) {
        supervisord.wait_for_reads(1);
    }
    // At most a start sent between nginx's first read going out and its answer.
    let starts = supervisord.calls("supervisor.startProcess");
    assert!(starts <= 1, "{starts} starts:\n{}", supervisord.log());
    let log = nginx.error_log();
    assert_eq!(
        log.matches("supervisord has no program \"bakend0\"")
            .count(),
        1,
        "{log}"
    );
    nginx.assert_clean_log();
}

#[test]
fn start_any_passes_over_a_program_supervisord_does_not_have() {
    let ports = [free_port(), free_port()];
    // supervisord has the second backend's program only.
    let supervisord = Supervisord::start(
        "any-missing",
        &[Program::backend("backend1", ports[1], 0)],
        "",
    );
    let nginx = nginx_with_controls("any-missing", &ports, &supervisord.address(), &[]);
    nginx.error_log_once_it_has("supervisord has no program \"backend0\"");
    let answer = nginx.get("/_start/any");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body.contains("backend 1"), "{answer:?}");
    assert!(
        nginx_tests::eventually(10, || supervisord.spawns("backend1") == 1),
        "{}",
        supervisord.log()
    );
    // Nothing else a start any could pick.
    let again = nginx.get("/_start/any");
    assert_eq!(again.status, 409, "{again:?}");
    assert_eq!(supervisord.calls("supervisor.startProcess"), 1);
    let errors = nginx
        .error_log()
        .lines()
        .filter(|line| line.contains("[error]"))
        .count();
    assert_eq!(errors, 1, "{}", nginx.error_log());
    nginx.allow_log_line("supervisord has no program", "the test's missing program");
    nginx.assert_clean_log();
}
