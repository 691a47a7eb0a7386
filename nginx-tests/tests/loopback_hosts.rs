//! One machine standing for several: each "host" is a loopback address (127.0.0.2, 127.0.0.3),
//! whose supervisord listens there over TCP with Basic auth and whose programs bind there only.
//! With today's module (one `supervisord` per upstream), an upstream whose server and
//! supervisord are on such a host is cold-started on demand like any other, and two upstreams on
//! two hosts, each with its own supervisord, are started each by its own supervisord.

use base64::prelude::{Engine as _, BASE64_STANDARD};
use nginx_tests::supervisord::{Program, Supervisord, PASSWORD, USER};
use nginx_tests::{eventually, free_port_on, request, Config, Nginx, Server};

/// One upstream per host: (upstream name, its supervisord, the port of its one server).
type HostUpstream<'a> = (&'a str, &'a Supervisord, u16);

/// The port of `upstream`'s one server on `host`, and its supervisord there, which runs
/// `<upstream>0` as the test backend bound to `host` only.
fn host_with_backend(test: &str, upstream: &str, host: &str) -> (u16, Supervisord) {
    let port = free_port_on(host);
    let program = Program::backend_on(&format!("{upstream}0"), host, port, 1);
    let supervisord =
        Supervisord::start_on_host(&format!("{test}-{upstream}"), host, &[program], "");
    (port, supervisord)
}

/// nginx (2 workers, error log at `debug`: every step the module takes is logged, so the
/// password check below sees all of it) with each upstream of `hosts` over its server, managed
/// through its supervisord over TCP; `/<upstream>/` passes to it, `= /_status` shows them.
fn nginx_with_an_upstream_per_host(name: &str, hosts: &[HostUpstream]) -> Nginx {
    let mut config = Config::new().workers(2).error_log_level("debug");
    let mut server = Server::new()
        .reuseport()
        .location("= /_status", "supervisord_status;");
    for (upstream, supervisord, port) in hosts {
        config = config.upstream(
            supervisord
                .upstream(upstream, &[*port])
                .sync_interval("300ms"),
        );
        server = server.location(
            &format!("/{upstream}/"),
            &format!("proxy_pass http://{upstream};"),
        );
    }
    Nginx::start(name, &config.server(server))
}

/// What a cold start through `upstream` left behind, once its first request was answered:
/// its supervisord spawned its program once and nothing else, nginx read that supervisord over
/// TCP, and the program listens on its host only (not on 127.0.0.1 at the same port).
#[track_caller]
fn assert_started_on_its_host((upstream, supervisord, port): HostUpstream) {
    let program = format!("{upstream}0");
    assert_eq!(supervisord.spawns(&program), 1, "{}", supervisord.log());
    assert_eq!(
        supervisord.log().matches("spawned: '").count(),
        1,
        "its supervisord spawned its own program only: {}",
        supervisord.log()
    );
    assert_eq!(supervisord.calls("supervisor.startProcess"), 1);
    supervisord.wait_state(&program, "RUNNING");
    // nginx's reads of the programs' states come over TCP (the harness takes the UNIX socket).
    supervisord.wait_for_reads(1);
    let host = supervisord.host();
    assert!(
        std::net::TcpStream::connect((host, port)).is_ok(),
        "{program} does not listen on {host}:{port}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "{program} listens on 127.0.0.1:{port}, not on {host} only"
    );
}

/// nginx's error log holds neither the password nor the Basic-auth credentials it sends.
#[track_caller]
fn assert_no_password(nginx: &Nginx) {
    let log = nginx.error_log();
    let basic = BASE64_STANDARD.encode(format!("{USER}:{PASSWORD}"));
    assert!(!log.contains(PASSWORD), "the password was logged:\n{log}");
    assert!(!log.contains(&basic), "the credentials were logged:\n{log}");
}

#[test]
fn cold_start_on_another_host_over_tcp_with_credentials() {
    let (port, supervisord) = host_with_backend("hosts-cold", "app", "127.0.0.2");
    assert!(
        supervisord.address().starts_with("127.0.0.2:"),
        "{}",
        supervisord.address()
    );
    let nginx = nginx_with_an_upstream_per_host("hosts-cold", &[("app", &supervisord, port)]);
    assert_eq!(
        supervisord.spawns("app0"),
        0,
        "nothing runs before the request"
    );

    let reply = nginx.get("/app/");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body.trim(), format!("backend {port}"));
    assert_started_on_its_host(("app", &supervisord, port));
    let status = nginx.supervisord_status("/_status");
    let app = status.upstream("app");
    assert_eq!(
        app.backends[0].server,
        format!("127.0.0.2:{port}"),
        "{app:?}"
    );
    assert!(!app.supervisord.contains(PASSWORD), "{app:?}");
    nginx.error_log_once_it_has("program \"app0\"): starting up -> up");
    assert_no_password(&nginx);
    nginx.assert_clean_log();
}

#[test]
fn two_hosts_two_supervisords_each_starts_its_own() {
    let (port2, supervisord2) = host_with_backend("hosts-two", "alpha", "127.0.0.2");
    let (port3, supervisord3) = host_with_backend("hosts-two", "beta", "127.0.0.3");
    let hosts = [
        ("alpha", &supervisord2, port2),
        ("beta", &supervisord3, port3),
    ];
    let nginx = nginx_with_an_upstream_per_host("hosts-two", &hosts);

    // Both cold starts at once, one request each, on their own connections.
    let nginx_port = nginx.port;
    let requests: Vec<_> = hosts
        .iter()
        .map(|(upstream, _, port)| {
            let path = format!("/{upstream}/");
            let port = *port;
            std::thread::spawn(move || (port, request(nginx_port, "GET", &path)))
        })
        .collect();
    for handle in requests {
        let (port, reply) = handle.join().unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body.trim(), format!("backend {port}"));
    }
    for host in hosts {
        assert_started_on_its_host(host);
    }
    // Neither program listens on the other's host.
    assert!(std::net::TcpStream::connect(("127.0.0.3", port2)).is_err());
    assert!(std::net::TcpStream::connect(("127.0.0.2", port3)).is_err());
    // Each upstream keeps to its own backend.
    assert!(eventually(5, || {
        nginx.get("/alpha/").body.trim() == format!("backend {port2}")
            && nginx.get("/beta/").body.trim() == format!("backend {port3}")
    }));
    nginx.error_log_once_it_has("program \"alpha0\"): starting up -> up");
    nginx.error_log_once_it_has("program \"beta0\"): starting up -> up");
    assert_no_password(&nginx);
    nginx.assert_clean_log();
}

#[test]
fn a_hosts_supervisord_stops_and_comes_back() {
    let (port, mut supervisord) = host_with_backend("hosts-restart", "app", "127.0.0.2");
    let nginx = nginx_with_an_upstream_per_host("hosts-restart", &[("app", &supervisord, port)]);
    assert_eq!(nginx.get("/app/").status, 200);
    // supervisord stops its program with itself; nginx's next read fails and marks it down.
    supervisord.stop_daemon();
    assert!(
        eventually(10, || std::net::TcpStream::connect(("127.0.0.2", port))
            .is_err()),
        "the program outlived its supervisord"
    );
    supervisord.restart_daemon();
    supervisord.wait_for_reads(2);
    // Down again, so the next request starts it again through the same TCP address.
    let reply = nginx.get("/app/");
    assert_eq!(reply.status, 200, "{reply:?}");
    // supervisord appends to its log: the first daemon's spawn, then the new one's.
    assert_eq!(supervisord.spawns("app0"), 2, "{}", supervisord.log());
    supervisord.wait_state("app0", "RUNNING");
    assert_no_password(&nginx);
    nginx.assert_clean_log();
}
