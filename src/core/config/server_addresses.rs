//! The servers of a managed upstream must each be told apart by address: the balancer wrapper
//! finds the backend of a peer by its address, so a server without an address at configuration
//! time (`resolve`, `service=`) would never follow its status, and two servers sharing an
//! address would both follow the first one's.

/// Why an upstream's servers cannot be managed; indexes are positions among its servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerProblem {
    /// The server has no address when the configuration is read.
    NoAddress { server: usize },
    /// Both servers resolve to (at least) one same address.
    SharedAddress { first: usize, second: usize },
}

/// Checks the addresses of each server line, in configuration order; the first problem wins.
pub fn check_servers<A: AsRef<[u8]>>(servers: &[Vec<A>]) -> Result<(), ServerProblem> {
    for (index, addresses) in servers.iter().enumerate() {
        if addresses.is_empty() {
            return Err(ServerProblem::NoAddress { server: index });
        }
        for (earlier, earlier_addresses) in servers[..index].iter().enumerate() {
            let shared = addresses.iter().any(|address| {
                earlier_addresses
                    .iter()
                    .any(|other| other.as_ref() == address.as_ref())
            });
            if shared {
                return Err(ServerProblem::SharedAddress {
                    first: earlier,
                    second: index,
                });
            }
        }
    }
    Ok(())
}

impl ServerProblem {
    /// The operator's error: the servers by name (they have no line of their own), the
    /// upstream, and where the upstream block is (`place` is `file:line`).
    pub fn message(&self, server_names: &[String], upstream: &str, place: &str) -> String {
        let name = |index: usize| server_names.get(index).map_or("?", String::as_str);
        match *self {
            Self::NoAddress { server } => format!(
                "server \"{}\" of upstream \"{upstream}\" in {place} has no address when the \
                 configuration is read (\"resolve\" and \"service=\" are not supported with \
                 \"supervisord\"): write its address or a name resolvable at start-up",
                name(server)
            ),
            Self::SharedAddress { first, second } => format!(
                "servers \"{}\" and \"{}\" of upstream \"{upstream}\" in {place} share an \
                 address: each server of a \"supervisord\" upstream is one program and needs \
                 its own address",
                name(first),
                name(second)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(lists: &[&[&str]]) -> Vec<Vec<String>> {
        lists
            .iter()
            .map(|list| list.iter().map(|address| address.to_string()).collect())
            .collect()
    }

    #[test]
    fn distinct_addresses_pass() {
        let list = servers(&[&["a4", "a6"], &["b4"], &["c4", "c6"]]);
        assert_eq!(check_servers(&list), Ok(()));
        assert_eq!(check_servers::<Vec<u8>>(&[]), Ok(()));
    }

    #[test]
    fn the_same_address_twice_is_refused() {
        let list = servers(&[&["a4"], &["b4"], &["a4"]]);
        assert_eq!(
            check_servers(&list),
            Err(ServerProblem::SharedAddress {
                first: 0,
                second: 2
            })
        );
    }

    #[test]
    fn one_shared_address_of_several_is_refused() {
        // `localhost:8000` (::1 and 127.0.0.1) and `127.0.0.1:8000`.
        let list = servers(&[&["v6", "v4"], &["v4"]]);
        assert_eq!(
            check_servers(&list),
            Err(ServerProblem::SharedAddress {
                first: 0,
                second: 1
            })
        );
    }

    #[test]
    fn a_server_without_address_is_refused() {
        let list = servers(&[&["a4"], &[]]);
        assert_eq!(
            check_servers(&list),
            Err(ServerProblem::NoAddress { server: 1 })
        );
    }

    #[test]
    fn messages_name_servers_upstream_and_place() {
        let names = vec!["127.0.0.1:8000".to_string(), "localhost:8000".to_string()];
        let shared = ServerProblem::SharedAddress {
            first: 0,
            second: 1,
        }
        .message(&names, "app", "/etc/nginx/nginx.conf:12");
        assert!(shared.starts_with(
            "servers \"127.0.0.1:8000\" and \"localhost:8000\" of upstream \"app\" in \
             /etc/nginx/nginx.conf:12 share an address"
        ));
        let unresolved = ServerProblem::NoAddress { server: 1 }.message(&names, "app", "f:3");
        assert!(unresolved.contains("server \"localhost:8000\" of upstream \"app\" in f:3"));
        assert!(unresolved.contains("\"resolve\""));
    }
}
