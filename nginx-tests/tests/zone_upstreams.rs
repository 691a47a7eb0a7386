//! `zone` upstreams keep nginx's peer list in shared memory, read and written by every worker's
//! balancer under nginx's peer locks; the module's wrapper takes the same write lock when it
//! takes servers in and out of rotation. With two workers, a real supervisord and clients that
//! never pause, backends are stopped and started through `/_stop` and `/_start`: every request
//! is answered 200, none reaches a backend once it was stopped, and a started backend takes
//! traffic again. A lock left held would hang the next request of that upstream (the clients'
//! read timeout fails the test).
//!
//! `server ... resolve` (nginx 1.27.3+) has no address when the configuration is read: refused.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nginx_tests::supervisord::{Program, Supervisord};
use nginx_tests::{eventually, free_port, request, Config, Nginx, Prefix, Server, Upstream};

const BACKENDS: usize = 3;
const CLIENTS: usize = 4;

/// One answered request: when the client sent it, its status, which backend answered.
#[derive(Debug, Clone)]
struct Answer {
    sent: Instant,
    status: u16,
    body: String,
}

struct Traffic {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    clients: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// `CLIENTS` threads sending `GET /?x=N` (N cycling over 0..64, so that a hash balancer
    /// spreads them) on fresh connections, 2 ms apart, until stopped.
    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let clients = (0..CLIENTS)
            .map(|client| {
                let (stop, answers) = (stop.clone(), answers.clone());
                std::thread::spawn(move || {
                    let mut key = client;
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let response = request(port, "GET", &format!("/?x={}", key % 64));
                        answers.lock().unwrap().push(Answer {
                            sent,
                            status: response.status,
                            body: response.body.trim().to_string(),
                        });
                        key += CLIENTS;
                        // Steady, bounded load: about 2,000 requests a second in all.
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        Self {
            stop,
            answers,
            clients,
        }
    }

    fn since(&self, moment: Instant) -> Vec<Answer> {
        let answers = self.answers.lock().unwrap();
        answers
            .iter()
            .filter(|answer| answer.sent >= moment)
            .cloned()
            .collect()
    }

    fn finish(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client
                .join()
                .expect("a client failed (connection error or timeout)");
        }
        Arc::try_unwrap(self.answers).unwrap().into_inner().unwrap()
    }
}

fn answered_by(answers: &[Answer]) -> BTreeSet<String> {
    answers.iter().map(|answer| answer.body.clone()).collect()
}

/// Backends 0..3 under a real supervisord; nginx with `zone` and `balancer` (a directive, or
/// none for round robin) in the upstream.
fn toggles_backends_under_traffic(name: &str, balancer: Option<&str>) {
    let ports: Vec<u16> = (0..BACKENDS).map(|_| free_port()).collect();
    let programs: Vec<Program> = ports
        .iter()
        .enumerate()
        .map(|(index, &port)| Program::backend(&format!("backend{index}"), port, 0))
        .collect();
    let supervisord = Supervisord::start(name, &programs, "");
    let mut upstream = Upstream::new("backend")
        .directive(format!("zone backend_{name} 64k"))
        .servers(&ports)
        .supervisord(supervisord.address())
        .directive("supervisord_sync_interval 1s");
    if let Some(balancer) = balancer {
        upstream = upstream.directive(balancer);
    }
    let nginx = Nginx::start(
        name,
        &Config::new().workers(2).upstream(upstream).server(
            Server::new()
                .reuseport()
                .location("/", "proxy_pass http://backend;")
                .location("/_start/", "supervisord_start backend;")
                .location("/_stop/", "supervisord_stop backend;"),
        ),
    );
    let backend = |index: usize| format!("backend {}", ports[index]);
    for index in 0..BACKENDS {
        assert_eq!(nginx.get(&format!("/_start/{index}")).status, 200);
        supervisord.wait_state(&format!("backend{index}"), "RUNNING");
    }
    let everyone: BTreeSet<String> = (0..BACKENDS).map(backend).collect();
    let ready = Instant::now();
    let traffic = Traffic::start(nginx.port);
    assert!(
        eventually(10, || answered_by(&traffic.since(ready)) == everyone),
        "not every backend took traffic: {:?}",
        answered_by(&traffic.since(ready))
    );

    for round in 0..3 {
        for index in [1, 2, 0] {
            let program = format!("backend{index}");
            let reply = nginx.get(&format!("/_stop/{index}"));
            assert_eq!(reply.status, 200, "round {round}: {reply:?}");
            let stopped = Instant::now();
            supervisord.wait_state(&program, "STOPPED");
            // Enough traffic after the stop to see where it goes.
            assert!(eventually(10, || traffic.since(stopped).len() >= 40));
            let after_stop = traffic.since(stopped);
            assert!(
                !answered_by(&after_stop).contains(&backend(index)),
                "round {round}: {program} got requests sent after /_stop answered"
            );

            assert_eq!(nginx.get(&format!("/_start/{index}")).status, 200);
            let started = Instant::now();
            supervisord.wait_state(&program, "RUNNING");
            assert!(
                eventually(10, || answered_by(&traffic.since(started))
                    .contains(&backend(index))),
                "round {round}: {program} never took traffic again"
            );
        }
    }
    let answers = traffic.finish();
    let failed: Vec<&Answer> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failed.len(),
        answers.len(),
        failed.first()
    );
    assert!(answers.len() > 200, "too little traffic: {}", answers.len());
    eprintln!("{name}: {} requests, all 200", answers.len());
    nginx.assert_clean_log();
}

#[test]
fn zone_with_consistent_hash_follows_statuses_under_traffic() {
    toggles_backends_under_traffic("zone-chash", Some("hash $arg_x consistent"));
}

#[test]
fn zone_with_round_robin_follows_statuses_under_traffic() {
    toggles_backends_under_traffic("zone-rr", None);
}

/// `nginx -v` says which nginx runs the suite.
fn nginx_version() -> (u32, u32, u32) {
    let output = std::process::Command::new(nginx_tests::nginx_binary())
        .arg("-v")
        .output()
        .expect("run nginx -v");
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    let version = text
        .split("nginx/")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no version in {text:?}"));
    let parts: Vec<u32> = version
        .split('.')
        .map(|part| part.parse().unwrap())
        .collect();
    (parts[0], parts[1], parts[2])
}

#[test]
fn resolve_servers_are_refused_with_the_reason() {
    let upstream = Upstream::new("backend")
        .directive("zone backend 64k")
        .server("127.0.0.1:8000")
        .server("localhost:8001 resolve")
        .supervisord("none");
    let config = Config::new()
        .workers(2)
        .http_raw("resolver 127.0.0.1;")
        .upstream(upstream)
        .server(Server::on(1).location("/", "proxy_pass http://backend;"));
    let prefix = Prefix::new("resolve-server");
    let text = prefix.write_config(&config, None);
    let output = prefix.test_conf();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "accepted:\n{text}\n{stderr}");
    let place = format!(
        "{}:{}",
        prefix.conf_path().display(),
        nginx_tests::config::line_of(&text, "upstream backend")
    );
    if nginx_version() >= (1, 27, 3) {
        let expected = format!(
            "server \"localhost:8001\" of upstream \"backend\" in {place} has no address when \
             the configuration is read (\"resolve\" and \"service=\" are not supported with \
             \"supervisord\")"
        );
        assert!(stderr.contains(&expected), "{stderr}");
    } else {
        // Older nginx has no `resolve` parameter and refuses the line itself.
        assert!(stderr.contains("invalid parameter \"resolve\""), "{stderr}");
    }
}
