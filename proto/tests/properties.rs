//! Property tests of the codec: valid intents round-trip, and no input makes a decoder panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use proto::{
    ClusterRecord, ContentType, DeployIntent, HealthPolicy, HttpProbe, Manifests, Outcome,
    RollbackPolicy, SCHEMA_VERSION, Validate, decode, encode,
};
use serde_json::{Value, json};

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?"
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        Just(Value::Null),
    ]
}

fn object() -> impl Strategy<Value = Value> {
    (
        label(),
        prop::sample::select(vec!["ConfigMap", "Deployment", "Service", "Widget"]),
        prop::collection::btree_map("[a-zA-Z_.]{1,12}", scalar(), 0..6),
    )
        .prop_map(|(name, kind, data)| {
            json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name}, "data": data})
        })
}

fn manifests() -> impl Strategy<Value = Manifests> {
    let digest = "[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}"));
    prop_oneof![
        (digest.clone(), prop::collection::vec(object(), 1..5))
            .prop_map(|(digest, objects)| Manifests::Inline { digest, objects }),
        (digest, any::<u64>()).prop_map(|(digest, size)| Manifests::Bundle { digest, size }),
    ]
}

fn intent() -> impl Strategy<Value = DeployIntent> {
    (
        ("[A-Za-z0-9._-]{1,64}", label(), label(), label(), label()),
        (
            "[a-zA-Z0-9.+-]{1,40}",
            prop::collection::btree_map(label(), "[a-z0-9./:-]{1,60}", 0..3),
        ),
        manifests(),
        (
            1u64..86_400,
            any::<bool>(),
            any::<bool>(),
            prop::option::of(1u32..10),
        ),
        (
            ".{1,60}",
            0i64..4_000_000_000,
            prop::option::of("[a-z0-9-]{1,30}"),
        ),
    )
        .prop_map(
            |(
                (id, cluster, release, namespace, environment),
                (version, images),
                manifests,
                (timeout_secs, run_tests, enabled, probe),
                (requested_by, secs, rollout_id),
            )| DeployIntent {
                schema_version: SCHEMA_VERSION,
                id,
                cluster,
                release,
                namespace,
                environment,
                version,
                images: images.into_iter().collect::<BTreeMap<_, _>>(),
                manifests,
                health: HealthPolicy {
                    timeout_secs,
                    http_probes: probe
                        .map(|successes| HttpProbe {
                            url: "http://web.web.svc/healthz".into(),
                            successes,
                            timeout_ms: 500,
                        })
                        .into_iter()
                        .collect(),
                    run_tests,
                    wait_for_addresses: true,
                    drift: Default::default(),
                },
                rollback: RollbackPolicy {
                    enabled,
                    uninstall_failed_install: !enabled,
                },
                requested_by: if requested_by.trim().is_empty() {
                    "ci".into()
                } else {
                    requested_by
                },
                created_at: jiff::Timestamp::from_second(secs).unwrap(),
                rollout_id,
                expires_at: None,
            },
        )
}

const HEADERS: [Option<&str>; 4] = [
    None,
    Some("application/msgpack"),
    Some("application/json"),
    Some("text/plain"),
];

/// Cases per property: 256 in the default test run, `$PROPTEST_CASES` at scale (`scripts/chaos
/// fuzz`). An explicit `with_cases` would otherwise ignore the variable.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn any_valid_intent_round_trips(intent in intent()) {
        prop_assert_eq!(intent.validate(), Ok(()));
        for ct in [ContentType::MsgPack, ContentType::Json] {
            let bytes = encode(ct, &intent).unwrap();
            let back: DeployIntent = decode(Some(ct.as_str()), &bytes).unwrap();
            prop_assert_eq!(&back, &intent);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for header in HEADERS {
            let _ = decode::<DeployIntent>(header, &bytes);
            let _ = decode::<Outcome>(header, &bytes);
            let _ = decode::<ClusterRecord>(header, &bytes);
        }
    }

    #[test]
    fn corrupted_valid_messages_never_panic(
        intent in intent(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        for ct in [ContentType::MsgPack, ContentType::Json] {
            let mut bytes = encode(ct, &intent).unwrap();
            for (at, byte) in &flips {
                let i = at.index(bytes.len());
                bytes[i] = *byte;
            }
            if let Ok(back) = decode::<DeployIntent>(Some(ct.as_str()), &bytes) {
                // Whatever decodes is still checked by validation, which must not panic either.
                let _ = back.validate();
            }
            let len = cut.index(bytes.len());
            let _ = decode::<DeployIntent>(Some(ct.as_str()), &bytes[..len]);
        }
    }
}
