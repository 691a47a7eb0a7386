//! The C API and the patches (`make patched`): nginx 1.28 with the init_busy and round-robin
//! patches, upstream-fair patched and built as a dynamic module, and the module built for that
//! nginx. Run by `make patched-test` (which sets `NGX_SUPERVISORD_PATCHED=1` and points the
//! harness at `build/patched/`); skipped, saying so, by the stock suites.

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use nginx_tests::patched;
use nginx_tests::status::Status;
use nginx_tests::supervisord::{Program, Supervisord};
use nginx_tests::{
    eventually, free_port, request, scaled, spawn_requests, Backend, Config, Nginx, Server,
    Upstream,
};

/// Example #1 of ngx_supervisord 1.4's README, as it was written (the module and upstream-fair
/// loaded first; its server listens on port 80, nginx's default for root).
const EXAMPLE_1: &str = "\
upstream backend {
    server 127.0.0.1:8000;
    server 127.0.0.1:8001;
    supervisord 127.0.0.1:9001 admin:super;
    fair;
}

server {
    location / {
        proxy_pass http://backend;
    }
}";

#[test]
#[ignore = "needs the patched nginx (make patched-test)"]
fn example_1_of_the_2010_readme_runs_verbatim() {
    patched::require();
    for port in [80, 8000, 8001, 9001] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "example #1 needs port {port} free"
        );
    }
    let supervisord = Supervisord::start_on(
        "example1",
        &[
            Program::backend("backend0", 8000, 1),
            Program::backend("backend1", 8001, 1),
        ],
        "",
        9001,
        ("admin", "super"),
    );
    let config = Config::new()
        .workers(2)
        .error_log_level("debug")
        .main_raw(patched::load_module_beside(
            "ngx_http_upstream_fair_module.so",
        ))
        .http_raw(EXAMPLE_1)
        .server(Server::new().location("= /_status", "supervisord_status;"));
    let nginx = Nginx::start("example1", &config);
    let began = Instant::now();
    let response = request(80, "GET", "/");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body.trim(), "backend 8000");
    // Held while backend0 started (startsecs=1: the module answers once it listens).
    assert!(began.elapsed() < scaled(Duration::from_secs(10)));
    assert_eq!(supervisord.spawns("backend0"), 1);
    assert_eq!(supervisord.spawns("backend1"), 0);
    let log = nginx.error_log();
    assert_eq!(
        log.matches("holding request in peer.init").count(),
        1,
        "the first request is held by fair's peer.init"
    );
    assert!(!log.contains("admin:super"), "credentials logged");
    // Later requests go straight through.
    for _ in 0..10 {
        assert_eq!(request(80, "GET", "/").status, 200);
    }
    assert_eq!(supervisord.spawns("backend0"), 1);
}

#[test]
#[ignore = "needs the patched nginx (make patched-test)"]
fn load_above_the_fair_threshold_starts_a_backend_and_idleness_stops_it_down_to_the_minimum() {
    patched::require();
    let ports = [free_port(), free_port()];
    let supervisord = Supervisord::with_backends("fair-load", &ports, "");
    let upstream = supervisord.upstream("backend", &ports).directives(&[
        "fair",
        // 2 requests per second per backend.
        "fair_load_threshold 2",
        "fair_min_servers 1",
        "supervisord_load_interval 1s",
    ]);
    let nginx = Nginx::start(
        "fair-load",
        &Config::new()
            .workers(2)
            .main_raw(patched::load_module_beside(
                "ngx_http_upstream_fair_module.so",
            ))
            .upstream(upstream)
            .server(
                Server::new()
                    .location("/", "proxy_pass http://backend;")
                    .location("= /_status", "supervisord_status;"),
            ),
    );
    let port = nginx.port;
    // About 20 requests per second on one backend (load 2000 > 200) until fair has started
    // the second one.
    let load_until = Instant::now() + scaled(Duration::from_secs(10));
    let mut failed = 0;
    let mut sent = 0;
    while nginx.backend_statuses()[1] != Status::Up {
        assert!(
            Instant::now() < load_until,
            "backend1 not started for load: {:?}",
            nginx.backend_statuses()
        );
        sent += 1;
        if request(port, "GET", "/").status != 200 {
            failed += 1;
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(failed, 0, "{failed} of {sent} failed");
    assert_eq!(supervisord.spawns("backend1"), 1);
    // No requests: fair stops one backend per interval, never below fair_min_servers.
    assert!(
        eventually(6, || nginx.backend_statuses()
            == vec![Status::Up, Status::Down]),
        "backend1 not stopped when idle: {:?}",
        nginx.backend_statuses()
    );
    supervisord.wait_state("backend1", "STOPPED");
    // Three idle intervals of fair's since backend 0's last request: each would have stopped
    // one more backend.
    assert!(eventually(10, || nginx
        .supervisord_status("/_status")
        .upstream("backend")
        .backends[0]
        .idle_ms
        .is_some_and(|idle| idle > 3000)));
    assert_eq!(
        nginx.backend_statuses(),
        vec![Status::Up, Status::Down],
        "stopped below fair_min_servers"
    );
    assert_eq!(supervisord.state("backend0"), "RUNNING");
    assert_eq!(supervisord.spawns("backend0"), 1);
    let log = nginx.error_log();
    assert_eq!(
        log.matches("by the balancer's start any").count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("by the balancer's stop any").count(),
        1,
        "{log}"
    );
    let status = nginx.supervisord_status("/_status");
    let backends = &status.upstream("backend").backends;
    assert_eq!(backends[1].starts.balancer, 1);
    assert_eq!(backends[1].stops.balancer, 1);
}

#[test]
#[ignore = "needs the patched nginx (make patched-test)"]
fn start_and_stop_flip_the_peers_of_fair_and_round_robin_in_every_worker() {
    patched::require();
    let fair_ports = [free_port(), free_port()];
    let rr_ports = [free_port(), free_port()];
    let _backends: Vec<Backend> = fair_ports
        .iter()
        .chain(&rr_ports)
        .map(|&port| Backend::start(port))
        .collect();
    let upstream = |name: &str, ports: &[u16], balancer: &[&str]| {
        Upstream::new(name)
            .servers(ports)
            .supervisord("none")
            .inherit_backend_status()
            .directives(balancer)
    };
    let nginx = Nginx::start(
        "flip-peers",
        &Config::new()
            .workers(2)
            .error_log_level("debug")
            .main_raw(patched::load_module_beside(
                "ngx_http_upstream_fair_module.so",
            ))
            .upstream(upstream("fairup", &fair_ports, &["fair"]))
            .upstream(upstream("rrup", &rr_ports, &[]))
            .server(
                Server::new()
                    .location("/fair", "proxy_pass http://fairup;")
                    .location("/rr", "proxy_pass http://rrup;")
                    .location("/fair_start/", "supervisord_start fairup;")
                    .location("/fair_stop/", "supervisord_stop fairup;")
                    .location("/rr_start/", "supervisord_start rrup;")
                    .location("/rr_stop/", "supervisord_stop rrup;"),
            ),
    );
    let workers: HashSet<u32> = nginx.worker_pids().into_iter().collect();
    assert_eq!(workers.len(), 2);
    let flipped =
        |since: usize, line: &str| patched::every_worker_logged(&nginx, &workers, since, line);
    // Each worker tells its balancers every status as it starts.
    assert!(flipped(
        0,
        "upstream-fair: upstream \"fairup\" backend 1 down=0"
    ));
    assert!(flipped(
        0,
        "round robin: upstream \"rrup\" backend 1 down=0"
    ));
    for (stop, up_port, line) in [
        (
            "/fair_stop/1",
            fair_ports[0],
            "upstream-fair: upstream \"fairup\" backend 1 down=1",
        ),
        (
            "/rr_stop/1",
            rr_ports[0],
            "round robin: upstream \"rrup\" backend 1 down=1",
        ),
    ] {
        let since = nginx.error_log().len();
        assert_eq!(request(nginx.port, "GET", stop).status, 200);
        assert!(flipped(since, line), "not every worker logged {line}");
        let path = if stop.starts_with("/fair") {
            "/fair"
        } else {
            "/rr"
        };
        for _ in 0..20 {
            let response = request(nginx.port, "GET", path);
            assert_eq!(response.status, 200);
            assert_eq!(response.body.trim(), format!("backend {up_port}"));
        }
    }
    let since = nginx.error_log().len();
    assert_eq!(request(nginx.port, "GET", "/fair_start/1").status, 200);
    assert_eq!(request(nginx.port, "GET", "/rr_start/1").status, 200);
    assert!(flipped(
        since,
        "upstream-fair: upstream \"fairup\" backend 1 down=0"
    ));
    assert!(flipped(
        since,
        "round robin: upstream \"rrup\" backend 1 down=0"
    ));
    let reached: HashSet<String> = (0..20)
        .map(|_| request(nginx.port, "GET", "/rr").body)
        .collect();
    assert_eq!(reached.len(), 2, "round robin uses both again: {reached:?}");
}

/// A cold start held in a C balancer's peer.init (upstream-fair, the patched round robin) and
/// then answered logs nothing at `warn` or above: the request resumes into a balancer that
/// already sees the started backend up, instead of meeting "no live upstreams" first.
#[test]
#[ignore = "needs the patched nginx (make patched-test)"]
fn a_cold_start_held_in_peer_init_logs_no_error() {
    patched::require();
    for (name, balancer) in [
        ("quiet-cold-start-fair", "fair;"),
        ("quiet-cold-start-rr", ""),
    ] {
        let ports = [free_port(), free_port()];
        let supervisord = Supervisord::start(
            name,
            &[
                Program::backend_with("backend0", ports[0], 0, "--listen-after 300"),
                Program::backend("backend1", ports[1], 0),
            ],
            "",
        );
        let mut upstream = supervisord.upstream("backend", &ports);
        if !balancer.is_empty() {
            upstream = upstream.raw(balancer);
        }
        let mut config = Config::new().workers(2).upstream(upstream).server(
            Server::new()
                .reuseport()
                .location("/", "proxy_pass http://backend;"),
        );
        if !balancer.is_empty() {
            config = config.main_raw(patched::load_module_beside(
                "ngx_http_upstream_fair_module.so",
            ));
        }
        let nginx = Nginx::start(name, &config);
        for response in spawn_requests(nginx.port, 4, "/")
            .into_iter()
            .map(|client| client.join().unwrap())
        {
            assert_eq!(response.status, 200, "{balancer:?}: {response:?}");
            assert_eq!(response.body.trim(), format!("backend {}", ports[0]));
        }
        assert_eq!(supervisord.spawns("backend0"), 1);
        let log = nginx.error_log();
        let loud: Vec<&str> = log
            .lines()
            .filter(|line| line.contains("[error]") || line.contains("[warn]"))
            .collect();
        assert!(loud.is_empty(), "{balancer:?}: {loud:#?}");
        drop(nginx);
    }
}

/// nginx (2 workers, debug log) whose `/` passes to upstream `backend` through a variable, so
/// that the hold gate cannot see the upstream: only peer.init can hold.
fn nginx_with_variable_pass(
    name: &str,
    ports: &[u16],
    supervisord: &Supervisord,
    extra: &[&str],
) -> Nginx {
    let upstream = supervisord.upstream("backend", ports).directives(extra);
    Nginx::start(
        name,
        &Config::new()
            .workers(2)
            .error_log_level("debug")
            .upstream(upstream)
            .server(
                Server::new()
                    .location("/", "set $pool backend;\nproxy_pass http://$pool;")
                    .location("= /_status", "supervisord_status;"),
            ),
    )
}

#[test]
#[ignore = "needs the patched nginx (make patched-test)"]
fn a_proxy_pass_with_a_variable_is_held_in_peer_init() {
    patched::require();
    let port = free_port();
    let supervisord = Supervisord::with_backends("variable-pass", &[port], "--listen-after 500");
    let nginx = nginx_with_variable_pass("variable-pass", &[port], &supervisord, &[]);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let port = nginx.port;
            thread::spawn(move || request(port, "GET", "/"))
        })
        .collect();
    for client in clients {
        let response = client.join().unwrap();
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body.trim(), format!("backend {port}"));
    }
    assert_eq!(supervisord.spawns("backend0"), 1);
    let log = nginx.error_log();
    assert!(
        log.matches("holding request in peer.init").count() >= 1,
        "not held in peer.init"
    );
    assert_eq!(nginx.held("backend"), 0);
}

#[test]
#[ignore = "needs the patched nginx (make patched-test)"]
fn a_request_held_in_peer_init_gets_503_at_the_hold_timeout() {
    patched::require();
    let port = free_port();
    let supervisord =
        Supervisord::with_backends("peer-init-timeout", &[port], "--listen-after 3000");
    let nginx = nginx_with_variable_pass(
        "peer-init-timeout",
        &[port],
        &supervisord,
        &["supervisord_hold_timeout 500ms"],
    );
    let began = Instant::now();
    let response = request(nginx.port, "GET", "/");
    let waited = began.elapsed();
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.header("Retry-After"), Some("1"));
    assert!(
        waited >= Duration::from_millis(450) && waited < scaled(Duration::from_secs(3)),
        "answered after {waited:?}"
    );
    let log = nginx.error_log();
    assert_eq!(
        log.matches("no backend up within 500 ms").count(),
        1,
        "{log}"
    );
    assert_eq!(nginx.held("backend"), 0);
    // Once it listens, the next request goes through.
    assert!(eventually(10, || request(nginx.port, "GET", "/").status == 200));
    assert_eq!(supervisord.spawns("backend0"), 1);
}

#[test]
#[ignore = "needs the patched nginx (make patched-test)"]
fn a_client_that_leaves_while_held_in_peer_init_gives_its_place_back() {
    patched::require();
    let port = free_port();
    let supervisord = Supervisord::with_backends("peer-init-leave", &[port], "--listen-after 3000");
    let nginx = nginx_with_variable_pass("peer-init-leave", &[port], &supervisord, &[]);
    let held = || nginx.held("backend");
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(("127.0.0.1", nginx.port)).unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        clients.push(stream);
    }
    assert!(eventually(5, || held() == 3), "held: {}", held());
    drop(clients);
    assert!(eventually(5, || held() == 0), "still held: {}", held());
    assert!(eventually(10, || request(nginx.port, "GET", "/").status == 200));
    assert_eq!(supervisord.spawns("backend0"), 1);
    assert_eq!(held(), 0);
}

#[test]
#[ignore = "needs the patched nginx (make patched-test)"]
fn a_request_held_in_peer_init_gets_502_when_the_start_fails() {
    patched::require();
    let port = free_port();
    let supervisord = Supervisord::start(
        "peer-init-fails",
        &[Program::backend_with("backend0", port, 1, "--exit-after 0")],
        "",
    );
    let nginx = nginx_with_variable_pass("peer-init-fails", &[port], &supervisord, &[]);
    let began = Instant::now();
    let response = request(nginx.port, "GET", "/");
    assert_eq!(response.status, 502, "{response:?}");
    assert!(
        began.elapsed() < scaled(Duration::from_secs(5)),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(supervisord.spawns("backend0"), 1);
    assert_eq!(nginx.held("backend"), 0);
    let log = nginx.error_log();
    assert!(
        log.contains("holding request in peer.init"),
        "not held in peer.init"
    );
}

#[test]
#[ignore = "needs the patched nginx (make patched-test)"]
fn a_subrequest_is_held_in_peer_init() {
    patched::require();
    let port = free_port();
    let supervisord =
        Supervisord::with_backends("peer-init-subrequest", &[port], "--listen-after 500");
    let pages = std::env::temp_dir().join(format!("ngx-supervisord-ssi-{}", std::process::id()));
    std::fs::create_dir_all(&pages).unwrap();
    std::fs::write(
        pages.join("page.html"),
        "before <!--# include virtual=\"/app/\" --> after\n",
    )
    .unwrap();
    let upstream = supervisord.upstream("backend", &[port]);
    let nginx = Nginx::start(
        "peer-init-subrequest",
        &Config::new()
            .workers(2)
            .error_log_level("debug")
            .upstream(upstream)
            .server(
                Server::new()
                    .location("/app/", "proxy_pass http://backend;")
                    .location(
                        "= /page.html",
                        &format!("ssi on;\nroot {};", pages.display()),
                    )
                    .location("= /_status", "supervisord_status;"),
            ),
    );
    let response = request(nginx.port, "GET", "/page.html");
    assert_eq!(response.status, 200, "{response:?}");
    // Chunked: the page's text, then the subrequest's answer, then the rest.
    let body = &response.body;
    let (before, answer, after) = (
        body.find("before ").expect("page start"),
        body.find(&format!("backend {port}"))
            .expect("subrequest answer"),
        body.find(" after").expect("page end"),
    );
    assert!(before < answer && answer < after, "{response:?}");
    assert_eq!(supervisord.spawns("backend0"), 1);
    let log = nginx.error_log();
    assert!(
        log.contains("holding request in peer.init"),
        "not held in peer.init"
    );
    assert!(!log.contains("subrequest not held"));
    assert_eq!(nginx.held("backend"), 0);
    let _ = std::fs::remove_dir_all(&pages);
}

/// Over HTTP/2, with the patched round robin (a balancer of the C API, so peer.init holds):
/// held streams are answered once the backend listens; a stream the client resets while held
/// gives its place back and leaves the other streams of its connection alone.
#[test]
#[ignore = "needs the patched nginx (make patched-test)"]
fn http2_streams_are_held_in_peer_init_and_a_reset_one_is_let_go() {
    patched::require();
    let port = free_port();
    let supervisord = Supervisord::with_backends("peer-init-h2", &[port], "--listen-after 1500");
    let h2_port = free_port();
    let upstream = supervisord.upstream("backend", &[port]);
    let nginx = Nginx::start(
        "peer-init-h2",
        &Config::new()
            .workers(2)
            .error_log_level("debug")
            .upstream(upstream)
            .server(Server::new().location("= /_status", "supervisord_status;"))
            .server(
                Server::on(h2_port)
                    .listen_options("http2")
                    .location("/", "proxy_pass http://backend;"),
            ),
    );
    let held = || nginx.held("backend");
    let mut connection = nginx_tests::raw::H2Connection::open(h2_port);
    for stream in [1, 3, 5] {
        connection.get(stream, "/");
    }
    assert!(eventually(5, || held() == 3), "held: {}", held());
    connection.reset(3);
    assert!(eventually(5, || held() == 2), "held: {}", held());
    let mut answered = connection.statuses(2, Duration::from_secs(15));
    answered.sort();
    assert_eq!(answered, vec![(1, 200), (5, 200)]);
    connection.close();
    assert_eq!(held(), 0);
    assert_eq!(supervisord.spawns("backend0"), 1);
    let log = nginx.error_log();
    assert_eq!(
        log.matches("holding request in peer.init").count(),
        3,
        "{log}"
    );
}

/// `keepalive` wraps the patched round robin and takes anything but NGX_OK from it for an
/// error: the request is held all the same (by the module's wrapper, outside keepalive), not
/// answered 500, and its connection is kept alive afterwards.
#[test]
#[ignore = "needs the patched nginx (make patched-test)"]
fn keepalive_on_the_patched_round_robin_holds_rather_than_500() {
    patched::require();
    let port = free_port();
    let supervisord =
        Supervisord::with_backends("peer-init-keepalive", &[port], "--listen-after 300");
    let upstream = supervisord
        .upstream("backend", &[port])
        .directive("keepalive 4");
    let nginx = Nginx::start(
        "peer-init-keepalive",
        &Config::new()
            .workers(2)
            .error_log_level("debug")
            .upstream(upstream)
            .server(Server::new().location(
                "/",
                "proxy_pass http://backend;\nproxy_http_version 1.1;\nproxy_set_header Connection \"\";",
            )),
    );
    for _ in 0..5 {
        let response = request(nginx.port, "GET", "/");
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.body.trim(), format!("backend {port}"));
    }
    assert_eq!(supervisord.spawns("backend0"), 1);
    let log = nginx.error_log();
    assert!(
        log.contains("holding request in peer.init"),
        "not held in peer.init"
    );
    assert!(
        log.contains("get keepalive peer: using connection"),
        "no connection reused"
    );
}

/// After `nginx -s reload`, the new workers' balancers are told the statuses the old ones knew
/// (the shared state survives the reload), and later changes too; a configuration that drops
/// `fair` leaves the module working with nginx's own round robin.
#[test]
#[ignore = "needs the patched nginx (make patched-test)"]
fn a_reload_keeps_the_balancers_in_step() {
    patched::require();
    let ports = [free_port(), free_port()];
    let _backends: Vec<Backend> = ports.iter().map(|&port| Backend::start(port)).collect();
    let config = |balancer: &[&str]| {
        Config::new()
            .workers(2)
            .error_log_level("debug")
            .main_raw(patched::load_module_beside(
                "ngx_http_upstream_fair_module.so",
            ))
            .upstream(
                Upstream::new("backend")
                    .servers(&ports)
                    .supervisord("none")
                    .inherit_backend_status()
                    .directives(balancer),
            )
            .server(
                Server::new()
                    .location("/", "proxy_pass http://backend;")
                    .location("/_start/", "supervisord_start backend;")
                    .location("/_stop/", "supervisord_stop backend;"),
            )
    };
    let nginx = Nginx::start("reload-balancers", &config(&["fair"]));
    assert_eq!(request(nginx.port, "GET", "/_stop/1").status, 200);
    let since = nginx.error_log().len();
    nginx.reload(&config(&["fair"]));
    let workers: HashSet<u32> = nginx.worker_pids().into_iter().collect();
    let told =
        |since: usize, line: &str| patched::every_worker_logged(&nginx, &workers, since, line);
    // The new workers start with backend 1 down, as the old ones left it.
    assert!(told(
        since,
        "upstream-fair: upstream \"backend\" backend 1 down=1"
    ));
    for _ in 0..10 {
        let response = request(nginx.port, "GET", "/");
        assert_eq!(response.body.trim(), format!("backend {}", ports[0]));
    }
    let since = nginx.error_log().len();
    assert_eq!(request(nginx.port, "GET", "/_start/1").status, 200);
    assert!(told(
        since,
        "upstream-fair: upstream \"backend\" backend 1 down=0"
    ));
    // Round robin again, after a reload without fair.
    let since = nginx.error_log().len();
    nginx.reload(&config(&[]));
    let workers: HashSet<u32> = nginx.worker_pids().into_iter().collect();
    assert!(patched::every_worker_logged(
        &nginx,
        &workers,
        since,
        "round robin: upstream \"backend\" backend 1 down=0",
    ));
    let reached: HashSet<String> = (0..20)
        .map(|_| request(nginx.port, "GET", "/").body)
        .collect();
    assert_eq!(reached.len(), 2, "{reached:?}");
}
