//! Once the configuration is read (at start-up, on reload and under `nginx -t`), warns about
//! every supervisord UNIX socket nginx's workers could not connect to. Runs in the master: the
//! workers' user is only known once the core module's settings are complete, after http's
//! postconfiguration. The decision and the wording are in `core::config::socket_access`; this file
//! reads the file system and the user database.

use std::ffi::{c_char, CStr, CString};
use std::os::unix::fs::MetadataExt;

use nginx_sys::{
    access, geteuid, getgrgid, getgrouplist, getpwuid, ngx_cycle_t, NGX_LOG_WARN, W_OK, X_OK,
};
use ngx::core::{CoreModuleMainConf, NgxCoreModule};

use super::MainConf;
use crate::core::config::socket_access::{
    check_reach, directories_of, warning, Blocked, FileMode, Names, WorkerIdentity,
};
use crate::core::config::supervisord_address::SupervisordEndpoint;

/// Logs one `[warn]` per supervisord socket of a managed upstream that the workers cannot reach.
///
/// # Safety
/// `cycle` must be the cycle nginx passes to `init_module`, its configuration complete.
pub unsafe fn warn_unreachable_sockets(cycle: *mut ngx_cycle_t, main: &MainConf) {
    // SAFETY: the cycle is valid (caller's contract).
    let cycle_ref = unsafe { &*cycle };
    let sockets = main.upstreams().flat_map(|upstream| {
        upstream
            .lines
            .iter()
            .filter_map(move |line| match &line.endpoint {
                SupervisordEndpoint::Unix { path } => Some((upstream, path)),
                _ => None,
            })
    });
    for (upstream, path) in sockets {
        // SAFETY: plain libc calls on the master's own credentials and the user database.
        let blocked = unsafe {
            if geteuid() == 0 {
                let Some(core) = NgxCoreModule::main_conf(cycle_ref) else {
                    continue;
                };
                // `user root;` (or no user at all): the workers stay root and reach everything.
                if core.user == 0 || core.user == u32::MAX {
                    continue;
                }
                let who = WorkerIdentity {
                    uid: core.user,
                    groups: groups_of(core.username, core.group),
                };
                check_as(&who, path).map(|blocked| (blocked, core.user, core.group))
            } else {
                // Workers run as the master's user: ask the kernel for that user.
                check_as_self(path).map(|blocked| (blocked, geteuid(), nginx_sys::getegid()))
            }
        };
        let Some((blocked, uid, gid)) = blocked else {
            continue;
        };
        let owner_file = match &blocked {
            Blocked::Socket { file } | Blocked::Directory { file, .. } => *file,
        };
        let (worker_user, worker_group) = (user_name(uid), group_name(gid));
        let (owner, group) = (user_name(owner_file.uid), group_name(owner_file.gid));
        let names = Names {
            worker_user: &worker_user,
            worker_group: &worker_group,
            owner: &owner,
            group: &group,
        };
        let text = warning(&upstream.name, path, &blocked, &names);
        // Past the error log's level filter on purpose: like nginx's own configuration
        // warnings, this one reaches the terminal of `nginx -t` and of the start even when
        // the error log is at its default level `error` (nginx still writes it to a log
        // file only if that file's level takes warnings).
        // SAFETY: the cycle's log is valid; the text is passed with its length.
        unsafe { ngx::log::log_error(NGX_LOG_WARN as _, cycle_ref.log, 0, text.as_bytes()) };
    }
}

fn file_mode(path: &str) -> Option<FileMode> {
    let metadata = std::fs::metadata(path).ok()?;
    Some(FileMode {
        uid: metadata.uid(),
        gid: metadata.gid(),
        mode: metadata.mode() & 0o7777,
    })
}

/// The way to `socket` as `who` would walk it; stops quietly where a directory or the socket
/// does not exist (supervisord may start after nginx).
fn check_as(who: &WorkerIdentity, socket: &str) -> Option<Blocked> {
    let mut directories = Vec::new();
    for directory in directories_of(socket) {
        let file = file_mode(&directory)?;
        directories.push((directory, file));
    }
    check_reach(who, &directories, file_mode(socket).as_ref()).err()
}

/// The same walk for the current process, through `access()`: the kernel knows its groups.
fn check_as_self(socket: &str) -> Option<Blocked> {
    let allowed = |path: &str, permission: u32| {
        let Ok(text) = CString::new(path) else {
            return true;
        };
        // SAFETY: a NUL-terminated path; access() only reads it.
        unsafe { access(text.as_ptr(), permission as i32) == 0 }
    };
    for directory in directories_of(socket) {
        let file = file_mode(&directory)?;
        if !allowed(&directory, X_OK) {
            return Some(Blocked::Directory {
                path: directory,
                file,
            });
        }
    }
    let file = file_mode(socket)?;
    (!allowed(socket, W_OK)).then_some(Blocked::Socket { file })
}

/// The primary group and the supplementary groups the workers get from `initgroups()`.
///
/// # Safety
/// `username` must be null or a NUL-terminated string.
unsafe fn groups_of(username: *mut c_char, group: u32) -> Vec<u32> {
    if username.is_null() {
        return vec![group];
    }
    let mut groups = vec![0u32; 64];
    loop {
        let mut count = groups.len() as i32;
        // SAFETY: `groups` has room for `count` entries; getgrouplist writes at most that many
        // and sets `count` to the number it needs.
        let rc = unsafe { getgrouplist(username, group, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            return groups;
        }
        if count as usize <= groups.len() || groups.len() >= 65_536 {
            return vec![group];
        }
        groups.resize(count as usize, 0);
    }
}

fn user_name(uid: u32) -> String {
    // SAFETY: getpwuid returns null or an entry valid until the next call; copied at once.
    unsafe {
        let entry = getpwuid(uid);
        if entry.is_null() || (*entry).pw_name.is_null() {
            return uid.to_string();
        }
        CStr::from_ptr((*entry).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

fn group_name(gid: u32) -> String {
    // SAFETY: getgrgid returns null or an entry valid until the next call; copied at once.
    unsafe {
        let entry = getgrgid(gid);
        if entry.is_null() || (*entry).gr_name.is_null() {
            return gid.to_string();
        }
        CStr::from_ptr((*entry).gr_name)
            .to_string_lossy()
            .into_owned()
    }
}
