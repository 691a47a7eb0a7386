//! A request whose backend failed it without an answer. When a program is restarted (by hand,
//! by supervisord after a crash, by the failure rule) its port is closed for a moment, and the
//! process going away resets the connections it had accepted but not answered; the requests
//! that meet this do so before anything could know. nginx would answer them 502 at once (no
//! other peer to try); the module holds them again instead, like any request that finds no
//! backend UP, and sends them again once a backend is UP.
//!
//! Only when that is safe and bounded: nothing came back from the backend and it did not time
//! out (a slow backend is not a restarting one); the request may be sent again by nginx's own
//! rule for another server (nothing of it was sent, or its method is idempotent, or
//! `proxy_next_upstream non_idempotent`); nginx itself is giving up on it (no other peer to
//! try); the location's hold gate would hold it; it was not held again `HOLD_AGAIN_LIMIT` times
//! already (never a loop: twice, because a program being killed may still accept the check's
//! connection in the instant before its listening socket goes); and the backend's state is
//! being found out (a failure check is under way, or it is no longer UP): a backend that stays
//! UP without a check would only fail it again.

/// How many times one request may be held again.
pub const HOLD_AGAIN_LIMIT: u32 = 2;

/// What the balancer knows of one failed attempt when nginx hands its peer back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailedAttempt {
    /// Nothing of the request was sent (a refused connect).
    pub nothing_sent: bool,
    /// nginx would send it again to another server once sent: an idempotent method, or
    /// `proxy_next_upstream non_idempotent`.
    pub resend_allowed: bool,
    /// No byte of an answer came back.
    pub nothing_received: bool,
    /// The connect, send or read timed out (a backend that hangs, not one being restarted).
    pub timed_out: bool,
    /// nginx answers the request with an error next: no try left, or retries of errors are off.
    pub nginx_gives_up: bool,
    /// A main request (subrequests are never held).
    pub main_request: bool,
    /// The request body, if any, is all read and kept (not streamed to the backend).
    pub body_kept: bool,
    /// The client is gone.
    pub client_gone: bool,
    /// The connection came from a keepalive cache (nginx retries those itself).
    pub cached_connection: bool,
    /// nginx may answer from a stale cache entry instead (`proxy_cache_use_stale`).
    pub stale_cache_answer: bool,
    /// The location's hold gate holds requests for this upstream.
    pub gate_covers: bool,
    /// How many times this request was held again already.
    pub times_held_again: u32,
    /// The backend is still UP.
    pub backend_up: bool,
    /// A failure check of the backend is under way in this worker.
    pub check_pending: bool,
}

/// Whether the request is held again (see the module's comment) rather than answered 502.
pub fn hold_again(attempt: &FailedAttempt) -> bool {
    (attempt.nothing_sent || attempt.resend_allowed)
        && attempt.nothing_received
        && !attempt.timed_out
        && attempt.nginx_gives_up
        && attempt.main_request
        && attempt.body_kept
        && !attempt.client_gone
        && !attempt.cached_connection
        && !attempt.stale_cache_answer
        && attempt.gate_covers
        && attempt.times_held_again < HOLD_AGAIN_LIMIT
        && (attempt.check_pending || !attempt.backend_up)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restart_refusal() -> FailedAttempt {
        FailedAttempt {
            nothing_sent: true,
            resend_allowed: false,
            nothing_received: true,
            timed_out: false,
            nginx_gives_up: true,
            main_request: true,
            body_kept: true,
            client_gone: false,
            cached_connection: false,
            stale_cache_answer: false,
            gate_covers: true,
            times_held_again: 0,
            backend_up: true,
            check_pending: true,
        }
    }

    #[test]
    fn a_refused_connect_during_a_check_is_held_again() {
        assert!(hold_again(&restart_refusal()));
        assert!(hold_again(&FailedAttempt {
            times_held_again: HOLD_AGAIN_LIMIT - 1,
            ..restart_refusal()
        }));
        // Another worker took the backend down meanwhile: held like any request.
        assert!(hold_again(&FailedAttempt {
            backend_up: false,
            check_pending: false,
            ..restart_refusal()
        }));
    }

    #[test]
    fn a_sent_request_reset_unanswered_is_held_again_when_nginx_would_resend_it() {
        let reset = FailedAttempt {
            nothing_sent: false,
            ..restart_refusal()
        };
        assert!(hold_again(&FailedAttempt {
            resend_allowed: true,
            ..reset
        }));
        // A POST that reached the backend may have done its work.
        assert!(!hold_again(&reset));
    }

    #[test]
    fn anything_unsafe_or_unbounded_is_left_to_nginx() {
        let cases = [
            FailedAttempt {
                nothing_sent: false,
                ..restart_refusal()
            },
            FailedAttempt {
                nothing_received: false,
                resend_allowed: true,
                ..restart_refusal()
            },
            FailedAttempt {
                timed_out: true,
                ..restart_refusal()
            },
            FailedAttempt {
                nginx_gives_up: false,
                ..restart_refusal()
            },
            FailedAttempt {
                main_request: false,
                ..restart_refusal()
            },
            FailedAttempt {
                body_kept: false,
                ..restart_refusal()
            },
            FailedAttempt {
                client_gone: true,
                ..restart_refusal()
            },
            FailedAttempt {
                cached_connection: true,
                ..restart_refusal()
            },
            FailedAttempt {
                stale_cache_answer: true,
                ..restart_refusal()
            },
            FailedAttempt {
                gate_covers: false,
                ..restart_refusal()
            },
            FailedAttempt {
                times_held_again: HOLD_AGAIN_LIMIT,
                ..restart_refusal()
            },
            // UP and nobody finding out why it refused: it would only refuse again.
            FailedAttempt {
                check_pending: false,
                ..restart_refusal()
            },
        ];
        for case in cases {
            assert!(!hold_again(&case), "{case:?}");
        }
    }
}
