//! With `error_log ... debug;` every step of the module leaves a line: each hold, each wake,
//! each readiness probe attempt, each supervisord call and each decision; at the default level
//! none of them does. (Both nginx builds under test are built `--with-debug`.)

use nginx_tests::supervisord::{Program, Supervisord};
use nginx_tests::{eventually, free_port, Config, Nginx, Server, Upstream};

/// The module's debug lines a cold start, a reconciliation round and a stop leave behind.
const STEPS: [&str; 10] = [
    "holding request, 1 held in all workers",
    "no backend up, starting backend 0",
    "calling supervisor.startProcess",
    "supervisor.startProcess answered",
    "start confirmed, readiness probe settles it",
    "readiness probe attempt 1",
    "status changed, held requests: 1 resumed",
    "calling supervisor.getAllProcessInfo",
    "program states read, 0 of 1 backends change",
    "backend 0: stop while up",
];

fn run(name: &str, level: &str) -> String {
    let port = free_port();
    let supervisord = Supervisord::start(name, &[Program::backend("backend0", port, 1)], "");
    let nginx = Nginx::start(
        name,
        &Config::new()
            .workers(2)
            .error_log_level(level)
            .upstream(
                Upstream::new("backend")
                    .servers(&[port])
                    .supervisord(supervisord.address())
                    .sync_interval("300ms"),
            )
            .server(
                Server::new()
                    .location("/", "proxy_pass http://backend;")
                    .location("/_stop/", "supervisord_stop backend;"),
            ),
    );
    let reply = nginx.get("/");
    assert_eq!(reply.status, 200, "{reply:?}");
    // supervisord answers the start once the program is RUNNING (startsecs later).
    supervisord.wait_state("backend0", "RUNNING");
    if level == "debug" {
        assert!(
            eventually(10, || {
                let log = nginx.error_log();
                log.contains("start confirmed") && log.contains("program states read")
            }),
            "no start answer or reconciliation round:\n{}",
            nginx.error_log()
        );
    } else {
        // The start answered and a reconciliation round passed at the default level too.
        supervisord.wait_for_answers();
        supervisord.wait_for_reads(2);
    }
    let stop = nginx.get("/_stop/0");
    assert_eq!(stop.status, 200, "{stop:?}");
    supervisord.wait_state("backend0", "STOPPED");
    assert_eq!(
        supervisord.log().matches("spawned: 'backend0'").count(),
        1,
        "one start:\n{}",
        supervisord.log()
    );
    nginx.error_log()
}

fn module_debug_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| line.contains("[debug]") && line.contains("supervisord: "))
        .collect()
}

#[test]
fn every_step_leaves_a_debug_line() {
    let log = run("debug-on", "debug");
    let lines = module_debug_lines(&log);
    for step in STEPS {
        assert!(
            lines.iter().any(|line| line.contains(step)),
            "no debug line for \"{step}\" among:\n{}",
            lines.join("\n")
        );
    }
}

#[test]
fn none_of_them_at_the_default_level() {
    let log = run("debug-off", "notice");
    assert!(module_debug_lines(&log).is_empty(), "{log}");
    for step in STEPS {
        assert!(!log.contains(step), "\"{step}\" logged at notice:\n{log}");
    }
    // The notice-level lines of the same story are there.
    assert!(log.contains("starting up -> up"), "{log}");
}
