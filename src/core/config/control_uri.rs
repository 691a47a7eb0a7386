//! The backend part of a control URI: `/_start/2` or `/_stop/any`.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendSelector {
    Index(usize),
    Any,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectorError {
    /// The last path segment is empty (`/_start/`).
    Missing,
    /// Not `any` and not a plain decimal number (`-1`, `1x`, `+1`).
    NotANumber,
    /// A number, but no such backend (includes numbers too large for any integer type).
    OutOfRange,
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "no backend given",
            Self::NotANumber => "backend must be a number or \"any\"",
            Self::OutOfRange => "no such backend",
        })
    }
}

/// Parses the last path segment of `path` as a backend of an upstream with `backend_count`
/// servers. Only the bare digits of an index below `backend_count`, or `any`, are accepted.
pub fn parse_selector(path: &[u8], backend_count: usize) -> Result<BackendSelector, SelectorError> {
    let segment = last_segment(path);
    if segment.is_empty() {
        return Err(SelectorError::Missing);
    }
    if segment == b"any" {
        return Ok(BackendSelector::Any);
    }
    if !segment.iter().all(u8::is_ascii_digit) {
        return Err(SelectorError::NotANumber);
    }
    let mut index: usize = 0;
    for digit in segment {
        index = index
            .checked_mul(10)
            .and_then(|value| value.checked_add(usize::from(digit - b'0')))
            .ok_or(SelectorError::OutOfRange)?;
    }
    if index >= backend_count {
        return Err(SelectorError::OutOfRange);
    }
    Ok(BackendSelector::Index(index))
}

/// The segment after the last `/`, without any query string.
pub fn last_segment(path: &[u8]) -> &[u8] {
    let path = match path.iter().position(|byte| *byte == b'?') {
        Some(query) => &path[..query],
        None => path,
    };
    match path.iter().rposition(|byte| *byte == b'/') {
        Some(slash) => &path[slash + 1..],
        None => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_indices_below_the_count_and_any() {
        assert_eq!(
            parse_selector(b"/_start/0", 3),
            Ok(BackendSelector::Index(0))
        );
        assert_eq!(
            parse_selector(b"/_start/2", 3),
            Ok(BackendSelector::Index(2))
        );
        assert_eq!(parse_selector(b"/_stop/any", 3), Ok(BackendSelector::Any));
        assert_eq!(
            parse_selector(b"/x/y/_start/1", 3),
            Ok(BackendSelector::Index(1))
        );
    }

    #[test]
    fn rejects_what_the_2010_module_never_accepted() {
        assert_eq!(parse_selector(b"/_start/", 3), Err(SelectorError::Missing));
        assert_eq!(
            parse_selector(b"/_start/-1", 3),
            Err(SelectorError::NotANumber)
        );
        assert_eq!(
            parse_selector(b"/_start/1x", 3),
            Err(SelectorError::NotANumber)
        );
        assert_eq!(
            parse_selector(b"/_start/+1", 3),
            Err(SelectorError::NotANumber)
        );
        assert_eq!(
            parse_selector(b"/_start/ANY", 3),
            Err(SelectorError::NotANumber)
        );
        assert_eq!(
            parse_selector(b"/_start/ 1", 3),
            Err(SelectorError::NotANumber)
        );
        assert_eq!(
            parse_selector(b"/_start/3", 3),
            Err(SelectorError::OutOfRange)
        );
        assert_eq!(
            parse_selector(b"/_start/99999999999999999999", 3),
            Err(SelectorError::OutOfRange)
        );
        assert_eq!(
            parse_selector(b"/_start/18446744073709551615", usize::MAX),
            Err(SelectorError::OutOfRange)
        );
    }

    #[test]
    fn ignores_a_query_string() {
        assert_eq!(
            parse_selector(b"/_start/1?x=/2", 3),
            Ok(BackendSelector::Index(1))
        );
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        let mut seed: u32 = 0x2545_f491;
        for _ in 0..20_000 {
            let len = (seed % 24) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    b"/0123456789anyx-?"[(seed % 17) as usize]
                })
                .collect();
            if let Ok(BackendSelector::Index(index)) = parse_selector(&bytes, 7) {
                assert!(index < 7);
            }
        }
    }
}
