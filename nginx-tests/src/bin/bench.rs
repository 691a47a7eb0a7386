//! Benchmarks of the main job (a documented command, `make bench`, not a pass/fail test).
//! Real nginx (2 workers) with the module, real supervisord, real backend, real HTTP clients;
//! everything on loopback, bounded in count and time.
//!
//! cold start: 200 concurrent requests arrive while every backend is stopped; the backend
//!   program sleeps ~300 ms, then listens. Reported: p50 / p99 of (response time - the moment
//!   the backend started listening), and the non-200 count. Target: p99 <= 25 ms, 0 lost.
//! cold start, one client: the same with one request per round, so that what is measured is
//!   the module's wake-up alone (readiness probe, wake of the held request), not 200 proxied
//!   requests sharing two workers.
//! capacity: 10,000 concurrent held requests, all answered once the backend is up; reported:
//!   the workers' memory growth while holding them.
//! throughput: wrk (keep-alive) through the same nginx, to the same backend, once through an
//!   upstream the module manages (UP, so nothing is held) and once through a plain upstream,
//!   alternating; reported: the ratio. Target: >= 98 %.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nginx_tests::supervisord::{Program, Supervisord};
use nginx_tests::{eventually, free_port, Config, Nginx, Server, SupervisordStatus, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

const COLD_ROUNDS: usize = 5;
const COLD_CLIENTS: usize = 200;
const SINGLE_ROUNDS: usize = 20;
const CAPACITY_CLIENTS: usize = 10_000;
const THROUGHPUT_ROUNDS: usize = 6;

fn epoch_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// One GET on its own connection; (status, completion time in ns since the epoch).
async fn get(port: u16) -> (u16, u128) {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.ok()?;
        let status = std::str::from_utf8(reply.get(9..12)?).ok()?.parse().ok()?;
        Some(status)
    };
    let status = tokio::time::timeout(Duration::from_secs(60), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(0);
    (status, epoch_ns())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn workers_rss_kib(nginx: &Nginx) -> u64 {
    nginx
        .worker_pids()
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .sum()
}

fn start_stack(
    name: &str,
    listen_after_ms: u64,
    ready_file: &Path,
    hold_limit: usize,
) -> (Supervisord, Nginx) {
    let port = free_port();
    let supervisord = Supervisord::start(
        name,
        &[Program::backend_with(
            "backend0",
            port,
            1,
            &format!(
                "--listen-after {listen_after_ms} --ready-file {}",
                ready_file.display()
            ),
        )],
        "",
    );
    let nginx = Nginx::start(
        name,
        &Config::new()
            .workers(2)
            .worker_connections(16000)
            .upstream(
                Upstream::new("backend")
                    .servers(&[port])
                    .supervisord(supervisord.address())
                    .sync_interval("off")
                    .directive(format!("supervisord_hold_limit {hold_limit}")),
            )
            .server(
                Server::new()
                    .reuseport()
                    .listen_options("backlog=16384")
                    .location("/", "proxy_pass http://backend;")
                    .location("/_stop/", "supervisord_stop backend;")
                    .location("= /_status", "supervisord_status;"),
            ),
    );
    nginx.allow_log_line(
        "setrlimit(RLIMIT_NOFILE",
        "raising the open-file limit for 16,000 connections, refused in a container without the privilege",
    );
    (supervisord, nginx)
}

async fn cold_start(rounds: usize, clients: usize) {
    let ready_file = std::env::temp_dir().join(format!("bench-ready-{}", std::process::id()));
    let (supervisord, nginx) = start_stack("bench-cold", 300, &ready_file, 1000);
    let mut all = Vec::new();
    let mut lost = 0;
    for round in 1..=rounds {
        let _ = std::fs::remove_file(&ready_file);
        let barrier = Arc::new(Barrier::new(clients));
        let port = nginx.port;
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    get(port).await
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        let listening: u128 = std::fs::read_to_string(&ready_file)
            .expect("the backend wrote its ready file")
            .trim()
            .parse()
            .unwrap();
        let mut latencies: Vec<f64> = results
            .iter()
            .filter(|(status, _)| *status == 200)
            .map(|(_, done)| (*done as f64 - listening as f64) / 1e6)
            .collect();
        let failed = results.iter().filter(|(status, _)| *status != 200).count();
        lost += failed;
        latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "cold start round {round} ({clients} clients): {} answered 200, {failed} not; after listen: p50 {:.1} ms, p99 {:.1} ms",
            latencies.len(),
            percentile(&latencies, 50.0),
            percentile(&latencies, 99.0)
        );
        all.extend(latencies);
        // Stop the backend for the next round.
        let stop = nginx.get("/_stop/0");
        assert_eq!(stop.status, 200, "{stop:?}");
        supervisord.wait_state("backend0", "STOPPED");
        assert!(eventually(5, || nginx
            .get("/_status")
            .body
            .contains("\"status\":\"down\"")));
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "COLD START ({rounds} rounds x {clients} concurrent requests): p50 {:.1} ms, p99 {:.1} ms after the backend listened; {lost} non-200 (target: p99 <= 25 ms, 0 lost)",
        percentile(&all, 50.0),
        percentile(&all, 99.0)
    );
    let _ = std::fs::remove_file(&ready_file);
}

async fn capacity() {
    let ready_file = std::env::temp_dir().join(format!("bench-cap-{}", std::process::id()));
    // The backend listens only once every request is held.
    let (_supervisord, nginx) = start_stack("bench-capacity", 8000, &ready_file, 20_000);
    let before = workers_rss_kib(&nginx);
    let port = nginx.port;
    let started = Instant::now();
    let tasks: Vec<_> = (0..CAPACITY_CLIENTS)
        .map(|_| tokio::spawn(async move { get(port).await }))
        .collect();
    let mut peak_held = 0;
    let mut during = before;
    while started.elapsed() < Duration::from_secs(7) {
        let held = SupervisordStatus::parse(&nginx.get("/_status").body)
            .map(|status| status.upstream("backend").held)
            .unwrap_or(0) as usize;
        if held >= peak_held {
            peak_held = held;
            during = workers_rss_kib(&nginx);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut ok = 0;
    let mut others = std::collections::BTreeMap::new();
    for task in tasks {
        match task.await.unwrap().0 {
            200 => ok += 1,
            status => *others.entry(status).or_insert(0) += 1,
        }
    }
    if !others.is_empty() {
        println!("capacity: statuses other than 200 (0 = no answer): {others:?}");
    }
    let growth = during.saturating_sub(before);
    println!(
        "CAPACITY: {peak_held} requests held at once; {ok} of {CAPACITY_CLIENTS} answered 200 once the backend was up; workers' memory {before} KiB -> {during} KiB while holding (+{growth} KiB, {:.2} KiB per held request)",
        growth as f64 / peak_held.max(1) as f64
    );
    let _ = std::fs::remove_file(&ready_file);
}

fn wrk_requests_per_second(port: u16) -> f64 {
    let output = std::process::Command::new("wrk")
        .args(["-t2", "-c64", "-d3s", &format!("http://127.0.0.1:{port}/")])
        .output()
        .expect("run wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output: {text}"))
}

fn throughput() {
    let backend_port = free_port();
    let _backend = nginx_tests::Backend::start(backend_port);
    let managed_port = free_port();
    let keepalive = "proxy_pass http://{}; proxy_http_version 1.1;\n\
                     proxy_set_header Connection \"\";";
    let nginx = Nginx::start(
        "bench-throughput",
        &Config::new()
            .workers(2)
            .upstream(
                Upstream::new("managed")
                    .servers(&[backend_port])
                    .directive("keepalive 32")
                    .supervisord("unix:/nonexistent.sock")
                    .sync_interval("off")
                    .inherit_backend_status(),
            )
            .upstream(
                Upstream::new("plain")
                    .servers(&[backend_port])
                    .directive("keepalive 32"),
            )
            .server(Server::new().location("/", &keepalive.replace("{}", "plain")))
            .server(Server::on(managed_port).location("/", &keepalive.replace("{}", "managed"))),
    );
    // Alternating A B B A so that drifts of a shared, noisy machine hit both sides alike.
    let (mut plain, mut managed) = (Vec::new(), Vec::new());
    for round in 1..=THROUGHPUT_ROUNDS {
        let (first, second) = if round % 2 == 1 {
            (nginx.port, managed_port)
        } else {
            (managed_port, nginx.port)
        };
        for port in [first, second] {
            let rate = wrk_requests_per_second(port);
            if port == nginx.port {
                plain.push(rate);
            } else {
                managed.push(rate);
            }
        }
        println!(
            "throughput round {round}: plain {:.0} req/s, managed {:.0} req/s",
            plain[round - 1],
            managed[round - 1]
        );
    }
    let median = |rates: &mut Vec<f64>| {
        rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
        rates[rates.len() / 2]
    };
    let (plain_median, managed_median) = (median(&mut plain), median(&mut managed));
    println!(
        "THROUGHPUT: through a managed upstream {:.1} % of the same nginx through a plain one (medians {:.0} vs {:.0} req/s, keep-alive, {THROUGHPUT_ROUNDS} alternating rounds of 3 s; target >= 98 %)",
        100.0 * managed_median / plain_median,
        managed_median,
        plain_median
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    runtime.block_on(async {
        if which == "all" || which == "cold" {
            cold_start(COLD_ROUNDS, COLD_CLIENTS).await;
        }
        if which == "all" || which == "cold1" {
            cold_start(SINGLE_ROUNDS, 1).await;
        }
        if which == "all" || which == "capacity" {
            capacity().await;
        }
        if which == "all" || which == "throughput" {
            throughput();
        }
    });
}
