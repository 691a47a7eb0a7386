//! Against a real supervisord: commands start and stop programs, names reach groups, one call
//! per transition whatever the number of workers and requests, reconciliation follows changes
//! made outside nginx, and every fault gives one clear error-log line and puts the status back.

use std::collections::BTreeSet;

use nginx_tests::status::Status;
use nginx_tests::supervisord::{
    nginx_with_controls, FakeSupervisord, Program, Supervisord, PASSWORD, USER,
};
use nginx_tests::{
    backends_by_worker, eventually, free_port, scaled, spawn_requests, Backend, Config, Nginx,
    Server, Upstream,
};

fn answers(nginx: &Nginx) -> BTreeSet<String> {
    backends_by_worker(nginx.port, "/", 30)
        .into_values()
        .flatten()
        .collect()
}

fn only(answer: &str) -> BTreeSet<String> {
    BTreeSet::from([answer.to_string()])
}

#[test]
fn example_one_over_tcp_with_auth() {
    let ports = [free_port(), free_port()];
    let supervisord = Supervisord::start(
        "tcp",
        &[
            Program::backend("backend0", ports[0], 0),
            Program::backend("backend1", ports[1], 1),
        ],
        "",
    );
    let nginx = nginx_with_controls("sv-tcp", &ports, &supervisord.tcp_address(), &[]);
    let reply = nginx.get("/_start/1");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.body.contains("backend 1 (127.0.0.1:"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("down -> starting up"), "{}", reply.body);
    supervisord.wait_state("backend1", "RUNNING");
    let backend1 = format!("backend {}", ports[1]);
    assert!(
        eventually(10, || answers(&nginx) == only(&backend1)),
        "backend1 never took traffic in every worker: {:?}",
        answers(&nginx)
    );
    assert!(nginx.get("/_start/1").body.contains("already up"));
    assert_eq!(
        supervisord.state("backend0"),
        "STOPPED",
        "nothing else was started"
    );

    let reply = nginx.get("/_stop/1");
    assert!(reply.body.contains("up -> shutting down"), "{}", reply.body);
    supervisord.wait_state("backend1", "STOPPED");
    // With every backend down, the next request starts the first one and waits for it.
    let backend0 = format!("backend {}", ports[0]);
    assert_eq!(nginx.get("/").body.trim(), backend0);
    assert_eq!(supervisord.state("backend0"), "RUNNING");
    assert_eq!(answers(&nginx), only(&backend0));
    let log = nginx.error_log_once_it_has("program \"backend1\"): shutting down -> down");
    assert!(
        log.contains("program \"backend1\"): starting up -> up"),
        "{log}"
    );
    assert!(!log.contains(PASSWORD), "the password was logged");
    nginx.assert_clean_log();
}

#[test]
fn unix_socket_and_group_members() {
    let ports = [free_port(), free_port()];
    let supervisord = Supervisord::start(
        "unix",
        &[
            Program::backend("web_0", ports[0], 0),
            Program::backend("web_1", ports[1], 0),
        ],
        "[group:web]\nprograms=web_0,web_1\n",
    );
    let nginx = nginx_with_controls(
        "sv-unix",
        &ports,
        &supervisord.address(),
        &["supervisord_name web:web_"],
    );
    assert_eq!(nginx.get("/_start/0").status, 200);
    supervisord.wait_state("web:web_0", "RUNNING");
    let backend0 = format!("backend {}", ports[0]);
    assert!(eventually(10, || answers(&nginx) == only(&backend0)));
    assert_eq!(supervisord.state("web:web_1"), "STOPPED");
    assert_eq!(nginx.get("/_stop/0").status, 200);
    supervisord.wait_state("web:web_0", "STOPPED");
    nginx.error_log_once_it_has("program \"web:web_0\"): shutting down -> down");
    nginx.assert_clean_log();
}

#[test]
fn one_start_call_for_fifty_concurrent_requests() {
    let ports = [free_port()];
    let supervisord = Supervisord::start("once", &[Program::backend("backend0", ports[0], 1)], "");
    let nginx = nginx_with_controls("sv-once", &ports, &supervisord.address(), &[]);
    let replies: Vec<_> = spawn_requests(nginx.port, 50, "/_start/0")
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .collect();
    assert!(
        replies.iter().all(|reply| reply.status == 200),
        "{replies:?}"
    );
    let accepted = replies
        .iter()
        .filter(|reply| reply.body.contains("down -> starting up"))
        .count();
    assert_eq!(accepted, 1, "exactly one request takes the transition");
    supervisord.wait_state("backend0", "RUNNING");
    assert!(eventually(5, || nginx
        .error_log()
        .contains("starting up -> up")));
    assert_eq!(
        supervisord.spawns("backend0"),
        1,
        "supervisord was asked once:\n{}",
        supervisord.log()
    );
    assert_eq!(nginx.error_log().matches("start failed").count(), 0);
}

#[test]
fn reconciliation_follows_changes_made_outside_nginx() {
    let ports = [free_port(), free_port()];
    let supervisord = Supervisord::with_backends("sync", &ports, "");
    let nginx = nginx_with_controls(
        "sv-sync",
        &ports,
        &supervisord.address(),
        &["supervisord_sync_interval 1s"],
    );
    assert_eq!(nginx.get("/_start/0").status, 200);
    supervisord.wait_state("backend0", "RUNNING");
    let backend0 = format!("backend {}", ports[0]);
    assert!(eventually(5, || answers(&nginx) == only(&backend0)));

    supervisord.ctl(&["stop", "backend0"]);
    supervisord.ctl(&["start", "backend1"]);
    // No traffic meanwhile: only reconciliation can notice.
    let stopped = "program \"backend0\"): up -> down (supervisord says STOPPED)";
    // Found running, probed, then up (supervisord's RUNNING alone makes nothing up).
    let started = "program \"backend1\"): starting up -> up (accepts connections)";
    assert!(
        eventually(5, || {
            let log = nginx.error_log();
            log.contains(stopped) && log.contains(started)
        }),
        "nginx did not follow supervisord:\n{}",
        nginx.error_log()
    );
    let backend1 = format!("backend {}", ports[1]);
    assert_eq!(answers(&nginx), only(&backend1));
    // A crash (kill -9) is seen too.
    supervisord.crash("backend1");
    let exited = "program \"backend1\"): up -> down (supervisord says EXITED)";
    assert!(
        eventually(5, || nginx.error_log().contains(exited)),
        "{}",
        nginx.error_log()
    );
    nginx.assert_clean_log();
}

/// Starts backend 0 of `nginx` (one backend, managed through a supervisord that fails it) and returns the error log once the start has
/// failed and the status is back to DOWN.
fn failed_start(nginx: Nginx) -> (Nginx, String) {
    let reply = nginx.get("/_start/0");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body.contains("down -> starting up"), "{}", reply.body);
    assert!(
        eventually(15, || nginx.error_log().contains("start failed")),
        "no error line:\n{}",
        nginx.error_log()
    );
    assert!(
        eventually(5, || nginx
            .get("/_start/0")
            .body
            .contains("down -> starting up")),
        "the status was not put back to down"
    );
    // A request that finds no backend up starts one and waits; the failed start answers it.
    assert!(eventually(5, || !nginx
        .get("/_stop/0")
        .body
        .contains("starting up")));
    // Each failed start backs off (hand starts too): once the wait is over, a request that
    // finds no backend up starts one and waits; the failed start answers it. A program
    // supervisord does not have is not started again: the request gets 502 at once.
    assert!(eventually(10, || nginx
        .supervisord_status("/_status")
        .upstream("backend")
        .backends[0]
        .backoff_left_ms
        .is_none()));
    let failures_before = nginx.error_log().matches("start failed").count();
    let response = nginx.get("/");
    assert_eq!(response.status, 502, "{response:?}");
    let log = nginx.error_log();
    assert!(
        log.matches("start failed").count() > failures_before
            || log.contains("supervisord has no program"),
        "{log}"
    );
    nginx.assert_clean_log();
    let log = nginx.error_log();
    (nginx, log)
}

fn start_failure_line(log: &str) -> String {
    log.lines()
        .find(|line| line.contains("start failed"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn spawn_error_and_bad_name_are_faults() {
    let supervisord = Supervisord::start(
        "faults",
        &[Program::command("backend0", "/bin/false", 1)],
        "",
    );
    let socket = supervisord.socket().display().to_string();
    let (_nginx, log) = failed_start(nginx_with_controls(
        "sv-spawn",
        &[free_port()],
        &format!("unix:{socket}"),
        &[],
    ));
    let line = start_failure_line(&log);
    assert!(line.contains("[error]"), "{line}");
    assert!(line.contains("upstream \"backend\" backend 0"), "{line}");
    assert!(line.contains("program \"backend0\""), "{line}");
    assert!(line.contains("fault 50 SPAWN_ERROR"), "{line}");
    assert!(line.contains("status back to down"), "{line}");

    let (_nginx, log) = failed_start(nginx_with_controls(
        "sv-badname",
        &[free_port()],
        &format!("unix:{socket}"),
        &["supervisord_name nosuch"],
    ));
    assert!(
        start_failure_line(&log).contains("fault 10 BAD_NAME"),
        "{log}"
    );
}

/// An unreachable supervisord is one `[error]` line, whatever the number of calls; requests
/// that need a start are held within their bounds (`supervisord_hold_timeout 1s` here: 503),
/// the start waiting for supervisord, and a control request whose call failed at once says so.
fn unreachable(nginx: &Nginx, cause: &str) {
    let reached = "cannot reach supervisord at";
    assert!(
        eventually(15, || nginx.error_log().contains(reached)),
        "no error line:\n{}",
        nginx.error_log()
    );
    assert!(eventually(5, || nginx
        .supervisord_status("/_status")
        .upstream("backend")
        .backends[0]
        .status
        == Status::Down));
    for _ in 0..5 {
        let response = nginx.get("/");
        assert_eq!(response.status, 503, "{response:?}");
    }
    let log = nginx.error_log();
    let lines: Vec<&str> = log.lines().filter(|line| line.contains(reached)).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("[error]"), "{}", lines[0]);
    assert!(lines[0].contains(cause), "{}", lines[0]);
    // The per-call failures are covered by that line.
    assert!(!log.contains("start failed"), "{log}");
    assert!(!log.contains("connect() to"), "{log}");
    nginx.assert_clean_log();
}

#[test]
fn supervisord_down_refused_or_socket_missing() {
    let unused = free_port();
    let hold = ["supervisord_hold_timeout 1s"];
    let nginx = nginx_with_controls(
        "sv-refused",
        &[free_port()],
        &format!("127.0.0.1:{unused}"),
        &hold,
    );
    let reply = nginx.get("/_start/0");
    // A TCP connect on loopback may be refused at once or a moment later.
    assert!(
        (reply.status == 200 && reply.body.contains("down -> starting up"))
            || (reply.status == 503
                && reply.header("Retry-After") == Some("1")
                && reply.body.contains("supervisord cannot be reached for now")
                && reply.body.contains("connection refused")),
        "{reply:?}"
    );
    unreachable(&nginx, "connection refused");

    let missing = std::env::temp_dir().join(format!("no-such-{}.sock", std::process::id()));
    let nginx = nginx_with_controls(
        "sv-nosocket",
        &[free_port()],
        &format!("unix:{}", missing.display()),
        &hold,
    );
    // Nothing could be sent: the control request says so (503, try again: supervisord is away
    // for now), and the backend is down again.
    let reply = nginx.get("/_start/0");
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.header("Retry-After"), Some("1"), "{reply:?}");
    let expected = [
        "start: upstream \"backend\" backend 0 (127.0.0.1:",
        &format!(
            "): supervisord cannot be reached for now: connect to unix:{} failed: no such file or directory",
            missing.display()
        ),
        "; status back to down\n",
    ];
    for part in expected {
        assert!(reply.body.contains(part), "{part:?} not in {reply:?}");
    }
    unreachable(&nginx, "no such file or directory");
}

#[test]
fn wrong_credentials_are_reported_never_logged() {
    let supervisord =
        Supervisord::start("auth", &[Program::backend("backend0", free_port(), 0)], "");
    let (_nginx, log) = failed_start(nginx_with_controls(
        "sv-auth",
        &[free_port()],
        &format!("127.0.0.1:{} {USER}:Wr0ngSecret", supervisord.port),
        &[],
    ));
    assert!(
        start_failure_line(&log).contains("401 unauthorized"),
        "{log}"
    );
    assert!(!log.contains("Wr0ngSecret"), "the password was logged");
    assert_eq!(supervisord.state("backend0"), "STOPPED");
}

#[test]
fn hung_supervisord_times_out_without_disturbing_traffic() {
    let fake = FakeSupervisord::start("hang");
    let ports = [free_port()];
    let other = free_port();
    let _other_backend = Backend::start(other);
    let nginx = Nginx::start(
        "sv-hang",
        &Config::new()
            .workers(2)
            .upstream(
                Upstream::new("backend")
                    .servers(&ports)
                    .supervisord(format!("127.0.0.1:{}", fake.port))
                    .directive("supervisord_timeout 1s"),
            )
            .upstream(Upstream::new("plain").servers(&[other]))
            .server(
                Server::new()
                    .location("/", "proxy_pass http://plain;")
                    .location("/_start/", "supervisord_start backend;"),
            ),
    );
    let started = std::time::Instant::now();
    assert_eq!(
        nginx.get("/_start/0").status,
        200,
        "the command is accepted at once"
    );
    assert!(started.elapsed() < scaled(std::time::Duration::from_millis(500)));
    // While supervisord hangs, everything else keeps working.
    for _ in 0..10 {
        assert_eq!(nginx.get("/").body.trim(), format!("backend {other}"));
    }
    assert!(eventually(5, || nginx
        .error_log()
        .contains("start failed: timed out")));
    assert!(eventually(5, || nginx
        .get("/_start/0")
        .body
        .contains("down -> starting up")));
    nginx.assert_clean_log();
}

#[test]
fn html_garbage_bad_xml_and_resets_are_errors() {
    for (mode, expected) in [
        ("html", "reply is not text/xml"),
        ("garbage", "malformed HTTP response"),
        ("badxml", "malformed XML-RPC response"),
        ("reset", "connection reset by peer"),
    ] {
        let fake = FakeSupervisord::start(mode);
        let (_nginx, log) = failed_start(nginx_with_controls(
            &format!("sv-{mode}"),
            &[free_port()],
            &format!("127.0.0.1:{}", fake.port),
            &["supervisord_timeout 3s"],
        ));
        assert!(
            start_failure_line(&log).contains(expected),
            "{mode}:\n{log}"
        );
    }
}

/// Local ports of the established connections from this machine to `port` (from
/// /proc/net/tcp), i.e. nginx's connections to supervisord.
fn connections_to(port: u16) -> std::collections::BTreeSet<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let wanted = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local, remote, state (01 = ESTABLISHED)
            (fields.len() > 3 && fields[2].ends_with(&wanted) && fields[3] == "01")
                .then(|| fields[1].to_string())
        })
        .collect()
}

#[test]
fn connections_to_supervisord_are_kept_alive() {
    let supervisord = Supervisord::start(
        "keepalive",
        &[Program::backend("backend0", free_port(), 0)],
        "",
    );
    let nginx = nginx_with_controls(
        "sv-keepalive",
        &[free_port()],
        &supervisord.tcp_address(),
        &["supervisord_sync_interval 100ms"],
    );
    // Several reconciliations per second, each an XML-RPC call.
    assert!(eventually(5, || !connections_to(supervisord.port).is_empty()));
    let first = connections_to(supervisord.port);
    // Ten more reads of supervisord (nginx's calls, the only ones meanwhile).
    let calls = supervisord.calls("supervisor.getAllProcessInfo");
    assert!(eventually(10, || supervisord
        .calls("supervisor.getAllProcessInfo")
        >= calls + 10));
    let later = connections_to(supervisord.port);
    assert!(
        first.len() <= 2 && later.len() <= 2,
        "at most one kept connection per worker: {first:?} {later:?}"
    );
    assert!(
        !first.is_disjoint(&later),
        "the same connection carried later calls: {first:?} then {later:?}"
    );
    assert!(!nginx.error_log().contains("reading program states"));
}

#[test]
fn the_status_shows_the_address_never_the_credentials() {
    let ports = [free_port()];
    let supervisord = Supervisord::with_backends("status", &ports, "");
    let nginx = nginx_with_controls("sv-status", &ports, &supervisord.tcp_address(), &[]);
    let body = nginx.get("/_status").body;
    assert!(!body.contains(PASSWORD), "{body}");
    let status = nginx.supervisord_status("/_status");
    let upstream = status.upstream("backend");
    assert_eq!(
        upstream.supervisord,
        format!("127.0.0.1:{}", supervisord.port)
    );
    assert_eq!(upstream.backends.len(), 1);
    assert_eq!(upstream.backends[0].program.as_deref(), Some("backend0"));
    assert_eq!(upstream.backends[0].status, Status::Down);
}
