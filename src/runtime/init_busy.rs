//! nginx patched with init_busy (`patches/nginx-*-init_busy.patch`): a balancer's peer.init may
//! answer NGX_BUSY to pause a request, which the patch's exported
//! `ngx_http_upstream_init_busy_resume` later sends on (or answers). Found at run time, so the
//! same module works in a stock nginx, which simply never pauses a request there.

use std::ffi::{c_char, c_void};
use std::sync::OnceLock;

use nginx_sys::{ngx_http_request_t, ngx_http_run_posted_requests, ngx_int_t};

type Resume = unsafe extern "C" fn(r: *mut ngx_http_request_t, rc: ngx_int_t);

extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

static RESUME: OnceLock<Option<Resume>> = OnceLock::new();

fn resume_fn() -> Option<Resume> {
    *RESUME.get_or_init(|| {
        // SAFETY: a null handle is glibc's RTLD_DEFAULT: the executable and every library
        // loaded with RTLD_GLOBAL (nginx links itself with -E and loads modules so). The
        // symbol, when present, is the patch's function of this signature.
        let found = unsafe {
            dlsym(
                std::ptr::null_mut(),
                c"ngx_http_upstream_init_busy_resume".as_ptr(),
            )
        };
        (!found.is_null()).then(|| {
            // SAFETY: `found` is the non-null address of the patch's exported function, whose C
            // signature (`r`, `rc`, no result) is `Resume`'s.
            unsafe { std::mem::transmute::<*mut c_void, Resume>(found) }
        })
    })
}

/// Whether this nginx was patched with init_busy.
pub fn available() -> bool {
    resume_fn().is_some()
}

/// Sends a request paused in peer.init on to its upstream (`rc` NGX_OK), or answers it with
/// `rc` (an HTTP status), then runs what that posted.
///
/// # Safety
/// `r` must be live and paused by a peer.init that returned NGX_BUSY; `available()` is true.
pub unsafe fn resume(r: *mut ngx_http_request_t, rc: ngx_int_t) {
    let Some(resume) = resume_fn() else {
        return;
    };
    // SAFETY: `r` is live and paused by peer.init's NGX_BUSY (this fn's contract); its
    // connection, read first, stays a valid slot even if resume frees `r` and closes it.
    unsafe {
        let connection = (*r).connection;
        resume(r, rc);
        ngx_http_run_posted_requests(connection);
    }
}
