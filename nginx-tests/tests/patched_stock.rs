//! nginx built with the core patches (`make patched`: init_busy and round robin) behaves as
//! stock nginx wherever no balancer asked for the module's C API: with or without the module
//! loaded, the same answers, the same upstream records (`$upstream_addr`, `$upstream_status`),
//! the same attempts on each server and the same error-log lines as stock nginx configured
//! alike, which each scenario runs in the same test (`NGX_SUPERVISORD_STOCK_NGINX`).
//!
//! The three retry scenarios are those where a patch that calls `peer.init` again on "no live
//! upstreams" sent one request to the same server forever (26,710 backend requests in 4 s) or
//! doubled its records; every answer must come within a second.
//!
//! Run by `make patched-test` (nginx 1.28) and `make patched-1.22-test` (Debian's 1.22 source
//! patched, against Debian's own nginx), which set `NGX_SUPERVISORD_PATCHED=1` and point
//! `NGX_SUPERVISORD_NGINX` at the patched build; elsewhere these tests are reported ignored.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nginx_tests::raw::RawConnection;
use nginx_tests::{
    free_port, nginx_binary, patched, recorded_requests, request, scaled, scratch_path, Backend,
    Config, Nginx, Server, Upstream,
};

/// How long a loop guard lets an answer take (scaled): stock nginx answers these at once.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// A test-backend recording what it receives, and where.
fn recording_backend(name: &str) -> (Backend, PathBuf) {
    let port = free_port();
    let record = scratch_path("record", &format!("{name}-{port}"));
    let _ = std::fs::remove_file(&record);
    let backend = Backend::start_with_args(port, &["--record", record.to_str().unwrap()]);
    (backend, record)
}

fn start(name: &str, upstream: Upstream) -> Nginx {
    Nginx::start(
        name,
        &Config::new()
            .without_module()
            .workers(2)
            .upstream(upstream)
            .server(
                Server::new()
                    .reuseport()
                    .location("/", "proxy_pass http://backend;"),
            ),
    )
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

#[test]
#[ignore = "needs the patched nginx (make patched-test)"]
fn round_robin_reaches_both_backends() {
    patched::require();
    let (first, first_record) = recording_backend("rr0");
    let (second, second_record) = recording_backend("rr1");
    let nginx = start(
        "patched-rr",
        Upstream::new("backend").servers(&[first.port, second.port]),
    );

    let mut bodies = BTreeSet::new();
    for i in 0..20 {
        let response = request(nginx.port, "GET", &format!("/rr/{i}"));
        assert_eq!(response.status, 200, "{response:?}");
        bodies.insert(response.body.trim().to_string());
    }
    let received = (
        recorded_requests(&first_record),
        recorded_requests(&second_record),
    );
    assert!(
        !received.0.is_empty() && !received.1.is_empty(),
        "{received:?}"
    );
    assert_eq!(received.0.len() + received.1.len(), 20, "{received:?}");
    assert_eq!(bodies.len(), 2, "responses from both backends: {bodies:?}");
    assert_eq!(count(&nginx.error_log(), "no live upstreams"), 0);
}

#[test]
#[ignore = "needs the patched nginx (make patched-test)"]
fn down_server_gets_nothing() {
    patched::require();
    let (up, up_record) = recording_backend("up");
    let (down, down_record) = recording_backend("down");
    let nginx = start(
        "patched-down",
        Upstream::new("backend")
            .server(format!("127.0.0.1:{}", up.port))
            .server(format!("127.0.0.1:{} down", down.port)),
    );

    for i in 0..10 {
        let response = request(nginx.port, "GET", &format!("/down/{i}"));
        assert_eq!(response.status, 200, "{response:?}");
    }
    assert_eq!(recorded_requests(&up_record).len(), 10);
    assert_eq!(recorded_requests(&down_record), Vec::<String>::new());
}

/// One nginx build of the comparison.
struct Build {
    name: &'static str,
    nginx: PathBuf,
    /// Loaded, though no upstream of the scenario names supervisord.
    with_module: bool,
}

/// Stock nginx (the reference), the patched nginx alone, and with the module loaded.
fn builds() -> [Build; 3] {
    let stock = std::env::var_os("NGX_SUPERVISORD_STOCK_NGINX")
        .map(PathBuf::from)
        .expect("NGX_SUPERVISORD_STOCK_NGINX: the stock nginx to compare with (make patched-test)");
    assert!(stock.exists(), "{} is missing", stock.display());
    [
        Build {
            name: "stock",
            nginx: stock,
            with_module: false,
        },
        Build {
            name: "patched",
            nginx: nginx_binary(),
            with_module: false,
        },
        Build {
            name: "patched with the module",
            nginx: nginx_binary(),
            with_module: true,
        },
    ]
}

/// What one request got: status and the upstream records nginx kept for it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    upstream_addr: String,
    upstream_status: String,
}

/// What a build did with a scenario's requests, as a user would look at it.
#[derive(Debug, PartialEq, Eq)]
struct Figures {
    answers: Vec<Answer>,
    /// Requests each live backend received (its record).
    backend_requests: Vec<usize>,
    /// Connections each dead server refused, as the error log tells them.
    refused_connects: Vec<usize>,
    no_live_upstreams_lines: usize,
    error_lines: usize,
}

/// A retry scenario: an upstream of live backends and dead servers (closed ports), the
/// location's retry directives, and a request path sent `requests` times on one keep-alive
/// connection (one worker, so that round robin's order is the same in every build).
struct Scenario {
    name: &'static str,
    /// `server` lines: `Live(i)` is live backend i, `Dead(i)` dead port i, with parameters.
    servers: &'static [(Peer, &'static str)],
    location: &'static str,
    path: &'static str,
    requests: usize,
}

#[derive(Clone, Copy)]
enum Peer {
    Live(usize),
    Dead(usize),
}

impl Peer {
    fn live(self) -> Option<usize> {
        match self {
            Peer::Live(i) => Some(i),
            Peer::Dead(_) => None,
        }
    }

    fn dead(self) -> Option<usize> {
        match self {
            Peer::Dead(i) => Some(i),
            Peer::Live(_) => None,
        }
    }
}

impl Scenario {
    fn run(&self, build: &Build, live: &[(Backend, PathBuf)], dead: &[u16]) -> Figures {
        let received_before: Vec<usize> = live
            .iter()
            .map(|(_, record)| recorded_requests(record).len())
            .collect();
        let mut upstream = Upstream::new("backend");
        for (peer, parameters) in self.servers {
            let port = match *peer {
                Peer::Live(i) => live[i].0.port,
                Peer::Dead(i) => dead[i],
            };
            upstream = upstream.server(format!("127.0.0.1:{port} {parameters}").trim_end());
        }
        let mut config =
            Config::new()
                .workers(2)
                .upstream(upstream)
                .server(Server::new().reuseport().location(
                    "/",
                    &format!(
                        "proxy_pass http://backend;\n\
                     {}\n\
                     add_header X-Upstream-Addr $upstream_addr always;\n\
                     add_header X-Upstream-Status $upstream_status always;",
                        self.location
                    ),
                ));
        if !build.with_module {
            config = config.without_module();
        }
        let name = format!(
            "patched-stock-{}-{}",
            self.name,
            build.name.replace(' ', "-")
        );
        let nginx = Nginx::start_binary(&build.nginx, &name, &config);
        let mut connection = RawConnection::open(nginx.port);
        let mut answers = Vec::new();
        let answer_within = scaled(ANSWER_WITHIN);
        for i in 0..self.requests {
            let started = Instant::now();
            connection
                .send(format!("GET {} HTTP/1.1\r\nHost: localhost\r\n\r\n", self.path).as_bytes());
            let response = connection
                .next_response(answer_within * 5)
                .unwrap_or_else(|| {
                    panic!(
                        "{} / {}: request {i} got no answer in {:?}; error log:\n{}",
                        self.name,
                        build.name,
                        answer_within * 5,
                        tail(&nginx.error_log(), 20)
                    )
                });
            let took = started.elapsed();
            assert!(
                took < answer_within,
                "{} / {}: request {i} answered after {took:?}",
                self.name,
                build.name
            );
            answers.push(Answer {
                status: response.status,
                upstream_addr: response.header("X-Upstream-Addr").unwrap_or("").into(),
                upstream_status: response.header("X-Upstream-Status").unwrap_or("").into(),
            });
        }
        connection.close();
        let log = nginx.error_log();
        let backend_requests = live
            .iter()
            .zip(&received_before)
            .map(|((_, record), before)| recorded_requests(record).len() - before)
            .collect();
        let refused_connects = dead
            .iter()
            .map(|port| {
                let peer = format!("127.0.0.1:{port}/");
                log.lines()
                    .filter(|line| line.contains("connect() failed") && line.contains(&peer))
                    .count()
            })
            .collect();
        Figures {
            answers,
            backend_requests,
            refused_connects,
            no_live_upstreams_lines: count(&log, "no live upstreams"),
            error_lines: count(&log, "[error]"),
        }
    }

    /// Runs the scenario on each build and checks that the patched builds' figures are stock
    /// nginx's; returns stock's, for the scenario's own checks.
    fn compare(&self) -> Figures {
        patched::require();
        let count = |of: fn(Peer) -> Option<usize>| {
            self.servers
                .iter()
                .filter_map(|(peer, _)| of(*peer))
                .max()
                .map_or(0, |last| last + 1)
        };
        let live: Vec<(Backend, PathBuf)> = (0..count(Peer::live))
            .map(|i| recording_backend(&format!("{}-{i}", self.name)))
            .collect();
        let dead: Vec<u16> = (0..count(Peer::dead)).map(|_| free_port()).collect();
        let [stock, patched, with_module] = builds();
        let reference = self.run(&stock, &live, &dead);
        for build in [patched, with_module] {
            let figures = self.run(&build, &live, &dead);
            assert_eq!(
                figures,
                reference,
                "{}: {} ({}) differs from stock nginx ({})",
                self.name,
                build.name,
                build.nginx.display(),
                stock.nginx.display()
            );
        }
        reference
    }
}

/// The retry scenarios of the tests below, by name.
const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "max-fails-0",
        servers: &[(Peer::Dead(0), "max_fails=0"), (Peer::Dead(1), "")],
        location: "proxy_next_upstream error timeout;\n\
                   proxy_next_upstream_tries 2;\n\
                   proxy_next_upstream_timeout 1s;",
        path: "/max-fails-0",
        requests: 4,
    },
    Scenario {
        name: "http-404",
        servers: &[(Peer::Live(0), ""), (Peer::Dead(0), "")],
        location: "proxy_next_upstream error timeout http_404;",
        path: "/status/404",
        requests: 4,
    },
    Scenario {
        name: "all-down",
        servers: &[(Peer::Live(0), "down"), (Peer::Dead(0), "down")],
        location: "",
        path: "/all-down",
        requests: 3,
    },
];

/// Stock nginx's figures for the scenario `name` of [`SCENARIOS`], once the patched builds
/// gave the same ([`Scenario::compare`]).
fn compared(name: &str) -> Figures {
    SCENARIOS
        .iter()
        .find(|scenario| scenario.name == name)
        .unwrap_or_else(|| panic!("no scenario {name}"))
        .compare()
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A server that is never marked failed (`max_fails=0`) beside one that is: from the second
/// request on, the failed one is skipped and the retry after the first refusal finds "no live
/// upstreams"; `proxy_next_upstream_tries` and `_timeout` bound the rest.
#[test]
#[ignore = "needs the patched nginx (make patched-test)"]
fn a_server_never_marked_failed_is_tried_as_stock_nginx_does() {
    let stock = compared("max-fails-0");
    assert!(
        stock.answers.iter().all(|answer| answer.status == 502),
        "{stock:?}"
    );
    assert!(
        stock.no_live_upstreams_lines >= 1,
        "the scenario reaches no live upstreams: {stock:?}"
    );
    // Each request tries each server once at most: two tries, then 502.
    assert!(
        stock.refused_connects.iter().sum::<usize>() <= 2 * 4,
        "{stock:?}"
    );
}

/// A live server answering 404 that nginx retries on (`proxy_next_upstream ... http_404`)
/// beside a dead one: once the dead one is marked failed, the retry after the 404 finds "no
/// live upstreams", and stock nginx answers 502 after one try of the live server.
#[test]
#[ignore = "needs the patched nginx (make patched-test)"]
fn a_404_retried_beside_a_dead_server_is_answered_as_stock_nginx_does() {
    let stock = compared("http-404");
    assert!(stock.no_live_upstreams_lines >= 1, "{stock:?}");
    assert!(
        stock.backend_requests[0] <= 4,
        "one try of the live server per request: {stock:?}"
    );
}

/// Every server `down`: one 502 per request, one "no live upstreams" line and one record each.
#[test]
#[ignore = "needs the patched nginx (make patched-test)"]
fn all_servers_down_is_one_502_and_one_record_as_stock_nginx_does() {
    let stock = compared("all-down");
    assert_eq!(stock.no_live_upstreams_lines, 3, "{stock:?}");
    assert_eq!(stock.backend_requests, vec![0]);
    for answer in &stock.answers {
        assert_eq!(answer.status, 502);
        assert_eq!(answer.upstream_addr, "backend", "{stock:?}");
    }
}
