//! `supervisord_scale_up`'s arguments, and targets written back as decimals.

use super::{ScaleUp, Target, DEFAULT_WINDOW_MS, MAX_TARGET_HUNDREDTHS, MIN_TICK_MS};

/// Reads `supervisord_scale_up`'s arguments (`in_flight=N` or `rate=N`, N a decimal with up to
/// two places, then optionally `window=time`); `parse_time` reads a time in nginx's syntax
/// into milliseconds.
pub fn parse_scale_up(
    args: &[&str],
    parse_time: impl Fn(&str) -> Option<u64>,
) -> Result<ScaleUp, String> {
    let mut target = None;
    let mut window_ms = None;
    for arg in args {
        let (name, value) = arg
            .split_once('=')
            .ok_or_else(|| format!("invalid parameter \"{arg}\""))?;
        let number = || {
            hundredths(value)
                .filter(|n| (1..=MAX_TARGET_HUNDREDTHS).contains(n))
                .ok_or_else(|| {
                    format!(
                        "invalid {name} \"{value}\": expected a number from 0.01 to 1000000, \
                         with at most two decimals"
                    )
                })
        };
        match name {
            "in_flight" | "rate" if target.is_some() => {
                return Err("only one of in_flight= and rate= may be given".into())
            }
            "in_flight" => target = Some(Target::InFlight(number()?)),
            "rate" => target = Some(Target::Rate(number()?)),
            "window" if window_ms.is_some() => return Err("duplicate window=".into()),
            "window" => {
                window_ms = Some(
                    parse_time(value)
                        .filter(|ms| *ms >= MIN_TICK_MS)
                        .ok_or_else(|| {
                            format!("invalid window \"{value}\": expected a time of 100ms or more")
                        })?,
                )
            }
            _ => return Err(format!("invalid parameter \"{arg}\"")),
        }
    }
    Ok(ScaleUp {
        target: target.ok_or("in_flight= or rate= is required")?,
        window_ms: window_ms.unwrap_or(DEFAULT_WINDOW_MS),
    })
}

/// `4`, `1.5`, `0.25` in hundredths; `None` for anything else (a sign, an exponent, a third
/// decimal, a bare point, more digits than a target can have).
fn hundredths(text: &str) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || whole.len() > 9
        || !digits(whole)
        || fraction.len() > 2
        || !digits(fraction)
        || (text.contains('.') && fraction.is_empty())
    {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let fraction: u64 = format!("{fraction:0<2}").parse().ok()?;
    Some(whole * 100 + fraction)
}

/// Hundredths written as the shortest decimal: 400 is `4`, 150 is `1.5`, 1225 is `12.25`.
pub fn decimal(hundredths: u64) -> String {
    let (whole, fraction) = (hundredths / 100, hundredths % 100);
    match fraction {
        0 => whole.to_string(),
        f if f % 10 == 0 => format!("{whole}.{}", f / 10),
        f => format!("{whole}.{f:02}"),
    }
}
