//! Every bound the agent puts on what it accepts, in one place; the README's "Limits" table
//! lists the same numbers. Each refusal names the limit and the value.
//!
//! Limits it shares with others live with their owner and are only named here: objects per
//! release, history record expansion and template fuel in [`deploy::limits`]; a message's
//! size ([`proto::MAX_MESSAGE_BYTES`]) and an event's reason ([`proto::MAX_REASON_CHARS`],
//! applied by `Outcome::bounded` before every publish) in `proto`.

pub(crate) use deploy::limits::check_object_count;

/// The largest manifest bundle an agent fetches: an intent declaring a larger one is rejected
/// before any download, and a read is cut off one byte past it whatever the store says.
pub(crate) const MAX_BUNDLE_BYTES: u64 = 64 * 1024 * 1024;

/// Refuses a bundle whose declared size is over [`MAX_BUNDLE_BYTES`], naming both.
pub(crate) fn check_bundle_size(digest: &str, declared: u64) -> Result<(), String> {
    if declared > MAX_BUNDLE_BYTES {
        Err(format!(
            "bundle {digest} declares {declared} bytes, over the limit of {MAX_BUNDLE_BYTES} bytes"
        ))
    } else {
        Ok(())
    }
}
