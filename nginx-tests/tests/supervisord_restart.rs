//! supervisord restarted under traffic (as any package upgrade does): the backend whose program
//! went with it stays out of rotation (never back UP while its program is gone), requests are
//! held within their bounds instead of each getting 502, the outage is one error line and its
//! end one notice, and supervisord's view is read right after it answers again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nginx_tests::status::Status;
use nginx_tests::supervisord::{Program, Supervisord};
use nginx_tests::{eventually, free_port, request, scaled, Config, Nginx, Server, Upstream};

fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|line| line.contains(needle)).collect()
}

#[test]
fn a_supervisord_restart_under_traffic() {
    let port = free_port();
    let mut supervisord =
        Supervisord::start("restart", &[Program::backend("backend0", port, 0)], "");
    let upstream = Upstream::new("backend")
        .server(format!("127.0.0.1:{port}"))
        .supervisord(supervisord.address())
        // The periodic read is far away: what happens at supervisord's return is not it.
        .sync_interval("30s")
        .directive("supervisord_hold_timeout 3s");
    let nginx = Nginx::start(
        "restart",
        &Config::new().workers(2).upstream(upstream).server(
            Server::new()
                .reuseport()
                .location("/", "proxy_pass http://backend;")
                .location("= /_status", "supervisord_status;"),
        ),
    );
    assert_eq!(nginx.get("/").status, 200);
    let nginx_port = nginx.port;

    // 4 clients in a loop, and a poller of the status JSON, for the whole test; what they saw
    // (when the answer came, what it was), shared.
    let running = Arc::new(AtomicBool::new(true));
    let answers: Arc<Mutex<Vec<(Instant, u16)>>> = Arc::default();
    let statuses: Arc<Mutex<Vec<(Instant, Status)>>> = Arc::default();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (running, answers) = (running.clone(), answers.clone());
            std::thread::spawn(move || {
                while running.load(Ordering::Relaxed) {
                    let status = request(nginx_port, "GET", "/").status;
                    answers.lock().unwrap().push((Instant::now(), status));
                }
            })
        })
        .collect();
    let poller = {
        let (running, statuses) = (running.clone(), statuses.clone());
        std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                let body = request(nginx_port, "GET", "/_status").body;
                let status = nginx_tests::status::SupervisordStatus::parse(&body).unwrap();
                statuses.lock().unwrap().push((
                    Instant::now(),
                    status.upstream("backend").backends[0].status,
                ));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let answered_after = |moment: Instant, status: u16| {
        answers
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, seen)| *at > moment && *seen == status)
            .count()
    };
    // Traffic flows: 20 answers.
    let began = Instant::now();
    assert!(eventually(10, || answered_after(began, 200) >= 20));

    // supervisord stops (its program with it) for 3 s, then starts again.
    let log_before = nginx.error_log().lines().count();
    let stopped_at = Instant::now();
    supervisord.stop_daemon();
    // The outage lasts until nginx has told it, the backend is out of rotation (the poller
    // saw it) and a request was held to its hold timeout (3 s: a 503).
    assert!(
        eventually(15, || {
            nginx.error_log().contains("cannot reach supervisord")
                && statuses
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|(at, status)| *at > stopped_at && *status != Status::Up)
                && answered_after(stopped_at, 503) >= 1
        }),
        "{}",
        nginx.error_log()
    );
    let outage_log: Vec<String> = nginx
        .error_log()
        .lines()
        .skip(log_before)
        .map(str::to_string)
        .collect();
    let restart_at = Instant::now();
    supervisord.restart_daemon();
    // supervisorctl gets an answer: supervisord is back.
    let back_at = Instant::now();
    assert!(
        eventually(5, || nginx.error_log().contains("answers again")),
        "{}",
        nginx.error_log()
    );
    let noticed = restart_at.elapsed();
    assert!(
        eventually(5, || nginx
            .supervisord_status("/_status")
            .upstream("backend")
            .backends[0]
            .status
            == Status::Up),
        "{}",
        nginx.error_log()
    );
    let up_again = restart_at.elapsed();
    let supervisord_start = back_at - restart_at;
    // Every client served again: 8 answers since.
    let up_at = Instant::now();
    assert!(eventually(10, || answered_after(up_at, 200) >= 8));
    running.store(false, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    poller.join().unwrap();
    let mut answers = std::mem::take(&mut *answers.lock().unwrap());
    answers.sort_by_key(|(at, _)| *at);
    let statuses = std::mem::take(&mut *statuses.lock().unwrap());

    // The status left UP once and never went back before supervisord returned.
    let during: Vec<Status> = statuses
        .iter()
        .filter(|(at, _)| *at > stopped_at && *at < restart_at)
        .map(|(_, status)| *status)
        .collect();
    let first_out = during
        .iter()
        .position(|status| *status != Status::Up)
        .expect("the backend never left UP");
    assert!(
        during[first_out..]
            .iter()
            .all(|status| *status != Status::Up),
        "{during:?}"
    );
    // Out of rotation: taken down by the failure check (its program cannot be asked about and
    // accepts nothing), then starting (held requests) and waiting for supervisord.
    assert!(
        during[first_out..].iter().any(|status| matches!(
            status,
            Status::Down | Status::StartingUp | Status::ShuttingDown
        )),
        "{during:?}"
    );

    // Requests: a few 502s as the program goes (requests in flight or just sent to it), then
    // held (503 after the 3 s hold timeout at most), 200 once it is back.
    let during_outage: Vec<u16> = answers
        .iter()
        .filter(|(at, _)| *at > stopped_at)
        .map(|(_, status)| *status)
        .collect();
    let bad_gateways = during_outage.iter().filter(|s| **s == 502).count();
    let unavailable = during_outage.iter().filter(|s| **s == 503).count();
    eprintln!(
        "outage: {} requests answered, {bad_gateways} x 502, {unavailable} x 503; \
         {} error-log lines during the 3 s outage; after the restart began, supervisorctl \
         answered after {supervisord_start:?}, nginx noticed after {noticed:?}, backend up after \
         {up_again:?}",
        during_outage.len(),
        outage_log.len()
    );
    // The requests in flight when the program went with supervisord (4 clients), and those
    // each worker sent it before its failure check took the backend down, are held again
    // (GETs); every later one is held. (Before requests were held again: 1-11 x 502.)
    assert_eq!(bad_gateways, 0, "{bad_gateways} x 502");
    assert!(
        during_outage.iter().all(|s| [200, 502, 503].contains(s)),
        "{during_outage:?}"
    );
    assert!(answers.iter().rev().take(4).all(|(_, s)| *s == 200));

    // The error log during the outage: one unreachable line, one warning that the backend
    // went down, and the hold timeouts' own lines (one per 503).
    let module_lines: Vec<&String> = outage_log
        .iter()
        .filter(|line| line.contains("supervisord:") && !line.contains("not held longer"))
        .collect();
    assert!(module_lines.len() <= 4, "{module_lines:#?}");
    let log = nginx.error_log();
    assert_eq!(
        lines_with(&log, "cannot reach supervisord").len(),
        1,
        "{log}"
    );
    assert_eq!(lines_with(&log, "answers again").len(), 1, "{log}");
    // nginx's own connect() lines are only those of requests sent to the program as it went
    // (a 502, or held again: at most twice per request), never one per call
    // to supervisord.
    let connects = lines_with(&log, "connect()");
    assert!(
        connects
            .iter()
            .all(|line| line.contains("while connecting to upstream")),
        "{connects:#?}"
    );
    assert!(connects.len() <= bad_gateways + 8, "{connects:#?}");
    // Noticed at the next once-a-second attempt (supervisord itself takes a moment to start),
    // read and settled at once.
    assert!(
        noticed < supervisord_start + scaled(Duration::from_millis(1200)),
        "{noticed:?}"
    );
    assert!(
        up_again < noticed + scaled(Duration::from_millis(1000)),
        "{up_again:?}"
    );
    // The command that waited (the start for the held requests) was sent again.
    assert!(log.contains("again (it waited for supervisord)"), "{log}");
    // Started once before the outage, once after.
    let spawned = supervisord.log().matches("spawned: 'backend0'").count();
    assert_eq!(spawned, 2, "{}", supervisord.log());
    nginx.assert_clean_log();
}
