//! The simulated nodes every virtual cluster has: their names, and the Ready Node objects the
//! store starts with. A DaemonSet runs one pod on each.

use serde_json::{Value, json};

/// The simulated nodes; a DaemonSet runs one pod on each.
pub const NODES: [&str; 2] = ["sim-node-0", "sim-node-1"];

/// The Node object of one of [`NODES`], Ready.
pub(crate) fn node_object(name: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
           "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}})
}
