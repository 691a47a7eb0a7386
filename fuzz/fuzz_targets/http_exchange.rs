#![no_main]

// The body and its invariants: ngx_supervisord_core::fuzzing::http_exchange.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ngx_supervisord_core::fuzzing::http_exchange(data));
