//! Several machines: an upstream may name one `supervisord` per host, each managing the
//! servers on its host. A server belongs to the supervisord whose `servers=HOST` names its host
//! (the host part of its `server` line, or one of its addresses), or, without `servers=`, to the
//! TCP supervisord whose address is on the same host as one of the server's addresses. Program
//! names count per host: the first server of a host is `<prefix>0`, the next `<prefix>1`, so
//! identical hosts run identical supervisord configurations; with one `supervisord` line this is
//! ngx_supervisord 1.4's numbering (the server's position in the upstream).

use std::net::IpAddr;

/// The most `supervisord` lines (hosts) one upstream may name.
pub const MAX_SUPERVISORDS: usize = 8;

/// One `server` line as the assignment sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerPlace {
    /// The host part of the server line as written (`10.0.0.2`, `app1.internal`, `::1`);
    /// `None` for a `unix:` server.
    pub host: Option<String>,
    /// The addresses it resolved to at configuration time.
    pub ips: Vec<IpAddr>,
}

/// One `supervisord` line as the assignment sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinePlace {
    /// `servers=HOST`, if given.
    pub servers: Option<String>,
    /// The address of a TCP supervisord (`None` for a UNIX socket).
    pub ip: Option<IpAddr>,
}

/// Where one server went: its `supervisord` line and its program number on that host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub line: usize,
    pub program: usize,
}

/// Why the servers cannot be assigned; indexes are positions among the servers or lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssignError {
    /// No `supervisord` line manages this server.
    Unclaimed { server: usize },
    /// Two lines both manage it.
    ClaimedTwice {
        server: usize,
        first: usize,
        second: usize,
    },
    /// Two lines name the same host.
    HostTwice { first: usize, second: usize },
    /// A UNIX socket line among several says nothing of which servers it manages.
    SocketWithoutServers { line: usize },
}

/// The host part of a `server` line's address as written: `10.0.0.2:8000` -> `10.0.0.2`,
/// `[::1]:80` -> `::1`, `app:8000` -> `app`, `app` -> `app`; `None` for `unix:`.
pub fn server_host(name: &str) -> Option<String> {
    if name.starts_with("unix:") {
        return None;
    }
    if let Some(rest) = name.strip_prefix('[') {
        return rest.split(']').next().map(str::to_string);
    }
    match name.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            Some(host.to_string())
        }
        _ => Some(name.to_string()),
    }
}

/// The IP address of a socket address as nginx resolved it (Linux's `sockaddr_in` and
/// `sockaddr_in6`); `None` for another family (`unix:`).
pub fn sockaddr_ip(sockaddr: &[u8]) -> Option<IpAddr> {
    const AF_INET: u16 = 2;
    const AF_INET6: u16 = 10;
    let family = u16::from_ne_bytes([*sockaddr.first()?, *sockaddr.get(1)?]);
    match family {
        AF_INET => {
            let octets: [u8; 4] = sockaddr.get(4..8)?.try_into().ok()?;
            Some(IpAddr::from(octets))
        }
        AF_INET6 => {
            let octets: [u8; 16] = sockaddr.get(8..24)?.try_into().ok()?;
            Some(IpAddr::from(octets))
        }
        _ => None,
    }
}

fn claims(line: &LinePlace, server: &ServerPlace) -> bool {
    match (&line.servers, line.ip) {
        (Some(host), _) => {
            server.host.as_deref() == Some(host.as_str())
                || host
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| server.ips.contains(&ip))
        }
        (None, Some(ip)) => server.ips.contains(&ip),
        (None, None) => false,
    }
}

/// Assigns every server to one `supervisord` line and numbers its program on that host.
pub fn assign(
    servers: &[ServerPlace],
    lines: &[LinePlace],
) -> Result<Vec<Assignment>, AssignError> {
    if lines.len() <= 1 {
        return Ok((0..servers.len())
            .map(|program| Assignment { line: 0, program })
            .collect());
    }
    for (second, line) in lines.iter().enumerate() {
        if line.servers.is_none() && line.ip.is_none() {
            return Err(AssignError::SocketWithoutServers { line: second });
        }
        let same_host = |other: &LinePlace| match (&line.servers, &other.servers) {
            (Some(mine), Some(theirs)) => mine == theirs,
            (None, None) => line.ip == other.ip,
            _ => false,
        };
        if let Some(first) = lines[..second].iter().position(same_host) {
            return Err(AssignError::HostTwice { first, second });
        }
    }
    let mut next_program = vec![0; lines.len()];
    servers
        .iter()
        .enumerate()
        .map(|(server, place)| {
            let mut claiming = lines
                .iter()
                .enumerate()
                .filter(|(_, line)| claims(line, place))
                .map(|(index, _)| index);
            let line = claiming.next().ok_or(AssignError::Unclaimed { server })?;
            if let Some(second) = claiming.next() {
                return Err(AssignError::ClaimedTwice {
                    server,
                    first: line,
                    second,
                });
            }
            let program = next_program[line];
            next_program[line] += 1;
            Ok(Assignment { line, program })
        })
        .collect()
}

impl AssignError {
    /// The operator's error: servers and lines by what they say (`server_names`, `line_names`:
    /// each `supervisord` line's address), the upstream, where its block is.
    pub fn message(
        &self,
        server_names: &[String],
        line_names: &[String],
        upstream: &str,
        place: &str,
    ) -> String {
        let server = |index: usize| server_names.get(index).map_or("?", String::as_str);
        let line = |index: usize| line_names.get(index).map_or("?", String::as_str);
        match *self {
            Self::Unclaimed { server: index } => format!(
                "server \"{}\" of upstream \"{upstream}\" in {place} is on no supervisord's \
                 host: add \"servers=HOST\" to the \"supervisord\" line that manages it",
                server(index)
            ),
            Self::ClaimedTwice {
                server: index,
                first,
                second,
            } => format!(
                "server \"{}\" of upstream \"{upstream}\" in {place} is managed by both \
                 \"supervisord {}\" and \"supervisord {}\": each server has one supervisord",
                server(index),
                line(first),
                line(second)
            ),
            Self::HostTwice { first, second } => format!(
                "\"supervisord {}\" and \"supervisord {}\" of upstream \"{upstream}\" in {place} \
                 name the same host: one \"supervisord\" per host",
                line(first),
                line(second)
            ),
            Self::SocketWithoutServers { line: index } => format!(
                "\"supervisord {}\" of upstream \"{upstream}\" in {place} is one of several: \
                 a UNIX socket needs \"servers=HOST\" to say which servers it manages",
                line(index)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, ip: &str) -> ServerPlace {
        ServerPlace {
            host: server_host(name),
            ips: vec![ip.parse().unwrap()],
        }
    }

    fn tcp(ip: &str) -> LinePlace {
        LinePlace {
            servers: None,
            ip: Some(ip.parse().unwrap()),
        }
    }

    #[test]
    fn one_line_keeps_1_4_numbering() {
        let servers = [
            server("10.0.0.2:8000", "10.0.0.2"),
            server("10.0.0.3:8000", "10.0.0.3"),
        ];
        assert_eq!(
            assign(&servers, &[tcp("10.0.0.9")]).unwrap(),
            vec![
                Assignment {
                    line: 0,
                    program: 0
                },
                Assignment {
                    line: 0,
                    program: 1
                }
            ]
        );
    }

    #[test]
    fn servers_go_to_the_supervisord_on_their_host_and_count_per_host() {
        let servers = [
            server("10.0.0.2:8000", "10.0.0.2"),
            server("10.0.0.2:8001", "10.0.0.2"),
            server("10.0.0.3:8000", "10.0.0.3"),
        ];
        let lines = [tcp("10.0.0.2"), tcp("10.0.0.3")];
        assert_eq!(
            assign(&servers, &lines).unwrap(),
            vec![
                Assignment {
                    line: 0,
                    program: 0
                },
                Assignment {
                    line: 0,
                    program: 1
                },
                Assignment {
                    line: 1,
                    program: 0
                },
            ]
        );
    }

    #[test]
    fn servers_equals_names_a_host_for_a_socket_or_another_interface() {
        let servers = [
            server("app4:8000", "10.0.0.4"),
            server("10.0.0.5:8000", "10.0.0.5"),
        ];
        let lines = [
            LinePlace {
                servers: Some("app4".into()),
                ip: None,
            },
            LinePlace {
                servers: Some("10.0.0.5".into()),
                ip: Some("192.168.0.5".parse().unwrap()),
            },
        ];
        assert_eq!(
            assign(&servers, &lines).unwrap(),
            vec![
                Assignment {
                    line: 0,
                    program: 0
                },
                Assignment {
                    line: 1,
                    program: 0
                }
            ]
        );
    }

    #[test]
    fn every_server_has_exactly_one_supervisord() {
        let servers = [
            server("10.0.0.2:8000", "10.0.0.2"),
            server("10.0.0.7:8000", "10.0.0.7"),
        ];
        assert_eq!(
            assign(&servers, &[tcp("10.0.0.2"), tcp("10.0.0.3")]),
            Err(AssignError::Unclaimed { server: 1 })
        );
        let twice = [
            tcp("10.0.0.2"),
            LinePlace {
                servers: Some("10.0.0.2".into()),
                ip: Some("10.0.0.9".parse().unwrap()),
            },
        ];
        assert_eq!(
            assign(&servers[..1], &twice),
            Err(AssignError::ClaimedTwice {
                server: 0,
                first: 0,
                second: 1
            })
        );
        assert_eq!(
            assign(&servers, &[tcp("10.0.0.2"), tcp("10.0.0.2")]),
            Err(AssignError::HostTwice {
                first: 0,
                second: 1
            })
        );
        let socket = LinePlace {
            servers: None,
            ip: None,
        };
        assert_eq!(
            assign(&servers, &[tcp("10.0.0.2"), socket]),
            Err(AssignError::SocketWithoutServers { line: 1 })
        );
    }

    #[test]
    fn reads_the_ip_of_a_linux_sockaddr() {
        let mut v4 = vec![0u8; 16];
        v4[..2].copy_from_slice(&2u16.to_ne_bytes());
        v4[2..4].copy_from_slice(&8000u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 2]);
        assert_eq!(sockaddr_ip(&v4), Some("127.0.0.2".parse().unwrap()));
        let mut v6 = vec![0u8; 28];
        v6[..2].copy_from_slice(&10u16.to_ne_bytes());
        v6[23] = 1;
        assert_eq!(sockaddr_ip(&v6), Some("::1".parse().unwrap()));
        let mut unix = vec![0u8; 110];
        unix[..2].copy_from_slice(&1u16.to_ne_bytes());
        assert_eq!(sockaddr_ip(&unix), None);
        assert_eq!(sockaddr_ip(&[2]), None);
    }

    #[test]
    fn reads_the_host_part_of_a_server_line() {
        assert_eq!(server_host("10.0.0.2:8000").as_deref(), Some("10.0.0.2"));
        assert_eq!(server_host("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(server_host("app:8000").as_deref(), Some("app"));
        assert_eq!(server_host("app").as_deref(), Some("app"));
        assert_eq!(server_host("unix:/run/app.sock"), None);
    }

    #[test]
    fn messages_name_the_server_the_lines_and_the_place() {
        let message = AssignError::Unclaimed { server: 0 }.message(
            &["10.0.0.7:8000".into()],
            &["10.0.0.2:9001".into()],
            "app",
            "nginx.conf:3",
        );
        assert!(message.contains("\"10.0.0.7:8000\""), "{message}");
        assert!(message.contains("nginx.conf:3"), "{message}");
        assert!(message.contains("servers=HOST"), "{message}");
    }
}
