//! One typed builder for every nginx configuration of the suite.
//!
//! ```text
//! Config::new()
//!     .workers(2)
//!     .upstream(
//!         Upstream::new("backend")
//!             .servers(&ports)
//!             .supervisord("none")
//!             .inherit_backend_status(),
//!     )
//!     .server(
//!         Server::new() // listens on the test's port, 127.0.0.1:{port}
//!             .reuseport()
//!             .location("/", "proxy_pass http://backend;")
//!             .location("/_start/", "supervisord_start backend;"),
//!     )
//! ```
//!
//! Every directive is rendered on a line of its own (location bodies keep their own line
//! breaks), so a test can find the line nginx reports for it with [`line_of`].
//! `directive("x")` writes `x;`; `raw("...")` writes its text unchanged (comments, odd forms).

use std::fmt::{Display, Write as _};
use std::path::{Path, PathBuf};

use crate::module_path;

/// A whole `nginx.conf`: the module, the main context, `events {}` and `http {}`.
#[derive(Clone, Debug)]
pub struct Config {
    load_module: bool,
    /// The module's file when not [`module_path`] (another nginx build's).
    module: Option<PathBuf>,
    workers: usize,
    worker_connections: usize,
    error_log_level: String,
    main: Vec<String>,
    http: Vec<String>,
    upstreams: Vec<Upstream>,
    servers: Vec<Server>,
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

impl Config {
    /// Two workers, 1024 connections each, `error_log ... notice`, no upstream, no server.
    pub fn new() -> Self {
        Self {
            load_module: true,
            module: None,
            workers: 2,
            worker_connections: 1024,
            error_log_level: "notice".into(),
            main: Vec::new(),
            http: Vec::new(),
            upstreams: Vec::new(),
            servers: Vec::new(),
        }
    }

    /// No `load_module` line: stock (or patched) nginx on its own, e.g. to check that a
    /// core patch keeps nginx's behaviour when the module is absent.
    pub fn without_module(mut self) -> Self {
        self.load_module = false;
        self
    }

    /// Loads the module from `path` (built for another nginx than the one under test).
    pub fn module_at(mut self, path: impl Into<PathBuf>) -> Self {
        self.load_module = true;
        self.module = Some(path.into());
        self
    }

    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    pub fn worker_count(&self) -> usize {
        self.workers
    }

    /// `worker_connections`; `worker_rlimit_nofile` follows (twice that, plus 64).
    pub fn worker_connections(mut self, connections: usize) -> Self {
        self.worker_connections = connections;
        self
    }

    /// The level of the error log (`notice` unless set), e.g. `debug`.
    pub fn error_log_level(mut self, level: &str) -> Self {
        self.error_log_level = level.into();
        self
    }

    /// A line for the main context, unchanged.
    pub fn main_raw(mut self, text: impl Into<String>) -> Self {
        self.main.push(text.into());
        self
    }

    /// A line inside `http {}` (before the upstreams), unchanged.
    pub fn http_raw(mut self, text: impl Into<String>) -> Self {
        self.http.push(text.into());
        self
    }

    pub fn upstream(mut self, upstream: Upstream) -> Self {
        self.upstreams.push(upstream);
        self
    }

    pub fn server(mut self, server: Server) -> Self {
        self.servers.push(server);
        self
    }

    /// The text of `nginx.conf` for an nginx whose prefix is `dir`. `port` is the test's
    /// listening port, which every [`Server::new`] listens on; `None` when there is none (a
    /// configuration only given to `nginx -t`, whose servers use [`Server::on`]).
    pub fn render(&self, dir: &Path, port: Option<u16>) -> String {
        let dir = dir.display();
        let mut out = String::new();
        let mut line = |text: &str| {
            out.push_str(text);
            out.push('\n');
        };
        if self.load_module {
            let module = self.module.clone().unwrap_or_else(module_path);
            line(&format!("load_module {};", module.display()));
        }
        line(&format!("worker_processes {};", self.workers));
        line(&format!(
            "worker_rlimit_nofile {};",
            self.worker_connections * 2 + 64
        ));
        line(&format!(
            "error_log {dir}/logs/error.log {};",
            self.error_log_level
        ));
        line(&format!("pid {dir}/logs/nginx.pid;"));
        for text in &self.main {
            line(text);
        }
        line(&format!(
            "events {{ worker_connections {}; }}",
            self.worker_connections
        ));
        line("http {");
        // HTTP_PREAMBLE lines.
        line("    access_log off;");
        for temp in TEMP_PATHS {
            let folder = if temp == "client_body" {
                "client_body".to_string()
            } else {
                format!("{temp}_temp")
            };
            line(&format!("    {temp}_temp_path {dir}/{folder};"));
        }
        for text in &self.http {
            line(&indent(text, 1));
        }
        for upstream in &self.upstreams {
            line(&upstream.render());
        }
        for server in &self.servers {
            line(&server.render(port));
        }
        line("}");
        out
    }
}

const TEMP_PATHS: [&str; 5] = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"];

/// The lines the harness writes at the top of `http {}`: `access_log` and the temp paths.
const HTTP_PREAMBLE: usize = 1 + TEMP_PATHS.len();

/// `text` with each of its lines indented by `depth` levels.
fn indent(text: &str, depth: usize) -> String {
    let pad = "    ".repeat(depth);
    text.lines()
        .map(|line| format!("{pad}{line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` as a directive: with its `;` (added unless already there).
fn directive(text: &str) -> String {
    let text = text.trim();
    if text.ends_with(';') {
        text.to_string()
    } else {
        format!("{text};")
    }
}

/// An `upstream name { ... }` block; its lines in the order given.
#[derive(Clone, Debug)]
pub struct Upstream {
    name: String,
    lines: Vec<String>,
}

impl Upstream {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            lines: Vec::new(),
        }
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `server ADDRESS;` (`address` may carry parameters: `"127.0.0.1:8000 down"`).
    pub fn server(self, address: impl Display) -> Self {
        self.directive(format!("server {address}"))
    }

    /// `server 127.0.0.1:PORT;` for each port.
    pub fn servers(self, ports: &[u16]) -> Self {
        self.servers_on("127.0.0.1", ports)
    }

    /// `server HOST:PORT;` for each port (`host` another loopback address standing for another
    /// machine, e.g. 127.0.0.2).
    pub fn servers_on(self, host: &str, ports: &[u16]) -> Self {
        ports.iter().fold(self, |upstream, port| {
            upstream.server(format!("{host}:{port}"))
        })
    }

    /// `supervisord ADDRESS [user:pass];`, e.g. `"none"`, `"unix:/run/s.sock"`.
    pub fn supervisord(self, address: impl Display) -> Self {
        self.directive(format!("supervisord {address}"))
    }

    /// `supervisord_inherit_backend_status;`
    pub fn inherit_backend_status(self) -> Self {
        self.directive("supervisord_inherit_backend_status")
    }

    /// `supervisord_sync_interval VALUE;`, e.g. `"off"`, `"1s"`.
    pub fn sync_interval(self, value: &str) -> Self {
        self.directive(format!("supervisord_sync_interval {value}"))
    }

    /// Any other directive: `text;`.
    pub fn directive(mut self, text: impl AsRef<str>) -> Self {
        self.lines.push(directive(text.as_ref()));
        self
    }

    /// Each of `texts` as a directive, in order.
    pub fn directives(self, texts: &[&str]) -> Self {
        texts
            .iter()
            .fold(self, |upstream, text| upstream.directive(text))
    }

    /// A line, unchanged.
    pub fn raw(mut self, text: impl Into<String>) -> Self {
        self.lines.push(text.into());
        self
    }

    fn render(&self) -> String {
        let mut out = format!("    upstream {} {{\n", self.name);
        for line in &self.lines {
            let _ = writeln!(out, "{}", indent(line, 2));
        }
        out.push_str("    }");
        out
    }
}

/// Where a server listens.
#[derive(Clone, Debug)]
enum Listen {
    /// 127.0.0.1 on the port of the test's nginx.
    TestPort,
    Port(u16),
}

/// A `server { ... }` block listening on 127.0.0.1.
#[derive(Clone, Debug)]
pub struct Server {
    listen: Listen,
    listen_options: Vec<String>,
    lines: Vec<String>,
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

impl Server {
    /// Listens on 127.0.0.1 at the test's port (`Nginx::port`).
    pub fn new() -> Self {
        Self {
            listen: Listen::TestPort,
            listen_options: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// Listens on 127.0.0.1 at `port`.
    pub fn on(port: u16) -> Self {
        Self {
            listen: Listen::Port(port),
            ..Self::new()
        }
    }

    /// `listen ... reuseport` (every worker accepts on its own socket, so successive
    /// connections are spread over the workers).
    pub fn reuseport(self) -> Self {
        self.listen_options("reuseport")
    }

    /// More parameters of `listen`, e.g. `"backlog=16384"`.
    pub fn listen_options(mut self, options: &str) -> Self {
        self.listen_options.push(options.into());
        self
    }

    /// `text;` in the server block.
    pub fn directive(mut self, text: impl AsRef<str>) -> Self {
        self.lines.push(directive(text.as_ref()));
        self
    }

    /// A line in the server block, unchanged.
    pub fn raw(mut self, text: impl Into<String>) -> Self {
        self.lines.push(text.into());
        self
    }

    /// `location PATH { BODY }`; `path` may carry a modifier (`"= /_status"`), `body` is nginx
    /// text (`"proxy_pass http://backend;"`), each of its lines rendered on a line of its own.
    pub fn location(mut self, path: &str, body: &str) -> Self {
        let body: Vec<&str> = body.lines().map(str::trim).collect();
        self.lines.push(format!(
            "location {path} {{\n{}\n}}",
            indent(&body.join("\n"), 1)
        ));
        self
    }

    fn render(&self, port: Option<u16>) -> String {
        let port = match self.listen {
            Listen::Port(port) => port,
            Listen::TestPort => port.expect(
                "Server::new() listens on the test's port: start it with Nginx::start, \
                 or use Server::on(port)",
            ),
        };
        let mut listen = format!("listen 127.0.0.1:{port}");
        for option in &self.listen_options {
            listen.push(' ');
            listen.push_str(option);
        }
        let mut out = String::from("    server {\n");
        let _ = writeln!(out, "        {listen};");
        for line in &self.lines {
            let _ = writeln!(out, "{}", indent(line, 2));
        }
        out.push_str("    }");
        out
    }
}

/// The 1-based line number (as nginx gives it in messages) of the first line in `conf` that
/// contains `needle`, among the lines of the test's own upstreams, servers and raw lines in
/// `http {}` (not the module path or the harness's temp paths, which hold the test's name).
pub fn line_of(conf: &str, needle: &str) -> usize {
    let http = conf
        .lines()
        .position(|line| line == "http {")
        .expect("an http block");
    conf.lines()
        .enumerate()
        .skip(http + 1 + HTTP_PREAMBLE)
        .find(|(_, line)| line.contains(needle))
        .map(|(index, _)| index + 1)
        .unwrap_or_else(|| panic!("{needle:?} is not in the configuration:\n{conf}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_part() {
        let conf = Config::new()
            .workers(3)
            .worker_connections(100)
            .error_log_level("debug")
            .main_raw("# main")
            .http_raw("resolver 127.0.0.1;")
            .upstream(
                Upstream::new("backend")
                    .servers(&[8000, 8001])
                    .server("127.0.0.1:8002 down")
                    .supervisord("none")
                    .inherit_backend_status()
                    .sync_interval("off")
                    .directive("keepalive 4;")
                    .raw("supervisord_name web; # a comment"),
            )
            .server(
                Server::new()
                    .reuseport()
                    .listen_options("backlog=16")
                    .directive("add_header X-Worker $pid always")
                    .location("/", "proxy_pass http://backend;\nproxy_http_version 1.1;"),
            )
            .server(Server::on(1).location("= /s", "supervisord_status;"))
            .render(Path::new("/p"), Some(4242));
        let expected = format!(
            "load_module {};\n\
             worker_processes 3;\n\
             worker_rlimit_nofile 264;\n\
             error_log /p/logs/error.log debug;\n\
             pid /p/logs/nginx.pid;\n\
             # main\n\
             events {{ worker_connections 100; }}\n\
             http {{\n\
            \x20   access_log off;\n\
            \x20   client_body_temp_path /p/client_body;\n\
            \x20   proxy_temp_path /p/proxy_temp;\n\
            \x20   fastcgi_temp_path /p/fastcgi_temp;\n\
            \x20   uwsgi_temp_path /p/uwsgi_temp;\n\
            \x20   scgi_temp_path /p/scgi_temp;\n\
            \x20   resolver 127.0.0.1;\n\
            \x20   upstream backend {{\n\
            \x20       server 127.0.0.1:8000;\n\
            \x20       server 127.0.0.1:8001;\n\
            \x20       server 127.0.0.1:8002 down;\n\
            \x20       supervisord none;\n\
            \x20       supervisord_inherit_backend_status;\n\
            \x20       supervisord_sync_interval off;\n\
            \x20       keepalive 4;\n\
            \x20       supervisord_name web; # a comment\n\
            \x20   }}\n\
            \x20   server {{\n\
            \x20       listen 127.0.0.1:4242 reuseport backlog=16;\n\
            \x20       add_header X-Worker $pid always;\n\
            \x20       location / {{\n\
            \x20           proxy_pass http://backend;\n\
            \x20           proxy_http_version 1.1;\n\
            \x20       }}\n\
            \x20   }}\n\
            \x20   server {{\n\
            \x20       listen 127.0.0.1:1;\n\
            \x20       location = /s {{\n\
            \x20           supervisord_status;\n\
            \x20       }}\n\
            \x20   }}\n\
             }}\n",
            module_path().display()
        );
        assert_eq!(conf, expected);
        assert_eq!(line_of(&conf, "supervisord none"), 20);
        assert_eq!(line_of(&conf, "upstream backend"), 16);
    }

    #[test]
    fn line_of_skips_the_harness_lines() {
        // The prefix holds the test's name, which may well contain the needle.
        let conf = Config::new()
            .upstream(Upstream::new("b").directive("supervisord_start b"))
            .render(Path::new("/tmp/ngx-test-supervisord_start"), None);
        assert!(conf.lines().nth(9).unwrap().contains("supervisord_start"));
        assert_eq!(line_of(&conf, "supervisord_start"), 15);
        assert_eq!(conf.lines().nth(14), Some("        supervisord_start b;"));
    }

    #[test]
    #[should_panic(expected = "listens on the test's port")]
    fn the_test_port_needs_a_port() {
        Config::new()
            .server(Server::new())
            .render(Path::new("/p"), None);
    }
}
