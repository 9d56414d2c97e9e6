//! Durations as people type them on a command line: `90s`, `5m`, `1h30m`, `2d`, or bare
//! seconds (`60`).

use std::time::Duration;

/// Parses a duration; an error says what is accepted.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a duration: use 90s, 5m, 1h30m, 2d or plain seconds");
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_durations() {
        for (text, secs) in [
            ("60", 60),
            ("60s", 60),
            ("5m", 300),
            ("1h30m", 5400),
            ("2d", 172_800),
            ("1h0m5s", 3605),
        ] {
            assert_eq!(parse(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        for bad in ["", "5x", "m", "1h30", "-5s", "99999999999999999999d"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
