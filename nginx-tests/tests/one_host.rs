//! One supervisord, one host: four upstreams that name the same supervisord read its programs'
//! states with one `getAllProcessInfo` per interval (not one per upstream), and an outage is one
//! error line and its end one notice, each naming the four upstreams, not four of each.

use std::time::Instant;

use nginx_tests::status::Status;
use nginx_tests::supervisord::{Program, Supervisord};
use nginx_tests::{eventually, free_port, Config, Nginx, Server, Upstream};

const NAMES: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
const INTERVAL_MS: u64 = 500;

fn four_upstreams(name: &str) -> (Supervisord, Nginx) {
    let ports: Vec<u16> = NAMES.iter().map(|_| free_port()).collect();
    let programs: Vec<Program> = NAMES
        .iter()
        .zip(&ports)
        .map(|(name, port)| Program::backend(&format!("{name}0"), *port, 0))
        .collect();
    let supervisord = Supervisord::start(name, &programs, "");
    let mut config = Config::new().workers(2);
    let mut server = Server::new().reuseport();
    for (name, port) in NAMES.iter().zip(&ports) {
        config = config.upstream(
            Upstream::new(name)
                .servers(&[*port])
                .supervisord(supervisord.address())
                .sync_interval(&format!("{INTERVAL_MS}ms"))
                .directive("supervisord_hold_timeout 1s"),
        );
        server = server.location(&format!("/{name}/"), &format!("proxy_pass http://{name};"));
    }
    let nginx = Nginx::start(name, &config.server(server));
    (supervisord, nginx)
}

#[test]
fn four_upstreams_read_their_supervisord_once_per_interval() {
    let (supervisord, nginx) = four_upstreams("one-host-reads");
    supervisord.wait_for_reads(1);
    let before = supervisord.reads_by_nginx();
    let began = Instant::now();
    // Reads come at their own pace: whatever the machine's load, never more than one per
    // interval (one upstream's worth), plus one in progress at each end.
    assert!(eventually(10, || supervisord.reads_by_nginx() >= before + 4));
    let elapsed = began.elapsed();
    let reads = supervisord.reads_by_nginx() - before;
    let most = (elapsed.as_millis() as u64 / INTERVAL_MS) as usize + 2;
    eprintln!("{reads} reads in {elapsed:?} (interval {INTERVAL_MS} ms, 4 upstreams)");
    assert!(reads <= most, "{reads} reads in {elapsed:?}");
    // Every upstream still follows supervisord: each starts its own program on demand.
    for name in NAMES {
        let reply = nginx.get(&format!("/{name}/"));
        assert_eq!(reply.status, 200, "{name}: {reply:?}");
    }
    nginx.assert_clean_log();
}

#[test]
fn an_outage_of_their_supervisord_is_one_line_and_its_end_another() {
    let (mut supervisord, nginx) = four_upstreams("one-host-outage");
    supervisord.wait_for_reads(1);
    supervisord.stop_daemon();
    // Requests to every upstream meanwhile: each makes calls that fail.
    for name in NAMES {
        assert_eq!(nginx.get(&format!("/{name}/")).status, 503, "{name}");
    }
    let gone = "supervisord: upstreams \"alpha\", \"beta\", \"gamma\", \"delta\": cannot reach supervisord at";
    nginx.error_log_once_it_has(gone);
    supervisord.restart_daemon();
    let back = "supervisord: upstreams \"alpha\", \"beta\", \"gamma\", \"delta\": supervisord at";
    nginx.error_log_once_it_has(back);
    for name in NAMES {
        let reply = nginx.get(&format!("/{name}/"));
        assert_eq!(reply.status, 200, "{name}: {reply:?}");
    }
    let log = nginx.error_log();
    assert_eq!(log.matches("cannot reach supervisord").count(), 1, "{log}");
    assert_eq!(log.matches("answers again").count(), 1, "{log}");
    // The incident's own lines, whatever the number of upstreams: a read of supervisord that
    // was under way when it went (its connection closed), and the outage; each request the
    // test held until its timeout has its own warning besides.
    let incident: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("supervisord: ") && line.contains("[error]"))
        .collect();
    assert!(incident.len() <= 2, "{incident:#?}");
    assert!(
        incident
            .iter()
            .all(|line| line.contains("upstreams \"alpha\", \"beta\", \"gamma\", \"delta\"")),
        "{incident:#?}"
    );
    nginx.assert_clean_log();
}

/// Two upstreams over the same program (`supervisord_name app` in both): a stop through one is
/// seen by the other at once, not at the next read, so a start through the other starts it
/// again instead of answering "already up".
#[test]
fn a_stop_through_one_upstream_is_seen_by_another_over_the_same_program() {
    let port = free_port();
    let supervisord =
        Supervisord::start("one-host-twins", &[Program::backend("app0", port, 0)], "");
    let mut config = Config::new().workers(2);
    let mut server = Server::new()
        .reuseport()
        .location("= /_status", "supervisord_status;");
    for name in ["first", "second"] {
        config = config.upstream(
            Upstream::new(name)
                .servers(&[port])
                .supervisord(supervisord.address())
                .directive("supervisord_name app")
                // The periodic read is far away: what follows at once is not it.
                .sync_interval("30s"),
        );
        server = server
            .location(&format!("/{name}/"), &format!("proxy_pass http://{name};"))
            .location(
                &format!("/_start_{name}/"),
                &format!("supervisord_start {name};"),
            )
            .location(
                &format!("/_stop_{name}/"),
                &format!("supervisord_stop {name};"),
            );
    }
    let nginx = Nginx::start("one-host-twins", &config.server(server));
    let status_of =
        |name: &str| nginx.supervisord_status("/_status").upstream(name).backends[0].status;
    assert_eq!(nginx.get("/first/").status, 200);
    assert!(
        eventually(5, || status_of("second") == Status::Up),
        "{}",
        nginx.error_log()
    );
    assert_eq!(nginx.get("/second/").status, 200);

    let stop = nginx.get("/_stop_first/0");
    assert_eq!(stop.status, 200, "{stop:?}");
    supervisord.wait_state("app0", "STOPPED");
    assert!(
        eventually(5, || status_of("second") == Status::Down),
        "{}",
        nginx.error_log()
    );
    let start = nginx.get("/_start_second/0");
    assert_eq!(start.status, 200, "{start:?}");
    assert!(start.body.contains("down -> starting up"), "{}", start.body);
    supervisord.wait_state("app0", "RUNNING");
    assert!(
        eventually(5, || status_of("first") == Status::Up),
        "{}",
        nginx.error_log()
    );
    assert_eq!(nginx.get("/first/").status, 200);
    assert_eq!(supervisord.spawns("app0"), 2, "{}", supervisord.log());
    nginx.assert_clean_log();
}
