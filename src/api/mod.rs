//! The C API of `include/ngx_supervisord.h` (version 2, as in ngx_supervisord 1.4), for
//! balancer modules written in C: the exported functions, the commands balancers send and the
//! load reports they are told. Sits on top of the HTTP side, whose holding it shares.

pub mod balancer_command;
pub mod exports;
pub mod load_monitor;
