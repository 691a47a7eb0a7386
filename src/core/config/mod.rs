//! What the configuration says: supervisord addresses and hosts, server addresses and the host
//! each belongs to, access rules of the control endpoints, control URIs, upstream identities.

pub mod control_uri;
pub mod server_addresses;
pub mod server_hosts;
pub mod socket_access;
pub mod supervisord_address;
pub mod supervisord_host;
pub mod upstream_identity;
