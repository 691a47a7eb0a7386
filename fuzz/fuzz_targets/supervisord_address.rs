#![no_main]

// The body and its invariants: ngx_supervisord_core::fuzzing::supervisord_address.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ngx_supervisord_core::fuzzing::supervisord_address(data));
