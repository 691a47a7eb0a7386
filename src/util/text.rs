//! nginx strings as Rust bytes and text.

use std::ffi::{c_char, CStr};

use nginx_sys::ngx_str_t;

pub fn str_bytes(value: &ngx_str_t) -> &[u8] {
    if value.len == 0 || value.data.is_null() {
        return &[];
    }
    // SAFETY: an ngx_str_t points at `len` readable bytes.
    unsafe { std::slice::from_raw_parts(value.data, value.len) }
}

pub fn str_lossy(value: &ngx_str_t) -> String {
    String::from_utf8_lossy(str_bytes(value)).into_owned()
}

/// A NUL-terminated C string of nginx's (a file name, an error text), or "" when null.
pub fn cstr_lossy(text: *const c_char) -> String {
    if text.is_null() {
        return String::new();
    }
    // SAFETY: non-null C strings nginx hands out are NUL-terminated.
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}
