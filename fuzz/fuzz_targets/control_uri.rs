#![no_main]

// The body and its invariants: ngx_supervisord_core::fuzzing::control_uri.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ngx_supervisord_core::fuzzing::control_uri(data));
