//! What every object carries in `metadata`: reading its fields and owner references, and the
//! uids, generated name suffixes and timestamps the API server stamps on it.

use serde_json::Value;

use crate::hash::fnv_hex;

/// A string field of `metadata` (`name`, `namespace`, `uid`, ...), empty when absent.
pub fn meta<'a>(object: &'a Value, field: &str) -> &'a str {
    object["metadata"][field].as_str().unwrap_or_default()
}

/// Does one of the object's owner references point at `uid`?
pub fn is_owned_by(object: &Value, uid: &str) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
}

/// Has the object been deleted, and is it waiting to go (a Terminating namespace)?
pub fn is_terminating(object: &Value) -> bool {
    !object["metadata"]["deletionTimestamp"].is_null()
}

/// The uid of the `seq`th object a store creates: stable, and shaped like a UUID v4.
pub fn uid(seq: u64) -> String {
    let h = fnv_hex(&seq.to_le_bytes());
    format!(
        "{}-{}-4{}-8{}-{}{:04x}",
        &h[..8],
        &h[8..12],
        &h[12..15],
        &h[1..4],
        &h[4..12],
        seq & 0xffff
    )
}

/// Five lowercase alphanumerics, like the API server's generated name suffixes.
pub fn suffix(seq: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = u64::from_str_radix(&fnv_hex(&seq.to_le_bytes())[..12], 16).unwrap_or(seq);
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// Now, RFC 3339 with second precision, as Kubernetes writes timestamps.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn uids_and_suffixes_are_stable_and_well_shaped() {
        assert_eq!(uid(7), uid(7));
        assert_ne!(uid(7), uid(8));
        let parts: Vec<usize> = uid(7).split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        let s = suffix(3);
        assert_eq!(s.len(), 5);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        assert_eq!(s, suffix(3));
    }

    #[test]
    fn owner_references_and_termination() {
        let o = json!({"metadata": {"name": "a", "ownerReferences": [{"uid": "u1"}],
            "deletionTimestamp": "2026-01-01T00:00:00Z"}});
        assert_eq!(meta(&o, "name"), "a");
        assert_eq!(meta(&o, "uid"), "");
        assert!(is_owned_by(&o, "u1"));
        assert!(!is_owned_by(&o, "u2"));
        assert!(is_terminating(&o));
        assert!(!is_terminating(&json!({"metadata": {}})));
    }
}
