//! Backend statuses and commands, with the numeric values of the 2010 module's C API.

use std::fmt;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BackendStatus {
    Up = 0,
    #[default]
    Down = 1,
    StartingUp = 2,
    ShuttingDown = 3,
}

impl BackendStatus {
    pub fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            0 => Some(Self::Up),
            1 => Some(Self::Down),
            2 => Some(Self::StartingUp),
            3 => Some(Self::ShuttingDown),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::StartingUp => "starting up",
            Self::ShuttingDown => "shutting down",
        }
    }

    /// Only UP backends take requests.
    pub fn takes_requests(self) -> bool {
        self == Self::Up
    }
}

impl fmt::Display for BackendStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Command {
    Start = 1,
    Stop = 2,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
        }
    }

    /// The status a backend ends in when this command has fully taken effect.
    pub fn target_status(self) -> BackendStatus {
        match self {
            Self::Start => BackendStatus::Up,
            Self::Stop => BackendStatus::Down,
        }
    }

    /// The status a backend is in while supervisord carries this command out.
    pub fn transitional_status(self) -> BackendStatus {
        match self {
            Self::Start => BackendStatus::StartingUp,
            Self::Stop => BackendStatus::ShuttingDown,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_values_match_the_c_api() {
        assert_eq!(BackendStatus::Up as u8, 0);
        assert_eq!(BackendStatus::Down as u8, 1);
        assert_eq!(BackendStatus::StartingUp as u8, 2);
        assert_eq!(BackendStatus::ShuttingDown as u8, 3);
        assert_eq!(Command::Start as u8, 1);
        assert_eq!(Command::Stop as u8, 2);
    }

    #[test]
    fn raw_round_trip_and_rejects_unknown() {
        for status in [
            BackendStatus::Up,
            BackendStatus::Down,
            BackendStatus::StartingUp,
            BackendStatus::ShuttingDown,
        ] {
            assert_eq!(BackendStatus::from_raw(status as u8), Some(status));
        }
        assert_eq!(BackendStatus::from_raw(4), None);
        assert_eq!(BackendStatus::from_raw(255), None);
    }

    #[test]
    fn only_up_takes_requests() {
        assert!(BackendStatus::Up.takes_requests());
        assert!(!BackendStatus::Down.takes_requests());
        assert!(!BackendStatus::StartingUp.takes_requests());
        assert!(!BackendStatus::ShuttingDown.takes_requests());
    }
}
