//! A worker that dies (`kill -9`, a crash) leaves nothing behind in the shared zone: within
//! about a second the other workers take its held requests and requests in flight off the
//! totals, and a start it owned is finished by another worker, even with
//! `supervisord_sync_interval off`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nginx_tests::status::Status;
use nginx_tests::supervisord::{controls_config, Supervisord};
use nginx_tests::{eventually, free_port, scaled, Nginx};

/// supervisord with one backend that listens `listen_after_ms` after its start, and nginx over
/// it without reconciliation (`supervisord_sync_interval off`: only the workers' own
/// bookkeeping is at work), with the `extra` upstream directives.
fn slow_backend(name: &str, listen_after_ms: u64, extra: &[&str]) -> (Supervisord, Nginx) {
    let port = free_port();
    let args = format!("--listen-after {listen_after_ms}");
    let supervisord = Supervisord::with_backends(name, &[port], &args);
    let upstream = supervisord
        .upstream("backend", &[port])
        .sync_interval("off")
        .directives(extra);
    let nginx = Nginx::start(name, &controls_config(upstream));
    (supervisord, nginx)
}

/// A GET on its own connection, started now; the local port names the connection in `ss`.
fn held_request(port: u16) -> (u16, JoinHandle<Option<u16>>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let local = stream.local_addr().unwrap().port();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let handle = std::thread::spawn(move || {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut raw = Vec::new();
        // A killed worker's clients see their connection reset: no status.
        let _ = stream.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        text.split_whitespace().nth(1).and_then(|s| s.parse().ok())
    });
    (local, handle)
}

/// Which worker (pid) holds the client connection from `client_port`, per `ss`.
fn worker_of(nginx_port: u16, client_port: u16) -> Option<u32> {
    let output = Command::new("ss")
        .args(["-tnpH", "state", "established"])
        .output()
        .expect("run ss");
    let text = String::from_utf8_lossy(&output.stdout);
    let local = format!("127.0.0.1:{nginx_port}");
    let peer = format!("127.0.0.1:{client_port}");
    // Columns: Recv-Q Send-Q Local Peer Process; only nginx's end of the connection.
    text.lines()
        .find(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            columns.get(2) == Some(&local.as_str()) && columns.get(3) == Some(&peer.as_str())
        })
        .and_then(|line| line.split("pid=").nth(1))
        .and_then(|rest| rest.split(',').next())
        .and_then(|pid| pid.parse().ok())
}

/// Requests held per worker, once `ss` sees each of them accepted.
fn held_by_worker(nginx: &Nginx, clients: &[u16]) -> BTreeMap<u32, Vec<u16>> {
    let mut by_worker = BTreeMap::new();
    for &client in clients {
        let mut worker = None;
        assert!(eventually(5, || {
            worker = worker_of(nginx.port, client);
            worker.is_some()
        }));
        by_worker
            .entry(worker.unwrap())
            .or_insert_with(Vec::new)
            .push(client);
    }
    by_worker
}

fn kill_9(pid: u32) {
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Held clients: their local port and what they got.
type Clients = Vec<(u16, JoinHandle<Option<u16>>)>;

/// Sends held requests until both workers hold some (reuseport spreads connections by hash).
fn hold_in_both_workers(nginx: &Nginx, at_least: usize) -> (Clients, BTreeMap<u32, Vec<u16>>) {
    let mut clients = Vec::new();
    let mut by_worker: BTreeMap<u32, Vec<u16>> = BTreeMap::new();
    for _ in 0..40 {
        let (port, handle) = held_request(nginx.port);
        clients.push((port, handle));
        for (worker, ports) in held_by_worker(nginx, &[port]) {
            by_worker.entry(worker).or_default().extend(ports);
        }
        if clients.len() >= at_least && by_worker.len() == 2 {
            return (clients, by_worker);
        }
    }
    panic!("connections never reached both workers");
}

#[test]
fn a_killed_worker_s_held_requests_stop_counting() {
    // The program listens 6 s after it starts: requests wait that long.
    let (supervisord, nginx) = slow_backend("crash-held", 6000, &["supervisord_hold_timeout 20s"]);
    let (clients, by_worker) = hold_in_both_workers(&nginx, 4);
    let total = clients.len() as u64;
    assert!(
        eventually(5, || nginx.held("backend") == total),
        "{}",
        nginx.held("backend")
    );
    let (&victim, victim_clients) = by_worker.iter().next().unwrap();
    let survivors = total - victim_clients.len() as u64;
    nginx.allow_log_line(
        &format!("worker process {victim} exited on signal 9"),
        "the test kills this worker on purpose",
    );
    let killed_at = Instant::now();
    kill_9(victim);
    assert!(
        eventually(3, || nginx.held("backend") == survivors),
        "held {} instead of {survivors}",
        nginx.held("backend")
    );
    let took = killed_at.elapsed();
    eprintln!("held counts only the survivor's requests {took:?} after the kill");
    assert!(took < scaled(Duration::from_millis(1500)), "{took:?}");
    // The new worker master starts and the survivor both serve what is held once the program
    // listens; the killed worker's clients got no answer.
    let mut answered = 0;
    for (client, handle) in clients {
        let status = handle.join().unwrap();
        if victim_clients.contains(&client) {
            assert_eq!(status, None, "client {client} of the killed worker");
        } else {
            assert_eq!(status, Some(200), "client {client}");
            answered += 1;
        }
    }
    assert_eq!(answered as u64, survivors);
    assert!(eventually(2, || nginx.held("backend") == 0));
    let log = nginx.error_log();
    let gone: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(&format!("worker process {victim} is gone")))
        .collect();
    assert_eq!(gone.len(), 1, "{log}");
    assert!(
        gone[0].contains(&format!("the {} held requests", victim_clients.len())),
        "{}",
        gone[0]
    );
    assert_eq!(supervisord.spawns("backend0"), 1);
    nginx.assert_clean_log();
}

#[test]
fn the_hold_limit_is_not_eaten_by_a_dead_worker() {
    let (_supervisord, nginx) = slow_backend(
        "crash-limit",
        3000,
        &["supervisord_hold_limit 2", "supervisord_hold_timeout 20s"],
    );
    // Two held requests reach the hold limit.
    let clients: Vec<_> = (0..2).map(|_| held_request(nginx.port).1).collect();
    assert!(eventually(5, || nginx.held("backend") == 2));
    // One more is refused: the limit counts over all workers.
    let (_, refused) = held_request(nginx.port);
    assert_eq!(refused.join().unwrap(), Some(503));
    let workers = nginx.worker_pids();
    for pid in &workers {
        nginx.allow_log_line(
            &format!("worker process {pid} exited on signal 9"),
            "the test kills every worker holding a request on purpose",
        );
    }
    // Kill every worker (nginx starts new ones): the held requests are nowhere any more.
    for pid in workers {
        kill_9(pid);
    }
    assert!(
        eventually(3, || nginx.held("backend") == 0),
        "{}",
        nginx.held("backend")
    );
    // A new cold request is held (not refused with 503) and served once the program listens.
    let (_, cold) = held_request(nginx.port);
    assert_eq!(cold.join().unwrap(), Some(200));
    for client in clients {
        assert_eq!(client.join().unwrap(), None);
    }
    nginx.assert_clean_log();
}

#[test]
fn a_start_owned_by_a_killed_worker_is_finished_by_another() {
    let (supervisord, nginx) = slow_backend("crash-start", 1500, &["supervisord_hold_timeout 20s"]);
    // The first request starts the program: its worker owns the start.
    let (first, first_handle) = held_request(nginx.port);
    let owner = *held_by_worker(&nginx, &[first]).keys().next().unwrap();
    nginx.allow_log_line(
        &format!("worker process {owner} exited on signal 9"),
        "the test kills the worker that owns the start on purpose",
    );
    // Held requests in the other worker too.
    let mut others = Vec::new();
    while others.len() < 2 {
        let (client, handle) = held_request(nginx.port);
        if held_by_worker(&nginx, &[client]).contains_key(&owner) {
            continue;
        }
        others.push(handle);
    }
    assert!(supervisord.log().contains("spawned: 'backend0'"));
    kill_9(owner);
    let killed_at = Instant::now();
    // The survivor takes the start over: the program listens 1.5 s after its start, and the
    // backend is UP within about a second of that.
    assert!(
        eventually(5, || nginx.backend_statuses()[0] == Status::Up),
        "{}",
        nginx.error_log()
    );
    let took = killed_at.elapsed();
    eprintln!("backend up {took:?} after its start's owner was killed");
    assert!(took < scaled(Duration::from_millis(2500)), "{took:?}");
    for handle in others {
        assert_eq!(handle.join().unwrap(), Some(200));
    }
    assert_eq!(first_handle.join().unwrap(), None);
    let log = nginx.error_log();
    assert!(
        log.contains("sending its start again (the worker process that sent it is gone)"),
        "{log}"
    );
    // The program was started once; the start sent again found it started.
    assert_eq!(supervisord.spawns("backend0"), 1);
    nginx.assert_clean_log();
}
