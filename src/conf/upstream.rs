//! The upstream directives (`supervisord`, `supervisord_name`, `supervisord_timeout`...) and
//! what the module learns about an upstream's servers once its block is read. Settings only:
//! nothing here changes after the configuration is read.

use std::ffi::{c_char, c_void};
use std::ptr;

use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_http_upstream_init_peer_pt, ngx_http_upstream_server_t,
    ngx_http_upstream_srv_conf_t, ngx_parse_url, ngx_str_t, ngx_url_t, sockaddr, socklen_t, NGX_OK,
};

use super::balancer_hooks::BalancerHooks;
use crate::core::backend_status::BackendStatus;
use crate::core::commands::Mode;
use crate::core::config::server_addresses::check_servers;
use crate::core::config::server_hosts::{
    assign, server_host, sockaddr_ip, LinePlace, ServerPlace, MAX_SUPERVISORDS,
};
use crate::core::config::supervisord_address::{
    parse_credentials, parse_endpoint, Credentials, SupervisordEndpoint,
};
use crate::core::config::supervisord_host::{HostKey, HostSettings};
use crate::core::config::upstream_identity::IdentityHasher;
use crate::core::policy::scaling::{parse_scale_up, ScalePolicy, ScaleUp};
use crate::core::protocol::process_state::program_name;
use crate::core::protocol::reply_limit::{DEFAULT_MAX_REPLY_SIZE, MIN_MAX_REPLY_SIZE};
use crate::core::start::failure::FailureLimit;
use crate::util::conf_args::{
    conf_error, directive_args, parse_size_bytes, parse_time_ms, parse_time_text,
};
use crate::util::text::{cstr_lossy, str_bytes, str_lossy};

/// One `server` line of a managed upstream.
pub struct BackendConf {
    /// The address as written in the `server` line, e.g. `127.0.0.1:8000`.
    pub name: String,
    /// Every address the server line resolved to, as raw sockaddr bytes.
    pub sockaddrs: Vec<Vec<u8>>,
    pub initial_status: BackendStatus,
    /// The server line's `max_fails` and `fail_timeout`.
    pub failure_limit: FailureLimit,
    /// The `supervisord` line that manages it (`core::config::server_hosts`).
    pub line: usize,
    /// Its program's name in that supervisord: the prefix and its number on that host.
    pub program: String,
}

/// One `supervisord` line of an upstream (one per host).
pub struct SupervisordLine {
    pub endpoint: SupervisordEndpoint,
    pub resolved: ResolvedEndpoint,
    pub credentials: Option<Credentials>,
    /// `servers=HOST`: the host of the servers it manages, when its own address does not say.
    pub servers: Option<String>,
    /// The line that leads its host (`core::config::supervisord_host`), as (upstream, line): itself,
    /// or the first line of the configuration naming the same supervisord.
    pub host_lead: (usize, usize),
}

/// Where this worker connects to supervisord, resolved when the configuration is read.
pub struct ResolvedEndpoint {
    pub sockaddr: *mut sockaddr,
    pub socklen: socklen_t,
    /// nginx's name of the address (cycle pool memory), for its own log lines.
    pub peer_name: ngx_str_t,
    pub host_header: String,
    /// As written in the directive, for the module's log lines.
    pub display: String,
}

impl SupervisordLine {
    /// The resolved address's raw sockaddr bytes.
    pub fn address_bytes(&self) -> &[u8] {
        // SAFETY: the resolved address lives in the cycle pool, `socklen` bytes long.
        unsafe {
            std::slice::from_raw_parts(
                self.resolved.sockaddr as *const u8,
                self.resolved.socklen as usize,
            )
        }
    }

    /// The IP address of a TCP supervisord (`None` for a UNIX socket).
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        sockaddr_ip(self.address_bytes())
    }

    /// What tells its supervisord from another.
    pub fn host_key(&self) -> HostKey {
        HostKey {
            address: self.address_bytes().to_vec(),
            credentials: self
                .credentials
                .as_ref()
                .map(|c| (c.user.clone(), c.password.clone())),
        }
    }
}

pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_HOLD_LIMIT: u64 = 1000;
pub const DEFAULT_HOLD_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_SYNC_INTERVAL_MS: u64 = 1_000;
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 30_000;
/// ngx_supervisord 1.4 told load monitors every 60 s.
pub const DEFAULT_LOAD_INTERVAL_MS: u64 = 60_000;

/// The module's configuration of one `upstream {}` block.
pub struct UpstreamConf {
    /// The first `supervisord` line's address, or `none`.
    pub endpoint: Option<SupervisordEndpoint>,
    /// The `supervisord` lines with an address, one per host, in configuration order.
    pub lines: Vec<SupervisordLine>,
    pub program_prefix: Option<String>,
    pub inherit_backend_status: bool,
    /// `supervisord_timeout`: the deadline of one call to supervisord.
    pub timeout: Option<u64>,
    /// `supervisord_sync_interval`: how often supervisord's view is read; 0 is off.
    pub sync_interval: Option<u64>,
    /// `supervisord_hold_limit`: requests held at most, over all workers.
    pub hold_limit: Option<u64>,
    /// `supervisord_hold_timeout`: how long a request is held at most.
    pub hold_timeout: Option<u64>,
    /// `supervisord_drain_timeout`: how long a stop waits for requests in flight at most.
    pub drain_timeout: Option<u64>,
    /// `supervisord_min_servers`, `supervisord_max_servers`: backends UP at least, at most.
    pub min_servers: Option<u64>,
    pub max_servers: Option<u64>,
    /// `supervisord_scale_up`: when load starts one more backend.
    pub scale_up: Option<ScaleUp>,
    /// `supervisord_idle_timeout`: how long a backend may go without requests; 0 is off.
    pub idle_timeout: Option<u64>,
    /// `supervisord_load_interval`: how often a C balancer's load monitor is told the load.
    pub load_interval: Option<u64>,
    /// `supervisord_max_reply_size`: the largest reply of supervisord taken, in bytes.
    pub max_reply_size: Option<u64>,
    /// What a C balancer registered through the C API.
    pub hooks: BalancerHooks,

    /// Filled in once the configuration is read (see `attach`).
    /// Position among the managed upstreams: the same in the shared zone and each worker.
    pub index: usize,
    pub name: String,
    pub backends: Vec<BackendConf>,
    pub identity: u64,
    pub original_init_peer: ngx_http_upstream_init_peer_pt,
    /// The balancer is one of nginx's own, built on its round-robin peer list.
    pub uses_nginx_peer_list: bool,
    pub upstream: *mut ngx_http_upstream_srv_conf_t,
}

impl Default for UpstreamConf {
    fn default() -> Self {
        Self {
            endpoint: None,
            lines: Vec::new(),
            timeout: None,
            sync_interval: None,
            hold_limit: None,
            hold_timeout: None,
            drain_timeout: None,
            min_servers: None,
            max_servers: None,
            scale_up: None,
            idle_timeout: None,
            load_interval: None,
            max_reply_size: None,
            hooks: BalancerHooks::default(),
            index: 0,
            program_prefix: None,
            inherit_backend_status: false,
            name: String::new(),
            backends: Vec::new(),
            identity: 0,
            original_init_peer: None,
            uses_nginx_peer_list: false,
            upstream: ptr::null_mut(),
        }
    }
}

impl UpstreamConf {
    pub fn timeout_ms(&self) -> u64 {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT_MS)
    }

    pub fn hold_limit(&self) -> u64 {
        self.hold_limit.unwrap_or(DEFAULT_HOLD_LIMIT)
    }

    pub fn hold_timeout_ms(&self) -> u64 {
        self.hold_timeout.unwrap_or(DEFAULT_HOLD_TIMEOUT_MS)
    }

    pub fn drain_timeout_ms(&self) -> u64 {
        self.drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT_MS)
    }

    pub fn load_interval_ms(&self) -> u64 {
        self.load_interval.unwrap_or(DEFAULT_LOAD_INTERVAL_MS)
    }

    pub fn max_reply_size(&self) -> usize {
        usize::try_from(self.max_reply_size.unwrap_or(DEFAULT_MAX_REPLY_SIZE)).unwrap_or(usize::MAX)
    }

    pub fn sync_interval_ms(&self) -> u64 {
        self.sync_interval.unwrap_or(DEFAULT_SYNC_INTERVAL_MS)
    }

    /// The scaling rules of the upstream (`core::policy::scaling`).
    pub fn scale_policy(&self) -> ScalePolicy {
        let count = self.backends.len();
        ScalePolicy {
            min_servers: self.min_servers.map_or(0, |n| n as usize),
            max_servers: self.max_servers.map_or(count, |n| n as usize),
            scale_up: self.scale_up,
            idle_timeout_ms: self.idle_timeout.filter(|ms| *ms > 0),
        }
    }

    /// Program-name prefix: `supervisord_name`, or the upstream's name.
    pub fn program_prefix(&self) -> &str {
        self.program_prefix.as_deref().unwrap_or(&self.name)
    }

    pub fn mode(&self) -> Mode {
        match self.endpoint {
            Some(SupervisordEndpoint::None) => Mode::Immediate,
            _ => Mode::Supervised,
        }
    }

    /// Managed through a real supervisord (not `supervisord none`).
    pub fn supervised(&self) -> bool {
        !self.lines.is_empty()
    }

    /// The addresses of its supervisords as written (never the credentials), joined.
    pub fn supervisord_text(&self) -> String {
        match &self.endpoint {
            Some(SupervisordEndpoint::None) => "none".into(),
            _ => self
                .lines
                .iter()
                .map(|line| line.resolved.display.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// The settings that belong to its supervisord host, defaults applied.
    pub fn host_settings(&self) -> HostSettings {
        HostSettings {
            sync_interval_ms: self.sync_interval_ms(),
            timeout_ms: self.timeout_ms(),
            max_reply_size: self.max_reply_size.unwrap_or(DEFAULT_MAX_REPLY_SIZE),
        }
    }

    /// The configured initial status of each backend.
    pub fn initial_statuses(&self) -> Vec<BackendStatus> {
        self.backends
            .iter()
            .map(|backend| backend.initial_status)
            .collect()
    }

    /// The backend a peer address belongs to, if it is one of this upstream's servers.
    pub fn backend_of(&self, sockaddr: &[u8]) -> Option<usize> {
        self.backends.iter().position(|backend| {
            backend
                .sockaddrs
                .iter()
                .any(|address| address.as_slice() == sockaddr)
        })
    }

    /// A module directive given in an upstream without `supervisord`, if any.
    pub fn directive_without_endpoint(&self) -> Option<&'static str> {
        if self.program_prefix.is_some() {
            Some("supervisord_name")
        } else if self.inherit_backend_status {
            Some("supervisord_inherit_backend_status")
        } else if self.timeout.is_some() {
            Some("supervisord_timeout")
        } else if self.sync_interval.is_some() {
            Some("supervisord_sync_interval")
        } else if self.hold_limit.is_some() {
            Some("supervisord_hold_limit")
        } else if self.hold_timeout.is_some() {
            Some("supervisord_hold_timeout")
        } else if self.drain_timeout.is_some() {
            Some("supervisord_drain_timeout")
        } else if self.min_servers.is_some() {
            Some("supervisord_min_servers")
        } else if self.max_servers.is_some() {
            Some("supervisord_max_servers")
        } else if self.scale_up.is_some() {
            Some("supervisord_scale_up")
        } else if self.idle_timeout.is_some() {
            Some("supervisord_idle_timeout")
        } else if self.load_interval.is_some() {
            Some("supervisord_load_interval")
        } else if self.max_reply_size.is_some() {
            Some("supervisord_max_reply_size")
        } else {
            None
        }
    }

    /// Gives each server its `supervisord` line and program name (`core::config::server_hosts`).
    fn assign_servers(&mut self, place: &str) -> Result<(), String> {
        let servers: Vec<ServerPlace> = self
            .backends
            .iter()
            .map(|backend| ServerPlace {
                host: server_host(&backend.name),
                ips: backend
                    .sockaddrs
                    .iter()
                    .filter_map(|address| sockaddr_ip(address))
                    .collect(),
            })
            .collect();
        let lines: Vec<LinePlace> = self
            .lines
            .iter()
            .map(|line| LinePlace {
                servers: line.servers.clone(),
                ip: line.ip(),
            })
            .collect();
        let assignments = assign(&servers, &lines).map_err(|problem| {
            let server_names: Vec<String> = self.backends.iter().map(|b| b.name.clone()).collect();
            let line_names: Vec<String> = self
                .lines
                .iter()
                .map(|line| line.resolved.display.clone())
                .collect();
            problem.message(&server_names, &line_names, &self.name, place)
        })?;
        let prefix = self.program_prefix().to_string();
        for (backend, assignment) in self.backends.iter_mut().zip(assignments) {
            backend.line = assignment.line;
            backend.program = program_name(&prefix, assignment.program);
        }
        Ok(())
    }

    /// Learns the upstream's servers once its block is fully parsed.
    ///
    /// # Safety
    /// `uscf` must be the explicit upstream block this configuration belongs to.
    pub unsafe fn attach(
        &mut self,
        uscf: *mut ngx_http_upstream_srv_conf_t,
        index: usize,
    ) -> Result<(), String> {
        // SAFETY: `uscf` is the live explicit upstream block this configuration belongs to
        // (this fn's contract).
        let uscf_ref = unsafe { &*uscf };
        self.upstream = uscf;
        self.index = index;
        self.name = str_lossy(&uscf_ref.host);
        let servers: &[ngx_http_upstream_server_t] = if uscf_ref.servers.is_null() {
            &[]
        } else {
            // SAFETY: an upstream block's servers array holds its server lines.
            unsafe {
                let array = &*uscf_ref.servers;
                std::slice::from_raw_parts(array.elts as *const _, array.nelts)
            }
        };
        let place = format!(
            "{}:{}",
            cstr_lossy(uscf_ref.file_name as *const _),
            uscf_ref.line
        );
        if servers.is_empty() {
            return Err(format!(
                "no servers in upstream \"{}\" in {place}",
                self.name
            ));
        }
        let mut identity = IdentityHasher::default().field(self.name.as_bytes());
        self.backends = servers
            .iter()
            .map(|server| {
                let down = server.down != 0;
                identity = identity
                    .field(str_bytes(&server.name))
                    .field(&[u8::from(down), server.backup() as u8]);
                BackendConf {
                    name: str_lossy(&server.name),
                    sockaddrs: server_sockaddrs(server),
                    failure_limit: FailureLimit {
                        max_fails: u32::try_from(server.max_fails).unwrap_or(u32::MAX),
                        fail_timeout_ms: u64::try_from(server.fail_timeout)
                            .unwrap_or(0)
                            .saturating_mul(1_000),
                    },
                    initial_status: if self.inherit_backend_status && !down {
                        BackendStatus::Up
                    } else {
                        BackendStatus::Down
                    },
                    line: 0,
                    program: String::new(),
                }
            })
            .collect();
        self.identity = identity.finish();
        let addresses: Vec<_> = self
            .backends
            .iter()
            .map(|backend| backend.sockaddrs.clone())
            .collect();
        check_servers(&addresses).map_err(|problem| {
            let names: Vec<String> = self.backends.iter().map(|b| b.name.clone()).collect();
            problem.message(&names, &self.name, &place)
        })?;
        self.assign_servers(&place)?;
        let count = self.backends.len() as u64;
        let servers = |n: u64| format!("{n} server{}", if n == 1 { "" } else { "s" });
        for (directive, value) in [
            ("supervisord_min_servers", self.min_servers),
            ("supervisord_max_servers", self.max_servers),
        ] {
            if let Some(value) = value.filter(|value| *value > count) {
                return Err(format!(
                    "{directive} {value} is more than the {} of upstream \"{}\" in {place}",
                    servers(count),
                    self.name
                ));
            }
        }
        if let (Some(min), Some(max)) = (self.min_servers, self.max_servers) {
            if min > max {
                return Err(format!(
                    "supervisord_min_servers {min} is more than supervisord_max_servers {max} in upstream \"{}\" in {place}",
                    self.name
                ));
            }
        }
        Ok(())
    }
}

/// The addresses a server line resolved to when the configuration was read; none for a
/// `resolve` server, whose single address is only a placeholder holding the port until the
/// zone module resolves the name at run time.
fn server_sockaddrs(server: &ngx_http_upstream_server_t) -> Vec<Vec<u8>> {
    #[cfg(all(ngx_feature = "http_upstream_zone", nginx1_27_3))]
    if server.host.len > 0 {
        return Vec::new();
    }
    if server.addrs.is_null() {
        return Vec::new();
    }
    // SAFETY: a parsed server line has `naddrs` resolved addresses.
    let addrs = unsafe { std::slice::from_raw_parts(server.addrs, server.naddrs) };
    addrs
        .iter()
        .filter(|addr| !addr.sockaddr.is_null())
        // SAFETY: each address points at `socklen` bytes of sockaddr.
        .map(|addr| unsafe {
            std::slice::from_raw_parts(addr.sockaddr as *const u8, addr.socklen as usize).to_vec()
        })
        .collect()
}

const DUPLICATE: *mut c_char = c"is duplicate".as_ptr() as *mut c_char;

/// `supervisord host:port [user:pass] [servers=HOST]`, `supervisord unix:/path [user:pass]
/// [servers=HOST]`, `supervisord none`. Given once per host when the servers are on several
/// hosts (`core::config::server_hosts`); `none` stands alone.
pub unsafe extern "C" fn set_supervisord(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's srv conf of the enclosing upstream block.
    let upstream = unsafe { &mut *(conf as *mut UpstreamConf) };
    if upstream.endpoint == Some(SupervisordEndpoint::None) {
        return DUPLICATE;
    }
    // SAFETY: called by nginx as a directive handler.
    let args = unsafe { directive_args(cf) };
    // Neither argument is ever repeated in an error: swapped or written as a URL, either may
    // hold the password (see core::config::supervisord_address); nginx adds the file and line.
    let endpoint = match parse_endpoint(&String::from_utf8_lossy(str_bytes(&args[1]))) {
        Ok(endpoint) => endpoint,
        Err(error) => return conf_error(cf, &format!("invalid supervisord address: {error}")),
    };
    if endpoint == SupervisordEndpoint::None {
        if args.len() > 2 {
            return conf_error(
                cf,
                "\"supervisord none\" takes no credentials and no servers=",
            );
        }
        if !upstream.lines.is_empty() {
            return conf_error(
                cf,
                "\"supervisord none\" cannot be mixed with supervisord addresses",
            );
        }
        upstream.endpoint = Some(endpoint);
        return ptr::null_mut();
    }
    if upstream.lines.len() >= MAX_SUPERVISORDS {
        return conf_error(
            cf,
            &format!("too many \"supervisord\" lines: an upstream may name {MAX_SUPERVISORDS} supervisords"),
        );
    }
    let mut credentials = None;
    let mut servers = None;
    for arg in &args[2..] {
        let text = String::from_utf8_lossy(str_bytes(arg));
        if let Some(host) = text.strip_prefix("servers=") {
            if servers.is_some() {
                return conf_error(cf, "duplicate \"servers=\"");
            }
            let valid = !host.is_empty() && host.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
            if !valid {
                return conf_error(
                    cf,
                    &format!("invalid \"servers={host}\": expected a host name or address"),
                );
            }
            servers = Some(host.to_string());
            continue;
        }
        if credentials.is_some() {
            return conf_error(cf, "invalid supervisord parameter: credentials given twice");
        }
        match parse_credentials(&text) {
            Ok(parsed) => credentials = Some(parsed),
            Err(error) => return conf_error(cf, &format!("invalid supervisord {error}")),
        }
    }
    // SAFETY: cf is valid during the directive call; args[1] lives in its pool.
    let resolved = match unsafe { resolve(cf, &args[1], &endpoint) } {
        Ok(resolved) => resolved,
        Err(reason) => return conf_error(cf, &format!("invalid supervisord address: {reason}")),
    };
    upstream.endpoint.get_or_insert_with(|| endpoint.clone());
    upstream.lines.push(SupervisordLine {
        endpoint,
        resolved,
        credentials,
        servers,
        host_lead: (0, 0),
    });
    ptr::null_mut()
}

/// `supervisord_name name`: the program-name prefix instead of the upstream's name.
pub unsafe extern "C" fn set_supervisord_name(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's srv conf of the enclosing upstream block.
    let upstream = unsafe { &mut *(conf as *mut UpstreamConf) };
    if upstream.program_prefix.is_some() {
        return DUPLICATE;
    }
    // SAFETY: called by nginx as a directive handler.
    let args = unsafe { directive_args(cf) };
    let name = str_bytes(&args[1]);
    let valid = !name.is_empty() && name.iter().all(|byte| byte.is_ascii_graphic());
    if !valid {
        return conf_error(
            cf,
            &format!(
                "invalid supervisord_name \"{}\": it must be a non-empty program name",
                String::from_utf8_lossy(name)
            ),
        );
    }
    upstream.program_prefix = Some(String::from_utf8_lossy(name).into_owned());
    ptr::null_mut()
}

/// `supervisord_inherit_backend_status`: start from the configured statuses.
pub unsafe extern "C" fn set_inherit_backend_status(
    _cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's srv conf of the enclosing upstream block.
    let upstream = unsafe { &mut *(conf as *mut UpstreamConf) };
    if upstream.inherit_backend_status {
        return DUPLICATE;
    }
    upstream.inherit_backend_status = true;
    ptr::null_mut()
}

/// Resolves the address as nginx does for its own upstreams (at configuration time).
///
/// # Safety
/// `cf` is the live configuration being read (its pool and log are used).
unsafe fn resolve(
    cf: *mut ngx_conf_t,
    text: &ngx_str_t,
    endpoint: &SupervisordEndpoint,
) -> Result<ResolvedEndpoint, String> {
    // SAFETY: zeroed is nginx's documented initial state of ngx_url_t.
    let mut url: ngx_url_t = unsafe { std::mem::zeroed() };
    url.url = *text;
    url.default_port = 9001;
    // SAFETY: cf's pool lives as long as the cycle.
    if unsafe { ngx_parse_url((*cf).pool, &mut url) } != NGX_OK as isize || url.naddrs == 0 {
        let reason = if url.err.is_null() {
            "cannot resolve it".to_string()
        } else {
            cstr_lossy(url.err)
        };
        return Err(reason);
    }
    // SAFETY: ngx_parse_url filled at least one address in the cycle pool.
    let first = unsafe { &*url.addrs };
    let host_header = match endpoint {
        SupervisordEndpoint::Tcp { .. } => endpoint.to_string(),
        _ => "localhost".to_string(),
    };
    Ok(ResolvedEndpoint {
        sockaddr: first.sockaddr,
        socklen: first.socklen,
        peer_name: first.name,
        host_header,
        display: endpoint.to_string(),
    })
}

/// Sets one numeric upstream option from the directive's argument: `slot` picks the field,
/// `parse` reads the text (None when invalid), `expected` tells the operator what would do.
///
/// # Safety
/// `cf` is the live configuration being read; `conf` is this module's upstream
/// configuration (`UpstreamConf`) of the block the directive is in.
unsafe fn set_number(
    cf: *mut ngx_conf_t,
    conf: *mut c_void,
    slot: fn(&mut UpstreamConf) -> &mut Option<u64>,
    parse: fn(&ngx_str_t) -> Option<u64>,
    expected: &str,
) -> *mut c_char {
    // SAFETY: nginx passes this module's srv conf of the enclosing upstream block.
    let field = slot(unsafe { &mut *(conf as *mut UpstreamConf) });
    if field.is_some() {
        return DUPLICATE;
    }
    // SAFETY: called by nginx as a directive handler.
    let args = unsafe { directive_args(cf) };
    match parse(&args[1]) {
        Some(value) => *field = Some(value),
        None => {
            let text = str_lossy(&args[1]);
            return conf_error(
                cf,
                &format!(
                    "invalid {} \"{text}\": expected {expected}",
                    str_lossy(&args[0])
                ),
            );
        }
    }
    ptr::null_mut()
}

fn positive_time(text: &ngx_str_t) -> Option<u64> {
    parse_time_ms(text).filter(|ms| *ms > 0)
}

/// A positive time, or `off` (0).
fn time_or_off(text: &ngx_str_t) -> Option<u64> {
    if str_bytes(text) == b"off" {
        Some(0)
    } else {
        positive_time(text)
    }
}

/// `supervisord_timeout time`: deadline of one call to supervisord (default 30s).
pub unsafe extern "C" fn set_timeout(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls this upstream-block directive's handler (SRV_CONF_OFFSET) with the
    // live `cf` and `conf`, this module's UpstreamConf of that block, as set_number needs.
    unsafe {
        set_number(
            cf,
            conf,
            |upstream| &mut upstream.timeout,
            positive_time,
            "a time such as 30s, 500ms or 1m30s",
        )
    }
}

/// `supervisord_sync_interval time | off`: how often supervisord's view of the programs is read
/// (default 1s).
pub unsafe extern "C" fn set_sync_interval(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls this upstream-block directive's handler (SRV_CONF_OFFSET) with the
    // live `cf` and `conf`, this module's UpstreamConf of that block, as set_number needs.
    unsafe {
        set_number(
            cf,
            conf,
            |upstream| &mut upstream.sync_interval,
            time_or_off,
            "a time such as 5s, or off",
        )
    }
}

/// `supervisord_hold_limit number`: requests held at most for this upstream (default 1000).
pub unsafe extern "C" fn set_hold_limit(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls this upstream-block directive's handler (SRV_CONF_OFFSET) with the
    // live `cf` and `conf`, this module's UpstreamConf of that block, as set_number needs.
    unsafe {
        set_number(
            cf,
            conf,
            |upstream| &mut upstream.hold_limit,
            |text| {
                let text = str_bytes(text);
                let digits = !text.is_empty() && text.iter().all(u8::is_ascii_digit);
                std::str::from_utf8(text)
                    .ok()?
                    .parse()
                    .ok()
                    .filter(|limit| digits && *limit <= 1_000_000_000)
            },
            "a number of requests",
        )
    }
}

/// `supervisord_hold_timeout time`: how long a request waits for a backend (default 60s).
pub unsafe extern "C" fn set_hold_timeout(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls this upstream-block directive's handler (SRV_CONF_OFFSET) with the
    // live `cf` and `conf`, this module's UpstreamConf of that block, as set_number needs.
    unsafe {
        set_number(
            cf,
            conf,
            |upstream| &mut upstream.hold_timeout,
            positive_time,
            "a time such as 60s",
        )
    }
}

/// `supervisord_drain_timeout time`: how long a stop waits for the backend's requests in flight
/// before stopping its program anyway (default 30s; 0 stops at once).
pub unsafe extern "C" fn set_drain_timeout(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls this upstream-block directive's handler (SRV_CONF_OFFSET) with the
    // live `cf` and `conf`, this module's UpstreamConf of that block, as set_number needs.
    unsafe {
        set_number(
            cf,
            conf,
            |upstream| &mut upstream.drain_timeout,
            parse_time_ms,
            "a time such as 30s or 500ms",
        )
    }
}

fn server_count(text: &ngx_str_t) -> Option<u64> {
    let text = str_bytes(text);
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// `supervisord_min_servers number`: backends kept UP at all times (default 0).
pub unsafe extern "C" fn set_min_servers(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls this upstream-block directive's handler (SRV_CONF_OFFSET) with the
    // live `cf` and `conf`, this module's UpstreamConf of that block, as set_number needs.
    unsafe {
        set_number(
            cf,
            conf,
            |upstream| &mut upstream.min_servers,
            server_count,
            "a number of servers",
        )
    }
}

/// `supervisord_max_servers number`: backends UP at most through scaling (default: all).
pub unsafe extern "C" fn set_max_servers(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls this upstream-block directive's handler (SRV_CONF_OFFSET) with the
    // live `cf` and `conf`, this module's UpstreamConf of that block, as set_number needs.
    unsafe {
        set_number(
            cf,
            conf,
            |upstream| &mut upstream.max_servers,
            |text| server_count(text).filter(|n| *n > 0),
            "a number of servers from 1",
        )
    }
}

/// `supervisord_idle_timeout time | off`: a backend without requests for this long is drained
/// and stopped, never below the minimum (default off).
pub unsafe extern "C" fn set_idle_timeout(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls this upstream-block directive's handler (SRV_CONF_OFFSET) with the
    // live `cf` and `conf`, this module's UpstreamConf of that block, as set_number needs.
    unsafe {
        set_number(
            cf,
            conf,
            |upstream| &mut upstream.idle_timeout,
            time_or_off,
            "a time such as 5m, or off",
        )
    }
}

/// `supervisord_load_interval time`: how often a C balancer's load monitor (C API) is told the
/// load of the interval just ended (default 60s).
pub unsafe extern "C" fn set_load_interval(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls this upstream-block directive's handler (SRV_CONF_OFFSET) with the
    // live `cf` and `conf`, this module's UpstreamConf of that block, as set_number needs.
    unsafe {
        set_number(
            cf,
            conf,
            |upstream| &mut upstream.load_interval,
            positive_time,
            "a time such as 10s",
        )
    }
}

/// `supervisord_max_reply_size size`: the largest reply of supervisord taken (default 4m);
/// `getAllProcessInfo` needs about 1.3 KiB per program that supervisord manages.
pub unsafe extern "C" fn set_max_reply_size(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx calls this upstream-block directive's handler (SRV_CONF_OFFSET) with the
    // live `cf` and `conf`, this module's UpstreamConf of that block, as set_number needs.
    unsafe {
        set_number(
            cf,
            conf,
            |upstream| &mut upstream.max_reply_size,
            |text| parse_size_bytes(text).filter(|size| *size >= MIN_MAX_REPLY_SIZE),
            "a size of at least 1k, such as 16m",
        )
    }
}

/// `supervisord_scale_up in_flight=number | rate=number [window=time]`: when load starts one
/// more backend (`core::policy::scaling`).
pub unsafe extern "C" fn set_scale_up(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's srv conf of the enclosing upstream block.
    let upstream = unsafe { &mut *(conf as *mut UpstreamConf) };
    if upstream.scale_up.is_some() {
        return DUPLICATE;
    }
    // SAFETY: called by nginx as a directive handler.
    let args = unsafe { directive_args(cf) };
    let words: Vec<String> = args[1..].iter().map(str_lossy).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match parse_scale_up(&words, parse_time_text) {
        Ok(scale_up) => {
            upstream.scale_up = Some(scale_up);
            ptr::null_mut()
        }
        Err(problem) => conf_error(cf, &format!("supervisord_scale_up: {problem}")),
    }
}
