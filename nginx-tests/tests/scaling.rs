//! Scaling with load: the minimum is started without any request and kept up, a load step
//! starts more backends up to the maximum, idle backends are drained and stopped back to the
//! minimum with no failed request, steady load never flaps, on every built-in balancer and in a
//! `zone` upstream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nginx_tests::status::Status;
use nginx_tests::supervisord::{nginx_with_controls, Supervisord};
use nginx_tests::{eventually, free_port, request, scaled, Nginx};

/// `count` backends (the test backend given `args`) and nginx with the scaling `directives`
/// in their upstream: their ports, supervisord and nginx.
fn scaling(
    name: &str,
    count: usize,
    args: &str,
    directives: &[&str],
) -> (Vec<u16>, Supervisord, Nginx) {
    let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
    let supervisord = Supervisord::with_backends(name, &ports, args);
    let nginx = nginx_with_controls(name, &ports, &supervisord.address(), directives);
    (ports, supervisord, nginx)
}

fn up_count(nginx: &Nginx) -> usize {
    nginx
        .backend_statuses()
        .iter()
        .filter(|status| **status == Status::Up)
        .count()
}

/// `clients` threads sending `path` one after another until stopped; every status they got.
struct Load {
    stop: Arc<AtomicBool>,
    statuses: Arc<Mutex<Vec<u16>>>,
    clients: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, clients: usize, path: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let clients = (0..clients)
            .map(|_| {
                let (stop, statuses) = (stop.clone(), statuses.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let status = request(port, "GET", path).status;
                        statuses.lock().unwrap().push(status);
                    }
                })
            })
            .collect();
        Self {
            stop,
            statuses,
            clients,
        }
    }

    /// How many answers the clients got so far.
    fn answered(&self) -> usize {
        self.statuses.lock().unwrap().len()
    }

    /// Stops the clients; every status they got.
    fn finish(self) -> Vec<u16> {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.join().unwrap();
        }
        std::mem::take(&mut *self.statuses.lock().unwrap())
    }
}

#[test]
fn the_minimum_is_started_without_any_request_and_brought_back_after_a_crash() {
    let (_, supervisord, nginx) = scaling("scale-min", 3, "", &["supervisord_min_servers 2"]);
    assert!(
        eventually(5, || nginx.backend_statuses()
            == vec![Status::Up, Status::Up, Status::Down]),
        "{:?}",
        nginx.backend_statuses()
    );
    assert_eq!(supervisord.spawns("backend0"), 1);
    assert_eq!(supervisord.spawns("backend1"), 1);
    assert_eq!(supervisord.spawns("backend2"), 0);
    let log = nginx.error_log();
    assert_eq!(
        log.matches("fewer than supervisord_min_servers 2").count(),
        2,
        "{log}"
    );
    // A crash takes one away: it is started again (the first DOWN one), no request needed.
    supervisord.crash("backend1");
    assert!(eventually(5, || supervisord.spawns("backend1") == 2));
    assert!(eventually(5, || up_count(&nginx) == 2));
    assert_eq!(supervisord.spawns("backend2"), 0);
    nginx.assert_clean_log();
}

#[test]
fn a_load_step_scales_up_to_the_maximum_and_idle_brings_it_back_with_no_failed_request() {
    let (_, supervisord, nginx) = scaling(
        "scale-step",
        4,
        "",
        &[
            "supervisord_min_servers 1",
            "supervisord_max_servers 3",
            "supervisord_scale_up in_flight=2 window=1s",
            "supervisord_idle_timeout 2s",
            "supervisord_drain_timeout 5s",
        ],
    );
    assert!(eventually(5, || up_count(&nginx) == 1));
    // 8 clients, each request 200 ms at the backend: about 8 in flight for 1 backend.
    let step = Instant::now();
    let load = Load::start(nginx.port, 8, "/slow/200");
    // Up counts every 100 ms until 3 are up, then for three more windows of the load (which
    // still asks for more than 3): never above the maximum.
    let mut ups = Vec::new();
    let mut scaled_up_after = None;
    let deadline = scaled(Duration::from_secs(15));
    loop {
        let up = up_count(&nginx);
        ups.push(up);
        assert!(up <= 3, "{ups:?}");
        match scaled_up_after {
            None if up == 3 => scaled_up_after = Some(step.elapsed()),
            None => assert!(step.elapsed() < deadline, "never 3 up: {ups:?}"),
            Some(after) if step.elapsed() > after + Duration::from_secs(3) => break,
            Some(_) => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let answers = load.finish();
    eprintln!(
        "load step: {} requests, up to 3 backends after {scaled_up_after:?}; up counts {ups:?}",
        answers.len()
    );
    assert!(scaled_up_after.is_some(), "{ups:?}");
    assert!(ups.iter().all(|up| *up <= 3), "{ups:?}");
    assert_eq!(supervisord.spawns("backend3"), 0);
    // Load gone: each idle backend is drained and stopped, down to the minimum.
    let idle = Instant::now();
    assert!(
        eventually(10, || up_count(&nginx) == 1),
        "{:?}",
        nginx.backend_statuses()
    );
    eprintln!(
        "back to the minimum {:?} after the load stopped",
        idle.elapsed()
    );
    let failed: Vec<&u16> = answers.iter().filter(|status| **status != 200).collect();
    assert!(failed.is_empty(), "{failed:?}");
    let log = nginx.error_log();
    let lines = |what: &str| log.lines().filter(|line| line.contains(what)).count();
    assert_eq!(
        lines("fewer than supervisord_min_servers 1; starting it"),
        1,
        "{log}"
    );
    // The two the load asked for (8 in flight, 2 per backend: 4 wanted, 3 at most), started
    // as the window's mean asked for them, both for load.
    assert_eq!(
        log.lines()
            .filter(|line| line.contains(": load ")
                && line.contains(" requests in flight over 1000 ms, target 2 per backend: ")
                && line.ends_with("; starting it"))
            .count(),
        2,
        "{log}"
    );
    assert_eq!(lines("; starting it"), 3, "{log}");
    // Each stop (idle, or light load once the window shows it) drained first: 0 failed.
    assert_eq!(lines("; stopping it"), 2, "{log}");
    assert_eq!(supervisord.spawns("backend1"), 1);
    assert_eq!(supervisord.spawns("backend2"), 1);
    // Backend 0 stays; the others went highest first.
    assert_eq!(nginx.backend_statuses()[0], Status::Up);
    nginx.assert_clean_log();
}

#[test]
fn steady_load_does_not_flap() {
    let (_, supervisord, nginx) = scaling(
        "scale-steady",
        3,
        "",
        &[
            "supervisord_min_servers 1",
            "supervisord_scale_up in_flight=4 window=500ms",
        ],
    );
    assert!(eventually(5, || up_count(&nginx) == 1));
    // About 3 in flight for one backend: under the target, above light load (40 %).
    let load = Load::start(nginx.port, 3, "/slow/100");
    // Only the minimum's start: no load action over 10 windows (5 s), watched all along.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(5) {
        let log = nginx.error_log();
        assert_eq!(log.matches("; stopping it").count(), 0, "{log}");
        assert_eq!(log.matches("; starting it").count(), 1, "{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The load was there all along: about 30 answers a second for 5 s.
    assert!(load.answered() >= 50, "{}", load.answered());
    let answers = load.finish();
    assert!(answers.iter().all(|status| *status == 200));
    let log = nginx.error_log();
    assert_eq!(log.matches("; stopping it").count(), 0, "{log}");
    assert_eq!(log.matches("; starting it").count(), 1, "{log}");
    assert_eq!(supervisord.spawns("backend1"), 0);
    nginx.assert_clean_log();
}

/// Under load, a second backend is started and gets requests, whatever the balancer.
fn scales_with_balancer(name: &str, balancer: &[&str], spreads: bool) {
    let directives: Vec<&str> = balancer
        .iter()
        .copied()
        .chain([
            "supervisord_min_servers 1",
            "supervisord_scale_up in_flight=2 window=500ms",
        ])
        .collect();
    let (ports, _supervisord, nginx) = scaling(name, 2, "", &directives);
    assert!(eventually(5, || up_count(&nginx) == 1));
    let load = Load::start(nginx.port, 6, "/slow/100");
    let scaled_up = eventually(6, || up_count(&nginx) == 2);
    // The load goes on over both: 20 more answers.
    let answered = load.answered();
    assert!(eventually(10, || load.answered() >= answered + 20));
    let answers = load.finish();
    assert!(scaled_up, "{name}: {:?}", nginx.backend_statuses());
    assert!(answers.iter().all(|status| *status == 200), "{name}");
    if spreads {
        let served: Vec<String> = (0..20)
            .map(|n| request(nginx.port, "GET", &format!("/{n}")).body)
            .collect();
        assert!(
            served
                .iter()
                .any(|body| body.trim() == format!("backend {}", ports[1])),
            "{name}: {served:?}"
        );
    }
    nginx.assert_clean_log();
}

#[test]
fn scales_with_round_robin() {
    scales_with_balancer("scale-rr", &[], true);
}

#[test]
fn scales_with_least_conn() {
    scales_with_balancer("scale-least-conn", &["least_conn"], true);
}

#[test]
fn scales_with_ip_hash() {
    // Every client is 127.0.0.1: one backend gets them all, but load still starts another.
    scales_with_balancer("scale-ip-hash", &["ip_hash"], false);
}

#[test]
fn scales_with_hash() {
    scales_with_balancer("scale-hash", &["hash $request_uri consistent"], true);
}

#[test]
fn scales_with_random() {
    scales_with_balancer("scale-random", &["random two least_conn"], true);
}

#[test]
fn scales_in_a_zone_upstream() {
    scales_with_balancer("scale-zone", &["zone backend 64k"], true);
}

#[test]
fn idle_backends_are_stopped_down_to_the_minimum_highest_first() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let supervisord = Supervisord::with_backends("scale-idle", &ports, "");
    for index in 0..3 {
        supervisord.ctl(&["start", &format!("backend{index}")]);
    }
    // Running before nginx starts, taken as up from the configuration.
    let started = Instant::now();
    let nginx = nginx_with_controls(
        "scale-idle",
        &ports,
        &supervisord.address(),
        &[
            "supervisord_inherit_backend_status",
            "supervisord_min_servers 1",
            "supervisord_idle_timeout 2s",
        ],
    );
    assert_eq!(up_count(&nginx), 3);
    // A few requests: idle time counts from the last one each backend served.
    for _ in 0..6 {
        assert_eq!(request(nginx.port, "GET", "/").status, 200);
    }
    assert!(eventually(5, || nginx.backend_statuses()[2] == Status::Down));
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(eventually(5, || nginx.backend_statuses()
        == vec![Status::Up, Status::Down, Status::Down]));
    // The minimum stays, however long it idles: twice the idle timeout since its last request.
    assert!(eventually(10, || nginx
        .supervisord_status("/_status")
        .upstream("backend")
        .backends[0]
        .idle_ms
        .is_some_and(|idle| idle > 4000)));
    assert_eq!(
        nginx.backend_statuses(),
        vec![Status::Up, Status::Down, Status::Down]
    );
    let log = nginx.error_log();
    assert_eq!(
        log.matches("no request for supervisord_idle_timeout 2000 ms; stopping it")
            .count(),
        2,
        "{log}"
    );
    assert!(supervisord.log().contains("stopped: backend2"));
    assert!(supervisord.log().contains("stopped: backend1"));
    nginx.assert_clean_log();
}

/// Backends that take 1.5 s to listen (longer than the window) under a load that needs two:
/// the one starting counts as the capacity it brings, and no third is started, neither while
/// it starts nor once it is UP.
#[test]
fn a_slow_starter_under_a_load_that_needs_two_never_gets_a_third() {
    let (_, supervisord, nginx) = scaling(
        "scale-slow",
        4,
        "--listen-after 1500",
        &[
            "supervisord_min_servers 1",
            "supervisord_max_servers 4",
            "supervisord_scale_up in_flight=4 window=1s",
        ],
    );
    assert!(eventually(10, || up_count(&nginx) == 1));
    // 6 clients: at most 6 in flight, ceil(6 / 4) = 2 backends.
    let load = Load::start(nginx.port, 6, "/slow/100");
    let running = |nginx: &Nginx| {
        nginx
            .backend_statuses()
            .iter()
            .filter(|status| matches!(status, Status::Up | Status::StartingUp))
            .count()
    };
    let mut seen = Vec::new();
    assert!(
        eventually(15, || {
            seen.push(running(&nginx));
            up_count(&nginx) == 2
        }),
        "{seen:?}"
    );
    // Four more windows of the same load, watched all along: still two.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(4) {
        seen.push(running(&nginx));
        std::thread::sleep(Duration::from_millis(50));
    }
    let answers = load.finish();
    assert!(seen.iter().all(|running| *running <= 2), "{seen:?}");
    assert!(answers.len() >= 50, "{}", answers.len());
    assert!(answers.iter().all(|status| *status == 200));
    assert_eq!(supervisord.spawns("backend1"), 1);
    assert_eq!(supervisord.spawns("backend2"), 0);
    assert_eq!(supervisord.spawns("backend3"), 0);
    let log = nginx.error_log();
    assert_eq!(log.matches("; starting it").count(), 2, "{log}");
    nginx.assert_clean_log();
}
