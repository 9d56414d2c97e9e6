//! The namespace controller: a Terminating namespace goes, with its contents, after a grace.

use super::{Memory, Pass};
use crate::metadata::{self, meta};
use crate::store::Store;

pub(super) fn reconcile(store: &mut Store, memory: &mut Memory, pass: &mut Pass) {
    let Some(rt) = store.find_kind("", "Namespace") else {
        return;
    };
    let terminating: Vec<String> = store
        .scan(&rt)
        .filter(|n| metadata::is_terminating(n))
        .map(|n| meta(n, "uid").to_owned())
        .collect();
    memory
        .terminating
        .retain(|uid, _| terminating.contains(uid));
    let grace = pass.timing.namespace_grace;
    let mut due = Vec::new();
    for uid in terminating {
        let since = *memory.terminating.entry(uid.clone()).or_insert(pass.now);
        if pass.now >= since + grace {
            due.push(uid);
        } else {
            pass.due_at(since + grace);
        }
    }
    if !due.is_empty() {
        store.finalize_namespaces(&due);
    }
}
