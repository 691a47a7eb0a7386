//! Configuration: the directives' settings, and the checks that can only run once the whole
//! `http {}` block is read (servers of each upstream, upstream names used by control
//! locations, directives without `supervisord`). Nothing here changes once nginx runs; the
//! module object that finds these configurations is passed in by the composition root.

pub mod balancer_hooks;
pub mod location;
pub mod socket_access;
pub mod upstream;

use nginx_sys::{ngx_conf_t, ngx_http_upstream_srv_conf_t};
use ngx::http::{HttpModuleMainConf, NgxHttpUpstreamModule};

use crate::core::config::supervisord_host::{first_conflict, host_leads};
use crate::util::text::{cstr_lossy, str_bytes, str_lossy};

pub use location::{LocationConf, UpstreamLookup};
pub use upstream::UpstreamConf;

/// http-level configuration of the module.
#[derive(Default)]
pub struct MainConf {
    /// Every upstream with a `supervisord` directive, in configuration order (their `index`).
    pub upstreams: Vec<*mut UpstreamConf>,
    /// Control locations whose upstream name is checked once all upstreams are known.
    pub control_locations: Vec<*mut LocationConf>,
}

impl MainConf {
    pub fn upstreams(&self) -> impl Iterator<Item = &'static UpstreamConf> + '_ {
        // SAFETY: collected at configuration time from srv confs of this cycle.
        self.upstreams.iter().map(|&upstream| unsafe { &*upstream })
    }
}

/// Every upstream block of the http block.
///
/// # Safety
/// `cf` must be the http block's configuration, after its upstream blocks are parsed.
pub unsafe fn all_upstreams<'a>(cf: *mut ngx_conf_t) -> &'a [*mut ngx_http_upstream_srv_conf_t] {
    // SAFETY: cf is valid (caller's contract).
    let Some(upstream_main) = NgxHttpUpstreamModule::main_conf(unsafe { &*cf }) else {
        return &[];
    };
    // SAFETY: the upstream module keeps an array of pointers to every upstream's srv conf.
    unsafe {
        std::slice::from_raw_parts(
            upstream_main.upstreams.elts as *const *mut ngx_http_upstream_srv_conf_t,
            upstream_main.upstreams.nelts,
        )
    }
}

/// Learns the servers of every upstream with `supervisord` and lists them in `main`; refuses
/// module directives in upstreams without it. The error names the file and line.
///
/// # Safety
/// `cf` must be the http block's configuration, after its upstream blocks are parsed.
pub unsafe fn collect_upstreams(
    cf: *mut ngx_conf_t,
    main: &mut MainConf,
    upstream_conf: UpstreamLookup,
) -> Result<(), String> {
    // SAFETY: `cf` is the http block's configuration with its upstream blocks parsed (this
    // fn's contract), as all_upstreams needs.
    for &uscf in unsafe { all_upstreams(cf) } {
        // SAFETY: entries of the upstreams array are valid srv confs.
        let uscf_ref = unsafe { &*uscf };
        // Upstreams created implicitly by proxy_pass to a host name have no module confs.
        if uscf_ref.srv_conf.is_null() {
            continue;
        }
        let Some(upstream) = upstream_conf(uscf_ref) else {
            continue;
        };
        if upstream.endpoint.is_none() {
            if let Some(directive) = upstream.directive_without_endpoint() {
                return Err(format!(
                    "\"{directive}\" needs \"supervisord\" in upstream \"{}\" in {}:{}",
                    str_lossy(&uscf_ref.host),
                    cstr_lossy(uscf_ref.file_name as *const _),
                    uscf_ref.line
                ));
            }
            continue;
        }
        // SAFETY: uscf is an explicit upstream block whose servers are parsed.
        unsafe { upstream.attach(uscf, main.upstreams.len()) }?;
        main.upstreams.push(upstream as *mut UpstreamConf);
    }
    assign_hosts(main)
}

/// Gives every `supervisord` line of every managed upstream its host (`core::config::supervisord_host`):
/// lines that name the same supervisord share one, led by the first. Refuses a host whose
/// upstreams disagree on its settings, naming both blocks.
fn assign_hosts(main: &mut MainConf) -> Result<(), String> {
    // Every line of every upstream, as (upstream, line).
    let lines: Vec<(usize, usize)> = main
        .upstreams()
        .enumerate()
        .flat_map(|(upstream, conf)| (0..conf.lines.len()).map(move |line| (upstream, line)))
        .collect();
    let keys: Vec<_> = lines
        .iter()
        .map(|&(upstream, line)| {
            // SAFETY: managed upstreams point at their srv conf, valid for the cycle.
            Some(unsafe { &*main.upstreams[upstream] }.lines[line].host_key())
        })
        .collect();
    let leads = host_leads(&keys);
    let settings: Vec<_> = lines
        .iter()
        // SAFETY: main.upstreams holds managed upstreams' confs, in the cycle's pool.
        .map(|&(upstream, _)| unsafe { &*main.upstreams[upstream] }.host_settings())
        .collect();
    if let Some(conflict) = first_conflict(&leads, &settings) {
        let describe = |position: usize, value: u64| {
            // SAFETY: main.upstreams holds managed upstreams' confs, in the cycle's pool.
            let conf = unsafe { &*main.upstreams[lines[position].0] };
            // SAFETY: `attach` pointed conf.upstream at its block's srv conf, live for the cycle.
            let uscf = unsafe { &*conf.upstream };
            let value = if conflict.directive == "supervisord_max_reply_size" {
                format!("{value} bytes")
            } else {
                format!("{value}ms")
            };
            format!(
                "upstream \"{}\" ({value}, in {}:{})",
                conf.name,
                cstr_lossy(uscf.file_name as *const _),
                uscf.line
            )
        };
        let (lead_upstream, lead_line) = lines[conflict.lead];
        // SAFETY: main.upstreams holds managed upstreams' confs, in the cycle's pool.
        let lead = unsafe { &*main.upstreams[lead_upstream] };
        return Err(format!(
            "\"{}\" differs between {} and {}, which use the same supervisord at {}: set it alike in every upstream that names this supervisord",
            conflict.directive,
            describe(conflict.lead, conflict.lead_value),
            describe(conflict.other, conflict.other_value),
            lead.lines[lead_line].resolved.display
        ));
    }
    for (position, lead) in leads.into_iter().enumerate() {
        let (upstream, line) = lines[position];
        // SAFETY: a managed upstream's conf, in the cycle's pool; no other reference to it is
        // alive here, and nothing else uses the confs while the configuration is read.
        let conf = unsafe { &mut *main.upstreams[upstream] };
        conf.lines[line].host_lead = lines[lead.unwrap_or(position)];
    }
    Ok(())
}

/// Points every control location at the upstream it names.
///
/// # Safety
/// `cf` must be the http block's configuration, after its upstream blocks are parsed.
pub unsafe fn resolve_control_locations(
    cf: *mut ngx_conf_t,
    main: &MainConf,
    upstream_conf: UpstreamLookup,
) -> Result<(), String> {
    // SAFETY: `cf` is the http block's configuration with its upstream blocks parsed (this
    // fn's contract), as all_upstreams needs.
    let all = unsafe { all_upstreams(cf) };
    for &location in &main.control_locations {
        // SAFETY: registered by the start/stop directive handlers; lives in the cycle pool.
        let location = unsafe { &mut *location };
        match find_managed_upstream(all, location.upstream_name.as_bytes(), upstream_conf) {
            Ok(upstream) => location.upstream = upstream,
            Err(reason) => {
                return Err(format!(
                    "\"{}\" {reason} \"{}\" in {}:{}",
                    location.directive_name(),
                    location.upstream_name,
                    location.file,
                    location.line
                ))
            }
        }
    }
    Ok(())
}

fn find_managed_upstream(
    all_upstreams: &[*mut ngx_http_upstream_srv_conf_t],
    name: &[u8],
    upstream_conf: UpstreamLookup,
) -> Result<*mut UpstreamConf, &'static str> {
    for &uscf in all_upstreams {
        // SAFETY: entries of the upstreams array are valid srv confs.
        let uscf_ref = unsafe { &*uscf };
        if str_bytes(&uscf_ref.host) != name || uscf_ref.srv_conf.is_null() {
            continue;
        }
        return match upstream_conf(uscf_ref) {
            Some(upstream) if upstream.endpoint.is_some() => Ok(upstream as *mut UpstreamConf),
            _ => Err("has no \"supervisord\" directive in upstream"),
        };
    }
    Err("names an unknown upstream")
}
