#![no_main]

// The body and its invariants: ngx_supervisord_core::fuzzing::scale_up_args.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ngx_supervisord_core::fuzzing::scale_up_args(data));
