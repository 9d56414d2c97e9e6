//! Content digests as they travel on the wire: `sha256:<64 lowercase hex digits>`.

/// The digest of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The digest of a list of manifests as it travels inline or in a bundle: the digest of the
/// list's JSON encoding.
pub fn manifests_digest(objects: &[serde_json::Value]) -> String {
    sha256_digest(&serde_json::to_vec(objects).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256_digest(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
