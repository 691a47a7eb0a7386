//! Two nginx in front of the same supervisord (an HA pair running the same configuration):
//! neither fails a request because of the other. An idle nginx never stops, for idleness, a
//! program the other one started and serves; a program one stops by hand is started again for
//! the other's requests, which wait for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nginx_tests::status::Status;
use nginx_tests::supervisord::{Program, Supervisord};
use nginx_tests::{eventually, free_port, request, Config, Nginx, Server, Upstream};

const IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// The configuration both nginx run (each on its own port).
fn pair_config(ports: &[u16], supervisord: &Supervisord) -> Config {
    Config::new()
        .workers(2)
        .upstream(
            Upstream::new("backend")
                .servers(ports)
                .supervisord(supervisord.address())
                .sync_interval("300ms")
                .directive(format!(
                    "supervisord_idle_timeout {}ms",
                    IDLE_TIMEOUT.as_millis()
                )),
        )
        .server(
            Server::new()
                .reuseport()
                .location("/", "proxy_pass http://backend;")
                .location("= /_status", "supervisord_status;")
                .location("/_stop/", "supervisord_stop backend;"),
        )
}

/// GETs from `clients` threads to each of `ports` until `running` is cleared: the statuses.
fn load(
    ports: &[u16],
    clients: usize,
    running: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<u16>>> {
    ports
        .iter()
        .flat_map(|port| std::iter::repeat_n(*port, clients))
        .map(|port| {
            let running = running.clone();
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                while running.load(Ordering::Relaxed) {
                    statuses.push(request(port, "GET", "/").status);
                    std::thread::sleep(Duration::from_millis(20));
                }
                statuses
            })
        })
        .collect()
}

fn started_here(nginx: &Nginx) -> bool {
    nginx
        .supervisord_status("/_status")
        .upstream("backend")
        .backends[0]
        .started_here
}

#[test]
fn an_idle_nginx_never_stops_what_the_other_one_serves() {
    let port = free_port();
    let supervisord = Supervisord::start("pair-idle", &[Program::backend("backend0", port, 0)], "");
    let config = pair_config(&[port], &supervisord);
    let busy = Nginx::start("pair-idle-busy", &config);
    let idle = Nginx::start("pair-idle-idle", &config);
    assert_eq!(busy.get("/").status, 200);
    // The idle nginx follows the program the busy one started: up, but not its own.
    assert!(eventually(10, || idle.backend_statuses() == [Status::Up]));
    assert!(started_here(&busy));
    assert!(!started_here(&idle));
    let running = Arc::new(AtomicBool::new(true));
    let clients = load(&[busy.port], 1, &running);
    // Three idle time-outs of the idle nginx while the busy one serves.
    let began = Instant::now();
    while began.elapsed() < IDLE_TIMEOUT * 3 {
        assert_eq!(idle.backend_statuses(), [Status::Up]);
        std::thread::sleep(Duration::from_millis(100));
    }
    running.store(false, Ordering::Relaxed);
    let statuses: Vec<u16> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    eprintln!(
        "{} GETs through the busy nginx over {:?}; spawns {}, stopProcess calls {}",
        statuses.len(),
        began.elapsed(),
        supervisord.spawns("backend0"),
        supervisord.calls("supervisor.stopProcess")
    );
    assert!(statuses.len() > 20, "{statuses:?}");
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    assert_eq!(supervisord.spawns("backend0"), 1);
    assert_eq!(supervisord.calls("supervisor.stopProcess"), 0);
    // The nginx that started it stops it once it is idle there too; the other follows.
    busy.error_log_once_it_has("stopping it");
    assert!(eventually(10, || idle.backend_statuses() == [Status::Down]));
    assert_eq!(supervisord.calls("supervisor.stopProcess"), 1);
    let idle_view = idle.supervisord_status("/_status");
    let idle_backend = &idle_view.upstream("backend").backends[0];
    assert_eq!(idle_backend.stops.idle, 0, "{idle_backend:?}");
    assert_eq!(idle_backend.starts.on_demand, 0, "{idle_backend:?}");
    busy.assert_clean_log();
    idle.assert_clean_log();
}

#[test]
fn a_hand_stop_through_one_nginx_fails_no_get_of_the_other() {
    let port = free_port();
    let supervisord = Supervisord::start("pair-stop", &[Program::backend("backend0", port, 0)], "");
    let config = pair_config(&[port], &supervisord);
    let first = Nginx::start("pair-stop-first", &config);
    let second = Nginx::start("pair-stop-second", &config);
    let running = Arc::new(AtomicBool::new(true));
    let began = Instant::now();
    let clients = load(&[first.port, second.port], 2, &running);
    assert!(eventually(10, || first.backend_statuses() == [Status::Up]
        && second.backend_statuses() == [Status::Up]));
    let stops = 3;
    for round in 0..stops {
        // Paced, so that both nginx serve a while between two stops.
        while began.elapsed() < Duration::from_secs(1) * (round + 1) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let spawns = supervisord.spawns("backend0");
        let answer = first.get("/_stop/0");
        assert_eq!(answer.status, 200, "round {round}: {answer:?}");
        // The program stops and is started again for the requests that keep coming.
        assert!(
            eventually(10, || supervisord.spawns("backend0") > spawns),
            "round {round}: {}",
            supervisord.log()
        );
        assert!(eventually(10, || first.backend_statuses() == [Status::Up]
            && second.backend_statuses() == [Status::Up]));
    }
    running.store(false, Ordering::Relaxed);
    let statuses: Vec<u16> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let failed = statuses.iter().filter(|status| **status != 200).count();
    let module_lines = |nginx: &Nginx| {
        nginx
            .error_log()
            .lines()
            .filter(|line| {
                line.contains("supervisord:")
                    && (line.contains("[warn]") || line.contains("[error]"))
            })
            .count()
    };
    eprintln!(
        "{} GETs through two nginx in {:?}, {failed} failed, {stops} hand stops, {} spawns; module warn+ lines {} / {}",
        statuses.len(),
        began.elapsed(),
        supervisord.spawns("backend0"),
        module_lines(&first),
        module_lines(&second)
    );
    for line in second
        .error_log()
        .lines()
        .filter(|line| line.contains("supervisord:"))
    {
        eprintln!("  second: {line}");
    }
    assert_eq!(failed, 0, "{statuses:?}");
    assert!(statuses.len() > 100, "{statuses:?}");
    first.assert_clean_log();
    second.assert_clean_log();
}
