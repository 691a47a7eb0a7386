//! Holding requests while no backend is UP, in one place: the gate that holds them
//! (`gate`), their record (`record`), how they wake and go on (`wake`), holding again a
//! request its backend failed (`again`), and holding in a C balancer's peer.init with the
//! init_busy patch (`peer_init`). The decisions are `core::hold`'s.

pub mod again;
pub mod gate;
pub mod peer_init;
pub mod record;
pub mod wake;
