//! Hand actions through `supervisorctl` and diagnostics: a hand start is routed within a
//! second (reconciliation reads supervisord every second by default and probes a program it
//! finds STARTING), a hand restart under traffic holds the requests that arrive meanwhile, a
//! wrong program name is reported at the first read of supervisord, and a `/_stop` during a
//! start is a stop, not a failed start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nginx_tests::status::Status;
use nginx_tests::supervisord::{nginx_with_controls, Program, Supervisord};
use nginx_tests::{eventually, free_port, request, Nginx};

fn status_of(nginx: &Nginx, index: usize) -> Status {
    nginx
        .supervisord_status("/_status")
        .upstream("backend")
        .backends[index]
        .status
}

/// Waits (at most 10 s) until backend `index` is UP; returns how long that took.
fn until_up(nginx: &Nginx, index: usize) -> Duration {
    let started = Instant::now();
    while status_of(nginx, index) != Status::Up {
        assert!(started.elapsed() < Duration::from_secs(10), "never up");
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

#[test]
fn a_hand_start_is_routed_within_a_second() {
    let port = free_port();
    let supervisord_dir =
        std::env::temp_dir().join(format!("hand-start-ready-{}", std::process::id()));
    std::fs::create_dir_all(&supervisord_dir).unwrap();
    let ready_file = supervisord_dir.join("ready");
    let supervisord = Supervisord::start(
        "hand-start",
        &[Program::backend_with(
            "backend0",
            port,
            1,
            &format!("--ready-file {}", ready_file.display()),
        )],
        "",
    );
    let nginx = nginx_with_controls("hand-start", &[port], &supervisord, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(status_of(&nginx, 0), Status::Down);
    let ctl = std::thread::spawn({
        let dir = supervisord.dir.clone();
        move || {
            std::process::Command::new("supervisorctl")
                .arg("-c")
                .arg(dir.join("supervisord.conf"))
                .args(["start", "backend0"])
                .output()
                .unwrap()
        }
    });
    until_up(&nginx, 0);
    let up_at = SystemTime::now();
    let listening_at = UNIX_EPOCH
        + Duration::from_nanos(
            std::fs::read_to_string(&ready_file)
                .unwrap()
                .trim()
                .parse()
                .unwrap(),
        );
    let routed_after = up_at.duration_since(listening_at).unwrap_or_default();
    let response = nginx.get("/");
    ctl.join().unwrap();
    let _ = std::fs::remove_dir_all(&supervisord_dir);
    eprintln!("hand start routed {routed_after:?} after the program listened");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body.trim(), format!("backend {port}"));
    // The next read of supervisord (every second by default) finds it; the probe does the rest.
    assert!(
        routed_after < Duration::from_millis(1500),
        "{routed_after:?}"
    );
    // nginx did not start it a second time.
    assert_eq!(supervisord.log().matches("spawned: 'backend0'").count(), 1);
    let log = nginx.error_log();
    assert!(!log.contains("start failed"), "{log}");
    nginx.assert_clean_log();
}

/// A client loop sending GET / one after another (every 10 ms) until told to stop.
fn client_loop(port: u16, stop: Arc<AtomicBool>, statuses: Arc<Mutex<Vec<u16>>>) {
    while !stop.load(Ordering::Relaxed) {
        let response = request(port, "GET", "/");
        statuses.lock().unwrap().push(response.status);
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn restart_under_traffic(name: &str, args: &str) -> (usize, usize) {
    let port = free_port();
    let supervisord = Supervisord::start(
        name,
        &[Program::backend_with("backend0", port, 1, args)],
        "",
    );
    let nginx = nginx_with_controls(name, &[port], &supervisord, &[]);
    supervisord.ctl(&["start", "backend0"]);
    until_up(&nginx, 0);
    let stop = Arc::new(AtomicBool::new(false));
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let client = std::thread::spawn({
        let (stop, statuses) = (stop.clone(), statuses.clone());
        let port = nginx.port;
        move || client_loop(port, stop, statuses)
    });
    // About 100 requests before the restart and 100 after it is done.
    let sent = |statuses: &Arc<Mutex<Vec<u16>>>| statuses.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(20);
    while sent(&statuses) < 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Not checked: until the failure rule leaves a STARTING program alone (issue 9, item 1),
    // the request that meets the closed port may make nginx stop the program in the middle of
    // the restart, and supervisorctl then reports "abnormal termination"; requests are held
    // and the program started again either way.
    supervisord.ctl(&["restart", "backend0"]);
    let after_restart = sent(&statuses) + 100;
    while sent(&statuses) < after_restart && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let statuses = statuses.lock().unwrap().clone();
    let failed = statuses.iter().filter(|status| **status != 200).count();
    eprintln!(
        "restart ({args:?}): {} requests, {failed} not 200: {:?}",
        statuses.len(),
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
    assert!(
        status_of(&nginx, 0) == Status::Up || eventually(3, || status_of(&nginx, 0) == Status::Up)
    );
    (statuses.len(), failed)
}

#[test]
fn a_hand_restart_under_traffic() {
    let (requests, failed) = restart_under_traffic("hand-restart", "");
    assert!(requests >= 200, "{requests}");
    // At most the one request sent to the closed port before anything could know (nginx
    // answers it 502 itself); every later one is held and answered (plain nginx: 68-88).
    assert!(failed <= 1, "{failed}");
}

#[test]
fn a_hand_restart_of_a_slow_starting_program_under_traffic() {
    let (requests, failed) = restart_under_traffic("hand-restart-slow", "--listen-after 500");
    assert!(requests >= 200, "{requests}");
    // As above, with 500 ms without a listening socket during the restart.
    assert!(failed <= 1, "{failed}");
}

#[test]
fn a_wrong_program_name_is_reported_at_the_first_read() {
    let port = free_port();
    // The program is a member of group "web": its name is "web:backend0".
    let supervisord = Supervisord::start(
        "wrong-name",
        &[Program::backend("backend0", port, 1)],
        "[group:web]\nprograms=backend0\n",
    );
    let nginx = nginx_with_controls("wrong-name", &[port], &supervisord, &[]);
    let line = "supervisord has no program \"backend0\"";
    assert!(
        eventually(3, || nginx.error_log().contains(line)),
        "{}",
        nginx.error_log()
    );
    std::thread::sleep(Duration::from_millis(2500));
    let log = nginx.error_log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(line)).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("[error]"), "{}", lines[0]);
    assert!(
        lines[0].contains("upstream \"backend\" backend 0"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("supervisord has \"web:backend0\""),
        "{}",
        lines[0]
    );
    // Reported before any start was tried.
    assert!(!log.contains("start failed"), "{log}");
    assert_eq!(supervisord.log().matches("spawned:").count(), 0);
    nginx.assert_clean_log();
}

#[test]
fn a_stop_during_an_on_demand_start_is_a_stop() {
    let port = free_port();
    // Listens at once; supervisord calls it started only after 3 s.
    let supervisord = Supervisord::start(
        "stop-while-starting",
        &[Program::backend("backend0", port, 3)],
        "",
    );
    let nginx = nginx_with_controls(
        "stop-while-starting",
        &[port],
        &supervisord,
        &["supervisord_sync_interval off"],
    );
    let first = nginx.get("/");
    assert_eq!(first.status, 200, "{first:?}");
    // startProcess is still waiting for startsecs when the stop comes.
    let stop = nginx.get("/_stop/0");
    assert_eq!(stop.status, 200, "{stop:?}");
    assert!(eventually(5, || status_of(&nginx, 0) == Status::Down));
    std::thread::sleep(Duration::from_millis(3500));
    let log = nginx.error_log();
    assert!(!log.contains("start failed"), "{log}");
    assert!(!log.contains("program exits"), "{log}");
    assert!(log.contains("shutting down -> down"), "{log}");
    nginx.assert_clean_log();
}
