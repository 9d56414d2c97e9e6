//! Tables for `kubectl get`: the `meta.k8s.io/v1` Table with the columns kubectl shows for the
//! common kinds.

use serde_json::{Value, json};

use crate::resource::ResourceType;

/// A `meta.k8s.io/v1` Table, for `kubectl get`.
pub(super) fn table(rt: &ResourceType, items: &[Value], rv: u64) -> Value {
    let column = |name: &str, kind: &str| json!({"name": name, "type": kind, "format": if name == "Name" {"name"} else {""}, "description": "", "priority": 0});
    let mut columns = vec![column("Name", "string")];
    let extra: Vec<&str> = match rt.kind.as_str() {
        "Namespace" => vec!["Status"],
        "Deployment" => vec!["Ready", "Up-to-date", "Available"],
        "Pod" => vec!["Ready", "Status", "Restarts"],
        "StatefulSet" => vec!["Ready"],
        "Job" => vec!["Status", "Completions"],
        "Service" => vec!["Type", "Cluster-IP"],
        _ => vec![],
    };
    columns.extend(extra.iter().map(|c| column(c, "string")));
    columns.push(column("Age", "string"));
    let rows: Vec<Value> = items
        .iter()
        .map(|o| json!({"cells": cells(rt, o), "object": o}))
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// One row: the name, the columns of the kind, the age.
fn cells(rt: &ResourceType, o: &Value) -> Vec<Value> {
    let s = &o["status"];
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    let mut cells = vec![o["metadata"]["name"].clone()];
    match rt.kind.as_str() {
        "Namespace" => cells.push(s["phase"].clone()),
        "Deployment" => {
            let want = n(&o["spec"]["replicas"]);
            cells.push(format!("{}/{want}", n(&s["readyReplicas"])).into());
            cells.push(n(&s["updatedReplicas"]).into());
            cells.push(n(&s["availableReplicas"]).into());
        }
        "Pod" => {
            let statuses = s["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            cells.push(format!("{ready}/{}", statuses.len()).into());
            let waiting = statuses
                .iter()
                .find_map(|c| c["state"]["waiting"]["reason"].as_str());
            cells.push(waiting.map_or_else(|| s["phase"].clone(), Value::from));
            cells.push(
                statuses
                    .iter()
                    .map(|c| n(&c["restartCount"]))
                    .sum::<i64>()
                    .into(),
            );
        }
        "StatefulSet" => {
            cells.push(format!("{}/{}", n(&s["readyReplicas"]), n(&o["spec"]["replicas"])).into())
        }
        "Job" => {
            let done = s["conditions"].as_array().into_iter().flatten().find(|c| {
                c["status"] == "True" && (c["type"] == "Complete" || c["type"] == "Failed")
            });
            cells.push(done.map_or_else(|| "Running".into(), |c| c["type"].clone()));
            cells.push(
                format!(
                    "{}/{}",
                    n(&s["succeeded"]),
                    n(&o["spec"]["completions"]).max(1)
                )
                .into(),
            );
        }
        "Service" => {
            cells.push(o["spec"]["type"].clone());
            cells.push(o["spec"]["clusterIP"].clone());
        }
        _ => {}
    }
    cells.push(age(o["metadata"]["creationTimestamp"].as_str()).into());
    cells
}

fn age(created: Option<&str>) -> String {
    let Some(created) = created.and_then(|c| c.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    let secs = jiff::Timestamp::now()
        .as_second()
        .saturating_sub(created.as_second())
        .max(0);
    match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        7200..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}
