// hookwarden dashboard: plain JavaScript, no libraries, no network but this origin's admin API.
// Every value from the API is inserted as text (textContent), never as HTML: events carry
// client-controlled strings (User-Agent, paths).
"use strict";

const TOKEN_KEY = "hookwarden.admin-token";
const REFRESH_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";

const $ = (sel) => document.querySelector(sel);

/** Builds an element: h("td", {class: "num"}, "42"). Children are text or nodes. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("data-") || k === "class" || k === "title") el.setAttribute(k, v);
    else el[k] = v;
  }
  for (const c of children) el.append(c instanceof Node ? c : String(c ?? ""));
  return el;
}

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = String(text);
  return el;
}

// --- token ------------------------------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function takeTokenFromFragment() {
  // `hookwarden demo` prints a URL with #token=...: the fragment never reaches a server.
  const m = location.hash.match(/^#token=([^&]+)/);
  if (m) {
    // A malformed escape (`%E0`) would throw and stop the page from starting: take the
    // fragment as it is then, and the login form shows if it is wrong.
    let token = m[1];
    try {
      token = decodeURIComponent(m[1]);
    } catch (_) {}
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function showLogin(message) {
  $("#app").hidden = true;
  $("#controls").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  $("#token").focus();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopRefresh();
  showLogin(message);
}

class Unauthorized extends Error {}

/** GET (or other method) on the admin API with the token; JSON back. */
async function api(path, options = {}) {
  const resp = await fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), authorization: `Bearer ${token()}` },
    cache: "no-store",
  });
  if (resp.status === 401) throw new Unauthorized();
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.message || `${path}: HTTP ${resp.status}`);
  return body;
}

// --- formatting ---------------------------------------------------------------------------------

function fmtTime(iso, withDate) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const t = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return withDate ? `${d.toLocaleDateString()} ${t}` : t;
}

function fmtBytes(n) {
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n / (1 << 20)} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} B`;
}

function fmtSeconds(s) {
  if (s % 86400 === 0) return `${s / 86400}d`;
  if (s % 3600 === 0) return `${s / 3600}h`;
  if (s % 60 === 0) return `${s / 60}m`;
  return `${s}s`;
}

function fill(tbody, rows, emptyText, columns) {
  tbody.replaceChildren(
    ...(rows.length ? rows : [h("tr", { class: "empty" }, h("td", { colSpan: columns }, emptyText))]),
  );
}

// --- charts (SVG, drawn here) -------------------------------------------------------------------

/** Stacked bars of allowed / denied / failed per time bucket. */
function drawTraffic(container, series) {
  const W = 960, H = 220, left = 44, bottom = 22, top = 8;
  const max = Math.max(1, ...series.map((p) => p.allowed + p.denied + p.failed));
  const plotH = H - bottom - top;
  const bw = (W - left) / Math.max(1, series.length);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "requests over time", class: "traffic" });
  for (const frac of [0, 0.5, 1]) {
    const y = top + plotH * (1 - frac);
    root.append(svg("line", { x1: left, x2: W, y1: y, y2: y, class: "grid" }));
    root.append(svg("text", { x: left - 6, y: y + 4, "text-anchor": "end", class: "axis" }, Math.round(max * frac)));
  }
  series.forEach((p, i) => {
    const x = left + i * bw;
    let y = top + plotH;
    for (const kind of ["allowed", "denied", "failed"]) {
      const n = p[kind];
      if (!n) continue;
      const hgt = (n / max) * plotH;
      y -= hgt;
      const r = svg("rect", { x: x + 1, y, width: Math.max(1, bw - 2), height: hgt, class: `bar ${kind}`, "data-kind": kind });
      r.append(svg("title", {}, `${fmtTime(p.t)}: ${n} ${kind}`));
      root.append(r);
    }
    const every = Math.max(1, Math.ceil(series.length / 8));
    if (i % every === 0) {
      root.append(svg("text", { x: x + bw / 2, y: H - 6, "text-anchor": "middle", class: "axis" },
        new Date(p.t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
    }
  });
  container.replaceChildren(root);
}

/** Horizontal bars, one per reason. */
function drawReasons(container, items) {
  if (!items.length) {
    container.replaceChildren(h("p", { class: "muted" }, "No denials in this window."));
    return;
  }
  const rowH = 24, W = 420, labelW = 180;
  const max = Math.max(...items.map((i) => i.count));
  const root = svg("svg", { viewBox: `0 0 ${W} ${items.length * rowH}`, role: "img", "aria-label": "denials by reason", class: "reasons" });
  items.forEach((it, i) => {
    const y = i * rowH;
    const w = ((W - labelW - 50) * it.count) / max;
    root.append(svg("text", { x: labelW - 8, y: y + 16, "text-anchor": "end", class: "label" }, it.name));
    const r = svg("rect", { x: labelW, y: y + 4, width: Math.max(2, w), height: rowH - 8, class: "bar denied", "data-reason": it.name });
    r.append(svg("title", {}, `${it.name}: ${it.count}`));
    root.append(r);
    root.append(svg("text", { x: labelW + w + 6, y: y + 16, class: "count" }, it.count));
  });
  container.replaceChildren(root);
}

// --- panels -------------------------------------------------------------------------------------

async function loadStats() {
  const s = await api(`/api/stats?window=${encodeURIComponent($("#window").value)}`);
  $("#total-allowed").textContent = s.totals.allowed;
  $("#total-denied").textContent = s.totals.denied;
  $("#total-failed").textContent = s.totals.failed;
  $("#total-aggregated").textContent = s.aggregated;
  drawTraffic($("#traffic-chart"), s.series);
  drawReasons($("#reasons-chart"), s.denials_by_reason);
  const filterBy = (field, value) => () => {
    $(`#f-${field}`).value = value;
    loadEvents().catch(handleError);
  };
  fill($("#top-ips tbody"), s.top_ips.map((i) =>
    h("tr", {}, h("td", {}, h("a", { href: "#events", onclick: filterBy("ip", i.name) }, i.name)), h("td", { class: "num" }, i.count))),
  "No denials.", 2);
  fill($("#top-keys tbody"), s.top_keys.map((k) =>
    h("tr", {}, h("td", {}, k.name), h("td", { class: "num" }, k.count))),
  "No denials with a key.", 2);
  // Reason codes seen, as suggestions for the filter (no list hard-coded here).
  const reasons = [...new Set(s.counts.map((c) => c.reason).filter(Boolean))].sort();
  $("#reason-list").replaceChildren(...reasons.map((r) => h("option", { value: r })));
}

async function loadEvents() {
  const q = new URLSearchParams({ limit: "100" });
  for (const f of ["route", "outcome", "reason", "ip"]) {
    const v = $(`#f-${f}`).value.trim();
    if (v) q.set(f, v);
  }
  let data;
  try {
    data = await api(`/api/events?${q}`);
    $("#events-error").textContent = "";
  } catch (e) {
    if (e instanceof Unauthorized) throw e;
    $("#events-error").textContent = e.message;
    return;
  }
  fill($("#events-table tbody"), data.events.map((e) => {
    const reason = [e.reason || "", ...e.flags.map((f) => `[${f}]`)].filter(Boolean).join(" ");
    return h("tr", { class: e.outcome, "data-request-id": e.request_id, "data-reason": e.reason || "" },
      h("td", { title: e.time }, fmtTime(e.time)),
      h("td", {}, e.route || "–"),
      h("td", {}, e.client_ip),
      h("td", {}, e.method),
      h("td", { class: "num" }, e.status),
      h("td", {}, h("span", { class: `badge ${e.outcome}` }, e.outcome)),
      h("td", { title: e.detail || "" }, reason || "–"),
      h("td", { class: "num" }, `${e.latency_ms.toFixed(1)} ms`),
      h("td", {}, e.key_id || ""),
      h("td", { class: "mono", title: e.user_agent || "" }, e.request_id));
  }), "No events match.", 10);
}

async function loadRoutes() {
  const { routes } = await api("/api/routes");
  const sel = $("#f-route");
  const current = sel.value;
  sel.replaceChildren(h("option", { value: "" }, "any route"), ...routes.map((r) => h("option", { value: r.name }, r.name)));
  sel.value = current;
  fill($("#routes-table tbody"), routes.map((r) =>
    h("tr", { "data-route": r.name },
      h("td", {}, h("strong", {}, r.name)),
      h("td", { class: "mono" }, r.path),
      h("td", {}, r.methods.join(", "), r.mode === "async" ? h("div", { class: "muted" }, "async (queued)") : ""),
      h("td", {}, h("ol", { class: "chain" }, ...[...r.guards.head, ...r.guards.body].map((g) => h("li", {}, g)))),
      h("td", {}, `body ≤ ${fmtBytes(r.max_body)}`, r.content_types ? h("br") : "", r.content_types ? r.content_types.join(", ") : ""),
      h("td", {}, `${r.upstream.scheme}://${r.upstream.host}`, h("br"),
        h("span", { class: "muted" }, `timeout ${r.upstream.timeout_seconds}s`),
        r.upstream.injected_headers.length ? h("div", { class: "muted" }, `injects ${r.upstream.injected_headers.join(", ")}`) : ""),
      h("td", {}, r.alerts.join(", ") || "–"))),
  "No routes.", 7);
}

async function loadAlerts() {
  const { rules, recent } = await api("/api/alerts");
  fill($("#alert-rules tbody"), rules.map((a) =>
    h("tr", {},
      h("td", {}, a.name),
      h("td", {}, a.reasons ? a.reasons.join(", ") : `outcome ${a.outcome}`, a.route ? ` on ${a.route}` : ""),
      h("td", {}, `${a.threshold} in ${fmtSeconds(a.window_seconds)}`),
      h("td", {}, fmtSeconds(a.cooldown_seconds)))),
  "No [[alert]] rules configured.", 4);
  fill($("#alert-recent tbody"), recent.map((a) =>
    h("tr", {},
      h("td", { title: a.time }, fmtTime(a.time, true)),
      h("td", {}, a.name),
      h("td", { class: "num" }, a.matched),
      h("td", { title: a.error || "" }, h("span", { class: `badge ${a.result === "sent" ? "allowed" : "denied"}` }, a.result)))),
  "No alerts sent.", 4);
}

function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/** Runs a queue action (retry, drop), then reloads the panel; errors show in the panel. */
function queueAction(method, path) {
  return async () => {
    try {
      await api(path, { method });
      $("#queue-error").textContent = "";
    } catch (e) {
      if (e instanceof Unauthorized) return handleError(e);
      $("#queue-error").textContent = e.message;
    }
    loadQueue().catch(handleError);
  };
}

async function loadQueue() {
  const { summary, messages } = await api("/api/queue?state=dead&limit=50");
  const none = summary.length === 0;
  $("#queue-none").hidden = !none;
  $("#queue-body").hidden = none;
  fill($("#queue-routes tbody"), summary.map((r) =>
    h("tr", { "data-route": r.route },
      h("td", {}, h("strong", {}, r.route)),
      h("td", { class: "num" }, r.pending),
      h("td", {}, fmtAge(r.oldest_pending_seconds)),
      h("td", { class: `num${r.dead ? " dead" : ""}` }, r.dead),
      h("td", { class: "num" }, r.delivered),
      h("td", {}, r.dead ? h("button", { type: "button", onclick: queueAction("POST", `/api/queue/retry?route=${encodeURIComponent(r.route)}`) }, "Retry all dead") : ""))),
  "Nothing queued.", 6);
  // Newest dead letters first.
  fill($("#queue-dead tbody"), [...messages].reverse().map((m) =>
    h("tr", { "data-id": m.id },
      h("td", { title: m.done || "" }, m.done ? fmtTime(m.done, true) : "–"),
      h("td", {}, m.route),
      h("td", { class: "mono" }, m.id),
      h("td", { class: "num" }, m.attempts),
      h("td", { class: "num" }, m.last_status ?? "–"),
      h("td", { class: "last-error" }, m.last_error || "–"),
      h("td", { class: "actions" },
        h("button", { type: "button", class: "retry", onclick: queueAction("POST", `/api/queue/${encodeURIComponent(m.id)}/retry`) }, "Retry"),
        " ",
        h("button", { type: "button", class: "drop", onclick: queueAction("DELETE", `/api/queue/${encodeURIComponent(m.id)}`) }, "Drop")))),
  "No dead letters.", 7);
}

// One entry per panel; each loads its data from the API. Issued API keys add
// { id: "keys", load: loadKeys } here.
const PANELS = [
  { id: "traffic", load: loadStats },
  { id: "events", load: loadEvents },
  { id: "routes", load: loadRoutes },
  { id: "alerts", load: loadAlerts },
  { id: "queue", load: loadQueue },
];

// --- refresh loop -------------------------------------------------------------------------------

let timer = null;

function stopRefresh() {
  if (timer) clearTimeout(timer);
  timer = null;
}

function handleError(e) {
  if (e instanceof Unauthorized) {
    signOut("The token was not accepted.");
  } else {
    $("#status").textContent = `Update failed: ${e.message}`;
  }
}

async function refresh() {
  stopRefresh();
  try {
    await Promise.all(PANELS.map((p) => p.load()));
    $("#status").textContent = `Updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = "true";
  } catch (e) {
    handleError(e);
    if (e instanceof Unauthorized) return;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function start() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#controls").hidden = false;
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  takeTokenFromFragment();
  $("#login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("#token").value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    $("#token").value = "";
    start();
  });
  $("#signout").addEventListener("click", () => signOut(""));
  $("#window").addEventListener("change", () => refresh());
  $("#filters").addEventListener("submit", (ev) => {
    ev.preventDefault();
    loadEvents().catch(handleError);
  });
  $("#filters").addEventListener("reset", () => setTimeout(() => loadEvents().catch(handleError), 0));
  if (token()) start();
  else showLogin("");
});
