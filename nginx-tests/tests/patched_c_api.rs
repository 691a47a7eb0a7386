//! The C API (`include/ngx_supervisord.h`) as a balancer module sees it, through the test
//! balancer of `nginx-tests/c/supervisord_api_test` (round robin plus the API's hooks, each
//! call logged at notice; a stop checker that refuses while a file exists; `/execute` calls
//! `ngx_supervisord_execute` with its query's arguments). Run by `make patched-test`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use nginx_tests::patched;
use nginx_tests::status::Status;
use nginx_tests::supervisord::{Program, Supervisord};
use nginx_tests::{
    eventually, free_port, request, scaled, Backend, Config, Nginx, Server, Upstream,
};

const NGX_OK: i64 = 0;
const NGX_DECLINED: i64 = -5;

/// `ngx_supervisord_execute`'s return code, through the test balancer's handler.
fn execute(nginx: &Nginx, query: &str) -> i64 {
    let response = request(nginx.port, "GET", &format!("/execute?{query}"));
    assert_eq!(response.status, 200, "{response:?}");
    response
        .body
        .trim()
        .strip_prefix("rc=")
        .and_then(|rc| rc.parse().ok())
        .unwrap_or_else(|| panic!("{response:?}"))
}

/// nginx (2 workers) with `upstreams` (`backend`, and `plain` when given), `/` passing to
/// `backend`, `/plain` to `plain`, and the test balancer's `/execute`.
fn config(upstreams: Vec<Upstream>, with_plain: bool) -> Config {
    let mut config =
        Config::new()
            .workers(2)
            .error_log_level("notice")
            .main_raw(patched::load_module_beside(
                "ngx_http_supervisord_api_test_module.so",
            ));
    for upstream in upstreams {
        config = config.upstream(upstream);
    }
    let mut server = Server::new()
        .location("/", "proxy_pass http://backend;")
        .location("= /execute", "supervisord_api_test_execute;")
        .location("/_start/", "supervisord_start backend;")
        .location("= /_status", "supervisord_status;");
    if with_plain {
        server = server.location("/plain", "proxy_pass http://plain;");
    }
    config.server(server)
}

#[test]
#[ignore = "needs the patched nginx (make patched-test)"]
fn execute_checks_its_arguments_and_monitors_are_told_in_every_worker() {
    patched::require();
    let ports = [free_port(), free_port(), free_port()];
    let _backends: Vec<Backend> = ports.iter().map(|&port| Backend::start(port)).collect();
    let nginx = Nginx::start(
        "c-api-arguments",
        &config(
            vec![
                Upstream::new("backend")
                    .servers(&ports[..2])
                    .supervisord("none")
                    .inherit_backend_status()
                    .directive("supervisord_api_test_balancer"),
                // No `supervisord`: every function is a no-op answering NGX_OK.
                Upstream::new("plain")
                    .servers(&ports[2..])
                    .directive("supervisord_api_test_balancer"),
            ],
            true,
        ),
    );
    let workers: HashSet<u32> = nginx.worker_pids().into_iter().collect();
    let told_everywhere = |since: usize, needle: &str| {
        eventually(5, || {
            let log = nginx.error_log();
            workers.is_subset(&patched::pids_logging(
                &log[since.min(log.len())..],
                "notice",
                needle,
            ))
        })
    };
    // Each worker tells the monitor every status as it starts.
    for backend in 0..2 {
        let line = format!("api test: upstream \"backend\" backend {backend} status 0");
        assert!(told_everywhere(0, &line), "{line}");
    }
    assert!(!nginx.error_log().contains("upstream \"plain\" backend"));
    for query in [
        "upstream=backend&cmd=3&backend=0",
        "upstream=backend&cmd=0&backend=0",
        "upstream=backend&cmd=2&backend=2",
        "upstream=backend&cmd=2&backend=-2",
    ] {
        assert_eq!(execute(&nginx, query), NGX_DECLINED, "{query}");
    }
    assert_eq!(execute(&nginx, "upstream=plain&cmd=2&backend=0"), NGX_OK);
    assert_eq!(request(nginx.port, "GET", "/plain").status, 200);
    assert_eq!(nginx.backend_statuses(), vec![Status::Up, Status::Up]);
    // Stop any: the highest-numbered UP backend; a second "any" right after is too soon.
    let since = nginx.error_log().len();
    assert_eq!(execute(&nginx, "upstream=backend&cmd=2&backend=-1"), NGX_OK);
    assert_eq!(execute(&nginx, "upstream=backend&cmd=2&backend=-1"), NGX_OK);
    assert_eq!(nginx.backend_statuses(), vec![Status::Up, Status::Down]);
    assert!(told_everywhere(
        since,
        "api test: upstream \"backend\" backend 1 status 1"
    ));
    for _ in 0..10 {
        let response = request(nginx.port, "GET", "/");
        assert_eq!(response.body.trim(), format!("backend {}", ports[0]));
    }
    // A given backend is not spaced: start 1 at once.
    let since = nginx.error_log().len();
    assert_eq!(execute(&nginx, "upstream=backend&cmd=1&backend=1"), NGX_OK);
    assert_eq!(nginx.backend_statuses(), vec![Status::Up, Status::Up]);
    assert!(told_everywhere(
        since,
        "api test: upstream \"backend\" backend 1 status 0"
    ));
    let log = nginx.error_log();
    assert_eq!(
        log.matches("by the balancer's stop any").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("by the balancer's start").count(), 1, "{log}");
}

#[test]
#[ignore = "needs the patched nginx (make patched-test)"]
fn a_stop_waits_for_the_balancers_checker_within_the_drain_timeout() {
    patched::require();
    let ports = [free_port(), free_port()];
    let supervisord = Supervisord::start(
        "c-api-checker",
        &[
            Program::backend("backend0", ports[0], 0),
            Program::backend("backend1", ports[1], 0),
        ],
        "",
    );
    let flag = std::env::temp_dir().join(format!("ngx-supervisord-checker-{}", std::process::id()));
    std::fs::write(&flag, "refuse").unwrap();
    let nginx = Nginx::start(
        "c-api-checker",
        &config(
            vec![Upstream::new("backend")
                .servers(&ports)
                .supervisord(supervisord.address())
                .directives(&[
                    &format!("supervisord_api_test_balancer {}", flag.display()),
                    "supervisord_drain_timeout 2s",
                ])],
            false,
        ),
    );
    for backend in 0..2 {
        assert_eq!(
            request(nginx.port, "GET", &format!("/_start/{backend}")).status,
            200
        );
    }
    assert!(eventually(10, || nginx.backend_statuses()
        == vec![Status::Up, Status::Up]));
    // Refused: out of rotation at once, the program left running.
    assert_eq!(
        execute(&nginx, "upstream=backend&cmd=2&backend=1&checker=1"),
        NGX_OK
    );
    assert_eq!(nginx.backend_statuses()[1], Status::ShuttingDown);
    // The checker was asked again and still refuses: the program runs.
    assert!(
        eventually(5, || nginx
            .error_log()
            .matches("api test: checker refuses backend 1")
            .count()
            >= 2),
        "{}",
        nginx.error_log()
    );
    assert_eq!(supervisord.state("backend1"), "RUNNING");
    for _ in 0..10 {
        let response = request(nginx.port, "GET", "/");
        assert_eq!(response.body.trim(), format!("backend {}", ports[0]));
    }
    // Allowed: stopped at once.
    std::fs::remove_file(&flag).unwrap();
    let allowed = Instant::now();
    supervisord.wait_state("backend1", "STOPPED");
    assert!(
        allowed.elapsed() < scaled(Duration::from_secs(2)),
        "{:?}",
        allowed.elapsed()
    );
    assert!(eventually(5, || nginx.backend_statuses()[1] == Status::Down));
    // Refused until the drain timeout: stopped then, saying why.
    std::fs::write(&flag, "refuse").unwrap();
    let asked = Instant::now();
    assert_eq!(
        execute(&nginx, "upstream=backend&cmd=2&backend=0&checker=1"),
        NGX_OK
    );
    supervisord.wait_state("backend0", "STOPPED");
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < scaled(Duration::from_secs(6)),
        "stopped after {waited:?}"
    );
    let _ = std::fs::remove_file(&flag);
    let log = nginx.error_log();
    assert_eq!(
        log.matches("api test: checker allows backend 1").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("api test: checker allows").count(), 1, "{log}");
    assert_eq!(
        log.matches("drain timed out after 2000 ms, the balancer's checker still refusing")
            .count(),
        1,
        "{log}"
    );
}

#[test]
#[ignore = "needs the patched nginx (make patched-test)"]
fn the_load_monitor_is_told_each_intervals_requests_once() {
    patched::require();
    let ports = [free_port(), free_port()];
    let _backends: Vec<Backend> = ports.iter().map(|&port| Backend::start(port)).collect();
    let nginx = Nginx::start(
        "c-api-load",
        &config(
            vec![Upstream::new("backend")
                .servers(&ports)
                .supervisord("none")
                .inherit_backend_status()
                .directives(&[
                    "supervisord_api_test_balancer",
                    "supervisord_load_interval 1s",
                ])],
            false,
        ),
    );
    let began = Instant::now();
    for _ in 0..40 {
        assert_eq!(request(nginx.port, "GET", "/").status, 200);
    }
    // Every request falls in some interval, told once (one worker per interval): all 40
    // reported, and two more reports since with none of them again.
    let reports = || -> Vec<Vec<u64>> {
        nginx
            .error_log()
            .lines()
            .filter(|line| line.contains("api test: upstream \"backend\" load "))
            .map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                ["load", "reqs", "interval", "aservers", "nservers"]
                    .iter()
                    .map(|name| {
                        let at = words.iter().position(|word| word == name).unwrap();
                        words[at + 1].trim_end_matches(',').parse().unwrap()
                    })
                    .collect()
            })
            .collect()
    };
    let total = |reports: &[Vec<u64>]| reports.iter().map(|report| report[1]).sum::<u64>();
    assert!(
        eventually(10, || total(&reports()) >= 40),
        "{:?}",
        reports()
    );
    let told = reports().len();
    assert!(
        eventually(10, || reports().len() >= told + 2),
        "{:?}",
        reports()
    );
    let watched = began.elapsed();
    let reports = reports();
    assert_eq!(
        reports.iter().map(|report| report[1]).sum::<u64>(),
        40,
        "{reports:?}"
    );
    assert!(
        !reports.is_empty() && reports.len() as u64 <= watched.as_secs() + 1,
        "{} reports in {watched:?}: {reports:?}",
        reports.len()
    );
    for report in &reports {
        let (load, reqs, interval, up, count) =
            (report[0], report[1], report[2], report[3], report[4]);
        assert!((900..=1500).contains(&interval), "{report:?}");
        assert_eq!((up, count), (2, 2));
        assert_eq!(load, reqs * 100 * 1000 / interval / 2, "{report:?}");
    }
}
