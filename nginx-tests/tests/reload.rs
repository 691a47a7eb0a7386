//! Statuses live in shared memory and survive `nginx -s reload` while the upstream's server
//! list is unchanged; a changed server list starts from its configured statuses again.

use std::collections::BTreeSet;

use nginx_tests::{backends_by_worker, free_port, Backend, Config, Nginx, Server, Upstream};

fn config(ports: &[u16]) -> Config {
    Config::new()
        .workers(2)
        .upstream(
            Upstream::new("backend")
                .servers(ports)
                .supervisord("none")
                .inherit_backend_status(),
        )
        .server(
            Server::new()
                .reuseport()
                .directive("add_header X-Worker $pid always")
                .location("/", "proxy_pass http://backend;")
                .location("/_stop/", "supervisord_stop backend;"),
        )
}

fn used(nginx: &Nginx) -> BTreeSet<String> {
    backends_by_worker(nginx.port, "/", 40)
        .into_values()
        .flatten()
        .collect()
}

#[test]
fn statuses_survive_reload_while_servers_are_unchanged() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let _backends: Vec<Backend> = ports.iter().map(|&port| Backend::start(port)).collect();
    let nginx = Nginx::start("reload", &config(&ports));
    assert_eq!(nginx.get("/_stop/0").status, 200);
    let expected: BTreeSet<String> = ports[1..].iter().map(|p| format!("backend {p}")).collect();
    assert_eq!(used(&nginx), expected);

    nginx.reload(&config(&ports));
    assert_eq!(
        used(&nginx),
        expected,
        "the stopped backend stays out after reload"
    );
    assert!(nginx.get("/_stop/0").body.contains("already down"));

    // A changed server list is a new upstream: configured statuses again.
    let fewer = &ports[..2];
    nginx.reload(&config(fewer));
    let all: BTreeSet<String> = fewer.iter().map(|p| format!("backend {p}")).collect();
    assert_eq!(used(&nginx), all);
}
