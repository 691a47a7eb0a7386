//! The supervisord side: the XML-RPC client on nginx's event loop, the commander that carries
//! starts and stops out, the readiness probe, and the reconciler that reads supervisord's view.

pub mod client;
pub mod commander;
pub mod connect_check;
pub mod failure_check;
pub mod peer_conn;
pub mod readiness;
pub mod reconciler;
pub mod scaler;
pub mod watchdog;
