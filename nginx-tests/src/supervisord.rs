//! A real supervisord (Debian's `supervisor` package) for the integration suite: its own
//! configuration, TCP port with Basic auth, UNIX socket without auth, and programs that run the
//! test backend.
//!
//! One machine stands for several: a loopback address (127.0.0.2, 127.0.0.3, ...) is a "host",
//! whose supervisord listens there ([`Supervisord::start_on_host`]) and whose programs bind
//! there ([`Program::backend_on`]).

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::prelude::{Engine as _, BASE64_STANDARD};

use crate::{free_port, free_port_on, scaled, scratch_path, Config, Nginx, Server, Upstream};

pub const USER: &str = "admin";
pub const PASSWORD: &str = "s3cret-Pw";

pub struct Program {
    pub name: String,
    pub command: String,
    pub startsecs: u32,
    /// How long supervisord waits for the program to exit after TERM before it kills it
    /// (2 s unless a test needs a program that takes its time to stop).
    pub stopwaitsecs: u32,
    /// Extra lines for the `[program:x]` section.
    pub extra: String,
}

impl Program {
    /// A program running the test backend on `port` (of 127.0.0.1).
    pub fn backend(name: &str, port: u16, startsecs: u32) -> Self {
        Self::backend_at(name, &port.to_string(), startsecs)
    }

    /// A program running the test backend on `port` of the loopback address `host` only (a
    /// program of another machine, e.g. 127.0.0.2): `test-backend HOST:PORT`.
    pub fn backend_on(name: &str, host: &str, port: u16, startsecs: u32) -> Self {
        Self::backend_at(name, &format!("{host}:{port}"), startsecs)
    }

    /// The test backend listening at `address`, as its first argument takes it.
    fn backend_at(name: &str, address: &str, startsecs: u32) -> Self {
        let binary = crate::backend_binary();
        Self::command(name, &format!("{} {address}", binary.display()), startsecs)
    }

    /// A program running the test backend on `port` with extra arguments
    /// (`--listen-after MS`, `--protocol P`).
    pub fn backend_with(name: &str, port: u16, startsecs: u32, args: &str) -> Self {
        let mut program = Self::backend(name, port, startsecs);
        program.command = format!("{} {args}", program.command);
        program
    }

    pub fn command(name: &str, command: &str, startsecs: u32) -> Self {
        Self {
            name: name.into(),
            command: command.into(),
            startsecs,
            stopwaitsecs: 2,
            extra: String::new(),
        }
    }
}

/// Which way nginx reaches a supervisord; the harness's own calls (`supervisorctl`, XML-RPC)
/// take the other way, so that supervisord's log tells nginx's calls from the harness's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NginxWay {
    /// nginx over the UNIX socket ([`Supervisord::start`]); the harness over TCP.
    Socket,
    /// nginx over TCP with Basic auth, as it reaches another machine's supervisord
    /// ([`Supervisord::start_on_host`]); the harness over the UNIX socket.
    Tcp,
}

pub struct Supervisord {
    pub dir: PathBuf,
    /// The TCP port of its `inet_http_server`, on [`Self::host`].
    pub port: u16,
    host: String,
    credentials: (String, String),
    nginx_way: NginxWay,
    child: Child,
}

impl Supervisord {
    /// Starts supervisord with `programs`; `groups` are extra `[group:x]` sections.
    pub fn start(name: &str, programs: &[Program], groups: &str) -> Self {
        Self::start_on(name, programs, groups, free_port(), (USER, PASSWORD))
    }

    /// supervisord with a program `backend{i}` for each of `ports` (in order): the test backend
    /// on that port of 127.0.0.1, `startsecs=0`, given the `test-backend` options `args` (e.g.
    /// `--listen-after 500`; empty for none); no groups.
    pub fn with_backends(name: &str, ports: &[u16], args: &str) -> Self {
        let programs: Vec<Program> = ports
            .iter()
            .enumerate()
            .map(|(index, &port)| {
                let name = format!("backend{index}");
                if args.is_empty() {
                    Program::backend(&name, port, 0)
                } else {
                    Program::backend_with(&name, port, 0, args)
                }
            })
            .collect();
        Self::start(name, &programs, "")
    }

    /// As [`Self::start`], its TCP port and Basic-auth credentials given (e.g. those of a
    /// documented example).
    pub fn start_on(
        name: &str,
        programs: &[Program],
        groups: &str,
        port: u16,
        credentials: (&str, &str),
    ) -> Self {
        let listen = ("127.0.0.1", port, credentials);
        Self::launch(name, programs, groups, listen, NginxWay::Socket)
    }

    /// supervisord of the "machine" `host` (a loopback address other than 127.0.0.1, e.g.
    /// 127.0.0.2): its XML-RPC listens on TCP at `host` on a free port (see [`free_port_on`]),
    /// with the harness's credentials ([`USER`], [`PASSWORD`]); `groups` are extra `[group:x]`
    /// sections. nginx reaches it over TCP, as [`Self::address`] says; the harness's own calls
    /// go through its UNIX socket.
    pub fn start_on_host(name: &str, host: &str, programs: &[Program], groups: &str) -> Self {
        let listen = (host, free_port_on(host), (USER, PASSWORD));
        Self::launch(name, programs, groups, listen, NginxWay::Tcp)
    }

    /// Writes the configuration (TCP at `host:port` with `user:password`, the UNIX socket, the
    /// programs), starts supervisord and waits until it answers.
    fn launch(
        name: &str,
        programs: &[Program],
        groups: &str,
        (host, port, (user, password)): (&str, u16, (&str, &str)),
        nginx_way: NginxWay,
    ) -> Self {
        let dir = scratch_path("sv", name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut conf = format!(
            "[supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
             childlogdir={d}\nloglevel=trace\n\
             [inet_http_server]\nport={host}:{port}\nusername={user}\npassword={password}\n\
             [unix_http_server]\nfile={d}/supervisor.sock\nchmod=0777\n\
             [rpcinterface:supervisor]\n\
             supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\
             [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n",
            d = dir.display()
        );
        for program in programs {
            conf.push_str(&format!(
                "[program:{}]\ncommand={}\nautostart=false\nautorestart=false\nstartsecs={}\n\
                 startretries=0\nstopwaitsecs={}\n{}\n",
                program.name,
                program.command,
                program.startsecs,
                program.stopwaitsecs,
                program.extra
            ));
        }
        conf.push_str(groups);
        fs::write(dir.join("supervisord.conf"), conf).unwrap();
        let child = Self::spawn(&dir);
        let supervisord = Self {
            dir,
            port,
            host: host.into(),
            credentials: (user.into(), password.into()),
            nginx_way,
            child,
        };
        supervisord.wait_until_up();
        supervisord
    }

    fn spawn(dir: &std::path::Path) -> Child {
        Command::new("supervisord")
            .arg("-c")
            .arg(dir.join("supervisord.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn supervisord (apt-get install supervisor)")
    }

    fn wait_until_up(&self) {
        let supervisord = self;
        let deadline = Instant::now() + scaled(Duration::from_secs(15));
        while Instant::now() < deadline {
            if supervisord.ctl(&["pid"]).trim().parse::<u32>().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("supervisord did not come up: {}", supervisord.log());
    }

    /// Stops supervisord itself (SIGTERM: it stops its programs and removes its socket), as an
    /// outage would.
    pub fn stop_daemon(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM supervisord failed");
        let _ = self.child.wait();
    }

    /// Kills supervisord itself with SIGKILL, as a crash or an OOM kill would: it stops
    /// nothing, its programs go on running (and listening) without it. The caller kills them
    /// (see [`Self::program_pid`]): no supervisord will.
    pub fn kill_daemon(&mut self) {
        let status = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -KILL supervisord failed");
        let _ = self.child.wait();
    }

    /// The pid of `program` as supervisord gives it (`supervisorctl pid`); `None` when it
    /// runs none.
    pub fn program_pid(&self, program: &str) -> Option<u32> {
        self.ctl(&["pid", program])
            .trim()
            .parse()
            .ok()
            .filter(|pid| *pid != 0)
    }

    /// Starts supervisord again, same configuration and socket, after [`Self::stop_daemon`].
    pub fn restart_daemon(&mut self) {
        self.child = Self::spawn(&self.dir);
        self.wait_until_up();
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("supervisor.sock")
    }

    /// The loopback address its TCP port listens on: 127.0.0.1, or the "machine" of
    /// [`Self::start_on_host`].
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Its address as the `supervisord` directive takes it (what follows `supervisord`):
    /// `unix:/path/supervisor.sock`, or `HOST:PORT USER:PASSWORD` for [`Self::start_on_host`].
    pub fn address(&self) -> String {
        match self.nginx_way {
            NginxWay::Socket => format!("unix:{}", self.socket().display()),
            NginxWay::Tcp => self.tcp_address(),
        }
    }

    /// Its TCP port with its credentials, as the `supervisord` directive takes them
    /// (`HOST:PORT USER:PASSWORD`), whichever way [`Self::address`] goes.
    pub fn tcp_address(&self) -> String {
        let (user, password) = &self.credentials;
        format!("{}:{} {user}:{password}", self.host, self.port)
    }

    /// Upstream `name` over `ports` of [`Self::host`], managed by this supervisord (at
    /// [`Self::address`]).
    pub fn upstream(&self, name: &str, ports: &[u16]) -> Upstream {
        Upstream::new(name)
            .servers_on(&self.host, ports)
            .supervisord(self.address())
    }

    /// The URL of the harness's own way to supervisord (see [`NginxWay`]).
    fn harness_url(&self) -> String {
        match self.nginx_way {
            NginxWay::Socket => format!("http://{}:{}", self.host, self.port),
            NginxWay::Tcp => format!("unix://{}", self.socket().display()),
        }
    }

    /// `supervisorctl`, the way nginx does not take (see [`NginxWay`]), so that its calls are
    /// told apart from nginx's (see [`Self::reads_by_nginx`]).
    pub fn ctl(&self, args: &[&str]) -> String {
        let output = Command::new("supervisorctl")
            .arg("-c")
            .arg(self.dir.join("supervisord.conf"))
            .arg("-s")
            .arg(self.harness_url())
            .args(["-u", &self.credentials.0, "-p", &self.credentials.1])
            .args(args)
            .output()
            .expect("run supervisorctl");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The state supervisord gives for `program` (RUNNING, STOPPED, ...; `group:name` for a
    /// member of a group), by `getProcessInfo`; empty if it has no such program or does not
    /// answer.
    pub fn state(&self, program: &str) -> String {
        let answer = self
            .rpc(
                "supervisor.getProcessInfo",
                &format!("<param><value><string>{program}</string></value></param>"),
            )
            .unwrap_or_default();
        answer
            .split_once("<name>statename</name>")
            .and_then(|(_, rest)| rest.split_once("<string>"))
            .and_then(|(_, rest)| rest.split_once("</string>"))
            .map(|(state, _)| state.to_string())
            .unwrap_or_default()
    }

    pub fn wait_state(&self, program: &str, state: &str) {
        let deadline = Instant::now() + scaled(Duration::from_secs(10));
        while Instant::now() < deadline {
            if self.state(program) == state {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{program} never became {state}: {}", self.ctl(&["status"]));
    }

    /// Kills `program` with SIGKILL behind supervisord's back, as a crash would.
    pub fn crash(&self, program: &str) {
        let pid = self.ctl(&["pid", program]);
        let status = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -9 {program} (pid {pid:?}) failed");
    }

    /// supervisord's log, as of now: supervisord handles one thing at a time, so once it has
    /// answered a call made now (`getPID`, over TCP) it has logged whatever it did before
    /// (e.g. "spawned:", which it logs after the fork, when the program may already answer).
    /// While supervisord is down, the log as it is.
    pub fn log(&self) -> String {
        self.settle();
        fs::read_to_string(self.dir.join("supervisord.log")).unwrap_or_default()
    }

    /// One XML-RPC call (`supervisor.getPID`), answered; nothing if supervisord does not
    /// answer.
    fn settle(&self) {
        let _ = self.rpc("supervisor.getPID", "");
    }

    /// The body of supervisord's answer to `method` with `params` (XML `<param>` elements),
    /// called the harness's way (see [`NginxWay`]) with its credentials (milliseconds, where
    /// supervisorctl takes a Python start-up); `None` if supervisord does not answer.
    fn rpc(&self, method: &str, params: &str) -> Option<String> {
        let body = format!(
            "<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName>\
             <params>{params}</params></methodCall>"
        );
        let credentials = format!("{}:{}", self.credentials.0, self.credentials.1);
        let request = format!(
            "POST /RPC2 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {}\r\n\
             Content-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            BASE64_STANDARD.encode(credentials),
            body.len()
        );
        let timeout = Some(scaled(Duration::from_secs(10)));
        match self.nginx_way {
            NginxWay::Socket => {
                let stream = std::net::TcpStream::connect((self.host.as_str(), self.port)).ok()?;
                stream.set_read_timeout(timeout).ok()?;
                exchange(stream, &request)
            }
            NginxWay::Tcp => {
                let stream = std::os::unix::net::UnixStream::connect(self.socket()).ok()?;
                stream.set_read_timeout(timeout).ok()?;
                exchange(stream, &request)
            }
        }
    }

    /// How many `method` calls (e.g. `supervisor.getAllProcessInfo`) supervisord answered so
    /// far, from any client, by its log (`loglevel=trace` logs each call).
    pub fn calls(&self, method: &str) -> usize {
        self.log()
            .matches(&format!("XML-RPC method {method}() returned"))
            .count()
    }

    /// How many times nginx (given [`Self::address`]; the harness takes the other way, see
    /// [`NginxWay`]) read every program's state (`getAllProcessInfo`, a reconciliation round
    /// or a failure check) and got the answer, by supervisord's log: the answer's line is
    /// followed by its access line, whose client is `localhost:0` on the UNIX socket and
    /// `127.0.0.1:PORT` over TCP.
    pub fn reads_by_nginx(&self) -> usize {
        let over_socket = self.nginx_way == NginxWay::Socket;
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines
            .windows(2)
            .filter(|pair| {
                pair[0].contains("XML-RPC method supervisor.getAllProcessInfo() returned")
                    && pair[1].contains(" - - [")
                    && pair[1].contains(" localhost:0 - - [") == over_socket
            })
            .count()
    }

    /// Waits until nginx has read every program's state `count` more times (see
    /// [`Self::reads_by_nginx`]): with `count` 2, a whole reconciliation round that began
    /// after this call was answered and applied before the next began. A positive signal
    /// that what nginx would do on reading supervisord's view has been done.
    #[track_caller]
    pub fn wait_for_reads(&self, count: usize) {
        let target = self.reads_by_nginx() + count;
        let deadline = Instant::now() + scaled(Duration::from_secs(10));
        while self.reads_by_nginx() < target {
            assert!(
                Instant::now() < deadline,
                "nginx did not read supervisord {count} more time(s):\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until supervisord has answered every XML-RPC call it received (from nginx or
    /// supervisorctl), by its log: each call's `called` line and its access line (logged when
    /// the answer is sent, also for an answer that waited, such as `startProcess` waiting for
    /// `startsecs`). A positive signal that nginx has been told the outcome of what it asked.
    #[track_caller]
    pub fn wait_for_answers(&self) {
        let pending = || {
            let log = self.log();
            let called = log.matches("XML-RPC method called: ").count();
            let answered = log.matches("\"POST /RPC2 HTTP/1.1\"").count();
            called.saturating_sub(answered)
        };
        let deadline = Instant::now() + scaled(Duration::from_secs(10));
        while pending() > 0 {
            assert!(
                Instant::now() < deadline,
                "supervisord left {} call(s) unanswered:\n{}",
                pending(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// When supervisord spawned `program`, by its log (its clock, in the order of the log), as
    /// times since the epoch to the millisecond: to measure the gaps between starts.
    pub fn spawn_times(&self, program: &str) -> Vec<Duration> {
        let needle = format!("spawned: '{program}'");
        self.log()
            .lines()
            .filter(|line| line.contains(&needle))
            .map(|line| {
                log_time(line).unwrap_or_else(|| panic!("no time in supervisord's line {line:?}"))
            })
            .collect()
    }

    /// How many times supervisord spawned `program` so far, by its log.
    pub fn spawns(&self, program: &str) -> usize {
        self.log().matches(&format!("spawned: '{program}'")).count()
    }
}

/// Writes `request` to `stream` and reads the whole answer (the server closes the connection);
/// the body of the answer, `None` if it fails.
fn exchange(mut stream: impl std::io::Read + std::io::Write, request: &str) -> Option<String> {
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}

/// The time of a supervisord log line (`2026-12-07 17:25:27,961 INFO ...`, UTC) since the epoch.
fn log_time(line: &str) -> Option<Duration> {
    let (date, rest) = line.split_once(' ')?;
    let time = rest.split_whitespace().next()?;
    let mut date_parts = date.split('-').map(|part| part.parse::<i64>());
    let (year, month, day) = (
        date_parts.next()?.ok()?,
        date_parts.next()?.ok()?,
        date_parts.next()?.ok()?,
    );
    let (clock, millis) = time.split_once(',')?;
    let mut clock_parts = clock.split(':').map(|part| part.parse::<i64>());
    let (hours, minutes, seconds) = (
        clock_parts.next()?.ok()?,
        clock_parts.next()?.ok()?,
        clock_parts.next()?.ok()?,
    );
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hours * 3600 + minutes * 60 + seconds;
    Some(
        Duration::from_secs(u64::try_from(seconds).ok()?)
            + Duration::from_millis(millis.parse().ok()?),
    )
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop", "all"]);
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The misbehaving stand-in of `src/bin/fake-supervisord.rs`; killed on drop.
pub struct FakeSupervisord {
    pub port: u16,
    calls_file: PathBuf,
    child: Child,
}

impl FakeSupervisord {
    pub fn start(mode: &str) -> Self {
        let port = free_port();
        let calls_file = scratch_path("fake-calls", &port.to_string());
        let _ = fs::remove_file(&calls_file);
        let binary = crate::backend_binary().with_file_name("fake-supervisord");
        let child = Command::new(binary)
            .arg(port.to_string())
            .arg(mode)
            .arg(&calls_file)
            .spawn()
            .expect("spawn fake-supervisord");
        crate::wait_for_port(port, "fake-supervisord");
        Self {
            port,
            calls_file,
            child,
        }
    }

    /// How many `method` calls (e.g. `supervisor.startProcess`) it has read so far.
    pub fn calls(&self, method: &str) -> usize {
        fs::read_to_string(&self.calls_file)
            .unwrap_or_default()
            .lines()
            .filter(|line| *line == method)
            .count()
    }
}

impl Drop for FakeSupervisord {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.calls_file);
    }
}

/// The suite's usual server, for upstream `upstream`: it listens with `reuseport` (successive
/// connections spread over the workers) and names the worker of each answer in `X-Worker` (see
/// [`crate::backends_by_worker`]); `/` passes to the upstream, `/_start/` and `/_stop/` start
/// and stop its backends by hand, `= /_status` shows the module's status.
pub fn controls_server(upstream: &str) -> Server {
    Server::new()
        .reuseport()
        .directive("add_header X-Worker $pid always")
        .location("/", &format!("proxy_pass http://{upstream};"))
        .location("/_start/", &format!("supervisord_start {upstream};"))
        .location("/_stop/", &format!("supervisord_stop {upstream};"))
        .location("= /_status", "supervisord_status;")
}

/// nginx's configuration (2 workers) for `upstream` behind [`controls_server`], for
/// [`Nginx::start`] or [`Nginx::reload`].
pub fn controls_config(upstream: Upstream) -> Config {
    let server = controls_server(upstream.name());
    Config::new().workers(2).upstream(upstream).server(server)
}

/// nginx with upstream `backend` over `ports`, managed through `supervisord ADDRESS` as given
/// (a [`Supervisord::address`], its TCP port with other credentials, a fake supervisord, an
/// address where nothing listens), with the `extra` directives after that, behind
/// [`controls_server`].
pub fn nginx_with_controls(name: &str, ports: &[u16], address: &str, extra: &[&str]) -> Nginx {
    let upstream = Upstream::new("backend")
        .servers(ports)
        .supervisord(address)
        .directives(extra);
    Nginx::start(name, &controls_config(upstream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_times_are_read_to_the_millisecond() {
        let line = "2026-12-07 17:25:27,961 INFO spawned: 'backend0' with pid 10175";
        // date -u -d '2026-12-07 17:25:27' +%s
        assert_eq!(
            log_time(line),
            Some(Duration::from_millis(1_796_664_327_961))
        );
        let leap = log_time("2024-02-29 00:00:00,000 INFO x").unwrap();
        assert_eq!(leap, Duration::from_secs(1_709_164_800));
        assert_eq!(log_time("\tHostname: localhost"), None);
    }
}
