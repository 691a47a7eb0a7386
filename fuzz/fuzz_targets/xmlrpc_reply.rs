#![no_main]

// The body and its invariants: ngx_supervisord_core::fuzzing::xmlrpc_reply.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ngx_supervisord_core::fuzzing::xmlrpc_reply(data));
