#![no_main]

// The body and its invariants: ngx_supervisord_core::fuzzing::proc_stat.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ngx_supervisord_core::fuzzing::proc_stat(data));
