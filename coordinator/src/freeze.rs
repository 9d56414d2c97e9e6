//! Freeze windows of an environment, from the platform policy: times no rollout starts and no
//! next wave begins. A window is either recurring, a cron expression in an explicit time zone
//! with a duration (`{cron: "0 18 * * FRI", duration: 62h, timezone: Europe/Berlin, reason:
//! weekend}`), or one-off, two instants with their offsets (`{from:
//! "2026-12-24T00:00:00+01:00", to: "2026-12-27T00:00:00+01:00", reason: holidays}`).

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan, Zoned};
use serde::Deserialize;

/// The longest a recurring window may last.
const MAX_DURATION: SignedDuration = SignedDuration::from_hours(31 * 24);

/// One window, as the policy file writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeWindow {
    /// A cron expression (minute hour day-of-month month day-of-week) for its starts.
    #[serde(default)]
    pub cron: Option<String>,
    /// How long each recurring window lasts (`62h`, `90m`, `2d`).
    #[serde(default)]
    pub duration: Option<String>,
    /// The IANA time zone the cron expression reads in (`Europe/Berlin`, `UTC`).
    #[serde(default)]
    pub timezone: Option<String>,
    /// A one-off window's start, RFC 3339 with its offset.
    #[serde(default)]
    pub from: Option<String>,
    /// A one-off window's end, RFC 3339 with its offset.
    #[serde(default)]
    pub to: Option<String>,
    /// Why nothing is deployed then: shown to whoever is queued.
    pub reason: String,
}

/// A window ready to test instants against.
#[derive(Debug, Clone)]
enum Window {
    Recurring {
        cron: Cron,
        duration: SignedDuration,
        zone: TimeZone,
    },
    Once {
        from: Timestamp,
        to: Timestamp,
    },
}

/// An environment's windows, checked.
#[derive(Debug, Clone, Default)]
pub struct Freeze(Vec<(Window, String)>);

impl Freeze {
    /// The windows of a policy entry, or every problem with them (`at` names the field).
    pub fn new(windows: &[FreezeWindow], at: &str) -> Result<Self, Vec<String>> {
        let mut checked = Vec::new();
        let mut problems = Vec::new();
        for (i, w) in windows.iter().enumerate() {
            match window(w) {
                Ok(window) => checked.push((window, w.reason.clone())),
                Err(problem) => problems.push(format!("{at}.freeze[{i}]: {problem}")),
            }
        }
        if problems.is_empty() {
            Ok(Self(checked))
        } else {
            Err(problems)
        }
    }

    /// When `at` is inside a window: when the freeze ends (windows that touch or overlap
    /// chained together) and the reason of the window it is in.
    pub fn frozen_at(&self, at: Timestamp) -> Option<(Timestamp, String)> {
        let (mut end, reason) = self.window_end(at)?;
        // A window that starts where this one ends continues the freeze.
        for _ in 0..16 {
            match self.window_end(end) {
                Some((later, _)) if later > end => end = later,
                _ => break,
            }
        }
        Some((end, reason))
    }

    /// The latest end of the windows `at` is inside, with that window's reason.
    fn window_end(&self, at: Timestamp) -> Option<(Timestamp, String)> {
        self.0
            .iter()
            .filter_map(|(w, reason)| w.end_if_inside(at).map(|end| (end, reason.clone())))
            .max_by_key(|(end, _)| *end)
    }
}

impl Window {
    /// The end of the occurrence of this window `at` is inside, if any.
    fn end_if_inside(&self, at: Timestamp) -> Option<Timestamp> {
        match self {
            Self::Once { from, to } => (*from <= at && at < *to).then_some(*to),
            Self::Recurring {
                cron,
                duration,
                zone,
            } => {
                // The latest start at or before `at`, no older than one duration.
                let now = at.to_zoned(zone.clone());
                let mut start = now.round(jiff::Unit::Minute).ok()?;
                if start.timestamp() > at {
                    start = start.checked_sub(1.minute()).ok()?;
                }
                let minutes = duration.as_mins();
                for _ in 0..=minutes {
                    if cron.matches(&start) {
                        let end = start.timestamp().checked_add(*duration).ok()?;
                        return (end > at).then_some(end);
                    }
                    start = start.checked_sub(1.minute()).ok()?;
                }
                None
            }
        }
    }
}

fn window(w: &FreezeWindow) -> Result<Window, String> {
    match (&w.cron, &w.from, &w.to) {
        (Some(cron), None, None) => {
            let zone_name = w
                .timezone
                .as_deref()
                .ok_or("a recurring window needs its `timezone` (an IANA name such as Europe/Berlin or UTC)")?;
            let zone =
                TimeZone::get(zone_name).map_err(|e| format!("timezone {zone_name:?}: {e}"))?;
            let text = w
                .duration
                .as_deref()
                .ok_or("a recurring window needs its `duration` (62h, 90m, 2d)")?;
            let duration = parse_duration(text)?;
            if duration <= SignedDuration::ZERO || duration > MAX_DURATION {
                return Err(format!("duration {text:?}: between a minute and 31 days"));
            }
            Ok(Window::Recurring {
                cron: Cron::parse(cron)?,
                duration,
                zone,
            })
        }
        (None, Some(from), Some(to)) => {
            if w.timezone.is_some() || w.duration.is_some() {
                return Err("a one-off window has `from` and `to` (with their offsets), no `timezone` or `duration`".into());
            }
            let instant = |field: &str, text: &str| {
                text.parse::<Timestamp>().map_err(|e| {
                    format!("{field} {text:?}: an RFC 3339 time with its offset (2026-12-24T00:00:00+01:00): {e}")
                })
            };
            let (from, to) = (instant("from", from)?, instant("to", to)?);
            if from >= to {
                return Err("`from` must be before `to`".into());
            }
            Ok(Window::Once { from, to })
        }
        _ => Err("either `cron` (with `duration` and `timezone`) or `from` and `to`".into()),
    }
}

/// `62h`, `90m`, `2d`, `1h30m`.
fn parse_duration(text: &str) -> Result<SignedDuration, String> {
    let bad = || format!("duration {text:?}: use 62h, 90m, 2d or 1h30m");
    let mut total = 0i64;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: i64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(SignedDuration::from_secs(total))
}

/// A five-field cron expression: minute, hour, day of month, month, day of week; each field
/// `*`, numbers, ranges `a-b`, steps `/n` and lists `,`; months `JAN`-`DEC`, days `SUN`-`SAT`
/// (0 and 7 are Sunday). When both day fields are restricted, either may match (as cron does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    fields: [u64; 5],
    /// Whether day of month / day of week were `*`.
    any_day: (bool, bool),
}

const BOUNDS: [(u32, u32); 5] = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Cron {
    /// Parses an expression; the error names the field.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "cron {text:?}: five fields (minute hour day-of-month month day-of-week)"
            ));
        }
        let mut fields = [0u64; 5];
        for (i, part) in parts.iter().enumerate() {
            fields[i] = field(part, i).map_err(|e| format!("cron {text:?}: {e}"))?;
        }
        // Sunday is 0 and 7.
        if fields[4] & (1 << 7) != 0 {
            fields[4] |= 1;
        }
        Ok(Self {
            fields,
            any_day: (parts[2] == "*", parts[4] == "*"),
        })
    }

    /// Whether the minute `t` (read in its own time zone) is a start.
    fn matches(&self, t: &Zoned) -> bool {
        let bit =
            |i: usize, v: i64| u32::try_from(v).is_ok_and(|v| self.fields[i] & (1u64 << v) != 0);
        let dom = bit(2, i64::from(t.day()));
        let dow = bit(4, i64::from(t.weekday().to_sunday_zero_offset()));
        let day = match self.any_day {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        };
        bit(0, i64::from(t.minute()))
            && bit(1, i64::from(t.hour()))
            && bit(3, i64::from(t.month()))
            && day
    }
}

/// One field as a bit set of the values it allows.
fn field(text: &str, index: usize) -> Result<u64, String> {
    let (low, high) = BOUNDS[index];
    let name = ["minute", "hour", "day of month", "month", "day of week"][index];
    let value = |v: &str| -> Result<u32, String> {
        let upper = v.to_ascii_uppercase();
        let named = match index {
            3 => MONTHS
                .iter()
                .position(|m| *m == upper)
                .map(|p| p as u32 + 1),
            4 => DAYS.iter().position(|d| *d == upper).map(|p| p as u32),
            _ => None,
        };
        let n = match named {
            Some(n) => n,
            None => v
                .parse()
                .map_err(|_| format!("{name} {v:?} is not a number"))?,
        };
        if n < low || n > high {
            return Err(format!("{name} {n} is outside {low}-{high}"));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or(format!("{name} step {s:?}"))?,
            ),
            None => (item, 1),
        };
        let (from, to) = match range {
            "*" => (low, high),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                None if item.contains('/') => (value(r)?, high),
                None => (value(r)?, value(r)?),
            },
        };
        if from > to {
            return Err(format!("{name} range {range:?} runs backwards"));
        }
        let mut v = Some(from);
        while let Some(value) = v.filter(|value| *value <= to) {
            bits |= 1 << value;
            v = value.checked_add(step);
        }
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_weekend_window_in_berlin_holds_from_friday_evening_to_monday_morning() {
        let weekend = FreezeWindow {
            cron: Some("0 18 * * FRI".into()),
            duration: Some("62h".into()),
            timezone: Some("Europe/Berlin".into()),
            from: None,
            to: None,
            reason: "weekend".into(),
        };
        let freeze = Freeze::new(&[weekend], "environments.prod").unwrap();
        // Friday 2026-11-27 18:00 in Berlin is 17:00 UTC (winter time).
        assert_eq!(freeze.frozen_at(at("2026-11-27T16:59:00Z")), None);
        let (end, reason) = freeze.frozen_at(at("2026-11-27T17:00:00Z")).unwrap();
        assert_eq!(
            (end, reason.as_str()),
            (at("2026-11-30T07:00:00Z"), "weekend")
        );
        assert!(freeze.frozen_at(at("2026-11-29T12:00:00Z")).is_some());
        assert_eq!(
            freeze.frozen_at(at("2026-11-30T07:00:00Z")),
            None,
            "Monday 08:00 Berlin"
        );
    }

    #[test]
    fn one_off_windows_chain_and_every_bad_window_is_named() {
        let once = |from: &str, to: &str, reason: &str| FreezeWindow {
            cron: None,
            duration: None,
            timezone: None,
            from: Some(from.into()),
            to: Some(to.into()),
            reason: reason.into(),
        };
        let freeze = Freeze::new(
            &[
                once(
                    "2026-12-24T00:00:00+01:00",
                    "2026-12-27T00:00:00+01:00",
                    "holidays",
                ),
                once(
                    "2026-12-27T00:00:00+01:00",
                    "2026-12-28T00:00:00+01:00",
                    "cleanup",
                ),
            ],
            "environments.prod",
        )
        .unwrap();
        let (end, reason) = freeze.frozen_at(at("2026-12-25T12:00:00Z")).unwrap();
        assert_eq!(
            (end, reason.as_str()),
            (at("2026-12-27T23:00:00Z"), "holidays")
        );
        let bad = [
            FreezeWindow {
                timezone: None,
                ..once("x", "y", "r")
            },
            FreezeWindow {
                cron: Some("0 18 * * FRI".into()),
                from: None,
                to: None,
                duration: Some("62h".into()),
                ..once("", "", "r")
            },
            FreezeWindow {
                cron: Some("61 * * * *".into()),
                from: None,
                to: None,
                duration: Some("1h".into()),
                timezone: Some("UTC".into()),
                ..once("", "", "r")
            },
            once(
                "2026-12-27T00:00:00+01:00",
                "2026-12-24T00:00:00+01:00",
                "backwards",
            ),
        ];
        let problems = Freeze::new(&bad, "environments.prod").unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(
            problems[0].starts_with("environments.prod.freeze[0]: from \"x\""),
            "{problems:#?}"
        );
        assert!(
            problems[1].contains("needs its `timezone`"),
            "{problems:#?}"
        );
        assert!(
            problems[2].contains("minute 61 is outside 0-59"),
            "{problems:#?}"
        );
        assert!(
            problems[3].contains("`from` must be before `to`"),
            "{problems:#?}"
        );
    }

    #[test]
    fn cron_fields_take_lists_ranges_steps_and_names() {
        let c = Cron::parse("*/15 9-17 * JAN,JUL MON-FRI").unwrap();
        assert_eq!(c.fields[0], (1 << 0) | (1 << 15) | (1 << 30) | (1 << 45));
        assert_eq!(c.fields[3], (1 << 1) | (1 << 7));
        assert_eq!(c.fields[4], 0b11_1110);
        assert!(Cron::parse("* * * *").is_err());
        let huge_step = Cron::parse("59/4294967295 * * * *").unwrap();
        assert_eq!(huge_step.fields[0], 1 << 59, "no overflow, one value");
        assert_eq!(
            Cron::parse("0 0 * * 7").unwrap().fields[4] & 1,
            1,
            "7 is Sunday"
        );
    }
}
