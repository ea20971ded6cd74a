// The portal's little script: pop-up windows for results and documents, live updates of a
// patient page (server-sent events), and the automatic logoff of an idle screen.
document.addEventListener('click', (e) => {
  const link = e.target.closest('a[data-popup]');
  if (link) {
    e.preventDefault();
    const w = window.open(link.href, 'hie-record', 'popup=yes,width=680,height=600');
    if (w) w.focus();
    return;
  }
  if (e.target.closest('button[data-close]')) window.close();
});

document.addEventListener('DOMContentLoaded', () => {
  const live = document.querySelector('[data-live]');
  if (live && window.EventSource) {
    const source = new EventSource(live.dataset.live);
    source.addEventListener('changed', () => {
      // Fetch (an audited read) only what this open page shows; not the user's activity.
      fetch(live.dataset.section, { headers: { 'X-HIE-Background': '1' }, credentials: 'same-origin' })
        .then((r) => {
          if (!r.ok || r.redirected) { window.location.assign('/portal/'); return null; }
          return r.text();
        })
        .then((html) => {
          if (html === null) return;
          live.innerHTML = html;
          live.dataset.updated = String(Number(live.dataset.updated || 0) + 1);
        });
    });
    source.addEventListener('ended', () => { source.close(); window.location.assign('/portal/'); });
  }
  // Leave a screen showing patient data once the session has ended by itself.
  const idle = Number(document.body.dataset.idleSeconds || 0);
  if (idle > 0) setTimeout(() => window.location.assign('/portal/'), (idle + 2) * 1000);
});
