//! `supervisord_max_reply_size`: supervisord's list of programs grows with their number (about
//! 1 KiB each); a reply over the limit is refused, and the operator is told once, with the
//! size seen and the directive to raise, not at every sync; raising the limit (a reload) makes
//! the syncs work again, and a reply that outgrows the limit later is reported again.

use nginx_tests::status::Status;
use nginx_tests::supervisord::{Program, Supervisord};
use nginx_tests::{eventually, free_port, Config, Nginx, Server, Upstream};

/// Programs supervisord manages besides the backend (never started): their entries make its
/// `getAllProcessInfo` reply larger than the small limit of the test.
const OTHER_PROGRAMS: usize = 60;
const SMALL_LIMIT: &str = "16k";
const SMALL_LIMIT_BYTES: usize = 16 << 10;

fn config(port: u16, supervisord: &Supervisord, limit: &str) -> Config {
    Config::new()
        .workers(2)
        .upstream(
            Upstream::new("backend")
                .servers(&[port])
                .supervisord(supervisord.address())
                .sync_interval("200ms")
                .directive(format!("supervisord_max_reply_size {limit}")),
        )
        .server(
            Server::new()
                .reuseport()
                .location("/", "proxy_pass http://backend;")
                .location("= /_status", "supervisord_status;"),
        )
}

/// The module's lines that report a reply over the limit.
fn over_limit_lines(nginx: &Nginx) -> Vec<String> {
    nginx
        .error_log()
        .lines()
        .filter(|line| line.contains("more than supervisord_max_reply_size"))
        .map(str::to_string)
        .collect()
}

/// The `getAllProcessInfo` calls supervisord answered so far (nginx's syncs: the test itself
/// asks with `getProcessInfo`). [`Supervisord::wait_for_reads`] counts only the replies nginx
/// read to their end, which a reply over the limit is not.
fn sync_calls(supervisord: &Supervisord) -> usize {
    supervisord
        .log()
        .matches("XML-RPC method supervisor.getAllProcessInfo() returned")
        .count()
}

/// Waits until supervisord answered `count` more syncs.
fn wait_for_syncs(supervisord: &Supervisord, count: usize) {
    let target = sync_calls(supervisord) + count;
    assert!(
        eventually(10, || sync_calls(supervisord) >= target),
        "{}",
        supervisord.log()
    );
}

/// The size in bytes a line reports ("... is N bytes, more than ...").
fn size_in(line: &str) -> usize {
    line.split(" is ")
        .nth(1)
        .and_then(|rest| rest.split(" bytes").next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no size in {line}"))
}

#[test]
fn a_reply_over_the_limit_is_reported_once_and_raising_it_works() {
    let port = free_port();
    let mut programs = vec![Program::backend("backend0", port, 0)];
    programs.extend(
        (0..OTHER_PROGRAMS).map(|n| Program::command(&format!("other{n}"), "sleep 3600", 0)),
    );
    let supervisord = Supervisord::start("reply-limit", &programs, "");
    // Started by hand: only a sync can tell nginx that it runs.
    supervisord.ctl(&["start", "backend0"]);
    supervisord.wait_state("backend0", "RUNNING");
    let nginx = Nginx::start("reply-limit", &config(port, &supervisord, SMALL_LIMIT));

    // Many syncs, over both workers, each answered by supervisord and refused by nginx.
    let log = nginx.error_log_once_it_has("more than supervisord_max_reply_size");
    wait_for_syncs(&supervisord, 10);
    let lines = over_limit_lines(&nginx);
    assert_eq!(lines.len(), 1, "{log}");
    let line = &lines[0];
    assert!(line.contains("[error]"), "{line}");
    assert!(line.contains("upstream \"backend\""), "{line}");
    assert!(line.contains("supervisor.getAllProcessInfo"), "{line}");
    assert!(
        line.contains(&format!("({SMALL_LIMIT_BYTES} bytes)")),
        "{line}"
    );
    let seen = size_in(line);
    eprintln!(
        "getAllProcessInfo of {} programs: {seen} bytes",
        OTHER_PROGRAMS + 1
    );
    assert!(seen > SMALL_LIMIT_BYTES, "{line}");
    // No other line tells of it (the sync's own failure line, once per worker, included).
    let log = nginx.error_log();
    assert!(!log.contains("reading program states"), "{log}");
    // The program runs, but nginx never read it.
    assert_eq!(nginx.backend_statuses(), [Status::Down]);

    // Raised: the next sync reads the program states.
    nginx.reload(&config(port, &supervisord, "1m"));
    assert!(
        eventually(5, || nginx.backend_statuses() == [Status::Up]),
        "{:?}\n{}",
        nginx.backend_statuses(),
        nginx.error_log()
    );
    supervisord.wait_for_reads(2);
    assert_eq!(over_limit_lines(&nginx).len(), 1);
    assert_eq!(nginx.get("/").status, 200);

    // Lowered again after it worked: reported again, once.
    nginx.reload(&config(port, &supervisord, SMALL_LIMIT));
    assert!(
        eventually(10, || over_limit_lines(&nginx).len() == 2),
        "{}",
        nginx.error_log()
    );
    wait_for_syncs(&supervisord, 10);
    let lines = over_limit_lines(&nginx);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    nginx.assert_clean_log();
}
