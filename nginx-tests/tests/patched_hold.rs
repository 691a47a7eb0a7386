//! A request held in its balancer's peer.init (nginx patched with init_busy) lives on after its
//! hold: its hold deadline must end with the hold. It once stayed armed, and a request resumed
//! in time whose backend then took longer than `supervisord_hold_timeout` to answer was
//! answered 503 in the middle of its upstream exchange. Run by `make patched-test`.

use nginx_tests::patched;
use nginx_tests::supervisord::{Program, Supervisord};
use nginx_tests::{free_port, request, Config, Nginx, Server, Upstream};

#[test]
#[ignore = "needs the patched nginx (make patched-test)"]
fn a_request_held_in_peer_init_outlives_its_hold_deadline() {
    patched::require();
    for (name, balancer) in [("deadline-fair", "fair;"), ("deadline-rr", "")] {
        let port = free_port();
        let supervisord = Supervisord::start(
            name,
            &[Program::backend_with(
                "backend0",
                port,
                0,
                "--listen-after 300",
            )],
            "",
        );
        let mut upstream = Upstream::new("backend")
            .servers(&[port])
            .supervisord(supervisord.address())
            .directive("supervisord_hold_timeout 1s");
        if !balancer.is_empty() {
            upstream = upstream.raw(balancer);
        }
        let mut config = Config::new().workers(2).upstream(upstream).server(
            Server::new()
                .reuseport()
                .location("/", "proxy_pass http://backend;\nproxy_read_timeout 30s;"),
        );
        if !balancer.is_empty() {
            config = config.main_raw(patched::load_module_beside(
                "ngx_http_upstream_fair_module.so",
            ));
        }
        let nginx = Nginx::start(name, &config);
        // Held about 0.3 s (the program listens after 300 ms), then 2 s at the backend: the
        // answer comes well after the 1 s hold deadline.
        let response = request(nginx.port, "GET", "/slow/2000");
        assert_eq!(response.status, 200, "{balancer:?}: {response:?}");
        assert_eq!(response.body.trim(), format!("backend {port}"));
        assert_eq!(supervisord.spawns("backend0"), 1);
        let log = nginx.error_log();
        assert!(
            !log.contains("request not held longer"),
            "{balancer:?}: a hold deadline fired after the hold:\n{log}"
        );
        nginx.assert_clean_log();
    }
}
