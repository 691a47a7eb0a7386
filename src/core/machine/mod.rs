//! The backend state machine: every change of a backend's record goes through
//! `transition(backend, event, at) -> Step`, a pure function of the record (as the shared zone
//! keeps it), one event (a request asked for a start, supervisord answered, the probe saw a
//! connection, a read of supervisord, the failure rule...) and the moment. The edge turns what
//! nginx and supervisord do into events, stores the record the step returns under the zone's
//! lock, and carries out its actions (send a command, probe, wake held requests, log).
//!
//! States and the C API's four statuses (`BackendStatus`, the numbers of the 2010 module):
//!
//! | state                                   | record                                     | C API status  |
//! |-----------------------------------------|--------------------------------------------|---------------|
//! | down                                    | DOWN                                       | DOWN          |
//! | backing off (a start failed)            | DOWN, `backoff` waiting                    | DOWN          |
//! | no program (supervisord lacks its name) | DOWN, `program_missing`                    | DOWN          |
//! | starting (sent, probed)                 | STARTING_UP, held by this or another worker| STARTING_UP   |
//! | starting, parked (supervisord away)     | STARTING_UP, `parked`                      | STARTING_UP   |
//! | starting outside nginx (probed)         | STARTING_UP, held by the reading worker    | STARTING_UP   |
//! | up (a connection was accepted)          | UP                                         | UP            |
//! | draining (stop waits for requests)      | SHUTTING_DOWN, stop call due later         | SHUTTING_DOWN |
//! | stopping (sent, or parked)              | SHUTTING_DOWN, held                        | SHUTTING_DOWN |
//! | stopping outside nginx (followed)       | SHUTTING_DOWN, held by nobody              | SHUTTING_DOWN |

mod action;
mod backend;
mod event;
mod transition;

pub use action::{Action, Step, Tell};
pub use backend::{Backend, CommandHolder, NEVER_READ};
pub use event::{Answer, At, Event, Sync};
pub use transition::transition;

#[cfg(test)]
mod tests;
