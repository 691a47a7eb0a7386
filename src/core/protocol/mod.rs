//! supervisord's protocol: XML-RPC over HTTP/1.0, the replies it gives and what they mean,
//! and the process states it reports; parsers checked against byte-exact captures.

pub mod call_outcome;
pub mod command_reply;
pub mod http_exchange;
pub mod process_state;
pub mod reply_limit;
pub mod xmlrpc;

#[cfg(test)]
mod captures;
