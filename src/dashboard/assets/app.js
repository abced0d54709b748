// The cyan dashboard's page: the overview, live charts per color from the
// server's event stream, and the promote, abort and rollback buttons.
// Every value from the server goes in as text (textContent), never as HTML.
"use strict";

const CSRF = document.querySelector('meta[name="csrf"]').content;
const READ_ONLY = document.querySelector('meta[name="read-only"]').content === "true";
const KEPT = 300; // chart points: 5 minutes at 1 s
// [the rates' field drawn, the chart's title, what the legend says of a color's last rates]
const bound = (v) => (v == null ? "–" : "≤" + v);
const CHARTS = [
  ["requests_per_s", "requests/s", (r) => r.requests_per_s.toFixed(1)],
  ["errors_per_s", "5xx/s", (r) => r.errors_per_s.toFixed(1)],
  ["p99_ms", "p99 latency, ms", (r) => "p50 " + bound(r.p50_ms) + ", p99 " + bound(r.p99_ms)],
  ["inflight", "in flight", (r) => String(r.inflight)],
];

const state = { overview: null, points: [], steps: [] };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v == null) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const svgNs = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const e = document.createElementNS(svgNs, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function time(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

function short(digest) {
  if (!digest) return "";
  const at = digest.indexOf("sha256:");
  return at >= 0 ? digest.slice(at, at + 19) : digest.slice(0, 19);
}

// A color is never told by its hue alone: it is named, and green's line is dashed.
function colorTag(color, extra) {
  return el("span", { class: "tag " + color }, color.toUpperCase() + (extra ? " " + extra : ""));
}

// ---- the overview ----------------------------------------------------------

function render() {
  const o = state.overview;
  if (!o) return;
  document.getElementById("host").textContent = "· " + o.host;
  const perr = document.getElementById("proxy-error");
  perr.hidden = !o.proxy_error;
  perr.textContent = o.proxy_error ? "The proxy did not answer: " + o.proxy_error : "";
  const apps = document.getElementById("apps");
  const keep = new Set();
  for (const a of o.apps) {
    keep.add(a.route);
    let card = document.getElementById("app-" + a.route);
    if (!card) {
      card = el("article", { class: "app", id: "app-" + a.route, "aria-labelledby": "title-" + a.route },
        el("header", {}, el("h2", { id: "title-" + a.route }), el("span", { class: "phase" })),
        el("div", { class: "facts" }),
        el("div", { class: "charts", role: "group", "aria-label": "live traffic of " + a.route }),
        el("div", { class: "actions" }),
        el("details", { class: "history" }, el("summary", {}, "History"), el("div", { class: "scroll" })),
        el("details", { class: "deliveries", hidden: true }, el("summary", {}, "Webhook deliveries"), el("div", { class: "scroll" })));
      apps.append(card);
    }
    fillCard(card, a);
  }
  for (const card of [...apps.children]) if (!keep.has(card.id.slice(4))) card.remove();
  const others = document.getElementById("others");
  others.hidden = o.other_routes.length === 0;
  const body = others.querySelector("tbody");
  body.replaceChildren(...o.other_routes.map((r) => el("tr", {},
    el("th", { scope: "row" }, r.route),
    el("td", {}, (r.hosts || []).join(", ") || r.listen || ""),
    el("td", {}, r.live ? colorTag(r.live, r.version || "") : "none"),
    el("td", {}, r.candidate ? colorTag(r.candidate.color, r.candidate.version || "") : ""),
    el("td", {}, r.lock || ""))));
  drawCharts();
}

function fillCard(card, a) {
  const s = a.status;
  card.querySelector("h2").textContent = a.app + " · " + a.environment;
  const phase = card.querySelector(".phase");
  phase.textContent = s ? s.phase : "unknown";
  phase.className = "phase " + (s ? s.phase : "unknown");
  const facts = card.querySelector(".facts");
  const rows = [];
  if (a.error) rows.push(["Error", el("span", { class: "warn" }, a.error)]);
  if (s) {
    rows.push(["Live", s.live ? [colorTag(s.live.color), " ", s.live.version, " ", el("code", {}, short(s.live.digest || s.live.image_id))] : "nothing live"]);
    rows.push(["Previous", s.previous ? [colorTag(s.previous.color), " ", s.previous.version, " — hot: rollback is instant"] :
      (s.previous_version ? s.previous_version + " (not running: a rollback starts it)" : "none")]);
    rows.push(["Candidate", s.candidate ? [colorTag(s.candidate.color), " ", s.candidate.version, s.candidate.gated ? " — passed its gate" : " — not gated"] : "none"]);
    rows.push(["Lock", s.lock || "free"]);
    if (s.url) rows.push(["URL", el("code", {}, s.url)]);
    if (s.preview) rows.push(["Preview", [el("code", {}, s.preview.url), s.preview.version ? " serves " + s.preview.version : " (no candidate)"]]);
    rows.push(["Routing", s.drift.length ? el("ul", { class: "warn" }, s.drift.map((d) => el("li", {}, d))) : "in line with the engine"]);
    if (s.warnings.length) rows.push(["Warnings", el("ul", { class: "warn" }, s.warnings.map((w) => el("li", {}, w)))]);
    if (s.hosts && s.hosts.length) rows.push(["Hosts", el("ul", {}, s.hosts.map((h) => el("li", {}, h.name + ": " + (h.version || "–") + (h.behind ? " (behind)" : "") + (h.error ? " — " + h.error : ""))))]);
  }
  facts.replaceChildren(el("dl", {}, rows.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])));
  fillActions(card.querySelector(".actions"), a);
  fillHistory(card.querySelector(".history .scroll"), a.history);
  const del = card.querySelector(".deliveries");
  del.hidden = !a.deliveries.length;
  fillDeliveries(del.querySelector(".scroll"), a.deliveries);
}

function fillActions(box, a) {
  const s = a.status;
  if (READ_ONLY || !a.actions || !s) {
    box.replaceChildren(READ_ONLY ? el("p", { class: "note" }, "Read-only dashboard: no actions.") : "");
    box.dataset.key = "";
    return;
  }
  const versions = new Set(a.history.filter((h) => h.event !== "verify-failed").map((h) => h.release.version));
  const buttons = [];
  if (s.phase === "awaiting-approval" && s.candidate) {
    buttons.push(["promote", "Promote " + s.candidate.version,
      "Switch " + a.app + " (" + a.environment + ") to " + s.candidate.version + " (" + s.candidate.color + ")?", null]);
  }
  if (s.candidate) {
    buttons.push(["abort", "Abort " + s.candidate.version,
      "Remove the candidate " + s.candidate.version + " of " + a.app + " (" + a.environment + ")? The live release is untouched.", null]);
  }
  if (s.live && (s.previous || versions.size > 1)) {
    const to = s.previous ? s.previous.version : "the previous release";
    buttons.push(["rollback", "Roll back to " + to,
      "Roll " + a.app + " (" + a.environment + ") back from " + s.live.version + " to " + to + "?" + (s.previous ? " It is running: the switch is instant." : " It is not running: it will be started and gated first."), null]);
  }
  // Rebuilt only when they change, so a focused button keeps its focus.
  const key = JSON.stringify(buttons);
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  box.replaceChildren(...buttons.map(([verb, label, question]) =>
    el("button", { type: "button", class: verb === "rollback" ? "danger" : "", onclick: (ev) => confirmAction(ev.currentTarget, a, verb, question) }, label)));
}

function fillHistory(box, lines) {
  if (!lines.length) {
    box.replaceChildren(el("p", { class: "note" }, "No releases yet."));
    return;
  }
  box.replaceChildren(el("table", {},
    el("thead", {}, el("tr", {}, ["When", "Version", "Event", "Color", "By", "Image", "Verify", "Stages", "Hooks"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, lines.map((h) => el("tr", {},
      el("td", {}, h.at),
      el("th", { scope: "row" }, h.release.version),
      el("td", { class: "event " + h.event }, h.event),
      el("td", {}, colorTag(h.color)),
      el("td", {}, h.by || ""),
      el("td", {}, el("code", {}, short(h.release.digest || h.release.image_id))),
      el("td", {}, h.verify ? h.verify.verdict + ": " + h.verify.requests + " req, " + h.verify.status_5xx + " 5xx" : ""),
      el("td", {}, (h.stages || []).map((st) => st.environment + (st.verified ? " ✓" : "")).join(", ")),
      el("td", {}, (h.hooks || []).map((k) => k.hook + " " + k.outcome).join(", ")))))));
}

function fillDeliveries(box, entries) {
  box.replaceChildren(el("table", {},
    el("thead", {}, el("tr", {}, ["Received", "Forge", "Ref", "Commit", "Verdict", "Version", "Reason"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, entries.map((d) => el("tr", {},
      el("td", {}, d.received_at || ""),
      el("td", {}, d.forge || ""),
      el("td", {}, (d.ref || d.git_ref || "").replace("refs/heads/", "")),
      el("td", {}, el("code", {}, (d.commit || "").slice(0, 12))),
      el("td", {}, d.verdict || ""),
      el("td", {}, d.deploy ? d.deploy.version : ""),
      el("td", {}, d.reason || ""))))));
}

// ---- actions ---------------------------------------------------------------

function confirmAction(button, a, verb, question) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = verb[0].toUpperCase() + verb.slice(1) + "?";
  document.getElementById("confirm-text").textContent = question;
  document.getElementById("confirm-command").textContent = "Runs: cyan " + verb + " -c " + a.config + " (the same lock and exit codes as the command)";
  dialog.returnValue = "";
  dialog.onclose = () => {
    if (dialog.returnValue === "go") act(button, a, verb);
  };
  dialog.showModal();
  dialog.querySelector('button[value="cancel"]').focus();
}

async function act(button, a, verb) {
  const all = button.parentElement.querySelectorAll("button");
  all.forEach((b) => (b.disabled = true));
  toast(verb + " of " + a.app + " (" + a.environment + ") running…", "busy");
  try {
    const r = await fetch("/api/actions", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
      body: JSON.stringify({ action: verb, app: a.app, environment: a.environment }),
    });
    const body = await r.json();
    if (!r.ok) {
      toast(verb + " refused: " + body.error, "bad");
    } else if (body.exit_code === 0) {
      toast(verb + " done (exit 0)", "good");
    } else {
      const why = body.report && body.report.error ? body.report.error.message : "";
      toast(verb + " failed: exit " + body.exit_code + ", " + body.meaning + (why ? ": " + why : ""), "bad");
    }
  } catch (e) {
    toast(verb + ": " + e, "bad");
  } finally {
    all.forEach((b) => (b.disabled = false));
  }
}

function toast(text, kind) {
  const t = document.getElementById("toast");
  t.hidden = false;
  t.className = kind;
  t.textContent = text;
}

// ---- charts ----------------------------------------------------------------

function switchMarks(route) {
  return state.steps.filter((s) => s.route === route && s.change.event === "switched");
}

function drawCharts() {
  if (!state.overview) return;
  for (const a of state.overview.apps) {
    const box = document.querySelector("#app-" + CSS.escape(a.route) + " .charts");
    if (box) drawRoute(box, a.route);
  }
}

function drawRoute(box, route) {
  const now = state.points.length ? state.points[state.points.length - 1].at_ms : Date.now();
  const from = state.points.length ? state.points[0].at_ms : now - KEPT * 1000; // the kept points fill the width
  // Per color, its points; a read without the color (its set was being
  // replaced) breaks its line rather than joining across the gap.
  const series = { blue: [], green: [] };
  const segments = { blue: [[]], green: [[]] };
  for (const p of state.points) {
    for (const c of ["blue", "green"]) {
      const r = p.rates.find((r) => r.route === route && r.color === c);
      const segs = segments[c];
      if (r) {
        series[c].push([p.at_ms, r]);
        segs[segs.length - 1].push([p.at_ms, r]);
      } else if (segs[segs.length - 1].length) {
        segs.push([]);
      }
    }
  }
  const last = (color) => series[color].length ? series[color][series[color].length - 1][1] : null;
  const marks = switchMarks(route).filter((m) => m.at_ms >= from);
  const figures = CHARTS.map(([key, title, fmt]) => {
    const values = ["blue", "green"].flatMap((c) => series[c].map(([, r]) => r[key] || 0));
    const top = Math.max(1e-9, ...values) * 1.1;
    const W = 300, H = 70;
    const x = (t) => ((t - from) / (now - from || 1)) * W;
    const y = (v) => H - ((v || 0) / top) * H;
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
      "aria-label": title + ": " + ["blue", "green"].map((c) => c + " " + (last(c) ? fmt(last(c)) : "no traffic")).join(", ") });
    chart.append(svg("line", { x1: 0, y1: H, x2: W, y2: H, class: "axis" }));
    for (const m of marks) {
      chart.append(svg("line", { x1: x(m.at_ms), y1: 0, x2: x(m.at_ms), y2: H, class: "mark" }));
      const label = svg("text", { x: Math.min(x(m.at_ms) + 2, W - 60), y: 15, class: "mark-label" });
      label.textContent = "→" + m.change.to;
      chart.append(label);
    }
    for (const c of ["blue", "green"]) {
      for (const seg of segments[c]) {
        if (!seg.length) continue;
        chart.append(svg("polyline", {
          class: "line " + c,
          points: seg.map(([t, r]) => x(t).toFixed(1) + "," + y(r[key]).toFixed(1)).join(" "),
        }));
      }
    }
    const legend = el("p", { class: "legend" }, ["blue", "green"].map((c) => {
      const r = last(c);
      return el("span", { class: "key " + c }, c + (r && r.live ? " (live)" : "") + ": " + (r ? fmt(r) : "–"));
    }));
    return el("figure", {}, el("figcaption", {}, title, " (scale 0–", top > 1e-6 ? (top / 1.1).toFixed(1) : "0", ")"), chart, legend);
  });
  const since = state.points.length ? "Since " + time(from) : "Waiting for the first reads";
  box.replaceChildren(...figures, el("p", { class: "note" }, since + "; dashed vertical lines mark switches (→ the color switched to)."));
}

// ---- steps -----------------------------------------------------------------

function addSteps(steps) {
  const list = document.getElementById("step-list");
  for (const s of steps) {
    state.steps.push(s);
    list.prepend(el("li", { class: s.change.event }, el("time", {}, time(s.at_ms)), " ", el("strong", {}, s.route), " ", s.text));
  }
  while (list.children.length > 100) list.lastChild.remove();
  if (state.steps.length > 500) state.steps.splice(0, state.steps.length - 500);
}

// ---- the feed --------------------------------------------------------------

function connect() {
  const conn = document.getElementById("conn");
  const source = new EventSource("/api/events");
  source.onopen = () => { conn.textContent = "live"; conn.className = "conn live"; };
  source.onerror = () => {
    // A refused feed (the dashboard restarted: the session is gone) is not
    // retried by the browser: say what to do.
    const closed = source.readyState === EventSource.CLOSED;
    conn.textContent = closed ? "disconnected: reload the page" : "reconnecting…";
    conn.className = "conn lost";
  };
  source.addEventListener("overview", (e) => { state.overview = JSON.parse(e.data); render(); });
  source.addEventListener("history", (e) => {
    const h = JSON.parse(e.data);
    state.points = h.points;
    state.steps = [];
    document.getElementById("step-list").replaceChildren();
    addSteps(h.steps);
    drawCharts();
  });
  source.addEventListener("traffic", (e) => {
    state.points.push(JSON.parse(e.data));
    if (state.points.length > KEPT) state.points.shift();
    drawCharts();
  });
  source.addEventListener("step", (e) => { addSteps([JSON.parse(e.data)]); });
}

connect();
