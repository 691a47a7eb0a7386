//! Several machines, one upstream: app servers on two hosts (127.0.0.2 with two servers,
//! 127.0.0.3 with one), each host with its own supervisord over TCP, named by two
//! `supervisord` lines. Each server belongs to the supervisord of its host, program names count
//! per host (host 127.0.0.3 runs `app0` too), and each host fails on its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nginx_tests::status::Status;
use nginx_tests::supervisord::{controls_config, Program, Supervisord};
use nginx_tests::{eventually, free_port_on, request, Nginx, Upstream};

const HOST_A: &str = "127.0.0.2";
const HOST_B: &str = "127.0.0.3";

/// The two hosts: ports of the servers on A (two) and B (one), and their supervisords.
struct Hosts {
    ports_a: [u16; 2],
    port_b: u16,
    a: Supervisord,
    b: Supervisord,
}

fn hosts(test: &str, startsecs: u32) -> Hosts {
    let ports_a = [free_port_on(HOST_A), free_port_on(HOST_A)];
    let port_b = free_port_on(HOST_B);
    let a = Supervisord::start_on_host(
        &format!("{test}-a"),
        HOST_A,
        &[
            Program::backend_on("app0", HOST_A, ports_a[0], startsecs),
            Program::backend_on("app1", HOST_A, ports_a[1], startsecs),
        ],
        "",
    );
    let b = Supervisord::start_on_host(
        &format!("{test}-b"),
        HOST_B,
        &[Program::backend_on("app0", HOST_B, port_b, startsecs)],
        "",
    );
    Hosts {
        ports_a,
        port_b,
        a,
        b,
    }
}

/// nginx with upstream `app` over the three servers and one `supervisord` per host, behind
/// [`controls_config`]'s server.
fn nginx_over_both_hosts(name: &str, hosts: &Hosts, directives: &[&str]) -> Nginx {
    let upstream = Upstream::new("app")
        .server(format!("{HOST_A}:{}", hosts.ports_a[0]))
        .server(format!("{HOST_A}:{}", hosts.ports_a[1]))
        .server(format!("{HOST_B}:{}", hosts.port_b))
        .raw(format!("supervisord {};", hosts.a.address()))
        .raw(format!("supervisord {};", hosts.b.address()))
        .sync_interval("300ms")
        .directives(directives);
    Nginx::start(name, &controls_config(upstream))
}

fn statuses(nginx: &Nginx) -> Vec<Status> {
    nginx
        .supervisord_status("/_status")
        .upstream("app")
        .backends
        .iter()
        .map(|backend| backend.status)
        .collect()
}

#[test]
fn each_server_is_started_by_the_supervisord_of_its_host() {
    let hosts = hosts("hosts-start", 0);
    let nginx = nginx_over_both_hosts("hosts-start", &hosts, &[]);
    // Cold start: the first server, on host A, as program app0 there.
    let answer = nginx.get("/");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body.trim(), format!("backend {}", hosts.ports_a[0]));
    assert_eq!(hosts.a.spawns("app0"), 1, "{}", hosts.a.log());
    assert_eq!(hosts.a.spawns("app1"), 0);
    assert_eq!(hosts.b.spawns("app0"), 0, "{}", hosts.b.log());
    // The third server is host B's first: /_start/2 makes B start its app0.
    let started = nginx.get("/_start/2");
    assert_eq!(started.status, 200, "{started:?}");
    assert!(eventually(10, || statuses(&nginx)[2] == Status::Up));
    assert_eq!(hosts.b.spawns("app0"), 1, "{}", hosts.b.log());
    assert_eq!(hosts.a.spawns("app0"), 1);
    assert_eq!(hosts.a.spawns("app1"), 0);
    // The status tells each backend's supervisord (never its credentials).
    let view = nginx.supervisord_status("/_status");
    let app = view.upstream("app");
    let of = |index: usize| app.backends[index].supervisord.clone().unwrap_or_default();
    assert!(of(0).starts_with(&format!("{HOST_A}:")), "{app:?}");
    assert!(of(2).starts_with(&format!("{HOST_B}:")), "{app:?}");
    assert_eq!(app.backends[2].program.as_deref(), Some("app0"));
    assert_eq!(app.backends[1].program.as_deref(), Some("app1"));
    assert!(!format!("{view:?}").contains(nginx_tests::supervisord::PASSWORD));
    let metrics_location = nginx.get("/_status");
    assert!(!metrics_location
        .body
        .contains(nginx_tests::supervisord::PASSWORD));
    nginx.assert_clean_log();
}

#[test]
fn a_host_whose_supervisord_restarts_fails_no_get() {
    let mut hosts = hosts("hosts-restart", 0);
    let nginx = nginx_over_both_hosts("hosts-restart", &hosts, &["supervisord_hold_timeout 20s"]);
    // Every backend up: one on host B among them.
    for index in 0..3 {
        assert_eq!(nginx.get(&format!("/_start/{index}")).status, 200);
    }
    assert!(eventually(10, || statuses(&nginx) == vec![Status::Up; 3]));
    let running = Arc::new(AtomicBool::new(true));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (running, port) = (running.clone(), nginx.port);
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while running.load(Ordering::Relaxed) {
                    seen.push(request(port, "GET", "/").status);
                    std::thread::sleep(Duration::from_millis(5));
                }
                seen
            })
        })
        .collect();
    // Host B's supervisord goes (TERM: it stops its program), then comes back.
    hosts.b.stop_daemon();
    nginx.error_log_once_it_has("cannot reach supervisord at 127.0.0.3:");
    hosts.b.restart_daemon();
    nginx.error_log_once_it_has("answers again");
    // Host B's backend is served again (started by its supervisord on demand or by hand).
    assert!(eventually(20, || {
        nginx.get("/_start/2");
        statuses(&nginx)[2] == Status::Up
    }));
    running.store(false, Ordering::Relaxed);
    let answers: Vec<u16> = clients
        .into_iter()
        .flat_map(|client| client.join().unwrap())
        .collect();
    let failed = answers.iter().filter(|status| **status != 200).count();
    let log = nginx.error_log();
    let module_lines: Vec<&str> = log
        .lines()
        .filter(|line| {
            line.contains("supervisord:")
                && ["[warn]", "[error]", "[crit]", "[alert]", "[emerg]"]
                    .iter()
                    .any(|level| line.contains(level))
        })
        .collect();
    eprintln!(
        "{} GETs while host B's supervisord restarted, {failed} failed; module lines (warn+) {}:\n{}",
        answers.len(),
        module_lines.len(),
        module_lines.join("\n")
    );
    assert_eq!(failed, 0, "{answers:?}");
    assert!(answers.len() > 20);
    assert!(module_lines.len() <= 10, "{}", module_lines.join("\n"));
    // Host A never noticed: its programs were spawned once each.
    assert_eq!(hosts.a.spawns("app0"), 1);
    assert_eq!(hosts.a.spawns("app1"), 1);
    assert!(
        !log.contains("cannot reach supervisord at 127.0.0.2:"),
        "{log}"
    );
    nginx.assert_clean_log();
}

#[test]
fn the_minimum_is_kept_on_the_host_that_answers() {
    let mut hosts = hosts("hosts-minimum", 0);
    // Host B is away from the start.
    hosts.b.stop_daemon();
    let nginx = nginx_over_both_hosts("hosts-minimum", &hosts, &["supervisord_min_servers 2"]);
    // Two backends up, both on host A: B's is never tried while B is away.
    assert!(eventually(15, || statuses(&nginx)[..2] == [Status::Up, Status::Up]));
    assert_eq!(statuses(&nginx)[2], Status::Down);
    assert_eq!(hosts.a.spawns("app0"), 1);
    assert_eq!(hosts.a.spawns("app1"), 1);
    assert_eq!(nginx.get("/").status, 200);
    let view = nginx.supervisord_status("/_status");
    let app = view.upstream("app");
    assert_eq!(
        app.backends[2].supervisord_reachable,
        Some(false),
        "{app:?}"
    );
    assert_eq!(app.backends[0].supervisord_reachable, Some(true), "{app:?}");
    // A start by hand for a server of the away host: 503 (try again later) when its connect
    // is refused at once, else accepted and put back down when it is.
    let refused = nginx.get("/_start/2");
    assert!(
        (refused.status == 503 && refused.body.contains("cannot be reached for now"))
            || (refused.status == 200 && refused.body.contains("down -> starting up")),
        "{refused:?}"
    );
    assert!(eventually(10, || statuses(&nginx)[2] == Status::Down));
    nginx.assert_clean_log();
}
