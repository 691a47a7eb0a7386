//! Any number of workers: the shared zone has a slot for every worker alive at once (the old
//! generation during a reload included), so that what a killed worker counted stops counting
//! with 130 workers and more (the zone once had 128 slots, and a worker beyond them left its
//! held requests and requests in flight behind for good), and a reload that changes
//! `worker_processes` keeps every status and counter.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use nginx_tests::status::{Status, SupervisordStatus};
use nginx_tests::supervisord::{Program, Supervisord};
use nginx_tests::{eventually, free_port, scaled, Config, Gate, Nginx, Server, Upstream};

/// More than the 128 slots the zone once had.
const MANY_WORKERS: usize = 132;

/// Two upstreams: `backend` (its program answers `/gated` once the gate opens: requests stay
/// in flight) and `cold` (its program listens only after ten minutes: requests stay held).
fn config(workers: usize, supervisord: &Supervisord, ports: (u16, u16)) -> Config {
    Config::new()
        .workers(workers)
        // Not fewer: each worker inherits the master's descriptors (a listening socket and a
        // channel per worker with reuseport), and worker_rlimit_nofile follows this.
        .worker_connections(1024)
        .upstream(
            Upstream::new("backend")
                .servers(&[ports.0])
                .supervisord(supervisord.address())
                .sync_interval("off")
                // One supervisord for both upstreams: its call time-out is one setting.
                .directive("supervisord_timeout 120s")
                .directive("supervisord_drain_timeout 60s"),
        )
        .upstream(
            Upstream::new("cold")
                .servers(&[ports.1])
                .supervisord(supervisord.address())
                .sync_interval("off")
                .directive("supervisord_timeout 120s")
                .directive("supervisord_hold_timeout 120s")
                .directive("supervisord_hold_limit 5000"),
        )
        .server(
            Server::new()
                .reuseport()
                .location("/", "proxy_pass http://backend;")
                .location("/cold", "proxy_pass http://cold;")
                .location("= /_status", "supervisord_status;")
                .location("/_stop/", "supervisord_stop backend;"),
        )
}

fn start(name: &str, workers: usize) -> (Supervisord, Gate, Nginx, (u16, u16)) {
    let ports = (free_port(), free_port());
    let gate = Gate::new(name);
    let supervisord = Supervisord::start(
        name,
        &[
            Program::backend_with("backend0", ports.0, 0, &gate.arg()),
            Program::backend_with("cold0", ports.1, 0, "--listen-after 600000"),
        ],
        "",
    );
    let nginx = Nginx::start(name, &config(workers, &supervisord, ports));
    (supervisord, gate, nginx, ports)
}

/// A request on its own connection, sent now and never read: held or in flight for as long as
/// the test keeps it.
fn send(port: u16, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

/// Which worker (pid) holds each client connection to nginx's `port`, per one look at `ss`.
fn workers_by_client(port: u16) -> BTreeMap<u16, u32> {
    let output = Command::new("ss")
        .args(["-tnpH", "state", "established"])
        .output()
        .expect("run ss");
    let local = format!("127.0.0.1:{port}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            // Columns: Recv-Q Send-Q Local Peer Process; only nginx's end of the connection.
            let columns: Vec<&str> = line.split_whitespace().collect();
            if columns.get(2) != Some(&local.as_str()) {
                return None;
            }
            let client = columns.get(3)?.rsplit(':').next()?.parse().ok()?;
            let pid = line.split("pid=").nth(1)?.split(',').next()?.parse().ok()?;
            Some((client, pid))
        })
        .collect()
}

/// Every worker got a slot: the module warned of none without one ("no room for this
/// worker's slot", once "more than 128 worker processes share the zone").
fn assert_every_worker_tracked(nginx: &Nginx) {
    let log = nginx.error_log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("[warn]") && line.contains("supervisord:"))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

fn status(nginx: &Nginx) -> SupervisordStatus {
    nginx.supervisord_status("/_status")
}

fn in_flight(nginx: &Nginx) -> i64 {
    status(nginx).upstream("backend").backends[0].in_flight
}

fn kill_9(pids: &BTreeSet<u32>) {
    let mut command = Command::new("kill");
    command.arg("-9");
    for pid in pids {
        command.arg(pid.to_string());
    }
    assert!(command.status().unwrap().success());
}

/// The module's "worker process N is gone" lines: per worker, the held requests and requests in
/// flight it left behind.
fn gone_workers(log: &str) -> BTreeMap<u32, (i64, i64)> {
    log.lines()
        .filter_map(|line| {
            let rest = line.split("supervisord: worker process ").nth(1)?;
            let (pid, rest) = rest.split_once(" is gone; the ")?;
            let (held, rest) = rest.split_once(" held requests and ")?;
            let (in_flight, _) = rest.split_once(" requests in flight")?;
            Some((
                pid.parse().ok()?,
                (held.parse().ok()?, in_flight.parse().ok()?),
            ))
        })
        .collect()
}

#[test]
fn workers_beyond_the_128th_leave_nothing_behind() {
    let (supervisord, gate, nginx, _) = start("slots-many", MANY_WORKERS);
    // backend0 up (started on demand).
    assert_eq!(nginx.get("/").status, 200);
    let workers: BTreeSet<u32> = nginx.worker_pids().into_iter().collect();
    assert_eq!(workers.len(), MANY_WORKERS);

    // Held and in-flight requests until every worker counts some: so the workers that claimed
    // a slot past the 128th do too, whichever they are.
    let mut clients = Vec::new();
    let (mut gated, mut cold) = (0u64, 0u64);
    let mut covered: BTreeSet<u32> = BTreeSet::new();
    while covered.len() < MANY_WORKERS {
        assert!(
            clients.len() < 4000,
            "{} workers of {MANY_WORKERS} got a request",
            covered.len()
        );
        for _ in 0..100 {
            let path = if clients.len() % 2 == 0 {
                "/gated"
            } else {
                "/cold"
            };
            let stream = send(nginx.port, path);
            let client = stream.local_addr().unwrap().port();
            if path == "/gated" {
                gated += 1;
            } else {
                cold += 1;
            }
            clients.push((client, stream));
        }
        let mut owners = BTreeMap::new();
        assert!(eventually(10, || {
            owners = workers_by_client(nginx.port);
            clients
                .iter()
                .all(|(client, _)| owners.contains_key(client))
        }));
        covered = clients.iter().map(|(client, _)| owners[client]).collect();
        assert!(covered.is_subset(&workers), "{covered:?}");
    }
    eprintln!(
        "{} requests ({gated} in flight, {cold} held) reached all {MANY_WORKERS} workers",
        clients.len()
    );
    assert!(
        eventually(10, || nginx.held("cold") == cold
            && in_flight(&nginx) == gated as i64),
        "held {} of {cold}, in flight {} of {gated}",
        nginx.held("cold"),
        in_flight(&nginx)
    );

    // Every worker killed at once: the new ones (and their watchdogs) find every dead slot.
    for pid in &workers {
        nginx.allow_log_line(
            &format!("worker process {pid} exited on signal 9"),
            "the test kills every worker on purpose",
        );
    }
    let killed_at = Instant::now();
    kill_9(&workers);
    assert!(
        eventually(10, || nginx.held("cold") == 0 && in_flight(&nginx) == 0),
        "held {}, in flight {}\n{}",
        nginx.held("cold"),
        in_flight(&nginx),
        nginx.error_log()
    );
    let took = killed_at.elapsed();
    eprintln!(
        "the shares of {MANY_WORKERS} killed workers stopped counting {took:?} after the kill"
    );
    assert!(took < scaled(Duration::from_secs(5)), "{took:?}");

    // Each killed worker reported once, with what it counted (the line comes once its shares
    // are taken off, a moment after the counts drop).
    let reported = eventually(10, || {
        gone_workers(&nginx.error_log()).len() >= workers.len()
    });
    let gone = gone_workers(&nginx.error_log());
    if !reported {
        // What the log says of the workers never reported, to tell a lost line from a slot
        // never freed.
        let log = nginx.error_log();
        let missing: Vec<&u32> = workers
            .iter()
            .filter(|pid| !gone.contains_key(pid))
            .collect();
        let about: Vec<&str> = log
            .lines()
            .filter(|line| {
                missing.iter().any(|pid| line.contains(&format!(" {pid} ")))
                    || line.contains("[warn]")
                    || line.contains("[crit]")
                    || line.contains("[alert]")
            })
            .collect();
        panic!(
            "{} of {} killed workers reported; missing {missing:?}; held {}, in flight {}; \
             their lines:\n{}",
            gone.len(),
            workers.len(),
            nginx.held("cold"),
            in_flight(&nginx),
            about.join("\n")
        );
    }
    assert_eq!(gone.keys().copied().collect::<BTreeSet<u32>>(), workers);
    let (gone_held, gone_in_flight) = gone.values().fold((0, 0), |(h, f), (held, in_flight)| {
        (h + held, f + in_flight)
    });
    assert_eq!((gone_held, gone_in_flight), (cold as i64, gated as i64));

    // A drain has nothing to wait for: the stop is sent at once, not at the drain timeout.
    let stop_at = Instant::now();
    assert_eq!(nginx.get("/_stop/0").status, 200);
    supervisord.wait_state("backend0", "STOPPED");
    let took = stop_at.elapsed();
    eprintln!("drained and stopped {took:?} after /_stop/0");
    assert!(took < scaled(Duration::from_secs(5)), "{took:?}");
    assert!(eventually(5, || nginx.backend_statuses() == [Status::Down]));
    drop(clients);
    gate.open();
    assert_every_worker_tracked(&nginx);
    nginx.assert_clean_log();
}

#[test]
fn a_reload_that_changes_the_worker_count_keeps_the_shared_state() {
    let (supervisord, gate, nginx, ports) = start("slots-reload", 2);
    for _ in 0..5 {
        assert_eq!(nginx.get("/").status, 200);
    }
    // Two requests in flight keep two old workers alive through the reload: both generations
    // count in the zone at once.
    let in_flight_clients: Vec<TcpStream> = (0..2).map(|_| send(nginx.port, "/gated")).collect();
    assert!(eventually(5, || in_flight(&nginx) == 2));
    let before = status(&nginx).upstream("backend").backends[0].clone();
    assert_eq!(before.status, Status::Up);
    assert_eq!(before.starts.on_demand, 1);
    assert_eq!(before.cold_start_ms.count, 1);
    assert_eq!(before.requests, 7);

    let mut requests = before.requests;
    for workers in [MANY_WORKERS, 3] {
        let reloaded_at = Instant::now();
        nginx.reload(&config(workers, &supervisord, ports));
        eprintln!(
            "reload to {workers} workers took {:?}",
            reloaded_at.elapsed()
        );
        // The old workers call themselves "shutting down" a moment after the new ones start.
        assert!(
            eventually(10, || nginx.worker_pids().len() == workers),
            "{} workers",
            nginx.worker_pids().len()
        );
        let after = status(&nginx).upstream("backend").backends[0].clone();
        // The same record: status, counters, and the old workers' requests in flight.
        assert_eq!(after.status, Status::Up, "{after:?}");
        assert_eq!(after.starts, before.starts);
        assert_eq!(after.cold_start_ms, before.cold_start_ms);
        assert_eq!(after.requests, requests);
        assert_eq!(after.in_flight, 2);
        // Served at once by the new workers, without starting anything.
        assert_eq!(nginx.get("/").status, 200);
        requests += 1;
        assert_eq!(
            status(&nginx).upstream("backend").backends[0].requests,
            requests
        );
    }
    // The old workers finish their requests; what they counted goes with them.
    gate.open();
    for mut client in in_flight_clients {
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut client, &mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert!(eventually(5, || in_flight(&nginx) == 0));
    assert_eq!(supervisord.spawns("backend0"), 1);
    assert_every_worker_tracked(&nginx);
    nginx.assert_clean_log();
}
