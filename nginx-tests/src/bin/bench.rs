//! Benchmarks of the main job (a documented command, `make bench`, not a pass/fail test).
//! Real nginx (2 workers) with the module, real supervisord, real backend, real HTTP clients;
//! everything on loopback, bounded in count and time.
//!
//! cold start: 200 concurrent requests arrive while every backend is stopped; the backend
//!   program sleeps ~300 ms, then listens. Reported: p50 / p99 of (response time - the moment
//!   the backend started listening), and the non-200 count. Target: p99 <= 25 ms, 0 lost.
//! cold start, one client: the same with one request per round, so that what is measured is
//!   the module's wake-up alone (readiness probe, wake of the held request), not 200 proxied
//!   requests sharing two workers. Both also report the module's own figures beside what the
//!   clients measured: its cold start (the first held request's arrival to its first response
//!   header) against the first answer a client got, and its ready time (start sent to
//!   accepting connections).
//! capacity: 10,000 concurrent held requests, all answered once the backend is up; reported:
//!   the workers' memory growth while holding them.
//! throughput: wrk (keep-alive) through the same nginx, to the same backend, once through an
//!   upstream the module manages (UP, so nothing is held) and once through a plain upstream,
//!   in 20 alternating rounds of 2 s; reported: the median of the rounds' ratios and their spread.
//!   Target: within 1 %.
//! scaling: 4 programs answering `/slow/100` (100 ms per request), `supervisord_min_servers 1`,
//!   `supervisord_max_servers 4`, `supervisord_idle_timeout 3s`, and a load step: 2 clients for
//!   4 s, 32 for 12 s, 2 for 8 s, then none until back to the minimum (at most 20 s). Once with
//!   `supervisord_scale_up in_flight=4 window=2s`, once with `rate=80 window=2s` (32 clients
//!   send about 320 req/s). Reported: the time from the step to the first new backend UP (and to
//!   its first answer), to the maximum, the backends over time, the non-200 count (target 0),
//!   the requests per phase, the time back to the minimum after the step down and after the
//!   load stopped, and the scaling actions the error log gives.
//! no overshoot: the same upstream (`in_flight=4 window=2s`), programs that take 0.5 s, then
//!   1.5 s, to listen, under 6 clients (a load that needs 2) for 10 s, 3 runs each; reported:
//!   the most backends UP or starting at once in each run (target 2).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nginx_tests::status::Status;
use nginx_tests::supervisord::{Program, Supervisord};
use nginx_tests::{eventually, free_port, Config, Nginx, Server, SupervisordStatus, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

const COLD_ROUNDS: usize = 5;
const COLD_CLIENTS: usize = 200;
const SINGLE_ROUNDS: usize = 20;
const CAPACITY_CLIENTS: usize = 10_000;
const THROUGHPUT_ROUNDS: usize = 20;

const SCALE_BACKENDS: usize = 4;
const SCALE_MIN: usize = 1;
const SCALE_PATH: &str = "/slow/100";
const SCALE_SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// The load step: (clients, how long); an idle phase (no client) follows.
const SCALE_PHASES: [(usize, Duration); 3] = [
    (2, Duration::from_secs(4)),
    (32, Duration::from_secs(12)),
    (2, Duration::from_secs(8)),
];
/// The no-overshoot runs: clients, and how long the load lasts.
const OVERSHOOT_CLIENTS: usize = 6;
const OVERSHOOT_LOAD: Duration = Duration::from_secs(10);
/// The longest the idle phase waits for the minimum.
const SCALE_IDLE_LIMIT: Duration = Duration::from_secs(20);

fn epoch_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// One GET of `path` on its own connection: (status, body), or None without a whole answer
/// within `timeout`.
async fn fetch(port: u16, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .ok()?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.ok()?;
        let status = std::str::from_utf8(reply.get(9..12)?).ok()?.parse().ok()?;
        let text = String::from_utf8_lossy(&reply);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        Some((status, body.to_string()))
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten()
}

/// One GET on its own connection; (status, completion time in ns since the epoch).
async fn get(port: u16) -> (u16, u128) {
    let status = fetch(port, "/", Duration::from_secs(60))
        .await
        .map_or(0, |(status, _)| status);
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
    // Per round: the module's cold start and readiness figures, and the first answer a client
    // got, all in ms from the round's first request.
    let mut figures: Vec<(f64, f64, f64)> = Vec::new();
    for round in 1..=rounds {
        let _ = std::fs::remove_file(&ready_file);
        let before = backend_timings(&nginx);
        let barrier = Arc::new(Barrier::new(clients));
        let port = nginx.port;
        let sent = epoch_ns();
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
        let first_answer = results
            .iter()
            .map(|(_, done)| (*done as f64 - sent as f64) / 1e6)
            .fold(f64::INFINITY, f64::min);
        let after = backend_timings(&nginx);
        let per = |(count, sum): (u64, u64), (count0, sum0): (u64, u64)| {
            (sum - sum0) as f64 / (count - count0).max(1) as f64
        };
        let (cold, ready) = (per(after.0, before.0), per(after.1, before.1));
        figures.push((cold, ready, first_answer));
        println!(
            "cold start round {round} ({clients} clients): {} answered 200, {failed} not; after listen: p50 {:.1} ms, p99 {:.1} ms; module: cold start {cold:.0} ms, ready {ready:.0} ms; the first client answered {first_answer:.0} ms after sending",
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
    let mean = |pick: fn(&(f64, f64, f64)) -> f64| {
        figures.iter().map(pick).sum::<f64>() / figures.len() as f64
    };
    let (cold, ready, first) = (mean(|f| f.0), mean(|f| f.1), mean(|f| f.2));
    println!(
        "COLD START FIGURES ({rounds} rounds x {clients}): the module's cold start (first held request's arrival to its first response header) {cold:.0} ms vs the first answer a client measured {first:.0} ms (ratio {:.2}); ready (start sent to accepting connections) {ready:.0} ms",
        cold / first
    );
    let _ = std::fs::remove_file(&ready_file);
}

/// Backend 0's (cold starts, total ms) and (readies, total ms) from the status JSON.
fn backend_timings(nginx: &Nginx) -> ((u64, u64), (u64, u64)) {
    let status = nginx.supervisord_status("/_status");
    let backend = &status.upstream("backend").backends[0];
    (
        (backend.cold_start_ms.count, backend.cold_start_ms.sum),
        (backend.ready_ms.count, backend.ready_ms.sum),
    )
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
        .args(["-t1", "-c32", "-d2s", &format!("http://127.0.0.1:{port}/")])
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
    let median = |values: &mut Vec<f64>| {
        values.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let middle = values.len() / 2;
        if values.len().is_multiple_of(2) {
            (values[middle - 1] + values[middle]) / 2.0
        } else {
            values[middle]
        }
    };
    // Each round's pair ran back to back: its ratio is the least disturbed by the machine's
    // drift; their spread says how far one figure can be trusted.
    let mut ratios: Vec<f64> = managed
        .iter()
        .zip(&plain)
        .map(|(managed, plain)| 100.0 * managed / plain)
        .collect();
    let median_ratio = median(&mut ratios);
    let (low, high) = (ratios[0], ratios[ratios.len() - 1]);
    let (plain_median, managed_median) = (median(&mut plain), median(&mut managed));
    println!(
        "THROUGHPUT: through a managed upstream {median_ratio:.1} % of the same nginx through a plain one (median of {THROUGHPUT_ROUNDS} alternating rounds of 2 s, keep-alive, wrk -t1 -c32; rounds ranged {low:.1} % to {high:.1} %; medians {managed_median:.0} vs {plain_median:.0} req/s; target within 1 %)"
    );
}

/// One answer a load client got.
struct Answer {
    /// The phase of the load step its request started in.
    phase: usize,
    /// 0: no whole answer.
    status: u16,
    /// The backend that served it (test-backend answers `backend <port>`).
    backend_port: Option<u16>,
    /// Since the start of the load.
    done: Duration,
    latency: Duration,
}

/// The upstream as the status location showed it at one moment.
struct Sample {
    /// Since the start of the load.
    at: Duration,
    clients: usize,
    statuses: Vec<Status>,
    in_flight: i64,
    held: u64,
}

impl Sample {
    fn count(&self, status: Status) -> usize {
        self.statuses.iter().filter(|s| **s == status).count()
    }

    /// Exactly the minimum UP, nothing starting or shutting down.
    fn at_minimum(&self) -> bool {
        self.count(Status::Up) == SCALE_MIN
            && self.count(Status::Up) + self.count(Status::Down) == self.statuses.len()
    }

    /// One letter per backend: U up, s starting up, x shutting down, . down.
    fn letters(&self) -> String {
        self.statuses
            .iter()
            .map(|status| match status {
                Status::Up => 'U',
                Status::StartingUp => 's',
                Status::ShuttingDown => 'x',
                Status::Down => '.',
            })
            .collect()
    }
}

async fn sample_status(port: u16) -> Option<(Vec<Status>, i64, u64)> {
    let (status, body) = fetch(port, "/_status", Duration::from_secs(5)).await?;
    if status != 200 {
        return None;
    }
    let status = SupervisordStatus::parse(&body).ok()?;
    let upstream = status.upstream("backend");
    Some((
        upstream.backends.iter().map(|b| b.status).collect(),
        upstream.backends.iter().map(|b| b.in_flight).sum(),
        upstream.held,
    ))
}

/// `clients` load clients, each sending `SCALE_PATH` one after another while its index is
/// under `active`, until `stop`.
fn spawn_load_clients(
    port: u16,
    clients: usize,
    begin: Instant,
    active: &Arc<AtomicUsize>,
    phase: &Arc<AtomicUsize>,
    stop: &Arc<AtomicBool>,
    answers: &Arc<Mutex<Vec<Answer>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|index| {
            let (active, phase, stop, answers) =
                (active.clone(), phase.clone(), stop.clone(), answers.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if index >= active.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    let started = Instant::now();
                    let in_phase = phase.load(Ordering::Relaxed);
                    let reply = fetch(port, SCALE_PATH, Duration::from_secs(20)).await;
                    let backend_port = reply
                        .as_ref()
                        .and_then(|(_, body)| body.trim().strip_prefix("backend ")?.parse().ok());
                    answers.lock().unwrap().push(Answer {
                        phase: in_phase,
                        status: reply.map_or(0, |(status, _)| status),
                        backend_port,
                        done: begin.elapsed(),
                        latency: started.elapsed(),
                    });
                }
            })
        })
        .collect()
}

/// When each phase of the load step ends, since the load began; the idle phase follows.
fn phase_ends() -> Vec<Duration> {
    SCALE_PHASES
        .iter()
        .scan(Duration::ZERO, |end, (_, length)| {
            *end += *length;
            Some(*end)
        })
        .collect()
}

/// Runs the load step against nginx on `port` (its minimum UP); every status sample and every
/// answer, timed from the start of the load.
async fn run_load_step(port: u16) -> (Vec<Sample>, Vec<Answer>) {
    let most_clients = SCALE_PHASES
        .iter()
        .map(|(clients, _)| *clients)
        .max()
        .unwrap();
    let active = Arc::new(AtomicUsize::new(0));
    let phase = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let begin = Instant::now();
    let clients = spawn_load_clients(port, most_clients, begin, &active, &phase, &stop, &answers);
    let phase_ends = phase_ends();
    let idle_phase = SCALE_PHASES.len();
    let mut samples: Vec<Sample> = Vec::new();
    let mut ticks = tokio::time::interval(SCALE_SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = begin.elapsed();
        let current = phase_ends
            .iter()
            .position(|end| now < *end)
            .unwrap_or(idle_phase);
        let clients_now = SCALE_PHASES.get(current).map_or(0, |(clients, _)| *clients);
        phase.store(current, Ordering::Relaxed);
        active.store(clients_now, Ordering::Relaxed);
        if let Some((statuses, in_flight, held)) = sample_status(port).await {
            samples.push(Sample {
                at: now,
                clients: clients_now,
                statuses,
                in_flight,
                held,
            });
        }
        if current == idle_phase {
            let back_at_minimum = samples
                .last()
                .is_some_and(|sample| sample.at_minimum() && sample.in_flight == 0);
            if back_at_minimum || now - phase_ends[idle_phase - 1] > SCALE_IDLE_LIMIT {
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    (samples, answers)
}

/// `SCALE_BACKENDS` programs (each started with `program_args`) behind an upstream scaled by
/// `scale_up` (and `more` directives), its minimum UP.
async fn scaling_stack(
    name: &str,
    program_args: &str,
    scale_up: &str,
    more: &[&str],
) -> (Supervisord, Nginx, Vec<u16>) {
    let ports: Vec<u16> = (0..SCALE_BACKENDS).map(|_| free_port()).collect();
    let programs: Vec<Program> = ports
        .iter()
        .enumerate()
        .map(|(index, port)| {
            Program::backend_with(&format!("backend{index}"), *port, 0, program_args)
        })
        .collect();
    let supervisord = Supervisord::start(name, &programs, "");
    let min = format!("supervisord_min_servers {SCALE_MIN}");
    let max = format!("supervisord_max_servers {SCALE_BACKENDS}");
    let mut directives = vec![min.as_str(), max.as_str(), scale_up];
    directives.extend_from_slice(more);
    let nginx = Nginx::start(
        name,
        &Config::new()
            .workers(2)
            .upstream(
                Upstream::new("backend")
                    .servers(&ports)
                    .supervisord(supervisord.address())
                    .directives(&directives),
            )
            .server(
                Server::new()
                    .reuseport()
                    .location("/", "proxy_pass http://backend;")
                    .location("= /_status", "supervisord_status;"),
            ),
    );
    // The minimum is started without any request; the load begins from it.
    let waiting = Instant::now();
    while !matches!(sample_status(nginx.port).await, Some((statuses, _, _))
        if statuses.iter().filter(|s| **s == Status::Up).count() == SCALE_MIN)
    {
        assert!(
            waiting.elapsed() < Duration::from_secs(15),
            "{name}: the minimum never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (supervisord, nginx, ports)
}

/// The load step against 4 programs scaled by `scale_up`; prints its figures.
async fn scaling(label: &str, scale_up: &str) {
    let name = format!("bench-scale-{label}");
    let (supervisord, nginx, ports) =
        scaling_stack(&name, "", scale_up, &["supervisord_idle_timeout 3s"]).await;
    let (samples, answers) = run_load_step(nginx.port).await;
    let log = nginx.error_log();
    // Stopped (and its error log checked) before the next run.
    drop(nginx);
    drop(supervisord);
    report_scaling(label, scale_up, &ports, &samples, &answers, &log);
}

/// No overshoot: programs that take `listen_after_ms` to listen, under 6 clients of
/// `SCALE_PATH` (6 in flight at most: with `in_flight=4`, ceil(6 / 4) = 2 backends), for
/// `OVERSHOOT_LOAD`; per run, the most backends UP or starting at once.
async fn overshoot(listen_after_ms: u64, runs: usize) {
    let scale_up = "supervisord_scale_up in_flight=4 window=2s";
    let mut most = Vec::new();
    let mut failed = 0;
    for run in 1..=runs {
        let name = format!("bench-overshoot-{listen_after_ms}-{run}");
        let args = format!("--listen-after {listen_after_ms}");
        let (supervisord, nginx, _) = scaling_stack(&name, &args, scale_up, &[]).await;
        let active = Arc::new(AtomicUsize::new(OVERSHOOT_CLIENTS));
        let (phase, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let answers = Arc::new(Mutex::new(Vec::new()));
        let begin = Instant::now();
        let clients = spawn_load_clients(
            nginx.port,
            OVERSHOOT_CLIENTS,
            begin,
            &active,
            &phase,
            &stop,
            &answers,
        );
        let mut most_running = 0;
        let mut up_after = None;
        while begin.elapsed() < OVERSHOOT_LOAD {
            if let Some((statuses, _, _)) = sample_status(nginx.port).await {
                let count = |wanted: &[Status]| {
                    statuses
                        .iter()
                        .filter(|status| wanted.contains(status))
                        .count()
                };
                most_running = most_running.max(count(&[Status::Up, Status::StartingUp]));
                if up_after.is_none() && count(&[Status::Up]) == 2 {
                    up_after = Some(begin.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.await.unwrap();
        }
        let answers = std::mem::take(&mut *answers.lock().unwrap());
        let non_200 = answers.iter().filter(|a| a.status != 200).count();
        failed += non_200;
        let spawns: Vec<usize> = (0..SCALE_BACKENDS)
            .map(|index| supervisord.spawns(&format!("backend{index}")))
            .collect();
        println!(
            "no overshoot, a {listen_after_ms} ms starter, run {run}: most backends UP or starting at once {most_running}, 2 UP after {}, spawns {spawns:?}, {} answers, {non_200} non-200",
            up_after.map_or("never".into(), |after| format!("{:.1} s", after.as_secs_f64())),
            answers.len()
        );
        most.push(most_running);
        drop(nginx);
        drop(supervisord);
    }
    println!(
        "NO OVERSHOOT ({scale_up}, {OVERSHOOT_CLIENTS} clients of {SCALE_PATH}: the load needs 2; programs listen after {listen_after_ms} ms): most backends UP or starting at once per run {most:?}; {failed} non-200"
    );
}

fn report_scaling(
    label: &str,
    scale_up: &str,
    ports: &[u16],
    samples: &[Sample],
    answers: &[Answer],
    log: &str,
) {
    let phase_ends = phase_ends();
    let (step, step_down) = (phase_ends[0], phase_ends[1]);
    let load_stop = phase_ends[SCALE_PHASES.len() - 1];
    let secs = |at: Duration| at.as_secs_f64() - step.as_secs_f64();
    let up = |sample: &Sample| sample.count(Status::Up);
    let first_sample = |from: Duration, check: &dyn Fn(&Sample) -> bool| {
        samples
            .iter()
            .find(|sample| sample.at >= from && check(sample))
            .map(|sample| sample.at - from)
    };
    let show = |after: Option<Duration>| {
        after.map_or("never".to_string(), |after| {
            format!("{:.1} s", after.as_secs_f64())
        })
    };

    println!("scaling {label} ({scale_up}): backends over time (t: seconds after the step; U up, s starting up, x shutting down, . down)");
    let mut next_second = 0;
    for sample in samples {
        if sample.at.as_secs() < next_second {
            continue;
        }
        next_second = sample.at.as_secs() + 1;
        let from = sample.at.saturating_sub(Duration::from_secs(1));
        let answered = answers
            .iter()
            .filter(|answer| answer.done > from && answer.done <= sample.at)
            .count();
        println!(
            "  t={:>5.1}s clients={:>2} [{}] up={} in_flight={:>2} held={:>2} answered in the last 1 s={}",
            secs(sample.at),
            sample.clients,
            sample.letters(),
            up(sample),
            sample.in_flight,
            sample.held,
            answered
        );
    }
    let phase_names = ["before the step", "the step", "after the step"];
    for (index, (clients, length)) in SCALE_PHASES.iter().enumerate() {
        let in_phase: Vec<&Answer> = answers.iter().filter(|a| a.phase == index).collect();
        let failed = in_phase.iter().filter(|a| a.status != 200).count();
        let mut latencies: Vec<f64> = in_phase
            .iter()
            .map(|a| a.latency.as_secs_f64() * 1e3)
            .collect();
        latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let (p50, p99) = if latencies.is_empty() {
            (0.0, 0.0)
        } else {
            (percentile(&latencies, 50.0), percentile(&latencies, 99.0))
        };
        let by_backend: Vec<usize> = ports
            .iter()
            .map(|port| {
                in_phase
                    .iter()
                    .filter(|a| a.backend_port == Some(*port))
                    .count()
            })
            .collect();
        println!(
            "scaling {label}: {} ({clients} clients, {:.0} s): {} requests ({:.0} req/s), {failed} non-200, latency p50 {p50:.0} ms p99 {p99:.0} ms; by backend {by_backend:?}",
            phase_names[index],
            length.as_secs_f64(),
            in_phase.len(),
            in_phase.len() as f64 / length.as_secs_f64(),
        );
    }
    let actions: Vec<&str> = log
        .lines()
        .filter(|line| line.ends_with("; starting it") || line.ends_with("; stopping it"))
        .collect();
    println!("scaling {label}: actions (error log):");
    for line in &actions {
        let time = line.get(11..19).unwrap_or("");
        let what = line
            .split_once("upstream \"backend\" ")
            .map_or(*line, |(_, what)| what);
        println!("  {time} {what}");
    }

    // Which backends served before the step: any other one is new.
    let before_step: Vec<u16> = answers
        .iter()
        .filter(|a| a.phase == 0)
        .filter_map(|a| a.backend_port)
        .collect();
    let first_new_answer = answers
        .iter()
        .filter(|a| a.done >= step)
        .filter(|a| {
            a.backend_port
                .is_some_and(|port| !before_step.contains(&port))
        })
        .map(|a| a.done - step)
        .min();
    let first_new_up = first_sample(step, &|sample| up(sample) > SCALE_MIN);
    let at_maximum = first_sample(step, &|sample| up(sample) == SCALE_BACKENDS);
    let most_up = samples.iter().map(up).max().unwrap_or(0);
    let minimum_after_step_down = first_sample(step_down, &|sample| sample.at_minimum());
    let minimum_after_load_stop = first_sample(load_stop, &|sample| sample.at_minimum());
    let back_after_load_stop = match minimum_after_step_down {
        Some(after) if step_down + after <= load_stop => {
            "already there when the load stopped".to_string()
        }
        _ => format!("{} after the load stopped", show(minimum_after_load_stop)),
    };
    let failed = answers.iter().filter(|a| a.status != 200).count();
    let count = |what: &str| actions.iter().filter(|line| line.contains(what)).count();
    // The drain's own notice ("drained", "drain timed out") follows a stop decision that found
    // requests in flight.
    let load_starts = count("starting up: load");
    let (light_load_stops, idle_stops) = (
        count("shutting down: light load"),
        count("shutting down: no request"),
    );
    let timed_out = count("drain timed out");
    println!(
        "SCALING {label} ({scale_up}): step {} -> {} clients: a new backend UP after {} (its first answer after {}), all {SCALE_BACKENDS} UP after {} (most UP at once: {most_up}); \
         back to the minimum ({SCALE_MIN}) {} after the step down to {} clients, {back_after_load_stop}; \
         {failed} non-200 of {} requests (target 0); error log: {load_starts} starts for load, {light_load_stops} stops for light load, {idle_stops} for idleness, {timed_out} drains timed out",
        SCALE_PHASES[0].0,
        SCALE_PHASES[1].0,
        show(first_new_up),
        show(first_new_answer),
        show(at_maximum),
        show(minimum_after_step_down),
        SCALE_PHASES[2].0,
        answers.len(),
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
        if which == "all" || which == "scaling" {
            scaling("in_flight", "supervisord_scale_up in_flight=4 window=2s").await;
            scaling("rate", "supervisord_scale_up rate=80 window=2s").await;
        }
        if which == "all" || which == "overshoot" {
            overshoot(500, 3).await;
            overshoot(1500, 3).await;
        }
    });
}
