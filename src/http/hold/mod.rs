//! Holding requests while no backend is UP, in one place: what a request finds and the start
//! it sets off (`verdict`), the gate that holds it (`gate`), its record (`record`), its events,
//! how it wakes and how its hold ends (`wake`), holding again a request its backend failed
//! (`again`), and holding in a C balancer's peer.init with the init_busy patch (`peer_init`).
//! Imports run one way: `verdict` <- `record` <- `wake` <- `gate` <- `again`, `peer_init`. The
//! decisions are `core::hold`'s.

pub mod again;
pub mod gate;
pub mod peer_init;
pub mod record;
pub mod verdict;
pub mod wake;
