// Coxswain dashboard: keeps the server-rendered page live from /ui/events (Server-Sent
// Events). Data from events is only ever set as text; the fragments swapped in are rendered
// and escaped by the coordinator.
(() => {
  'use strict';
  const FAILED = ['failed', 'rolled_back', 'rollback_failed', 'rejected'];
  const colour = (phase) =>
    phase === 'succeeded' || phase === 'corrected' ? 'healthy'
      : FAILED.includes(phase) ? 'failed'
        : phase === 'superseded' ? 'neutral' : 'progressing';
  const latest = new Map(); // "cluster/release" -> newest event seen
  const timers = {};

  function age(at) {
    const s = Math.max(0, Math.floor((Date.now() - Date.parse(at)) / 1000));
    if (Number.isNaN(s)) return '';
    if (s < 120) return s + 's';
    if (s < 7200) return Math.floor(s / 60) + 'm';
    if (s < 172800) return Math.floor(s / 3600) + 'h';
    return Math.floor(s / 86400) + 'd';
  }

  function tick() {
    document.querySelectorAll('[data-at]').forEach((el) => {
      if (el.dataset.at) el.textContent = age(el.dataset.at);
    });
  }

  // Swaps a section for its fresh rendering, at most once per 250 ms.
  function refresh(id, url, then) {
    clearTimeout(timers[id]);
    timers[id] = setTimeout(async () => {
      try {
        const answer = await fetch(url, { credentials: 'same-origin', cache: 'no-store' });
        if (!answer.ok) return;
        document.getElementById(id).innerHTML = await answer.text();
        if (then) then();
        tick();
      } catch (_) { /* the next event refreshes again */ }
    }, 250);
  }

  // Sets a matrix cell from an event, unless the cell already shows something newer.
  function paint(e) {
    const selector = 'td[data-cluster="' + CSS.escape(e.cluster) + '"][data-release="' + CSS.escape(e.release) + '"]';
    const td = document.querySelector(selector);
    if (!td) return false;
    const shown = td.querySelector('.age');
    if (shown && shown.dataset.at && Date.parse(shown.dataset.at) > Date.parse(e.at)) return true;
    td.dataset.phase = e.phase;
    td.className = 'cell ' + colour(e.phase);
    td.title = e.reason || '';
    if (e.version) td.querySelector('.version').textContent = e.version;
    td.querySelector('.phase').textContent = e.phase.replace(/_/g, ' ');
    shown.dataset.at = e.at;
    return true;
  }

  function repaint() {
    latest.forEach((e) => paint(e));
  }

  function row(e) {
    const tbody = document.getElementById('events');
    const tr = document.createElement('tr');
    tr.className = colour(e.phase);
    const time = new Date(e.at).toISOString().slice(11, 19);
    for (const text of [time, e.cluster, e.release, e.version || '', e.phase, e.reason || '']) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    tbody.prepend(tr);
    while (tbody.rows.length > 200) tbody.deleteRow(-1);
  }

  function connect() {
    const live = document.getElementById('live');
    const source = new EventSource('/ui/events');
    source.onopen = () => { live.textContent = 'live'; live.className = 'live on'; };
    source.onerror = () => { live.textContent = 'reconnecting…'; live.className = 'live off'; };
    source.addEventListener('outcome', (message) => {
      const e = JSON.parse(message.data);
      latest.set(e.cluster + '/' + e.release, e);
      // A cluster or release the matrix does not have yet: render it again.
      if (!paint(e)) refresh('matrix', '/ui/matrix', repaint);
      row(e);
    });
    source.addEventListener('rollout', () => refresh('rollouts', '/ui/rollouts'));
  }

  tick();
  setInterval(tick, 1000);
  connect();
})();
