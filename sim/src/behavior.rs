//! Failure on demand: how a simulated pod behaves, read from its images and annotations.

use serde_json::Value;

/// The annotation that picks a behaviour on a workload or its pod template:
/// `healthy`, `broken`, `missing` or `slow`.
pub const ANNOTATION: &str = "sim.coxswain.dev/behavior";

/// What the simulated kubelet makes of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Starts and becomes ready after the pod-ready delay.
    Healthy,
    /// Crashes on start: `CrashLoopBackOff`, never ready (image tag ending in `-broken`).
    CrashLoop,
    /// The image cannot be pulled: `ImagePullBackOff` (image tag ending in `-missing`).
    ImagePull,
    /// Becomes ready only after its progress deadline (image tag ending in `-slow`).
    Slow,
}

impl Behavior {
    fn from_word(word: &str) -> Option<Self> {
        match word {
            "healthy" => Some(Self::Healthy),
            "broken" => Some(Self::CrashLoop),
            "missing" => Some(Self::ImagePull),
            "slow" => Some(Self::Slow),
            _ => None,
        }
    }

    /// The annotation value that selects this behaviour.
    pub fn word(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::CrashLoop => "broken",
            Self::ImagePull => "missing",
            Self::Slow => "slow",
        }
    }
}

/// The behaviour of pods made from `template` by a workload with `owner_meta`: an annotation
/// on the template or the workload wins; else the first container image with a telling suffix.
pub fn of_template(template: &Value, owner_meta: &Value) -> Behavior {
    let annotated = [&template["metadata"], owner_meta]
        .into_iter()
        .find_map(|m| {
            m["annotations"][ANNOTATION]
                .as_str()
                .and_then(Behavior::from_word)
        });
    if let Some(b) = annotated {
        return b;
    }
    let spec = &template["spec"];
    ["initContainers", "containers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten())
        .filter_map(|c| c["image"].as_str())
        .find_map(|image| {
            if image.ends_with("-broken") {
                Some(Behavior::CrashLoop)
            } else if image.ends_with("-missing") {
                Some(Behavior::ImagePull)
            } else if image.ends_with("-slow") {
                Some(Behavior::Slow)
            } else {
                None
            }
        })
        .unwrap_or(Behavior::Healthy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn image_suffixes_and_annotations() {
        let t = |image: &str| json!({"spec": {"containers": [{"name": "c", "image": image}]}});
        assert_eq!(of_template(&t("web:1.0"), &json!({})), Behavior::Healthy);
        assert_eq!(
            of_template(&t("web:2.0-broken"), &json!({})),
            Behavior::CrashLoop
        );
        assert_eq!(
            of_template(&t("web:2.0-missing"), &json!({})),
            Behavior::ImagePull
        );
        assert_eq!(of_template(&t("web:2.0-slow"), &json!({})), Behavior::Slow);
        let owner = json!({"annotations": {ANNOTATION: "broken"}});
        assert_eq!(of_template(&t("web:1.0"), &owner), Behavior::CrashLoop);
    }
}
