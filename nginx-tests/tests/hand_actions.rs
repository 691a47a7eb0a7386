//! Hand actions through `supervisorctl` and diagnostics: a hand start is routed within a
//! second (reconciliation reads supervisord every second by default and probes a program it
//! finds STARTING), a hand restart under traffic holds the requests that arrive meanwhile, a
//! wrong program name is reported at the first read of supervisord, and a `/_stop` during a
//! start is a stop, not a failed start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nginx_tests::raw::curl_h2;
use nginx_tests::status::Status;
use nginx_tests::supervisord::{controls_config, nginx_with_controls, Program, Supervisord};
use nginx_tests::{
    eventually, free_port, recorded_requests, request, request_with_body, scaled, Nginx, Server,
};

fn status_of(nginx: &Nginx, index: usize) -> Status {
    nginx
        .supervisord_status("/_status")
        .upstream("backend")
        .backends[index]
        .status
}

/// Waits (at most 10 s, scaled) until backend `index` is UP; returns how long that took.
fn until_up(nginx: &Nginx, index: usize) -> Duration {
    let started = Instant::now();
    while status_of(nginx, index) != Status::Up {
        assert!(
            started.elapsed() < scaled(Duration::from_secs(10)),
            "never up"
        );
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
    let nginx = nginx_with_controls("hand-start", &[port], &supervisord.address(), &[]);
    // nginx has read supervisord's view (the program STOPPED) and left it alone.
    supervisord.wait_for_reads(2);
    assert_eq!(status_of(&nginx, 0), Status::Down);
    assert_eq!(supervisord.spawns("backend0"), 0);
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
        routed_after < scaled(Duration::from_millis(1500)),
        "{routed_after:?}"
    );
    // nginx did not start it a second time.
    assert_eq!(supervisord.spawns("backend0"), 1);
    let log = nginx.error_log();
    assert!(!log.contains("start failed"), "{log}");
    nginx.assert_clean_log();
}

/// What the clients of a restart under traffic got, by kind of request.
#[derive(Default)]
struct Answers {
    gets: Vec<u16>,
    posts: Vec<u16>,
    h2_gets: Vec<u16>,
}

impl Answers {
    fn total(&self) -> usize {
        self.gets.len() + self.posts.len() + self.h2_gets.len()
    }

    fn failed(&self) -> Vec<u16> {
        self.gets
            .iter()
            .chain(&self.posts)
            .chain(&self.h2_gets)
            .copied()
            .filter(|status| *status != 200)
            .collect()
    }
}

/// Three clients, each sending one request after another (every 10 ms) until told to stop:
/// GET over HTTP/1.1, POST with a 1000-byte body over HTTP/1.1, GET over HTTP/2 (curl).
fn client_loops(
    port: u16,
    h2_port: u16,
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Answers>>,
) -> Vec<JoinHandle<()>> {
    type Send = fn(u16) -> u16;
    type Pick = fn(&mut Answers) -> &mut Vec<u16>;
    let kinds: [(Send, Pick); 3] = [
        (|port| request(port, "GET", "/").status, |a| &mut a.gets),
        (
            |port| request_with_body(port, "POST", "/", 1000).status,
            |a| &mut a.posts,
        ),
        (
            |h2_port| curl_h2(&[&format!("http://127.0.0.1:{h2_port}/")]),
            |a| &mut a.h2_gets,
        ),
    ];
    kinds
        .into_iter()
        .zip([port, port, h2_port])
        .map(|((send, pick), port)| {
            let (stop, answers) = (stop.clone(), answers.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let status = send(port);
                    pick(&mut answers.lock().unwrap()).push(status);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        })
        .collect()
}

/// `supervisorctl restart` of the only program while three clients send requests.
fn restart_under_traffic(name: &str, args: &str) {
    let port = free_port();
    let record = std::env::temp_dir().join(format!("{name}-{}.record", std::process::id()));
    let _ = std::fs::remove_file(&record);
    let supervisord = Supervisord::start(
        name,
        &[Program::backend_with(
            "backend0",
            port,
            1,
            &format!("{args} --record {}", record.display()),
        )],
        "",
    );
    let h2_port = free_port();
    let h2_server = Server::on(h2_port)
        .listen_options("http2")
        .location("/", "proxy_pass http://backend;");
    let nginx = Nginx::start(
        name,
        &controls_config(supervisord.upstream("backend", &[port])).server(h2_server),
    );
    supervisord.ctl(&["start", "backend0"]);
    until_up(&nginx, 0);
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Answers::default()));
    let clients = client_loops(nginx.port, h2_port, stop.clone(), answers.clone());
    // About 100 requests before the restart and 100 after it is done.
    let sent = |answers: &Arc<Mutex<Answers>>| answers.lock().unwrap().total();
    let deadline = Instant::now() + scaled(Duration::from_secs(20));
    while sent(&answers) < 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let restart = supervisord.ctl(&["restart", "backend0"]);
    let after_restart = sent(&answers) + 100;
    while sent(&answers) < after_restart && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    eprintln!(
        "restart ({args:?}): {} GET, {} POST, {} HTTP/2 GET; not 200: {:?}",
        answers.gets.len(),
        answers.posts.len(),
        answers.h2_gets.len(),
        answers.failed()
    );
    // One new process: started by supervisorctl, or by nginx for a held request when it came
    // first (supervisorctl then says "already started").
    assert!(restart.contains("backend0: stopped"), "{restart}");
    assert!(eventually(3, || status_of(&nginx, 0) == Status::Up));
    assert_eq!(supervisord.spawns("backend0"), 2);
    let received = recorded_requests(&record);
    let _ = std::fs::remove_file(&record);
    // Each refused request is nginx's own connect() line, at most one per client; nothing else.
    let log = nginx.error_log();
    assert_none_lost(&answers, &received, &log);
    assert!(log.matches("connect() failed").count() <= 3, "{log}");
    nginx.assert_clean_log();
}

/// Requests arriving while the program restarts are held (or held again, when the program
/// going away failed them before anything knew) and answered once it is back, none lost
/// (plain nginx: 68-88 x 502). The one exception is nginx's own rule for sending a request
/// again: a POST the dying program had been sent and reset unanswered may have run, so it is
/// not sent again (nginx would not send it to another server either, unless
/// `proxy_next_upstream ... non_idempotent`); its 502 comes with nginx's reset line.
fn assert_none_lost(answers: &Answers, received: &[String], log: &str) {
    assert!(answers.total() >= 200, "{}", answers.total());
    let failed_gets: Vec<&u16> = answers
        .gets
        .iter()
        .chain(&answers.h2_gets)
        .filter(|status| **status != 200)
        .collect();
    assert!(failed_gets.is_empty(), "{failed_gets:?}");
    let posts_reset = log
        .lines()
        .filter(|line| {
            line.contains("request: \"POST") && line.contains("(104: Connection reset by peer)")
        })
        .count();
    let failed_posts = answers
        .posts
        .iter()
        .filter(|status| **status != 200)
        .count();
    assert!(
        answers
            .posts
            .iter()
            .all(|status| [200, 502].contains(status)),
        "{:?}",
        answers.posts
    );
    assert_eq!(failed_posts, posts_reset, "{log}");
    assert!(posts_reset <= 2, "{log}");
    // Every POST answered 200 ran exactly once; a reset one may have been read before.
    let posts_received = received
        .iter()
        .filter(|line| line.as_str() == "POST / 1000")
        .count();
    let posts_ok = answers.posts.len() - failed_posts;
    assert!(
        (posts_ok..=posts_ok + failed_posts).contains(&posts_received),
        "{posts_received} received, {posts_ok} answered: {received:?}"
    );
}

#[test]
fn a_hand_restart_under_traffic() {
    restart_under_traffic("hand-restart", "");
}

#[test]
fn a_hand_restart_of_a_slow_starting_program_under_traffic() {
    // As above, with 500 ms without a listening socket during the restart.
    restart_under_traffic("hand-restart-slow", "--listen-after 500");
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
    let nginx = nginx_with_controls("wrong-name", &[port], &supervisord.address(), &[]);
    let line = "supervisord has no program \"backend0\"";
    assert!(
        eventually(3, || nginx.error_log().contains(line)),
        "{}",
        nginx.error_log()
    );
    // Two more reads of supervisord, and still one line.
    supervisord.wait_for_reads(2);
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
        &supervisord.address(),
        &["supervisord_sync_interval off"],
    );
    let first = nginx.get("/");
    assert_eq!(first.status, 200, "{first:?}");
    // startProcess is still waiting for startsecs when the stop comes.
    let stop = nginx.get("/_stop/0");
    assert_eq!(stop.status, 200, "{stop:?}");
    assert!(eventually(5, || status_of(&nginx, 0) == Status::Down));
    // supervisord has answered the start (after the stop) as well as the stop.
    supervisord.wait_state("backend0", "STOPPED");
    supervisord.wait_for_answers();
    let log = nginx.error_log();
    assert!(!log.contains("start failed"), "{log}");
    assert!(!log.contains("program exits"), "{log}");
    assert!(log.contains("shutting down -> down"), "{log}");
    nginx.assert_clean_log();
}

#[test]
fn requests_wait_for_a_program_that_takes_its_time_to_stop() {
    // On TERM the program closes its port at once, but only exits when the test lets it (the
    // file `exit_gate` exists): supervisord says STOPPING meanwhile, and refuses to start it.
    let port = free_port();
    let exit_gate = std::env::temp_dir().join(format!("slow-stop-exit-{}", std::process::id()));
    let _ = std::fs::remove_file(&exit_gate);
    let command = format!(
        "sh -c '{} {port} & pid=$!; trap \"kill -9 $pid; until [ -e {} ]; do sleep 0.05; done; \
         exit 0\" TERM; wait'",
        nginx_tests::backend_binary().display(),
        exit_gate.display()
    );
    let mut program = Program::command("backend0", &command, 1);
    program.stopwaitsecs = 60;
    let supervisord = Supervisord::start("slow-stop", &[program], "");
    let nginx = nginx_with_controls("slow-stop", &[port], &supervisord.address(), &[]);
    supervisord.ctl(&["start", "backend0"]);
    until_up(&nginx, 0);
    let stopping = [
        "its program is being stopped outside nginx (supervisord says STOPPING): up -> shutting down",
        "down -> shutting down (supervisord says STOPPING)",
        "up -> shutting down (supervisord says STOPPING)",
    ];
    // The stop by hand; once the program has closed its port (it got TERM: supervisord says
    // STOPPING), a request to the closed port, held until the program exits.
    let response = std::thread::scope(|scope| {
        let stop = scope.spawn(|| supervisord.ctl(&["stop", "backend0"]));
        assert!(
            eventually(10, || std::net::TcpStream::connect(("127.0.0.1", port))
                .is_err()),
            "the program never closed its port"
        );
        let request = scope.spawn(|| request(nginx.port, "GET", "/"));
        assert!(
            eventually(10, || {
                let log = nginx.error_log();
                stopping.iter().any(|line| log.contains(line)) && nginx.held("backend") == 1
            }),
            "nginx never saw the program STOPPING with the request held:\n{}",
            nginx.error_log()
        );
        assert_eq!(supervisord.state("backend0"), "STOPPING");
        std::fs::write(&exit_gate, "exit").unwrap();
        let stopped = stop.join().unwrap();
        assert!(stopped.contains("backend0: stopped"), "{stopped}");
        request.join().unwrap()
    });
    // Held while supervisord stops it, then started again for it once STOPPED.
    assert_eq!(response.status, 200, "{response:?}\n{}", nginx.error_log());
    assert_eq!(response.body.trim(), format!("backend {port}"));
    let log = nginx.error_log();
    assert!(!log.contains("exits at start-up"), "{log}");
    assert!(!log.contains("start failed"), "{log}");
    assert_eq!(supervisord.spawns("backend0"), 2);
    nginx.assert_clean_log();
    // The program started again exits at once when stopped: the gate is still open.
    drop(supervisord);
    let _ = std::fs::remove_file(&exit_gate);
}
