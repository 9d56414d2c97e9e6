//! Validation that reports every problem at once, so CI fixes them in one round trip.

use std::fmt;

/// Anything that can check itself before it goes on the wire or into a cluster.
pub trait Validate {
    /// Every problem found, or `Ok` when there are none.
    fn validate(&self) -> Result<(), ValidationErrors>;
}

/// What is wrong with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// A required field is empty or absent.
    Missing,
    /// The value is not a DNS-1123 label (lowercase alphanumerics and `-`, 1-63 characters,
    /// starting and ending with an alphanumeric).
    NotDnsLabel {
        /// The offending value.
        value: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The value is longer than allowed.
    TooLong {
        /// Its length in characters.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The encoded value is larger than allowed.
    TooLarge {
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The schema version is not one this build understands.
    UnsupportedSchemaVersion {
        /// The version found.
        found: u32,
        /// The version this build supports.
        supported: u32,
    },
    /// Any other rule, explained.
    Invalid(String),
}

/// One problem: the field's path (`manifests.objects[2].kind`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path of the field, dotted, with `[i]` for list items.
    pub field: String,
    /// What is wrong.
    pub kind: ProblemKind,
}

impl Problem {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, kind: ProblemKind) -> Self {
        Self {
            field: field.into(),
            kind,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = &self.field;
        match &self.kind {
            ProblemKind::Missing => write!(f, "{field}: required"),
            ProblemKind::NotDnsLabel { value, reason } => {
                write!(f, "{field}: {value:?} is not a DNS-1123 label ({reason})")
            }
            ProblemKind::TooLong { len, max } => {
                write!(f, "{field}: {len} characters, at most {max} allowed")
            }
            ProblemKind::TooLarge { size, limit } => {
                write!(f, "{field}: {size} bytes, at most {limit} allowed")
            }
            ProblemKind::UnsupportedSchemaVersion { found, supported } => {
                write!(
                    f,
                    "{field}: schema version {found} is not supported (this build reads {supported})"
                )
            }
            ProblemKind::Invalid(reason) => write!(f, "{field}: {reason}"),
        }
    }
}

/// Every problem found in one message, in field order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidationErrors {
    problems: Vec<Problem>,
}

impl ValidationErrors {
    /// No problems yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem.
    pub fn push(&mut self, field: impl Into<String>, kind: ProblemKind) {
        self.problems.push(Problem::new(field, kind));
    }

    /// Records a problem when a message's `schema_version` is not the one this build reads.
    pub fn check_schema_version(&mut self, found: u32) {
        if found != crate::SCHEMA_VERSION {
            self.push(
                "schema_version",
                ProblemKind::UnsupportedSchemaVersion {
                    found,
                    supported: crate::SCHEMA_VERSION,
                },
            );
        }
    }

    /// Records a problem when `field` is not a DNS-1123 label.
    pub fn check_label(&mut self, field: &str, value: &str) {
        if let Err(kind) = check_dns_label(value) {
            self.push(field, kind);
        }
    }

    /// Records a problem when `value` is empty.
    pub fn check_required(&mut self, field: &str, value: &str) {
        if value.trim().is_empty() {
            self.push(field, ProblemKind::Missing);
        }
    }

    /// The problems, in the order they were found.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// `Ok` when nothing was recorded.
    pub fn into_result(self) -> Result<(), Self> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s): ", self.problems.len())?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Checks a DNS-1123 label (RFC 1123, as Kubernetes uses for namespaces and names): 1-63
/// characters of `a-z`, `0-9` and `-`, starting and ending with an alphanumeric. Such a name is a
/// safe NATS subject token too.
pub fn check_dns_label(value: &str) -> Result<(), ProblemKind> {
    let not = |reason| {
        Err(ProblemKind::NotDnsLabel {
            value: value.to_owned(),
            reason,
        })
    };
    if value.is_empty() {
        return Err(ProblemKind::Missing);
    }
    if value.len() > 63 {
        return not("longer than 63 characters");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return not("only lowercase letters, digits and '-' are allowed");
    }
    if value.starts_with('-') || value.ends_with('-') {
        return not("must start and end with a letter or digit");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "web", "prod-east-1", "0abc", &"a".repeat(63)] {
            assert_eq!(check_dns_label(ok), Ok(()), "{ok}");
        }
        let cases = [
            ("Web", "only lowercase letters, digits and '-' are allowed"),
            ("a.b", "only lowercase letters, digits and '-' are allowed"),
            ("a*", "only lowercase letters, digits and '-' are allowed"),
            ("-a", "must start and end with a letter or digit"),
            ("a-", "must start and end with a letter or digit"),
        ];
        for (bad, reason) in cases {
            assert_eq!(
                check_dns_label(bad),
                Err(ProblemKind::NotDnsLabel {
                    value: bad.into(),
                    reason
                })
            );
        }
        assert_eq!(check_dns_label(""), Err(ProblemKind::Missing));
        assert!(matches!(
            check_dns_label(&"a".repeat(64)),
            Err(ProblemKind::NotDnsLabel {
                reason: "longer than 63 characters",
                ..
            })
        ));
    }

    #[test]
    fn display_lists_every_problem() {
        let mut e = ValidationErrors::new();
        e.push("release", ProblemKind::Missing);
        e.push("id", ProblemKind::TooLong { len: 200, max: 128 });
        assert_eq!(
            e.to_string(),
            "2 problem(s): release: required; id: 200 characters, at most 128 allowed"
        );
    }
}
