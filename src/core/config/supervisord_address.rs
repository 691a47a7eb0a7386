//! Arguments of the `supervisord` directive: where supervisord listens and how to log in.
//!
//! Redaction rule: an argument that fails to parse is never repeated in an error. Written in
//! the wrong place (`supervisord admin:secret 127.0.0.1:9001`) or as a URL
//! (`http://admin:secret@host:9001`), the "address" is where the password is; the errors below
//! say what is wrong with it instead, and nginx adds the file and line.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SupervisordEndpoint {
    /// `supervisord none`: act on commands at once, never talk to supervisord.
    None,
    Tcp {
        host: String,
        port: u16,
    },
    Unix {
        path: String,
    },
}

impl fmt::Display for SupervisordEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Self::Tcp { host, port } => write!(f, "{host}:{port}"),
            Self::Unix { path } => write!(f, "unix:{path}"),
        }
    }
}

/// Basic-auth credentials. `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, password: <hidden> }}",
            self.user
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressError {
    Empty,
    UnixPathNotAbsolute,
    NoPort,
    BadPort,
    EmptyHost,
    BadHost,
    UnclosedBracket,
    /// A URL (`http://...`) or `user:pass@host`: credentials are a separate argument.
    UrlOrEmbeddedCredentials,
    /// What follows the last `:` is not a number: likely `user:pass` in the address's place.
    NotAPort,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty address",
            Self::UnixPathNotAbsolute => "the path of a unix socket must be absolute",
            Self::NoPort => "no port in address (expected host:port, unix:/path or none)",
            Self::BadPort => "invalid port (expected 1-65535)",
            Self::EmptyHost => "no host in address",
            Self::BadHost => "invalid character in host",
            Self::UnclosedBracket => "unclosed \"[\" in IPv6 address",
            Self::UrlOrEmbeddedCredentials => {
                "a URL or \"user:pass@\" is not an address; write host:port, unix:/path or \
                 none, with user:pass as the next argument, as in \
                 \"supervisord 127.0.0.1:9001 user:pass\""
            }
            Self::NotAPort => {
                "the text after the last \":\" is not a port number; if this is user:pass, \
                 the address comes first, as in \"supervisord 127.0.0.1:9001 user:pass\""
            }
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialsError {
    NoColon,
    EmptyUser,
    /// `unix:/path`, an IP address or `[v6]:port` where user:pass belongs: swapped arguments.
    LooksLikeAddress,
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoColon => "credentials must be given as user:pass",
            Self::EmptyUser => "empty user name in credentials",
            Self::LooksLikeAddress => {
                "credentials look like an address: the address comes first, then user:pass, \
                 as in \"supervisord 127.0.0.1:9001 user:pass\""
            }
        })
    }
}

pub fn parse_endpoint(text: &str) -> Result<SupervisordEndpoint, AddressError> {
    if text.is_empty() {
        return Err(AddressError::Empty);
    }
    if text == "none" {
        return Ok(SupervisordEndpoint::None);
    }
    if text.contains('@') || text.contains("://") {
        return Err(AddressError::UrlOrEmbeddedCredentials);
    }
    if let Some(path) = text.strip_prefix("unix:") {
        if !path.starts_with('/') || path.len() < 2 {
            return Err(AddressError::UnixPathNotAbsolute);
        }
        return Ok(SupervisordEndpoint::Unix {
            path: path.to_owned(),
        });
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let close = rest.find(']').ok_or(AddressError::UnclosedBracket)?;
        let port = rest[close + 1..]
            .strip_prefix(':')
            .ok_or(AddressError::NoPort)?;
        (&rest[..close], port)
    } else {
        text.rsplit_once(':').ok_or(AddressError::NoPort)?
    };
    if host.is_empty() {
        return Err(AddressError::EmptyHost);
    }
    let host_ok = host
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || b".-_:".contains(&byte));
    // Brackets are for an IPv6 address only (`[::1]:9001`), and an IPv6 address needs them:
    // `[unix]:1` would be written back as the UNIX socket `unix:1`.
    if !host_ok || text.starts_with('[') != host.contains(':') {
        return Err(AddressError::BadHost);
    }
    Ok(SupervisordEndpoint::Tcp {
        host: host.to_owned(),
        port: parse_port(port)?,
    })
}

fn parse_port(text: &str) -> Result<u16, AddressError> {
    if text.is_empty() {
        return Err(AddressError::NoPort);
    }
    if !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(AddressError::NotAPort);
    }
    if text.len() > 5 {
        return Err(AddressError::BadPort);
    }
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(AddressError::BadPort),
    }
}

pub fn parse_credentials(text: &str) -> Result<Credentials, CredentialsError> {
    let (user, password) = text.split_once(':').ok_or(CredentialsError::NoColon)?;
    if user.is_empty() {
        return Err(CredentialsError::EmptyUser);
    }
    if looks_like_address(user, password) {
        return Err(CredentialsError::LooksLikeAddress);
    }
    Ok(Credentials {
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

/// Whether `user:password` is an address given where the credentials belong: `unix:/path`,
/// `127.0.0.1:9001`, `[::1]:9001`. No one names a supervisord user after an IP address.
fn looks_like_address(user: &str, password: &str) -> bool {
    (user == "unix" && password.starts_with('/'))
        || user.starts_with('[')
        || user.parse::<std::net::Ipv4Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> SupervisordEndpoint {
        SupervisordEndpoint::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(parse_endpoint("none"), Ok(SupervisordEndpoint::None));
        assert_eq!(parse_endpoint("127.0.0.1:9001"), Ok(tcp("127.0.0.1", 9001)));
        assert_eq!(parse_endpoint("localhost:9001"), Ok(tcp("localhost", 9001)));
        assert_eq!(parse_endpoint("[::1]:9001"), Ok(tcp("::1", 9001)));
        assert_eq!(
            parse_endpoint("unix:/run/supervisor.sock"),
            Ok(SupervisordEndpoint::Unix {
                path: "/run/supervisor.sock".into()
            })
        );
    }

    #[test]
    fn refuses_bad_addresses() {
        assert_eq!(parse_endpoint(""), Err(AddressError::Empty));
        assert_eq!(parse_endpoint("127.0.0.1"), Err(AddressError::NoPort));
        assert_eq!(parse_endpoint("127.0.0.1:"), Err(AddressError::NoPort));
        assert_eq!(parse_endpoint(":9001"), Err(AddressError::EmptyHost));
        assert_eq!(parse_endpoint("host:0"), Err(AddressError::BadPort));
        assert_eq!(parse_endpoint("host:65536"), Err(AddressError::BadPort));
        assert_eq!(parse_endpoint("host:-1"), Err(AddressError::NotAPort));
        assert_eq!(parse_endpoint("host:http"), Err(AddressError::NotAPort));
        assert_eq!(parse_endpoint("host:0009001"), Err(AddressError::BadPort));
        assert_eq!(parse_endpoint("ho st:9001"), Err(AddressError::BadHost));
        assert_eq!(parse_endpoint("::1:9001"), Err(AddressError::BadHost));
        assert_eq!(
            parse_endpoint("[::1:9001"),
            Err(AddressError::UnclosedBracket)
        );
        assert_eq!(parse_endpoint("[::1]9001"), Err(AddressError::NoPort));
        assert_eq!(
            parse_endpoint("unix:"),
            Err(AddressError::UnixPathNotAbsolute)
        );
        assert_eq!(
            parse_endpoint("unix:relative.sock"),
            Err(AddressError::UnixPathNotAbsolute)
        );
        assert_eq!(parse_endpoint("None"), Err(AddressError::NoPort));
        // Brackets hold an IPv6 address only: `[unix]:1` would be written back as a UNIX
        // socket (found by the fuzzer).
        assert_eq!(parse_endpoint("[unix]:1"), Err(AddressError::BadHost));
        assert_eq!(
            parse_endpoint("[localhost]:9001"),
            Err(AddressError::BadHost)
        );
    }

    #[test]
    fn endpoint_prints_as_written() {
        for text in ["none", "127.0.0.1:9001", "[::1]:9001", "unix:/tmp/s.sock"] {
            assert_eq!(parse_endpoint(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn credentials_need_a_colon_and_a_user() {
        assert_eq!(
            parse_credentials("admin:super"),
            Ok(Credentials {
                user: "admin".into(),
                password: "super".into()
            })
        );
        assert_eq!(parse_credentials("admin:a:b").unwrap().password, "a:b");
        assert_eq!(parse_credentials("admin"), Err(CredentialsError::NoColon));
        assert_eq!(
            parse_credentials(":secret"),
            Err(CredentialsError::EmptyUser)
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let credentials = parse_credentials("admin:s3cr3t-pw").unwrap();
        let shown = format!("{credentials:?}");
        assert!(shown.contains("admin"));
        assert!(!shown.contains("s3cr3t-pw"));
    }

    /// What `nginx -t` prints for an invalid address: the module's message never includes the
    /// argument, so it is enough that the error's text holds no part of the password.
    fn refusal(text: &str) -> String {
        parse_endpoint(text).unwrap_err().to_string()
    }

    #[test]
    fn swapped_arguments_are_refused_without_the_password() {
        // `supervisord admin:s3cret 127.0.0.1:9001`: the first argument is the credentials.
        assert_eq!(parse_endpoint("admin:s3cret"), Err(AddressError::NotAPort));
        let shown = refusal("admin:s3cret");
        assert!(shown.contains("the address comes first"), "{shown}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("admin"),
            "{shown}"
        );
        // Credentials that are an address: swapped, whatever the first argument was.
        for address in ["127.0.0.1:9001", "unix:/run/supervisor.sock", "[::1]:9001"] {
            assert_eq!(
                parse_credentials(address),
                Err(CredentialsError::LooksLikeAddress),
                "{address}"
            );
        }
        assert!(CredentialsError::LooksLikeAddress
            .to_string()
            .contains("the address comes first"));
    }

    #[test]
    fn url_style_addresses_are_refused_without_the_password() {
        for text in [
            "http://admin:s3cret@127.0.0.1:9001",
            "admin:s3cret@127.0.0.1:9001",
            "http://127.0.0.1:9001",
            "unix:///run/supervisor.sock",
        ] {
            assert_eq!(
                parse_endpoint(text),
                Err(AddressError::UrlOrEmbeddedCredentials),
                "{text}"
            );
            let shown = refusal(text);
            assert!(
                !shown.contains("s3cret") && !shown.contains("admin"),
                "{shown}"
            );
            assert!(shown.contains("user:pass as the next argument"), "{shown}");
        }
    }

    #[test]
    fn no_refusal_repeats_its_argument() {
        for text in [
            "127.0.0.1",
            "host:99999",
            "ho st:9001",
            "[::1:9001",
            "unix:rel",
            "admin:s3cret",
            "a:b@c:1",
        ] {
            let shown = refusal(text);
            assert!(!shown.contains(text), "{text} repeated in: {shown}");
        }
        for error in [
            CredentialsError::NoColon,
            CredentialsError::EmptyUser,
            CredentialsError::LooksLikeAddress,
        ] {
            assert!(!error.to_string().contains("s3cret"));
        }
    }

    #[test]
    fn ordinary_credentials_are_not_taken_for_addresses() {
        for text in [
            "admin:9001",
            "unix:relative",
            "web.admin:pw",
            "localhost:pw",
        ] {
            assert!(parse_credentials(text).is_ok(), "{text}");
        }
    }
}
