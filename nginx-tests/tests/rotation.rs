//! Example #2 of the 2010 module on a stock nginx with two workers: `supervisord none` and the
//! control endpoints take real backends in and out of rotation for every worker.

use std::collections::BTreeSet;

use nginx_tests::{
    backends_by_worker, eventually, free_port, request, scaled, spawn_requests, Backend, Config,
    Gate, Nginx, Server, Upstream,
};

struct Setup {
    nginx: Nginx,
    ports: Vec<u16>,
    gate: Gate,
    _backends: Vec<Backend>,
}

/// Example #2 (three servers, the third `down`), with `upstream_extra` (directives) inside the
/// upstream.
fn example_two(name: &str, upstream_extra: &[&str]) -> Setup {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    // Requests for `/gated` stay in flight until the test opens the gate.
    let gate = Gate::new(name);
    let gate_path = gate.path.to_str().unwrap().to_string();
    let backends = ports
        .iter()
        .map(|&port| Backend::start_with_args(port, &["--gate", &gate_path]))
        .collect();
    let upstream = Upstream::new("backend")
        .servers(&ports[..2])
        .server(format!("127.0.0.1:{} down", ports[2]))
        .supervisord("none");
    let upstream = upstream_extra
        .iter()
        .fold(upstream, |upstream, line| upstream.directive(line));
    let nginx = Nginx::start(
        name,
        &Config::new().workers(2).upstream(upstream).server(
            Server::new()
                .reuseport()
                .directive("add_header X-Worker $pid always")
                .location("/", "proxy_pass http://backend;")
                .location(
                    "/_start/",
                    "allow 127.0.0.1; deny all; supervisord_start backend;",
                )
                .location(
                    "/_stop/",
                    "allow 127.0.0.1; deny all; supervisord_stop backend;",
                ),
        ),
    );
    Setup {
        nginx,
        ports,
        gate,
        _backends: backends,
    }
}

const INHERIT: &str = "supervisord_inherit_backend_status";

fn names(ports: &[u16]) -> BTreeSet<String> {
    ports.iter().map(|port| format!("backend {port}")).collect()
}

/// Every worker answered, and every worker used exactly `expected`.
fn assert_every_worker_uses(setup: &Setup, expected: &[u16]) {
    let seen = backends_by_worker(setup.nginx.port, "/", 80);
    let workers: BTreeSet<u32> = setup.nginx.worker_pids().into_iter().collect();
    assert_eq!(
        seen.keys().copied().collect::<BTreeSet<_>>(),
        workers,
        "not every worker answered: {seen:?}"
    );
    for (worker, backends) in &seen {
        assert_eq!(backends, &names(expected), "worker {worker}");
    }
}

#[test]
fn example_two_moves_servers_in_and_out_of_rotation() {
    let setup = example_two("example-two", &[INHERIT]);
    let [p0, p1, p2] = [setup.ports[0], setup.ports[1], setup.ports[2]];
    assert_every_worker_uses(&setup, &[p0, p1]);

    let reply = setup.nginx.get("/_start/2");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.body,
        format!("start: upstream \"backend\" backend 2 (127.0.0.1:{p2}): down -> up, 0 in flight, 0 held\n")
    );
    assert_every_worker_uses(&setup, &[p0, p1, p2]);

    let reply = setup.nginx.get("/_stop/0");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.body.contains("backend 0 (127.0.0.1:"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("up -> down"), "{}", reply.body);
    assert_every_worker_uses(&setup, &[p1, p2]);

    assert!(
        setup
            .nginx
            .error_log()
            .contains("supervisord: upstream \"backend\" backend 0"),
        "status changes are logged"
    );
}

#[test]
fn without_inherit_every_backend_starts_down_and_none_never_starts_one() {
    let setup = example_two("no-inherit", &[]);
    let started = std::time::Instant::now();
    let response = setup.nginx.get("/");
    assert_eq!(response.status, 502, "{response:?}");
    assert!(
        started.elapsed() < scaled(std::time::Duration::from_secs(2)),
        "502 must come at once, not after a hold"
    );
    assert!(setup.nginx.error_log().contains("no live upstreams"));
    // Nothing was started behind the operator's back: every worker still answers 502.
    let seen = backends_by_worker(setup.nginx.port, "/", 20);
    assert!(
        seen.len() == 2
            && seen
                .values()
                .all(|backends| backends.iter().eq(["status 502"].iter())),
        "{seen:?}"
    );

    assert_eq!(setup.nginx.get("/_start/1").status, 200);
    assert_every_worker_uses(&setup, &[setup.ports[1]]);
}

#[test]
fn any_picks_the_first_backend_the_command_changes() {
    let setup = example_two("any", &[INHERIT]);
    let reply = setup.nginx.get("/_start/any");
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains("backend 2 "), "{}", reply.body);
    let reply = setup.nginx.get("/_start/any");
    assert_eq!(reply.status, 409, "all up: nothing to start");
    assert_eq!(
        reply.body,
        "start any: no backend of upstream \"backend\" is down\n"
    );
    for expected in ["backend 0 ", "backend 1 ", "backend 2 "] {
        let reply = setup.nginx.get("/_stop/any");
        assert_eq!(reply.status, 200);
        assert!(reply.body.contains(expected), "{}", reply.body);
    }
    assert_eq!(setup.nginx.get("/_stop/any").status, 409);
    assert_eq!(setup.nginx.get("/").status, 502);
}

#[test]
fn repeating_a_command_is_harmless() {
    let setup = example_two("repeat", &[INHERIT]);
    let reply = setup.nginx.get("/_start/0");
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains("already up"), "{}", reply.body);
    let reply = setup.nginx.get("/_stop/2");
    assert!(reply.body.contains("already down"), "{}", reply.body);
    assert_every_worker_uses(&setup, &[setup.ports[0], setup.ports[1]]);
}

#[test]
fn junk_uris_get_404_and_change_nothing() {
    let setup = example_two("junk", &[INHERIT]);
    for path in [
        "/_start/-1",
        "/_start/1x",
        "/_start/99999999999999999999",
        "/_start/",
        "/_start/3",
        "/_stop/3",
        "/_stop/ANY",
        "/_stop/1%20",
        "/_stop/0.0",
    ] {
        let reply = setup.nginx.get(path);
        assert_eq!(reply.status, 404, "{path}: {reply:?}");
        assert!(
            reply
                .body
                .contains("upstream \"backend\" has backends 0 to 2 and \"any\""),
            "{path}: {}",
            reply.body
        );
    }
    assert_every_worker_uses(&setup, &[setup.ports[0], setup.ports[1]]);
}

#[test]
fn only_get_and_head_are_allowed() {
    let setup = example_two("methods", &[INHERIT]);
    for method in ["POST", "PUT", "DELETE"] {
        let reply = request(setup.nginx.port, method, "/_stop/0");
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("Allow"), Some("GET, HEAD"));
    }
    assert_every_worker_uses(&setup, &[setup.ports[0], setup.ports[1]]);

    let reply = request(setup.nginx.port, "HEAD", "/_stop/0");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "", "HEAD has no body");
    assert!(
        reply
            .header("Content-Length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 0
    );
    assert_every_worker_uses(&setup, &[setup.ports[1]]);
}

#[test]
fn access_rules_apply_to_control_locations() {
    let ports = [free_port(), free_port()];
    let _backends: Vec<Backend> = ports.iter().map(|&port| Backend::start(port)).collect();
    let nginx = Nginx::start(
        "denied",
        &Config::new()
            .workers(2)
            .upstream(
                Upstream::new("backend")
                    .servers(&ports)
                    .supervisord("none")
                    .inherit_backend_status(),
            )
            .server(
                Server::new()
                    .location("/", "proxy_pass http://backend;")
                    .location("/_stop/", "deny all; supervisord_stop backend;"),
            ),
    );
    assert_eq!(nginx.get("/_stop/0").status, 403);
    let backends: BTreeSet<String> = (0..6)
        .map(|_| nginx.get("/").body.trim().to_string())
        .collect();
    assert_eq!(backends, names(&ports), "a denied stop changed nothing");
}

#[test]
fn in_flight_requests_are_counted_per_backend() {
    let setup = example_two("in-flight", &[INHERIT]);
    // Only backend 0 takes requests, so the slow ones are all in flight there.
    assert_eq!(setup.nginx.get("/_stop/1").status, 200);
    let slow = spawn_requests(setup.nginx.port, 3, "/gated");
    assert!(
        eventually(5, || setup
            .nginx
            .get("/_start/0")
            .body
            .ends_with("already up, 3 in flight, 0 held\n")),
        "{}",
        setup.nginx.get("/_start/0").body
    );
    setup.gate.open();
    for handle in slow {
        assert_eq!(handle.join().unwrap().status, 200);
    }
    let reply = setup.nginx.get("/_start/0");
    assert!(
        reply.body.ends_with("already up, 0 in flight, 0 held\n"),
        "{}",
        reply.body
    );
}
