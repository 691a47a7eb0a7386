//! One supervisord, one host: `supervisord` lines (of one upstream or several) that name the
//! same supervisord (the same resolved address and the same credentials) share one host, whose
//! first line in the configuration leads it. What belongs to supervisord rather than to one
//! upstream is the host's: whether it can be reached (one line per outage whatever the number
//! of upstreams), when its programs' states were last read (one `getAllProcessInfo` per
//! interval per supervisord, applied to every upstream line of the host), the kept-alive
//! connection. The settings that shape those (`supervisord_sync_interval`,
//! `supervisord_timeout`, `supervisord_max_reply_size`) must then agree across the host's
//! upstreams.

/// What tells one supervisord from another: its resolved address and the credentials used.
/// No `Debug`: it holds a password.
#[derive(Clone, PartialEq, Eq)]
pub struct HostKey {
    /// The address's raw sockaddr bytes.
    pub address: Vec<u8>,
    /// `user:password`, if any.
    pub credentials: Option<(String, String)>,
}

/// For each `supervisord` line (`None`: none), the position of the line that leads its host:
/// the first one with the same key.
pub fn host_leads(keys: &[Option<HostKey>]) -> Vec<Option<usize>> {
    keys.iter()
        .map(|key| {
            let key = key.as_ref()?;
            keys.iter().position(|other| other.as_ref() == Some(key))
        })
        .collect()
}

/// The host's settings as one upstream has them (after defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostSettings {
    pub sync_interval_ms: u64,
    pub timeout_ms: u64,
    pub max_reply_size: u64,
}

/// A host setting two upstreams of one host disagree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingConflict {
    /// The host's lead and the upstream that differs from it.
    pub lead: usize,
    pub other: usize,
    pub directive: &'static str,
    pub lead_value: u64,
    pub other_value: u64,
}

/// The first setting an upstream has otherwise than its host's lead, if any.
pub fn first_conflict(
    leads: &[Option<usize>],
    settings: &[HostSettings],
) -> Option<SettingConflict> {
    leads.iter().enumerate().find_map(|(other, lead)| {
        let lead = (*lead)?;
        let (mine, theirs) = (settings[other], settings[lead]);
        let fields: [(&'static str, u64, u64); 3] = [
            (
                "supervisord_sync_interval",
                theirs.sync_interval_ms,
                mine.sync_interval_ms,
            ),
            ("supervisord_timeout", theirs.timeout_ms, mine.timeout_ms),
            (
                "supervisord_max_reply_size",
                theirs.max_reply_size,
                mine.max_reply_size,
            ),
        ];
        fields
            .into_iter()
            .find(|(_, lead_value, other_value)| lead_value != other_value)
            .map(|(directive, lead_value, other_value)| SettingConflict {
                lead,
                other,
                directive,
                lead_value,
                other_value,
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(address: u8, user: Option<&str>) -> Option<HostKey> {
        Some(HostKey {
            address: vec![address; 4],
            credentials: user.map(|user| (user.to_string(), "secret".to_string())),
        })
    }

    const SETTINGS: HostSettings = HostSettings {
        sync_interval_ms: 1_000,
        timeout_ms: 30_000,
        max_reply_size: 4 << 20,
    };

    #[test]
    fn upstreams_naming_the_same_supervisord_share_its_first() {
        let keys = [
            key(1, None),
            None,
            key(2, None),
            key(1, None),
            key(1, Some("admin")),
            key(2, None),
        ];
        assert_eq!(
            host_leads(&keys),
            vec![Some(0), None, Some(2), Some(0), Some(4), Some(2)]
        );
    }

    #[test]
    fn the_first_setting_that_differs_from_the_lead_is_named() {
        let leads = [Some(0), Some(0), None, Some(0)];
        let mut settings = [SETTINGS; 4];
        assert_eq!(first_conflict(&leads, &settings), None);
        // An upstream without supervisord may have what it likes.
        settings[2].timeout_ms = 1;
        assert_eq!(first_conflict(&leads, &settings), None);
        settings[3].timeout_ms = 5_000;
        settings[3].max_reply_size = 1 << 20;
        assert_eq!(
            first_conflict(&leads, &settings),
            Some(SettingConflict {
                lead: 0,
                other: 3,
                directive: "supervisord_timeout",
                lead_value: 30_000,
                other_value: 5_000,
            })
        );
    }
}
