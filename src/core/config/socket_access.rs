//! Whether nginx's workers can reach supervisord's UNIX socket, and what to tell the operator
//! when they cannot. Connecting to a UNIX socket needs search permission on every directory of
//! its path and write permission on the socket itself. The workers run as nginx's `user`
//! (with that user's supplementary groups) when the master runs as root; Debian's supervisord
//! creates its socket mode 0700 for root, which every request would then hit as a 502.

/// Owner, group and permission bits of one file or directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMode {
    pub uid: u32,
    pub gid: u32,
    /// The permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

/// Who the workers run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerIdentity {
    pub uid: u32,
    /// The primary group first, then the supplementary ones.
    pub groups: Vec<u32>,
}

const CLASS_SHIFT_OWNER: u32 = 6;
const CLASS_SHIFT_GROUP: u32 = 3;
const WRITE: u32 = 0o2;
const SEARCH: u32 = 0o1;

impl WorkerIdentity {
    /// POSIX access check of one permission (`WRITE` or `SEARCH`): root may do anything,
    /// the owner gets the owner bits (even when the group bits would allow more), a member of
    /// the file's group the group bits, anyone else the other bits.
    fn may(&self, file: &FileMode, permission: u32) -> bool {
        if self.uid == 0 {
            return true;
        }
        let shift = if file.uid == self.uid {
            CLASS_SHIFT_OWNER
        } else if self.groups.contains(&file.gid) {
            CLASS_SHIFT_GROUP
        } else {
            0
        };
        (file.mode >> shift) & permission != 0
    }
}

/// Where the path to the socket is closed to the workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// A directory on the way (by its path) has no search permission for them.
    Directory { path: String, file: FileMode },
    /// The socket has no write permission for them.
    Socket { file: FileMode },
}

/// The directories of the socket's path, outermost first (`/`, `/var`, `/var/run` for
/// `/var/run/supervisor.sock`).
pub fn directories_of(socket_path: &str) -> Vec<String> {
    let mut directories = vec!["/".to_string()];
    let mut prefix = String::new();
    let components: Vec<&str> = socket_path
        .split('/')
        .filter(|part| !part.is_empty())
        .collect();
    for part in components.iter().take(components.len().saturating_sub(1)) {
        prefix.push('/');
        prefix.push_str(part);
        directories.push(prefix.clone());
    }
    directories
}

/// Checks the way to the socket: `directories` as `directories_of` lists them with their modes,
/// then the socket's own mode (None when it does not exist yet: supervisord may start after
/// nginx, and the missing socket is reported when a call is made).
pub fn check_reach(
    who: &WorkerIdentity,
    directories: &[(String, FileMode)],
    socket: Option<&FileMode>,
) -> Result<(), Blocked> {
    for (path, file) in directories {
        if !who.may(file, SEARCH) {
            return Err(Blocked::Directory {
                path: path.clone(),
                file: *file,
            });
        }
    }
    match socket {
        Some(file) if !who.may(file, WRITE) => Err(Blocked::Socket { file: *file }),
        _ => Ok(()),
    }
}

/// Names of the users and groups a warning mentions.
pub struct Names<'a> {
    pub worker_user: &'a str,
    pub worker_group: &'a str,
    /// Name of the socket's owner, or of the directory's owner for `Blocked::Directory`.
    pub owner: &'a str,
    /// Name of the group of the socket (or directory).
    pub group: &'a str,
}

/// The warning `nginx -t` and start-up print. Never recommends a world-writable socket: the
/// fix gives the workers' group access through `[unix_http_server]`'s `chown` and `chmod`.
pub fn warning(upstream: &str, socket_path: &str, blocked: &Blocked, names: &Names) -> String {
    let head = format!(
        "supervisord: upstream \"{upstream}\": nginx's workers (user \"{}\", group \"{}\") \
         cannot reach the supervisord socket \"{socket_path}\"",
        names.worker_user, names.worker_group
    );
    match blocked {
        Blocked::Socket { file } => format!(
            "{head}: it is mode {:04o}, owned by {}:{}, and connecting needs write permission; \
             in supervisord's [unix_http_server] section set \"chown={}:{}\" and \
             \"chmod=0770\" (never a world-writable socket), then restart supervisord",
            file.mode & 0o7777,
            names.owner,
            names.group,
            names.owner,
            names.worker_group
        ),
        Blocked::Directory { path, file } => format!(
            "{head}: directory \"{path}\" (mode {:04o}, owned by {}:{}) is not searchable by \
             them; put the socket in a directory they can search, or give group \"{}\" search \
             permission on it (e.g. owner {}:{} and mode 0750)",
            file.mode & 0o7777,
            names.owner,
            names.group,
            names.worker_group,
            names.owner,
            names.worker_group
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: u32 = 0;
    const WWW: u32 = 33;
    const OTHER: u32 = 1000;

    fn file(uid: u32, gid: u32, mode: u32) -> FileMode {
        FileMode { uid, gid, mode }
    }

    fn www_data() -> WorkerIdentity {
        WorkerIdentity {
            uid: WWW,
            groups: vec![WWW],
        }
    }

    fn open_dirs() -> Vec<(String, FileMode)> {
        directories_of("/run/supervisor.sock")
            .into_iter()
            .map(|path| (path, file(ROOT, ROOT, 0o755)))
            .collect()
    }

    #[test]
    fn lists_the_directories_of_a_path() {
        assert_eq!(
            directories_of("/var/run/supervisor.sock"),
            ["/", "/var", "/var/run"]
        );
        assert_eq!(directories_of("/s.sock"), ["/"]);
        assert_eq!(directories_of("//tmp//x/s.sock"), ["/", "/tmp", "/tmp/x"]);
    }

    #[test]
    fn debians_default_socket_is_closed_to_www_data() {
        let socket = file(ROOT, ROOT, 0o700);
        assert_eq!(
            check_reach(&www_data(), &open_dirs(), Some(&socket)),
            Err(Blocked::Socket { file: socket })
        );
    }

    #[test]
    fn the_recommended_socket_is_open_to_its_group_only() {
        let socket = file(ROOT, WWW, 0o770);
        assert_eq!(
            check_reach(&www_data(), &open_dirs(), Some(&socket)),
            Ok(())
        );
        let stranger = WorkerIdentity {
            uid: OTHER,
            groups: vec![OTHER],
        };
        assert!(check_reach(&stranger, &open_dirs(), Some(&socket)).is_err());
    }

    #[test]
    fn supplementary_groups_count() {
        let socket = file(ROOT, 120, 0o770);
        let member = WorkerIdentity {
            uid: WWW,
            groups: vec![WWW, 120],
        };
        assert_eq!(check_reach(&member, &open_dirs(), Some(&socket)), Ok(()));
    }

    #[test]
    fn the_owner_class_wins_over_the_group_class() {
        // Owner without write, group with write: the owner is refused, as the kernel does.
        let socket = file(WWW, WWW, 0o570);
        assert!(check_reach(&www_data(), &open_dirs(), Some(&socket)).is_err());
        let socket = file(WWW, ROOT, 0o700);
        assert_eq!(
            check_reach(&www_data(), &open_dirs(), Some(&socket)),
            Ok(())
        );
    }

    #[test]
    fn world_writable_and_root_reach() {
        let socket = file(ROOT, ROOT, 0o777);
        assert_eq!(
            check_reach(&www_data(), &open_dirs(), Some(&socket)),
            Ok(())
        );
        let root = WorkerIdentity {
            uid: ROOT,
            groups: vec![ROOT],
        };
        let closed = file(OTHER, OTHER, 0o000);
        let dirs = vec![("/".to_string(), closed)];
        assert_eq!(check_reach(&root, &dirs, Some(&closed)), Ok(()));
    }

    #[test]
    fn a_closed_directory_blocks_first() {
        let mut dirs = open_dirs();
        let closed = file(ROOT, ROOT, 0o700);
        dirs[1].1 = closed;
        assert_eq!(
            check_reach(&www_data(), &dirs, Some(&file(ROOT, ROOT, 0o777))),
            Err(Blocked::Directory {
                path: "/run".into(),
                file: closed
            })
        );
        // Read without search is not enough.
        dirs[1].1 = file(ROOT, ROOT, 0o744);
        assert!(check_reach(&www_data(), &dirs, None).is_err());
    }

    #[test]
    fn a_missing_socket_is_not_reported_here() {
        assert_eq!(check_reach(&www_data(), &open_dirs(), None), Ok(()));
    }

    #[test]
    fn the_warning_names_socket_user_and_fix_never_world_writable() {
        let names = Names {
            worker_user: "www-data",
            worker_group: "www-data",
            owner: "root",
            group: "root",
        };
        let text = warning(
            "app",
            "/var/run/supervisor.sock",
            &Blocked::Socket {
                file: file(ROOT, ROOT, 0o700),
            },
            &names,
        );
        assert!(text.contains("\"/var/run/supervisor.sock\""), "{text}");
        assert!(text.contains("user \"www-data\""), "{text}");
        assert!(text.contains("mode 0700, owned by root:root"), "{text}");
        assert!(text.contains("[unix_http_server]"), "{text}");
        assert!(text.contains("\"chown=root:www-data\""), "{text}");
        assert!(text.contains("\"chmod=0770\""), "{text}");
        assert!(!text.contains("0777") && !text.contains("0766"), "{text}");
        let text = warning(
            "app",
            "/srv/sv/s.sock",
            &Blocked::Directory {
                path: "/srv/sv".into(),
                file: file(ROOT, ROOT, 0o700),
            },
            &names,
        );
        assert!(text.contains("directory \"/srv/sv\" (mode 0700"), "{text}");
    }
}
