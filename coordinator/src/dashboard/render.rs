//! The dashboard's HTML, rendered on the server from the registry, the release states, the
//! rollouts and the recent events. Every text from outside is escaped here; the page's script
//! only ever sets `textContent` or inserts these fragments.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use jiff::Timestamp;
use proto::{ClusterRecord, Outcome, Phase, ReleaseState, Rollout};

/// How many rollouts the page lists, newest first.
pub(super) const ROLLOUTS_SHOWN: usize = 20;
/// How many events the page starts with.
pub(super) const EVENTS_SHOWN: usize = 50;

/// Escapes text for an HTML element or a quoted attribute.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The colour class of a phase: `healthy`, `progressing`, `failed`, or `neutral`.
pub(super) fn class(phase: Phase) -> &'static str {
    match phase {
        Phase::Succeeded => "healthy",
        Phase::Failed | Phase::RolledBack | Phase::RollbackFailed | Phase::Rejected => "failed",
        Phase::Superseded => "neutral",
        Phase::Corrected => "healthy",
        _ => "progressing",
    }
}

/// `12s`, `4m`, `3h`, `2d` since `at`.
fn age(at: Timestamp, now: Timestamp) -> String {
    let s = (now.as_second() - at.as_second()).max(0);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The clusters x releases matrix: every registered cluster is a row (with its agent's
/// status), every release a column; a cell shows version, phase and age, coloured by phase.
pub(super) fn matrix(
    clusters: &[ClusterRecord],
    states: &[ReleaseState],
    now: Timestamp,
) -> String {
    let mut names: BTreeSet<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    names.extend(states.iter().map(|s| s.cluster.as_str()));
    let releases: BTreeSet<&str> = states.iter().map(|s| s.release.as_str()).collect();
    let cells: BTreeMap<(&str, &str), &ReleaseState> = states
        .iter()
        .map(|s| ((s.cluster.as_str(), s.release.as_str()), s))
        .collect();
    let agents: BTreeMap<&str, &ClusterRecord> =
        clusters.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut out = String::from("<table class=\"matrix\"><thead><tr><th>cluster</th>");
    for r in &releases {
        let _ = write!(out, "<th data-release=\"{0}\">{0}</th>", esc(r));
    }
    out.push_str("</tr></thead><tbody>");
    for name in &names {
        let agent = agents.get(name).map_or_else(
            || "not registered".to_owned(),
            |c| {
                let env = c.labels.get("env").map_or("", String::as_str);
                format!(
                    "{} · {}",
                    esc(env),
                    esc(&format!("{:?}", c.status).to_lowercase())
                )
            },
        );
        let _ = write!(
            out,
            "<tr data-cluster=\"{0}\"><th><span class=\"cluster\">{0}</span><small>{agent}</small></th>",
            esc(name)
        );
        for release in &releases {
            out.push_str(&cell(
                name,
                release,
                cells.get(&(*name, *release)).copied(),
                now,
            ));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    if names.is_empty() {
        out.push_str("<p class=\"empty\">No cluster has registered yet.</p>");
    }
    out
}

/// One cell of the matrix.
fn cell(cluster: &str, release: &str, state: Option<&ReleaseState>, now: Timestamp) -> String {
    let (class_name, phase, version, at, age_text, reason) = match state {
        Some(s) if s.drift.is_some() => (
            "progressing",
            "drifted",
            s.version.as_str(),
            s.updated_at.to_string(),
            age(s.updated_at, now),
            s.drift.as_deref().unwrap_or(""),
        ),
        Some(s) => (
            class(s.phase),
            s.phase.as_str(),
            s.version.as_str(),
            s.updated_at.to_string(),
            age(s.updated_at, now),
            s.reason.as_deref().unwrap_or(""),
        ),
        None => ("none", "", "", String::new(), String::new(), ""),
    };
    format!(
        "<td class=\"cell {class_name}\" data-cluster=\"{c}\" data-release=\"{r}\" data-phase=\"{phase}\" title=\"{reason}\">\
         <span class=\"version\">{v}</span> <span class=\"phase\">{p}</span> <span class=\"age\" data-at=\"{at}\">{age_text}</span></td>",
        c = esc(cluster),
        r = esc(release),
        v = esc(version),
        p = esc(&phase.replace('_', " ")),
        reason = esc(reason),
    )
}

/// The newest rollouts, each with its waves, every cluster's phase, and the reason when it
/// did not succeed.
pub(super) fn rollouts(rollouts: &[Rollout], now: Timestamp) -> String {
    let mut sorted: Vec<&Rollout> = rollouts.iter().collect();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    let mut out = String::new();
    for r in sorted.into_iter().take(ROLLOUTS_SHOWN) {
        out.push_str(&rollout(r, now));
    }
    if out.is_empty() {
        out.push_str("<p class=\"empty\">No rollout yet.</p>");
    }
    out
}

fn rollout(r: &Rollout, now: Timestamp) -> String {
    let status = r.status.as_str();
    let mut out = format!(
        "<article class=\"rollout status-{status}\" data-rollout=\"{id}\" data-status=\"{status}\">\
         <header><b>{release}</b> {version} → {env} <span class=\"status\">{status}</span> \
         <span class=\"age\" data-at=\"{at}\">{age}</span> <small>by {by} · {id}</small></header>",
        id = esc(&r.id),
        release = esc(&r.request.release),
        version = esc(&r.request.version),
        env = esc(&r.request.environment),
        at = r.created_at,
        age = age(r.created_at, now),
        by = esc(&r.request.requested_by),
    );
    if let Some(reason) = &r.reason {
        let _ = write!(out, "<p class=\"reason\">{}</p>", esc(reason));
    }
    out.push_str("<ol class=\"waves\">");
    for (n, wave) in r.waves.iter().enumerate() {
        let current = if n == r.current_wave && status == "running" {
            " current"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<li class=\"wave{current}\"><span class=\"label\">wave {}</span>",
            n + 1
        );
        for cluster in wave {
            out.push_str(&chip(r, cluster));
        }
        out.push_str("</li>");
    }
    out.push_str("</ol>");
    for (cluster, why) in &r.excluded {
        let _ = write!(
            out,
            "<p class=\"excluded\">not targeted: {}: {}</p>",
            esc(cluster),
            esc(why)
        );
    }
    out.push_str("</article>");
    out
}

/// One cluster of a rollout: its phase (or `waiting` / `sent`), its reason as a tooltip.
fn chip(r: &Rollout, cluster: &str) -> String {
    let progress = r.clusters.get(cluster);
    let (class_name, phase) = match progress.and_then(|c| c.phase) {
        None if progress.is_some_and(|c| c.blocked.is_some()) => {
            ("failed", "not started".to_owned())
        }
        Some(p) => (class(p), p.as_str().to_owned()),
        None if progress.is_some_and(|c| c.intent_id.is_some()) => {
            ("progressing", "sent".to_owned())
        }
        None => ("none", "waiting".to_owned()),
    };
    let reason = progress
        .and_then(|c| c.reason.as_deref().or(c.blocked.as_deref()))
        .unwrap_or("");
    format!(
        "<span class=\"chip {class_name}\" data-cluster=\"{c}\" title=\"{reason}\">{c} <i>{p}</i></span>",
        c = esc(cluster),
        p = esc(&phase.replace('_', " ")),
        reason = esc(reason),
    )
}

/// The recent events, newest first.
pub(super) fn events(events: &[Outcome]) -> String {
    let mut out = String::new();
    for e in events.iter().rev().take(EVENTS_SHOWN) {
        let _ = write!(
            out,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            class(e.phase),
            e.at.strftime("%H:%M:%S"),
            esc(&e.cluster),
            esc(&e.release),
            esc(e.version.as_deref().unwrap_or("")),
            esc(e.phase.as_str()),
            esc(e.reason.as_deref().unwrap_or("")),
        );
    }
    out
}

/// The whole page: the three sections, and the script that keeps them live.
pub(super) fn page(who: &str, matrix: &str, rollouts: &str, events: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Coxswain</title><link rel=\"stylesheet\" href=\"/ui/app.css\"></head><body>\
         <header class=\"top\"><h1>Coxswain</h1><span id=\"live\" class=\"live\">connecting…</span>\
         <form method=\"post\" action=\"/logout\"><small>{who}</small> <button>sign out</button></form></header>\
         <main><section><h2>Fleet</h2><div id=\"matrix\">{matrix}</div></section>\
         <section><h2>Rollouts</h2><div id=\"rollouts\">{rollouts}</div></section>\
         <section><h2>Events</h2><table class=\"events\"><thead><tr><th>time</th><th>cluster</th>\
         <th>release</th><th>version</th><th>phase</th><th>reason</th></tr></thead>\
         <tbody id=\"events\">{events}</tbody></table></section></main>\
         <script src=\"/ui/app.js\"></script></body></html>",
        who = esc(who),
    )
}

/// The sign-in page: a token pasted into a form (it travels in the POST body and then in an
/// HttpOnly cookie, never in a URL).
pub(super) fn login(problem: Option<&str>) -> String {
    let problem = problem.map_or_else(String::new, |p| {
        format!("<p class=\"problem\">{}</p>", esc(p))
    });
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Coxswain: sign in</title>\
         <link rel=\"stylesheet\" href=\"/ui/app.css\"></head><body class=\"login\"><main>\
         <h1>Coxswain</h1>{problem}<form method=\"post\" action=\"/login\">\
         <label for=\"token\">API token (any identity of the tokens file; <code>read</code> is enough)</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
         <button id=\"sign-in\" type=\"submit\">Sign in</button></form></main></body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_outside_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        let html = login(Some("<b>bad</b>"));
        assert!(html.contains("&lt;b&gt;bad&lt;/b&gt;") && !html.contains("<b>bad"));
    }

    #[test]
    fn phases_take_the_colour_of_their_outcome() {
        assert_eq!(class(Phase::Succeeded), "healthy");
        assert_eq!(class(Phase::RolledBack), "failed");
        assert_eq!(class(Phase::Applying), "progressing");
    }

    #[test]
    fn every_registered_cluster_is_a_row_even_with_nothing_deployed() {
        let record = |name: &str| ClusterRecord {
            schema_version: 1,
            name: name.into(),
            labels: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
            agent_version: "0.1.0".into(),
            capabilities: Vec::new(),
            status: proto::AgentStatus::Ready,
            heartbeat_at: Timestamp::UNIX_EPOCH,
        };
        let html = matrix(
            &[record("east"), record("west")],
            &[],
            Timestamp::UNIX_EPOCH,
        );
        assert!(html.contains("<tr data-cluster=\"east\">"));
        assert!(html.contains("<tr data-cluster=\"west\">"));
    }
}
