//! The request path of issue 8: every answer the module makes itself is the one answer of its
//! request (the body is read away, never taken for the next request, never forwarded); the
//! hold limit ends the request through nginx's error path (`error_page` applies); clients that
//! leave are let go at once; the gate runs after `try_files`; subrequests are not held, and
//! say so.

use std::time::{Duration, Instant};

use nginx_tests::raw::{curl_h2, H2Connection, RawConnection};
use nginx_tests::status::Status;
use nginx_tests::supervisord::{Program, Supervisord};
use nginx_tests::{
    eventually, free_port, nginx_binary, scaled, Config, Nginx, Server, SupervisordStatus, Upstream,
};

/// A request that would stop backend 0 if nginx read it from a body.
const SMUGGLED: &str = "GET /_stop/0 HTTP/1.1\r\nHost: x\r\n\r\n";

fn managed(name: &str, port: u16, supervisord: &Supervisord, extra: &[&str]) -> Upstream {
    let upstream = Upstream::new(name)
        .servers(&[port])
        .supervisord(supervisord.address())
        .sync_interval("off");
    extra
        .iter()
        .fold(upstream, |upstream, line| upstream.directive(line))
}

fn status_of_backend0(nginx: &Nginx) -> Status {
    nginx
        .supervisord_status("/_status")
        .upstream("backend")
        .backends[0]
        .status
}

/// How a request with a body is framed on the wire.
#[derive(Clone, Copy, Debug)]
enum Framing {
    Http10KeepAlive,
    ContentLength,
    Chunked,
    ExpectContinue,
}

const FRAMINGS: [Framing; 4] = [
    Framing::Http10KeepAlive,
    Framing::ContentLength,
    Framing::Chunked,
    Framing::ExpectContinue,
];

impl Framing {
    fn version(self) -> &'static str {
        match self {
            Framing::Http10KeepAlive => "HTTP/1.0",
            _ => "HTTP/1.1",
        }
    }

    /// The head (with its blank line) and the body of `method path` carrying `body`.
    fn request(self, method: &str, path: &str, body: &str) -> (String, String) {
        let mut head = format!("{method} {path} {}\r\nHost: localhost\r\n", self.version());
        let wire_body = match self {
            Framing::Chunked => {
                head.push_str("Transfer-Encoding: chunked\r\n");
                format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
            }
            _ => {
                head.push_str(&format!("Content-Length: {}\r\n", body.len()));
                body.to_string()
            }
        };
        match self {
            Framing::Http10KeepAlive => head.push_str("Connection: keep-alive\r\n"),
            Framing::ExpectContinue => head.push_str("Expect: 100-continue\r\n"),
            _ => {}
        }
        head.push_str("\r\n");
        (head, wire_body)
    }

    fn follow_up(self) -> String {
        let keep_alive = match self {
            Framing::Http10KeepAlive => "Connection: keep-alive\r\n",
            _ => "",
        };
        format!(
            "GET /_status {}\r\nHost: localhost\r\n{keep_alive}\r\n",
            self.version()
        )
    }
}

/// On one keep-alive connection: `method path` with [`SMUGGLED`] as its body, framed as
/// `framing`, then a GET of the status. Asserts that the first request gets exactly one answer,
/// `expected`, the second the status, and nothing else comes; returns the first answer.
fn one_answer_then_usable(
    nginx: &Nginx,
    method: &str,
    path: &str,
    framing: Framing,
    expected: u16,
) -> nginx_tests::Response {
    let what = format!("{method} {path} {framing:?}");
    let mut connection = RawConnection::open(nginx.port);
    let (head, body) = framing.request(method, path, SMUGGLED);
    let first = match framing {
        Framing::ExpectContinue => {
            // The client waits for "100 Continue" or a final answer before sending its body;
            // it may send the body anyway once answered (RFC 9110 10.1.1): it must be read
            // away, not taken for a request.
            connection.send(head.as_bytes());
            let first = connection.next_response(Duration::from_secs(15));
            connection.send(body.as_bytes());
            first
        }
        _ => {
            connection.send(format!("{head}{body}").as_bytes());
            connection.next_response(Duration::from_secs(15))
        }
    };
    let first = first.unwrap_or_else(|| panic!("{what}: no answer"));
    // A failed start is answered 502; a request that then finds the program waiting out its
    // start backoff gets 503 with Retry-After at once: both are the module's own answers.
    let backing_off =
        expected == 502 && first.status == 503 && first.header("Retry-After").is_some();
    assert!(first.status == expected || backing_off, "{what}: {first:?}");
    connection.send(framing.follow_up().as_bytes());
    let second = connection
        .next_response(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{what}: the connection did not answer a second request"));
    assert_eq!(second.status, 200, "{what}: second answer {second:?}");
    SupervisordStatus::parse(&second.body)
        .unwrap_or_else(|error| panic!("{what}: second answer is not the status: {error}"));
    let extra = connection.rest_until_closed();
    assert!(
        extra.is_empty(),
        "{what}: nginx sent more than one answer per request: {:?}",
        String::from_utf8_lossy(&extra)
    );
    first
}

/// Every answer the module makes itself, for every framing of a body, over HTTP/1.0, 1.1 and
/// HTTP/2: one answer per request, the body never read as a request (backend 0 stays up),
/// the connection usable afterwards.
#[test]
fn the_modules_own_answers_read_the_body_away() {
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let supervisord = Supervisord::start(
        "smuggle",
        &[
            Program::backend("backend0", ports[0], 0),
            Program::command("never0", "/bin/sleep 3600", 0),
            Program::command("full0", "/bin/sleep 3600", 0),
            Program::command("fails0", "/bin/false", 1),
        ],
        "",
    );
    let config = Config::new()
        .workers(2)
        // One supervisord: its call time-out is one setting for all four upstreams.
        .upstream(managed(
            "backend",
            ports[0],
            &supervisord,
            &["supervisord_timeout 300s"],
        ))
        .upstream(managed(
            "never",
            ports[1],
            &supervisord,
            // Never listens: never taken as up (after supervisord_timeout) during the test.
            &["supervisord_hold_timeout 1s", "supervisord_timeout 300s"],
        ))
        .upstream(managed(
            "full",
            ports[2],
            &supervisord,
            &["supervisord_hold_limit 0", "supervisord_timeout 300s"],
        ))
        .upstream(managed(
            "fails",
            ports[3],
            &supervisord,
            &["supervisord_timeout 300s"],
        ));
    let locations = |server: Server| {
        server
            .location("/_start/", "supervisord_start backend;")
            .location("/_stop/", "supervisord_stop backend;")
            .location("= /_status", "supervisord_status;")
            .location("/never/", "proxy_pass http://never;")
            .location("/full/", "proxy_pass http://full;")
            .location("/fails/", "proxy_pass http://fails;")
    };
    let h2_port = free_port();
    let config = config
        .server(locations(Server::new()))
        .server(locations(http2_server(h2_port)));
    let nginx = Nginx::start("smuggle", &config);
    assert_eq!(nginx.get("/_start/0").status, 200);
    assert!(eventually(5, || status_of_backend0(&nginx) == Status::Up));

    let cases: [(&str, &str, u16); 6] = [
        ("POST", "/_start/0", 405),
        ("PUT", "/_stop/0", 405),
        ("POST", "/_status", 405),
        ("POST", "/full/", 503),
        ("POST", "/never/", 503),
        ("POST", "/fails/", 502),
    ];
    for (method, path, expected) in cases {
        for framing in FRAMINGS {
            let answer = one_answer_then_usable(&nginx, method, path, framing, expected);
            match expected {
                405 => assert_eq!(answer.header("Allow"), Some("GET, HEAD"), "{path}"),
                503 => assert_eq!(answer.header("Retry-After"), Some("1"), "{path}"),
                _ => {}
            }
        }
    }
    // An allowed method with a body: answered, the body dropped.
    for framing in FRAMINGS {
        let answer = one_answer_then_usable(&nginx, "GET", "/_start/0", framing, 200);
        assert!(answer.body.contains("already up"), "{answer:?}");
    }
    // HTTP/2: each answer on its stream, the connection goes on. (Written by hand: curl 7.88
    // fails a transfer answered before its body was sent, with nginx's own 405 as well.)
    for (method, path, expected) in cases {
        let mut h2 = H2Connection::open(h2_port);
        h2.request(1, method, path, Some(SMUGGLED.as_bytes()));
        h2.get(3, "/_status");
        let mut statuses = h2.statuses(2, Duration::from_secs(10));
        statuses.sort();
        assert_eq!(
            statuses,
            [(1, expected), (3, 200)],
            "HTTP/2 {method} {path}"
        );
        h2.close();
    }
    // And a real client's HTTP/2, for a request held and timed out.
    let url = format!("http://127.0.0.1:{h2_port}/never/");
    assert_eq!(curl_h2(&["--head", &url]), 503);

    assert_eq!(status_of_backend0(&nginx), Status::Up);
    let log = supervisord.log();
    assert_eq!(log.matches("spawned: 'backend0'").count(), 1, "{log}");
    assert_eq!(log.matches("stopped: backend0").count(), 0, "{log}");
    let errors = nginx.error_log();
    assert_eq!(errors.matches("by stop").count(), 0, "{errors}");
    // One warning per refused or timed-out request (4 framings, HTTP/2, curl), none else.
    assert_eq!(errors.matches("requests held already").count(), 5);
    assert_eq!(errors.matches("no backend up within").count(), 6);
    assert!(!errors.contains("client sent invalid"), "{errors}");
}

/// A server on `port` that speaks HTTP/2 without TLS (on nginx 1.22 such a port speaks nothing
/// else, so the tests' HTTP/1 requests go to a twin server on the test port).
fn http2_server(port: u16) -> Server {
    Server::on(port).listen_options("http2")
}

/// The first defect: refused requests got 503 and then ran the location's proxy_pass
/// (`header already sent`, a 502 in the access log, the connection closed), and a refused POST
/// whose body was still arriving reached the backend once it came up.
#[test]
fn at_the_hold_limit_503_ends_the_request() {
    let ports = [free_port(), free_port()];
    let record = std::env::temp_dir().join(format!("ngx-supervisord-record-{}", ports[1]));
    let _ = std::fs::remove_file(&record);
    let supervisord = Supervisord::start(
        "overflow",
        &[
            Program::backend_with("backend0", ports[0], 0, "--listen-after 1500"),
            Program::backend_with(
                "paged0",
                ports[1],
                0,
                &format!("--listen-after 1500 --record {}", record.display()),
            ),
        ],
        "",
    );
    let config = Config::new()
        .workers(2)
        .http_raw("log_format statuses $status;")
        .upstream(managed(
            "backend",
            ports[0],
            &supervisord,
            &["supervisord_hold_limit 5"],
        ))
        .upstream(managed(
            "paged",
            ports[1],
            &supervisord,
            &["supervisord_hold_limit 5"],
        ))
        .server(
            Server::new()
                .raw("access_log logs/access.log statuses;")
                .location("= /_status", "supervisord_status;")
                .location("/", "proxy_pass http://backend;")
                .location("/paged/", "proxy_pass http://paged;\nerror_page 503 @busy;")
                .location("@busy", "return 503 \"busy, try again\\n\";"),
        );
    let nginx = Nginx::start("overflow", &config);
    // 20 keep-alive clients at once: 5 are held, 15 refused at once; every connection then
    // answers a second request.
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let port = nginx.port;
            std::thread::spawn(move || {
                let mut connection = RawConnection::open(port);
                connection.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
                let started = Instant::now();
                let first = connection.next_response(Duration::from_secs(15));
                let waited = started.elapsed();
                connection.send(b"GET /_status HTTP/1.1\r\nHost: localhost\r\n\r\n");
                let second = connection.next_response(Duration::from_secs(5));
                (first, waited, second)
            })
        })
        .collect();
    let answers: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let with_status = |status: u16| {
        answers
            .iter()
            .filter(|(first, _, _)| first.as_ref().is_some_and(|r| r.status == status))
            .count()
    };
    assert_eq!((with_status(503), with_status(200)), (15, 5), "{answers:?}");
    for (first, waited, second) in &answers {
        let first = first.as_ref().unwrap();
        if first.status == 503 {
            assert_eq!(first.header("Retry-After"), Some("1"));
            assert!(
                *waited < scaled(Duration::from_millis(1000)),
                "refused at once"
            );
        }
        let second = second.as_ref().expect("the connection stays usable");
        assert_eq!(second.status, 200);
    }

    // A POST refused while its body is still arriving: answered at once through error_page,
    // the rest of the body read away, the connection usable, and nothing of it reaches the
    // backend once that is up.
    let holders: Vec<_> = (0..5)
        .map(|_| {
            let port = nginx.port;
            std::thread::spawn(move || nginx_tests::request(port, "GET", "/paged/"))
        })
        .collect();
    assert!(eventually(5, || nginx.held("paged") == 5));
    let mut connection = RawConnection::open(nginx.port);
    connection
        .send(b"POST /paged/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 20\r\n\r\n0123456789");
    let refused = connection
        .next_response(Duration::from_secs(1))
        .expect("refused at once, before the body is complete");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.body, "busy, try again\n", "error_page applies");
    assert_eq!(refused.header("Retry-After"), Some("1"));
    connection.send(b"abcdefghij");
    connection.send(b"GET /_status HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let next = connection.next_response(Duration::from_secs(5)).unwrap();
    assert_eq!(next.status, 200, "{next:?}");
    for holder in holders {
        assert_eq!(holder.join().unwrap().status, 200);
    }
    // One more request after everything else: once the backend has it, a POST sent on
    // would be there too.
    assert_eq!(nginx.get("/paged/").status, 200);
    let received = std::fs::read_to_string(&record).unwrap_or_default();
    assert_eq!(received.matches("GET /paged/ 0").count(), 6, "{received}");
    assert_eq!(received.matches("POST").count(), 0, "{received}");
    let access = std::fs::read_to_string(nginx.prefix.dir.join("logs/access.log")).unwrap();
    assert_eq!(
        access.lines().filter(|l| *l == "502").count(),
        0,
        "{access}"
    );
    assert_eq!(
        access.lines().filter(|l| *l == "503").count(),
        16,
        "{access}"
    );
    assert_eq!(
        nginx.error_log().matches("requests held already").count(),
        16
    );
    let _ = std::fs::remove_file(&record);
}

/// The gate sees a request after `try_files`: a request answered by try_files never starts
/// anything nor waits; one that falls back to the proxied location does.
#[test]
fn try_files_runs_before_the_gate() {
    let port = free_port();
    let supervisord = Supervisord::with_backends("tryfiles", &[port], "--listen-after 300");
    let root = std::env::temp_dir().join(format!("ngx-supervisord-root-{port}"));
    std::fs::create_dir_all(root.join("files")).unwrap();
    std::fs::write(root.join("files/present.txt"), "a file\n").unwrap();
    let config = Config::new()
        .workers(2)
        .upstream(managed(
            "backend",
            port,
            &supervisord,
            &["supervisord_hold_timeout 30s"],
        ))
        .server(
            Server::new()
                .directive(format!("root {}", root.display()))
                .location("= /_status", "supervisord_status;")
                .location(
                    "/strict/",
                    "try_files $uri =404;\nproxy_pass http://backend;",
                )
                .location("/files/", "try_files $uri @backend;")
                .location("@backend", "proxy_pass http://backend;"),
        );
    let nginx = Nginx::start("tryfiles", &config);
    let started = Instant::now();
    assert_eq!(nginx.get("/strict/missing").status, 404);
    assert_eq!(nginx.get("/files/present.txt").body, "a file\n");
    assert!(
        started.elapsed() < scaled(Duration::from_millis(500)),
        "nothing waited"
    );
    // A start would show at once: the gate takes DOWN -> STARTING_UP in the shared status as
    // it holds the request, before anything is answered.
    assert_eq!(status_of_backend0(&nginx), Status::Down);
    assert_eq!(supervisord.spawns("backend0"), 0);
    // A missing file falls back to the proxied named location: held, started, served.
    let response = nginx.get("/files/missing");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body.trim(), format!("backend {port}"));
    assert_eq!(supervisord.spawns("backend0"), 1);
    let _ = std::fs::remove_dir_all(&root);
}

/// A closed client stops counting against the hold limit at once, whether it closed before
/// nginx read its request or while the request was held; over HTTP/1.1 and HTTP/2 (a reset
/// stream, then the whole connection).
#[test]
fn clients_that_leave_stop_counting_at_once() {
    let port = free_port();
    // Never listens, and the hold timeout is far: only the clients' leaving releases requests.
    let supervisord = Supervisord::start(
        "leave",
        &[Program::command("backend0", "/bin/sleep 3600", 0)],
        "",
    );
    let h2_port = free_port();
    let config = Config::new()
        .workers(2)
        .upstream(managed(
            "backend",
            port,
            &supervisord,
            &["supervisord_hold_timeout 60s", "supervisord_timeout 120s"],
        ))
        .server(
            Server::new()
                .location("= /_status", "supervisord_status;")
                .location("/", "proxy_pass http://backend;"),
        )
        .server(http2_server(h2_port).location("/", "proxy_pass http://backend;"));
    let nginx = Nginx::start("leave", &config);
    let until_none_held = || {
        let started = Instant::now();
        while started.elapsed() < scaled(Duration::from_secs(10)) {
            if nginx.held("backend") == 0 {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("{} still held after 10 s", nginx.held("backend"));
    };

    // Closed right after sending: the end of file comes with the request.
    for _ in 0..10 {
        let mut connection = RawConnection::open(nginx.port);
        connection.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        connection.close();
    }
    let gone_before = until_none_held();

    // Closed while held.
    let connections: Vec<_> = (0..10)
        .map(|_| {
            let mut connection = RawConnection::open(nginx.port);
            connection.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
            connection
        })
        .collect();
    assert!(eventually(5, || nginx.held("backend") == 10));
    connections.into_iter().for_each(RawConnection::close);
    let gone_while_held = until_none_held();

    // HTTP/2: two held streams; one reset, then the connection closed.
    let mut h2 = H2Connection::open(h2_port);
    h2.get(1, "/");
    h2.get(3, "/");
    assert!(eventually(5, || nginx.held("backend") == 2));
    let reset_at = Instant::now();
    h2.reset(1);
    assert!(eventually(5, || nginx.held("backend") == 1));
    let gone_reset = reset_at.elapsed();
    h2.close();
    let gone_h2 = until_none_held();

    eprintln!(
        "released after: closed before held {gone_before:?}, while held {gone_while_held:?}, \
         h2 reset {gone_reset:?}, h2 closed {gone_h2:?}"
    );
    for elapsed in [gone_before, gone_while_held, gone_reset, gone_h2] {
        assert!(elapsed < scaled(Duration::from_millis(500)), "{elapsed:?}");
    }
    // The requests did reach the gate: they started the program (once).
    assert!(eventually(5, || supervisord
        .log()
        .contains("spawned: 'backend0'")));
    assert_eq!(supervisord.spawns("backend0"), 1);
}

/// HTTP/2 held streams beyond the limit: refused on their stream, the others held.
#[test]
fn http2_streams_over_the_limit_are_refused_on_their_stream() {
    let port = free_port();
    let supervisord = Supervisord::start(
        "h2limit",
        &[Program::command("backend0", "/bin/sleep 3600", 0)],
        "",
    );
    let h2_port = free_port();
    // Long enough that the two held streams are still held when the status is read.
    let hold_timeout = format!(
        "supervisord_hold_timeout {}ms",
        scaled(Duration::from_secs(2)).as_millis()
    );
    let config = Config::new()
        .workers(2)
        .upstream(managed(
            "backend",
            port,
            &supervisord,
            &[
                "supervisord_hold_limit 2",
                &hold_timeout,
                "supervisord_timeout 300s",
            ],
        ))
        .server(
            Server::new()
                .location("= /_status", "supervisord_status;")
                .location("/", "proxy_pass http://backend;"),
        )
        .server(http2_server(h2_port).location("/", "proxy_pass http://backend;"));
    let nginx = Nginx::start("h2limit", &config);
    let mut h2 = H2Connection::open(h2_port);
    for stream in [1, 3, 5, 7] {
        h2.get(stream, "/");
    }
    let refused = h2.statuses(2, Duration::from_secs(1));
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused.iter().all(|(_, status)| *status == 503));
    assert_eq!(nginx.held("backend"), 2);
    let timed_out = h2.statuses(2, Duration::from_secs(5));
    assert_eq!(timed_out.len(), 2, "{timed_out:?}");
    assert!(timed_out.iter().all(|(_, status)| *status == 503));
    h2.close();
    assert_eq!(nginx.held("backend"), 0);
}

fn subrequest_setup(name: &str, port: u16) -> (Supervisord, std::path::PathBuf) {
    let supervisord = Supervisord::with_backends(name, &[port], "--listen-after 300");
    let root = std::env::temp_dir().join(format!("ngx-supervisord-{name}-{port}"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("page.html"),
        "before <!--# include virtual=\"/app/x\" --> after\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("guarded")).unwrap();
    std::fs::write(root.join("guarded/in.txt"), "in\n").unwrap();
    (supervisord, root)
}

fn subrequest_config(port: u16, supervisord: &Supervisord, root: &std::path::Path) -> Config {
    Config::new()
        .workers(2)
        .upstream(managed("backend", port, supervisord, &[]))
        .server(
            Server::new()
                .directive(format!("root {}", root.display()))
                .location("= /_status", "supervisord_status;")
                .location("= /page.html", "ssi on;")
                .location("/app/", "proxy_pass http://backend;")
                .location("/guarded/", "auth_request /app/auth;"),
        )
}

/// Subrequests are not held: with no backend up an SSI include gets 503 at once, with a line
/// in the error log that says why, and starts a backend for the requests that follow.
#[test]
fn ssi_subrequests_are_not_held_but_start_a_backend_and_say_so() {
    let port = free_port();
    let (supervisord, root) = subrequest_setup("ssi", port);
    let config = Config::new()
        .workers(2)
        .upstream(managed("backend", port, &supervisord, &[]))
        .server(
            Server::new()
                .directive(format!("root {}", root.display()))
                .location("= /_status", "supervisord_status;")
                .location("= /page.html", "ssi on;")
                .location("/app/", "proxy_pass http://backend;"),
        );
    let nginx = Nginx::start("ssi", &config);
    let started = Instant::now();
    let page = nginx.get("/page.html");
    assert!(
        started.elapsed() < scaled(Duration::from_millis(250)),
        "not held"
    );
    assert_eq!(page.status, 200);
    // SSI puts the subrequest's answer, nginx's 503 page, in place of the include.
    assert!(page.body.contains("before "), "{page:?}");
    assert!(page.body.contains("503 Service"), "{page:?}");
    assert!(!page.body.contains("backend"), "{page:?}");
    let errors = nginx.error_log();
    assert_eq!(errors.matches("subrequest not held").count(), 1, "{errors}");
    // The start it set off serves what follows.
    assert!(eventually(5, || status_of_backend0(&nginx) == Status::Up));
    let page = nginx.get("/page.html");
    assert!(page.body.contains(&format!("backend {port}\n")), "{page:?}");
    assert!(!page.body.contains("503"), "{page:?}");
    assert_eq!(supervisord.spawns("backend0"), 1);
    assert_eq!(nginx.error_log().matches("subrequest not held").count(), 1);
    let _ = std::fs::remove_dir_all(&root);
}

/// The same for `auth_request`, where nginx is built with it (Debian's is, the vendored
/// build is not): the main request gets 500 (nginx's answer to an auth subrequest's 503).
#[test]
#[cfg_attr(
    not(nginx_auth_request),
    ignore = "needs nginx with auth_request (Debian's: make distro-test)"
)]
fn auth_subrequests_are_not_held_but_start_a_backend_and_say_so() {
    let version = std::process::Command::new(nginx_binary())
        .arg("-V")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&version.stderr).contains("http_auth_request_module"),
        "this nginx has no auth_request module"
    );
    let port = free_port();
    let (supervisord, root) = subrequest_setup("auth", port);
    let nginx = Nginx::start("auth", &subrequest_config(port, &supervisord, &root));
    let started = Instant::now();
    assert_eq!(nginx.get("/guarded/in.txt").status, 500);
    assert!(
        started.elapsed() < scaled(Duration::from_millis(250)),
        "not held"
    );
    let errors = nginx.error_log();
    assert_eq!(errors.matches("subrequest not held").count(), 1, "{errors}");
    assert!(eventually(5, || status_of_backend0(&nginx) == Status::Up));
    let response = nginx.get("/guarded/in.txt");
    assert_eq!((response.status, response.body.as_str()), (200, "in\n"));
    assert_eq!(supervisord.spawns("backend0"), 1);
    let _ = std::fs::remove_dir_all(&root);
}

/// `proxy_pass` with variables naming a managed upstream: not held (README says why), `502`
/// with nginx's `no live upstreams`, nothing started; the same upstream named literally is.
#[test]
fn proxy_pass_with_variables_is_not_held_and_starts_nothing() {
    let port = free_port();
    let supervisord = Supervisord::with_backends("variable", &[port], "");
    let config = Config::new()
        .workers(2)
        .upstream(managed("backend", port, &supervisord, &[]))
        .server(
            Server::new()
                .location("= /_status", "supervisord_status;")
                .location("/var/", "set $app backend;\nproxy_pass http://$app;")
                .location("/literal/", "proxy_pass http://backend;"),
        );
    let nginx = Nginx::start("variable", &config);
    let started = Instant::now();
    assert_eq!(nginx.get("/var/").status, 502);
    assert!(
        started.elapsed() < scaled(Duration::from_millis(500)),
        "not held"
    );
    // A start would show at once in the shared status (see try_files_runs_before_the_gate).
    assert_eq!(status_of_backend0(&nginx), Status::Down);
    assert_eq!(supervisord.spawns("backend0"), 0);
    assert_eq!(nginx.error_log().matches("no live upstreams").count(), 1);
    assert_eq!(nginx.get("/literal/").status, 200);
    assert_eq!(nginx.get("/var/").status, 200, "once up, served");
    assert_eq!(supervisord.spawns("backend0"), 1);
}
