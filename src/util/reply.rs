//! Answers the module makes itself: short `text/plain` bodies (control endpoints, status), and
//! error statuses handed to nginx's own error path (refused methods, requests it could not hold).

use nginx_sys::{
    ngx_chain_t, ngx_http_request_t, ngx_int_t, ngx_str_t, NGX_ERROR, NGX_HTTP_GET, NGX_HTTP_HEAD,
    NGX_HTTP_NOT_ALLOWED, NGX_OK,
};
use ngx::core::Buffer;
use ngx::http::{HTTPStatus, Request};

/// Sends `status` with `body` and extra `headers`; returns what nginx's filters returned, for
/// the caller to return or pass to `ngx_http_finalize_request`.
///
/// # Safety
/// `r` must be a live request that has not sent its header yet.
pub unsafe fn send_text(
    r: *mut ngx_http_request_t,
    status: u32,
    body: &str,
    headers: &[(&str, &str)],
) -> ngx_int_t {
    // SAFETY: `r` is live and has sent no header (this fn's contract), as send_typed needs.
    unsafe { send_typed(r, status, "text/plain", body, headers) }
}

/// As `send_text`, with the `Content-Type` given (a static string: nginx keeps pointing at it).
///
/// # Safety
/// As `send_text`.
pub unsafe fn send_typed(
    r: *mut ngx_http_request_t,
    status: u32,
    content_type: &'static str,
    body: &str,
    headers: &[(&str, &str)],
) -> ngx_int_t {
    // SAFETY: r is a live request (caller's contract).
    let request = unsafe { Request::from_ngx_http_request(r) };
    request.set_status(HTTPStatus(status as usize));
    request.set_content_length_n(body.len());
    let raw: &mut ngx_http_request_t = request.as_mut();
    raw.headers_out.content_type = ngx_str_t {
        len: content_type.len(),
        data: content_type.as_ptr() as *mut u8,
    };
    raw.headers_out.content_type_len = raw.headers_out.content_type.len;
    for (name, value) in headers {
        if request.add_header_out(name, value).is_none() {
            return NGX_ERROR as ngx_int_t;
        }
    }
    let rc = request.send_header().0;
    if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || request.header_only() {
        return rc;
    }
    let Some(mut buffer) = request.pool().create_buffer_from_str(body) else {
        return NGX_ERROR as ngx_int_t;
    };
    buffer.set_last_buf(request.is_main());
    buffer.set_last_in_chain(true);
    let mut chain = ngx_chain_t {
        buf: buffer.as_ngx_buf_mut(),
        next: std::ptr::null_mut(),
    };
    request.output_filter(&mut chain).0
}

/// The start of a handler that answers GET and HEAD only: `Some(rc)` to return at once (405 for
/// another method, through nginx's own error path, which reads the body away so that it never
/// reads as the next request; or the result of dropping a body that could not be read), `None`
/// to go on with the body, if any, read and dropped.
pub fn refuse_unless_get_or_head(request: &mut Request) -> Option<ngx_int_t> {
    let method = AsRef::<ngx_http_request_t>::as_ref(request).method;
    if method & (NGX_HTTP_GET | NGX_HTTP_HEAD) as usize == 0 {
        return Some(error_status(
            request,
            NGX_HTTP_NOT_ALLOWED,
            &[("Allow", "GET, HEAD")],
        ));
    }
    let rc = request.discard_request_body().0;
    (rc != NGX_OK as ngx_int_t).then_some(rc)
}

/// Prepares an error answer that nginx itself makes: adds `headers` to the response and returns
/// `status` for the caller to return from its handler (or pass to `ngx_http_finalize_request`).
/// nginx's special-response path then reads and drops any request body (so that it is never
/// taken for the next request on the connection), applies `error_page`, and keeps the headers
/// added here (it resets only the content type).
pub fn error_status(request: &mut Request, status: u32, headers: &[(&str, &str)]) -> ngx_int_t {
    for (name, value) in headers {
        if request.add_header_out(name, value).is_none() {
            return NGX_ERROR as ngx_int_t;
        }
    }
    status as ngx_int_t
}
