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

// When nginx asks for a peer and none is left. A request meets this when every backend went
// away between the gate's look and the balancer's (a supervisord restart takes its programs
// with it), and when its attempt failed with a try left (another server, or a reset on a
// keepalive connection, which nginx retries itself) and no backend is UP for the retry. nginx
// would log "no live upstreams" and answer 502; the balancer can still answer "wait" here,
// where a peer is asked for, since nginx has not given up on the request yet: it holds the
// request (again) when that is safe, as `hold_again` does after a failed attempt.

/// What the attempts of a request that failed before nginx asked for another peer showed
/// (all of them: a request is only as safe to resend as its least safe attempt).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EarlierAttempts {
    /// Nothing of the request was sent by any of them.
    pub nothing_sent: bool,
    /// nginx would send it again once sent (see `FailedAttempt::resend_allowed`).
    pub resend_allowed: bool,
    /// No byte of an answer came back to any of them.
    pub nothing_received: bool,
    /// One of them timed out (a backend that hangs, not one going away).
    pub timed_out: bool,
}

impl EarlierAttempts {
    /// The attempts so far, `later` added to them.
    pub fn and(self, later: EarlierAttempts) -> EarlierAttempts {
        EarlierAttempts {
            nothing_sent: self.nothing_sent && later.nothing_sent,
            resend_allowed: self.resend_allowed && later.resend_allowed,
            nothing_received: self.nothing_received && later.nothing_received,
            timed_out: self.timed_out || later.timed_out,
        }
    }

    /// Whether the request may be sent again after these attempts.
    fn resendable(&self) -> bool {
        (self.nothing_sent || self.resend_allowed) && self.nothing_received && !self.timed_out
    }
}

/// What the balancer knows when nginx asks it for a peer and it has none UP to give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoPeerLeft {
    /// This request's attempts that failed before; `None` for its first.
    pub earlier: Option<EarlierAttempts>,
    /// A main request (subrequests are never held).
    pub main_request: bool,
    /// The request body, if any, is all read and kept (not streamed to the backend).
    pub body_kept: bool,
    /// The client is gone.
    pub client_gone: bool,
    /// nginx may answer from a stale cache entry instead (`proxy_cache_use_stale`).
    pub stale_cache_answer: bool,
    /// The location's hold gate holds requests for this upstream.
    pub gate_covers: bool,
    /// How many times this request was held again already.
    pub times_held_again: u32,
    /// The gate would hold a new request now: no backend is UP and one is (or can be)
    /// starting.
    pub gate_would_hold: bool,
    /// A failure check of a backend is under way in this worker: the balancer may have
    /// refused a backend that is still UP because of the failures nginx counted, and the
    /// check finds out whether it comes back.
    pub check_pending: bool,
    /// A backend that failed this request is still UP, its check over: it accepted the
    /// check's connection. A program being stopped does so in the instant before its
    /// listening socket goes, while it resets what it had accepted.
    pub failed_backend_left_up: bool,
    /// The attempt that failed last did so on a keepalive connection nginx had cached. nginx
    /// gives such a failure its try back (the backend may have closed the connection while
    /// it was idle), and the hold it leads to is not counted against `HOLD_AGAIN_LIMIT`
    /// either (see `hold_counts`).
    pub last_failure_cached: bool,
}

/// How long a request waits before it is sent again when the backend that failed it was
/// left UP by its check (see `NoPeerVerdict::RetryAfter`).
pub const RETRY_LEFT_UP_MS: u64 = 200;

/// What becomes of a request nginx asks a peer for when none is UP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoPeerVerdict {
    /// nginx answers "no live upstreams" (502).
    Answer,
    /// Held (again) until a backend is UP, or the failure check under way is over.
    Hold,
    /// Held again, and sent again after that many ms whatever happened: its backend reset it
    /// but still accepts connections, which a program does in the instant it is stopped.
    /// Bounded like any hold again (`HOLD_AGAIN_LIMIT`), so that a backend that resets every
    /// request costs a few short waits, not the hold timeout.
    RetryAfter(u64),
}

/// What becomes of the request (see above); `Answer` unless `hold_when_no_peer`.
pub fn no_peer_verdict(attempt: &NoPeerLeft) -> NoPeerVerdict {
    if hold_when_no_peer(attempt) {
        return NoPeerVerdict::Hold;
    }
    let retry = NoPeerLeft {
        gate_would_hold: true,
        ..*attempt
    };
    if attempt.earlier.is_some() && attempt.failed_backend_left_up && hold_when_no_peer(&retry) {
        return NoPeerVerdict::RetryAfter(RETRY_LEFT_UP_MS);
    }
    NoPeerVerdict::Answer
}

/// Whether holding the request counts against `HOLD_AGAIN_LIMIT`: not after a failure on a
/// cached keepalive connection, as nginx does not count it against its tries. A program
/// going away resets every connection nginx keeps to it, and a request may meet one after
/// another of them, each time after a check found the program still accepting connections
/// (it was in the instant of its exit): the limit would be spent on connections opened
/// before anything went wrong. Still bounded: each such failure closes one cached
/// connection, and a connection is cached again only after a complete answer.
pub fn hold_counts(attempt: &NoPeerLeft) -> bool {
    !(attempt.earlier.is_some() && attempt.last_failure_cached)
}

/// Whether the request is held (again) instead of answered "no live upstreams" (see above).
pub fn hold_when_no_peer(attempt: &NoPeerLeft) -> bool {
    let resendable = match attempt.earlier {
        Some(earlier) => earlier.resendable(),
        None => true,
    };
    resendable
        && attempt.main_request
        && attempt.body_kept
        && !attempt.client_gone
        && !attempt.stale_cache_answer
        && attempt.gate_covers
        && (attempt.times_held_again < HOLD_AGAIN_LIMIT || !hold_counts(attempt))
        && (attempt.gate_would_hold || attempt.check_pending)
}

/// Whether nginx's own failure count of a peer (`max_fails` reached) is cleared when no other
/// peer is left: its backend is UP, and the module's failure check of it is over (none under
/// way, its count back to zero): the check found it accepting connections and left it UP.
pub fn forgive_failed_peer(backend_up: bool, check_pending: bool, module_failures: u32) -> bool {
    backend_up && !check_pending && module_failures == 0
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

    fn reset_in_flight() -> EarlierAttempts {
        EarlierAttempts {
            nothing_sent: false,
            resend_allowed: true,
            nothing_received: true,
            timed_out: false,
        }
    }

    fn nothing_up() -> NoPeerLeft {
        NoPeerLeft {
            earlier: None,
            main_request: true,
            body_kept: true,
            client_gone: false,
            stale_cache_answer: false,
            gate_covers: true,
            times_held_again: 0,
            gate_would_hold: true,
            check_pending: false,
            failed_backend_left_up: false,
            last_failure_cached: false,
        }
    }

    #[test]
    fn failures_on_cached_connections_do_not_spend_the_hold_again_limit() {
        // The supervisord restart seen: a GET met one reset keepalive connection after
        // another, each time held until the failure check found the program still accepting
        // connections; the third was answered "no live upstreams".
        let limit_spent = NoPeerLeft {
            earlier: Some(reset_in_flight()),
            times_held_again: HOLD_AGAIN_LIMIT,
            gate_would_hold: false,
            check_pending: true,
            last_failure_cached: true,
            ..nothing_up()
        };
        assert!(!hold_counts(&limit_spent));
        assert_eq!(no_peer_verdict(&limit_spent), NoPeerVerdict::Hold);
        // The check already over, the program left UP: sent again shortly.
        assert_eq!(
            no_peer_verdict(&NoPeerLeft {
                check_pending: false,
                failed_backend_left_up: true,
                ..limit_spent
            }),
            NoPeerVerdict::RetryAfter(RETRY_LEFT_UP_MS)
        );
        // A failure on a connection of its own counts, as before.
        let fresh = NoPeerLeft {
            last_failure_cached: false,
            ..limit_spent
        };
        assert!(hold_counts(&fresh));
        assert_eq!(no_peer_verdict(&fresh), NoPeerVerdict::Answer);
        // Nothing failed yet: nothing to give back.
        assert!(hold_counts(&NoPeerLeft {
            earlier: None,
            ..limit_spent
        }));
        // Only what could be resent anyway.
        assert_eq!(
            no_peer_verdict(&NoPeerLeft {
                earlier: Some(EarlierAttempts {
                    nothing_received: false,
                    ..reset_in_flight()
                }),
                ..limit_spent
            }),
            NoPeerVerdict::Answer
        );
    }

    #[test]
    fn a_request_reset_by_a_backend_its_check_left_up_is_sent_again_shortly() {
        let left_up = NoPeerLeft {
            earlier: Some(reset_in_flight()),
            gate_would_hold: false,
            failed_backend_left_up: true,
            ..nothing_up()
        };
        assert_eq!(
            no_peer_verdict(&left_up),
            NoPeerVerdict::RetryAfter(RETRY_LEFT_UP_MS)
        );
        // Bounded as any hold again.
        assert_eq!(
            no_peer_verdict(&NoPeerLeft {
                times_held_again: HOLD_AGAIN_LIMIT,
                ..left_up
            }),
            NoPeerVerdict::Answer
        );
        // Only after an attempt that may be sent again.
        assert_eq!(
            no_peer_verdict(&NoPeerLeft {
                earlier: None,
                ..left_up
            }),
            NoPeerVerdict::Answer
        );
        assert_eq!(
            no_peer_verdict(&NoPeerLeft {
                earlier: Some(EarlierAttempts {
                    nothing_received: false,
                    ..reset_in_flight()
                }),
                ..left_up
            }),
            NoPeerVerdict::Answer
        );
        // Nothing UP: an ordinary hold.
        assert_eq!(no_peer_verdict(&nothing_up()), NoPeerVerdict::Hold);
    }

    #[test]
    fn a_request_finding_no_backend_up_in_the_balancer_is_held() {
        // The first attempt: the backends went away after the gate let it through.
        assert!(hold_when_no_peer(&nothing_up()));
        // A GET its backend reset, retried by nginx with no backend up.
        assert!(hold_when_no_peer(&NoPeerLeft {
            earlier: Some(reset_in_flight()),
            ..nothing_up()
        }));
        // A POST refused at connect (never sent).
        assert!(hold_when_no_peer(&NoPeerLeft {
            earlier: Some(EarlierAttempts {
                nothing_sent: true,
                resend_allowed: false,
                ..reset_in_flight()
            }),
            ..nothing_up()
        }));
        // Backends still UP but refused by nginx's failure count while their checks run.
        assert!(hold_when_no_peer(&NoPeerLeft {
            gate_would_hold: false,
            check_pending: true,
            ..nothing_up()
        }));
    }

    #[test]
    fn what_cannot_be_resent_or_waited_for_still_gets_no_live_upstreams() {
        let cases = [
            // A POST its backend received: it may have done its work.
            NoPeerLeft {
                earlier: Some(EarlierAttempts {
                    resend_allowed: false,
                    ..reset_in_flight()
                }),
                ..nothing_up()
            },
            NoPeerLeft {
                earlier: Some(EarlierAttempts {
                    nothing_received: false,
                    ..reset_in_flight()
                }),
                ..nothing_up()
            },
            NoPeerLeft {
                earlier: Some(EarlierAttempts {
                    timed_out: true,
                    ..reset_in_flight()
                }),
                ..nothing_up()
            },
            NoPeerLeft {
                main_request: false,
                ..nothing_up()
            },
            NoPeerLeft {
                body_kept: false,
                ..nothing_up()
            },
            NoPeerLeft {
                client_gone: true,
                ..nothing_up()
            },
            NoPeerLeft {
                stale_cache_answer: true,
                ..nothing_up()
            },
            NoPeerLeft {
                gate_covers: false,
                ..nothing_up()
            },
            NoPeerLeft {
                times_held_again: HOLD_AGAIN_LIMIT,
                ..nothing_up()
            },
            // A backend is UP (nginx's failure count refused it) and nothing finds out more:
            // waiting would change nothing.
            NoPeerLeft {
                gate_would_hold: false,
                check_pending: false,
                ..nothing_up()
            },
        ];
        for case in cases {
            assert!(!hold_when_no_peer(&case), "{case:?}");
        }
    }

    #[test]
    fn earlier_attempts_are_as_safe_as_the_least_safe() {
        let refused = EarlierAttempts {
            nothing_sent: true,
            resend_allowed: false,
            nothing_received: true,
            timed_out: false,
        };
        let answered = EarlierAttempts {
            nothing_received: false,
            ..refused
        };
        assert_eq!(refused.and(refused), refused);
        assert!(!refused.and(answered).resendable());
        assert!(!answered.and(refused).resendable());
        let sent = EarlierAttempts {
            nothing_sent: false,
            ..refused
        };
        assert!(!refused.and(sent).resendable());
    }

    #[test]
    fn a_peer_is_forgiven_only_once_its_check_left_it_up() {
        assert!(forgive_failed_peer(true, false, 0));
        // The check is still under way, or has not begun: the request waits for it.
        assert!(!forgive_failed_peer(true, true, 0));
        assert!(!forgive_failed_peer(true, false, 1));
        // Taken out by the module: nothing to forgive.
        assert!(!forgive_failed_peer(false, false, 0));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn earlier() -> impl Strategy<Value = EarlierAttempts> {
            (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
                |(nothing_sent, resend_allowed, nothing_received, timed_out)| EarlierAttempts {
                    nothing_sent,
                    resend_allowed,
                    nothing_received,
                    timed_out,
                },
            )
        }

        fn no_peer_left() -> impl Strategy<Value = NoPeerLeft> {
            (
                proptest::option::of(earlier()),
                any::<[bool; 9]>(),
                0..HOLD_AGAIN_LIMIT + 2,
            )
                .prop_map(|(earlier, flags, times_held_again)| NoPeerLeft {
                    earlier,
                    main_request: flags[0],
                    body_kept: flags[1],
                    client_gone: flags[2],
                    stale_cache_answer: flags[3],
                    gate_covers: flags[4],
                    times_held_again,
                    gate_would_hold: flags[5],
                    check_pending: flags[6],
                    failed_backend_left_up: flags[7],
                    last_failure_cached: flags[8],
                })
        }

        proptest! {
            #![proptest_config(crate::proptest_config())]

            /// Never resent what nginx could not resend: an answer started, a timeout, a
            /// non-idempotent request that was sent.
            #[test]
            fn never_holds_what_cannot_be_resent(case in no_peer_left()) {
                if hold_when_no_peer(&case) {
                    let earlier = case.earlier.unwrap_or(EarlierAttempts {
                        nothing_sent: true,
                        resend_allowed: true,
                        nothing_received: true,
                        timed_out: false,
                    });
                    prop_assert!(earlier.nothing_received);
                    prop_assert!(!earlier.timed_out);
                    prop_assert!(earlier.nothing_sent || earlier.resend_allowed);
                    prop_assert!(case.main_request && case.body_kept && case.gate_covers);
                    prop_assert!(!case.client_gone && !case.stale_cache_answer);
                }
            }

            /// Bounded: never held again past the limit (but for a failure on a cached
            /// connection, which closes it), never held where nothing will change (a backend
            /// UP, no check under way).
            #[test]
            fn holds_are_bounded(case in no_peer_left()) {
                if hold_when_no_peer(&case) {
                    prop_assert!(case.times_held_again < HOLD_AGAIN_LIMIT || !hold_counts(&case));
                    prop_assert!(case.gate_would_hold || case.check_pending);
                }
            }

            /// Whatever the verdict, nothing is held that cannot be resent, nor past the
            /// limit; a retry only follows a failed attempt.
            #[test]
            fn every_verdict_is_safe_and_bounded(case in no_peer_left()) {
                let verdict = no_peer_verdict(&case);
                if verdict != NoPeerVerdict::Answer {
                    prop_assert!(case.times_held_again < HOLD_AGAIN_LIMIT || !hold_counts(&case));
                    prop_assert!(case.main_request && case.body_kept && case.gate_covers);
                    prop_assert!(!case.client_gone && !case.stale_cache_answer);
                    if let Some(earlier) = case.earlier {
                        prop_assert!(earlier.resendable());
                    }
                }
                if let NoPeerVerdict::RetryAfter(_) = verdict {
                    prop_assert!(case.earlier.is_some() && case.failed_backend_left_up);
                }
                prop_assert_eq!(verdict == NoPeerVerdict::Hold, hold_when_no_peer(&case));
            }

            /// One more failed attempt never makes a request safer to hold.
            #[test]
            fn another_attempt_never_makes_a_hold_safer(
                case in no_peer_left(),
                later in earlier(),
            ) {
                // The later attempt failed on a cached connection only if an earlier one
                // did already: giving a try back is not a safer hold.
                let more = NoPeerLeft {
                    earlier: Some(case.earlier.map_or(later, |earlier| earlier.and(later))),
                    last_failure_cached: case.earlier.is_some() && case.last_failure_cached,
                    ..case
                };
                prop_assert!(!hold_when_no_peer(&more) || hold_when_no_peer(&case));
            }

            /// Where nothing was tried yet and the gate would hold, the balancer holds a
            /// request the gate would have held.
            #[test]
            fn a_first_attempt_is_held_like_at_the_gate(case in no_peer_left()) {
                let first = NoPeerLeft { earlier: None, ..case };
                let holdable = first.main_request
                    && first.body_kept
                    && !first.client_gone
                    && !first.stale_cache_answer
                    && first.gate_covers
                    && first.times_held_again < HOLD_AGAIN_LIMIT
                    && (first.gate_would_hold || first.check_pending);
                prop_assert_eq!(hold_when_no_peer(&first), holdable);
            }
        }
    }
}
