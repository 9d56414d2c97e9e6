//! The cloud's load balancer controller and an ingress controller: a LoadBalancer Service or
//! an Ingress gets an address (`status.loadBalancer.ingress`) a pod-ready delay after it is
//! first seen, and keeps it.

use serde_json::{Value, json};

use super::{Memory, Pass, forget_gone, snapshot};
use crate::hash::fnv_hex;
use crate::metadata::meta;
use crate::resource::ResourceType;
use crate::store::Store;

pub(super) fn reconcile(store: &mut Store, memory: &mut Memory, pass: &mut Pass) {
    let services: Vec<Value> = snapshot(store, &pass.t.svc)
        .into_iter()
        .filter(|s| s["spec"]["type"] == "LoadBalancer")
        .collect();
    let ingresses = snapshot(store, &pass.t.ing);
    let waiting: Vec<Value> = services
        .iter()
        .chain(&ingresses)
        .filter(|o| !has_address(o))
        .cloned()
        .collect();
    forget_gone(&mut memory.addresses, &waiting);
    let (svc, ing) = (pass.t.svc.clone(), pass.t.ing.clone());
    for (rt, object) in waiting
        .iter()
        .map(|o| (if o["kind"] == "Ingress" { &ing } else { &svc }, o))
    {
        let since = *memory
            .addresses
            .entry(meta(object, "uid").to_owned())
            .or_insert(pass.now);
        let at = since + pass.timing.pod_ready;
        if pass.now < at {
            pass.due_at(at);
            continue;
        }
        give_address(store, rt, object);
    }
}

fn has_address(object: &Value) -> bool {
    object["status"]["loadBalancer"]["ingress"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
}

/// Writes an address, stable for the object, into its status.
fn give_address(store: &mut Store, rt: &ResourceType, object: &Value) {
    let h = fnv_hex(meta(object, "uid").as_bytes());
    let host = 1 + u8::from_str_radix(&h[..2], 16).unwrap_or(0) % 254;
    let ip = format!("172.18.255.{host}");
    let address = if rt.kind == "Service" {
        json!({"ip": ip, "ipMode": "VIP"})
    } else {
        json!({"ip": ip})
    };
    let mut status = object["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    status["loadBalancer"] = json!({"ingress": [address]});
    store.set_status(rt, meta(object, "namespace"), meta(object, "name"), status);
}
