//! Every bound the release engine puts on its inputs, in one place. Each refusal names the
//! limit and the value that broke it; the README's "Limits" table lists the same numbers.

/// The most objects (tests included) one release may hold: checked where manifests are
/// rendered (`render::render`) and where an agent accepts them ([`check_object_count`]).
pub const MAX_OBJECTS_PER_RELEASE: usize = 1_000;

/// The most bytes a history record's gzip may expand to when read back (and the largest
/// record written): a gzip bomb in a history Secret is refused, not expanded. A Kubernetes
/// Secret holds at most 1 MiB, so a real record of this size would already compress 32-fold.
pub const MAX_HISTORY_RECORD_BYTES: u64 = 32 * 1024 * 1024;

/// minijinja fuel for rendering one template: roughly the number of instructions it may run.
/// A template that loops forever (or for hours) stops with "template ran out of fuel" within
/// a fraction of a second; a loop rendering 1,001 objects fits in it easily (tested).
pub const TEMPLATE_FUEL: u64 = 5_000_000;

/// Refuses a release of more than [`MAX_OBJECTS_PER_RELEASE`] objects, naming both numbers.
pub fn check_object_count(count: usize) -> Result<(), String> {
    if count > MAX_OBJECTS_PER_RELEASE {
        Err(format!(
            "the release has {count} objects, over the limit of {MAX_OBJECTS_PER_RELEASE} objects per release"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_object_count_is_refused_past_the_limit_naming_both_numbers() {
        assert_eq!(check_object_count(MAX_OBJECTS_PER_RELEASE), Ok(()));
        let err = check_object_count(MAX_OBJECTS_PER_RELEASE + 1).unwrap_err();
        assert!(
            err.contains("1001 objects") && err.contains("limit of 1000"),
            "{err}"
        );
    }
}
