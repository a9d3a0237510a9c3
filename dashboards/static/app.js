// Tungku control room and inspector pages. Plain JavaScript, no build step: the API is the
// only back end (same origin), the token lives in sessionStorage, live events come over
// Server-Sent Events read with fetch (so the token goes in a header, never in a URL) and the
// stream resumes from the last event id after any drop.
"use strict";

const API = "/api/v1";
const PRIORITY_RANK = { urgent: 0, high: 1, medium: 2, low: 3, advisory: 4 };
const STATE_WORDS = {
  unack: "Unacknowledged", ack: "Acknowledged", rtn_unack: "Returned, unacknowledged",
  latched: "Latched (needs reset)", shelved: "Shelved", suppressed: "Suppressed by design",
  out_of_service: "Out of service", normal: "Normal",
};
const FLOOD_START = 10; // alarms in 10 minutes: above this a flood starts [S: DOMAIN.md §4]
const FLOOD_END = 5;    // ... and below this it ends
const TEN_MIN_MS = 10 * 60 * 1000;
// In the alarm summary: annunciated states. Shelved, suppressed and out of service are listed
// apart (ISA-18.2 / EEMUA 191: they are not alarms the operator must act on now).
const ANNUNCIATED = ["unack", "ack", "rtn_unack", "latched"];

const state = {
  token: sessionStorage.getItem("tungku.token"),
  me: null, site: null, view: "control",
  alerts: new Map(), events: [], activations: [], flood: false,
  lastSeq: null, stream: null, streamGen: 0,
  history: new Map(), pollTimer: null, charts: [],
};

const $ = (sel) => document.querySelector(sel);
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return e;
}

class ApiError extends Error {}

async function api(path, opts = {}) {
  const headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (opts.json !== undefined) { headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(opts.json); }
  const r = await fetch(API + path, { method: opts.method || "GET", headers, body: opts.body });
  if (r.status === 401 && path !== "/auth/login") { logout("Your session ended: log in again."); throw new ApiError("logged out"); }
  const text = await r.text();
  const body = text ? JSON.parse(text) : null;
  if (!r.ok) {
    const d = body && body.detail;
    throw new ApiError(Array.isArray(d) ? d.map((x) => x.msg).join("; ") : d || r.statusText);
  }
  return body;
}

// --- login -------------------------------------------------------------------------------

$("#login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  $("#login-error").textContent = "";
  try {
    const t = await api("/auth/login", { method: "POST", json: { username: f.get("username"), password: f.get("password") } });
    state.token = t.access_token;
    sessionStorage.setItem("tungku.token", state.token);
    await start();
  } catch (e) {
    $("#login-error").textContent = `Login refused: ${e.message}`;
  }
});

$("#logout").addEventListener("click", async () => {
  try { await api("/auth/logout", { method: "POST" }); } catch (_) { /* ended anyway */ }
  logout("");
});

function logout(message) {
  state.token = null;
  sessionStorage.removeItem("tungku.token");
  stopStream();
  clearInterval(state.pollTimer);
  $("#nav").hidden = true;
  for (const v of ["#control-view", "#inspect-view"]) $(v).hidden = true;
  $("#login-view").hidden = false;
  $("#login-error").textContent = message;
}

async function start() {
  state.me = await api("/auth/me");
  const facilities = await api("/facilities");
  const sel = $("#site");
  sel.replaceChildren(...facilities.map((f) => el("option", { value: f.site_id }, `${f.name || f.site_id} (${f.site_id})`)));
  if (!facilities.length) {
    $("#login-error").textContent = "You are not assigned to any facility yet.";
    return;
  }
  $("#login-view").hidden = true;
  $("#nav").hidden = false;
  $("#who").textContent = `${state.me.username} (${state.me.role})`;
  $("#tab-inspect").hidden = state.me.role === "operator";
  await selectSite(facilities[0].site_id);
}

$("#site").addEventListener("change", (ev) => selectSite(ev.target.value));
for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => show(b.dataset.view));

async function selectSite(site) {
  state.site = site;
  state.alerts.clear(); state.events = []; state.activations = []; state.flood = false;
  state.lastSeq = null; state.history.clear();
  stopStream();
  await loadAlerts();
  startStream();
  clearInterval(state.pollTimer);
  await pollPlant();
  state.pollTimer = setInterval(pollPlant, 5000);
  show(state.view);
}

function show(view) {
  if (view === "inspect" && state.me.role === "operator") view = "control";
  state.view = view;
  $("#control-view").hidden = view !== "control";
  $("#inspect-view").hidden = view !== "inspect";
  for (const b of document.querySelectorAll(".tab")) b.setAttribute("aria-current", b.dataset.view === view ? "page" : "false");
  if (view === "inspect") loadInspector();
}

// --- alarms -----------------------------------------------------------------------------

async function loadAlerts() {
  const site = state.site;
  const rows = await api(`/facilities/${encodeURIComponent(site)}/alerts?active_only=true`);
  if (site !== state.site) return; // another facility was chosen meanwhile
  for (const a of rows) state.alerts.set(a.id, a);
  scheduleRender();
}

// Many events can arrive at once (a reconnect's catch-up, a flood): render once per frame.
let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => { renderPending = false; renderAlarms(); renderEvents(); });
}

function fromEvent(e) {
  return {
    id: e.alert_id, site_id: e.site_id, asset: e.asset, rule_id: e.rule_id, subject: e.subject,
    title: e.title, state: e.state, priority: e.alert_priority, severity: e.alert_severity,
    acked: e.acked, latched: e.latched, value: e.alert_value, limit: e.alert_limit,
    shelved_until: e.shelved_until, shelve_reason: e.shelve_reason,
    first_active_at: e.first_active_at, last_change_at: e.last_change_at,
    annunciated_at: e.annunciated_at,
  };
}

function onEvent(e) {
  state.lastSeq = e.seq;
  const a = fromEvent(e);
  if (a.state === "normal") state.alerts.delete(a.id); else state.alerts.set(a.id, a);
  const at = Date.parse(e.at);
  // An alarm as the KPI report counts one: the engine annunciating from a quiet state.
  if (e.actor === "engine" && e.to_state === "unack" && !["unack", "ack"].includes(e.from_state)
      && e.priority !== "advisory") state.activations.push(at);
  state.events.unshift(e);
  state.events.length = Math.min(state.events.length, 200);
  scheduleRender();
}

function fmtNum(v) { return v === null || v === undefined ? "" : Number(v).toPrecision(4).replace(/\.?0+$/, ""); }
function age(iso) {
  if (!iso) return "";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function since(a) { return a.annunciated_at || a.first_active_at || a.last_change_at; }

function renderAlarms() {
  const all = [...state.alerts.values()];
  const rows = all.filter((a) => ANNUNCIATED.includes(a.state)).sort((x, y) =>
    (PRIORITY_RANK[x.priority] - PRIORITY_RANK[y.priority]) ||
    (Number(x.acked) - Number(y.acked)) ||
    (Date.parse(since(y)) - Date.parse(since(x))));
  const others = all.filter((a) => !ANNUNCIATED.includes(a.state))
    .sort((x, y) => PRIORITY_RANK[x.priority] - PRIORITY_RANK[y.priority]);
  $("#others tbody").replaceChildren(...others.map((a) => el("tr", { "data-alert": a.id, "data-state": a.state },
    el("td", { class: `prio prio-${a.priority}` }, a.priority),
    el("td", { class: `state state-${a.state}` }, STATE_WORDS[a.state] || a.state),
    el("td", {}, a.asset),
    el("td", {}, el("strong", {}, a.title), " ", el("span", { class: "quiet" }, `${a.subject} · ${a.rule_id}`)),
    el("td", {}, a.state === "shelved" ? `until ${(a.shelved_until || "").slice(11, 16)} UTC: ${a.shelve_reason || ""}` : ""),
    el("td", {}, a.state === "shelved" ? button("Unshelve", () => act(a, "unshelve")) : ""))));
  $("#other-count").textContent = `(${others.length})`;
  const tb = $("#alarms tbody");
  tb.replaceChildren(...rows.map((a) => {
    const acts = el("td", { class: "actions" });
    if (!a.acked && ["unack", "rtn_unack", "latched"].includes(a.state)) acts.append(button("Ack", () => act(a, "ack")));
    if (a.state !== "shelved") acts.append(button("Shelve", () => shelve(a)));
    if (a.state === "latched" && a.acked) acts.append(button("Reset", () => act(a, "reset")));
    acts.append(button("Comment", () => comment(a)));
    return el("tr", { "data-alert": a.id, "data-state": a.state },
      el("td", { class: `prio prio-${a.priority}` }, a.priority),
      el("td", { class: `state state-${a.state}` }, STATE_WORDS[a.state] || a.state,
        a.state === "latched" && !a.acked ? ", unacknowledged" : ""),
      el("td", {}, a.asset),
      el("td", {}, el("strong", {}, a.title), " ", el("span", { class: "quiet" }, `${a.subject} · ${a.rule_id}`)),
      el("td", {}, a.value === null || a.value === undefined ? "" : `${fmtNum(a.value)} / ${fmtNum(a.limit)}`),
      el("td", {}, age(since(a))),
      acts);
  }));
  $("#alarm-count").textContent = `(${rows.length})`;
  $("#no-alarms").hidden = rows.length > 0;
  renderFlood();
}

// Flood, with the standard's hysteresis: starts above 10 in 10 minutes, ends below 5. Also run
// on a timer, so the banner goes when the alarms age out even if nothing else happens.
function renderFlood() {
  const from = Date.now() - TEN_MIN_MS;
  state.activations = state.activations.filter((t) => t >= from);
  const n = state.activations.length;
  if (n > FLOOD_START) state.flood = true; else if (n < FLOOD_END) state.flood = false;
  const banner = $("#flood");
  banner.hidden = !state.flood;
  banner.textContent = state.flood ? `ALARM FLOOD: ${n} alarms in the last 10 minutes. Work the list by priority.` : "";
}

function renderEvents() {
  $("#events").replaceChildren(...state.events.slice(0, 60).map((e) =>
    el("li", {}, `${new Date(e.at).toISOString().slice(11, 19)} `,
      el("span", { class: `prio prio-${e.priority}` }, e.priority), ` ${e.asset} ${e.title}: ${e.action} → `,
      el("strong", {}, STATE_WORDS[e.to_state] || e.to_state),
      e.actor !== "engine" ? ` by ${e.actor}` : "", e.reason ? ` (${e.reason})` : "")));
}

function button(label, fn) { return el("button", { type: "button", onclick: fn }, label); }

async function act(a, action, body = {}) {
  try {
    await api(`/alerts/${a.id}/${action}`, { method: "POST", json: body });
  } catch (e) {
    if (!(e instanceof ApiError) || e.message !== "logged out") alert(`${action} refused: ${e.message}`);
  }
}
async function shelve(a) {
  const reason = prompt(`Shelve "${a.title}" on ${a.subject}: why?`);
  if (!reason) return;
  const minutes = Number(prompt("For how many minutes?", "30"));
  if (!(minutes > 0)) return;
  await act(a, "shelve", { comment: reason, shelve_for_s: minutes * 60 });
}
async function comment(a) {
  const text = prompt(`Comment on "${a.title}" (${a.subject}):`);
  if (text) await act(a, "comment", { comment: text });
}

// --- the live stream -----------------------------------------------------------------------

function stopStream() {
  state.streamGen += 1;
  if (state.stream) state.stream.abort();
  state.stream = null;
  setLive(false);
}

function setLive(on) {
  const l = $("#live");
  l.className = `live ${on ? "on" : "off"}`;
  l.textContent = on ? "live" : "reconnecting";
}

async function startStream() {
  const gen = ++state.streamGen;
  let delay = 500;
  while (gen === state.streamGen && state.token) {
    const ctl = new AbortController();
    state.stream = ctl;
    try {
      const headers = { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" };
      if (state.lastSeq !== null) headers["Last-Event-ID"] = String(state.lastSeq);
      const r = await fetch(`${API}/facilities/${encodeURIComponent(state.site)}/events`, { headers, signal: ctl.signal });
      if (r.status === 401) { logout("Your session ended: log in again."); return; }
      if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
      setLive(true);
      delay = 500;
      await readEvents(r.body, gen);
    } catch (e) {
      if (gen !== state.streamGen) return;
    }
    setLive(false);
    await new Promise((res) => setTimeout(res, delay));
    delay = Math.min(delay * 2, 5000);
  }
}

async function readEvents(body, gen) {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  let ev = { data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done || gen !== state.streamGen) return;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i).replace(/\r$/, "");
      buf = buf.slice(i + 1);
      if (line === "") {
        if (ev.data.length && (ev.event || "message") === "alert") onEvent(JSON.parse(ev.data.join("\n")));
        ev = { data: [] };
      } else if (!line.startsWith(":")) {
        const c = line.indexOf(":");
        const field = c < 0 ? line : line.slice(0, c);
        const val = c < 0 ? "" : line.slice(c + 1).replace(/^ /, "");
        if (field === "data") ev.data.push(val); else ev[field] = val;
      }
    }
  }
}

// --- plant overview and health --------------------------------------------------------------

const KEY_KINDS = ["furnace_power", "hearth_tc", "sidewall_tc", "shell_temp", "freeboard_pressure",
  "offgas_temp", "offgas_h2", "area_co", "area_h2s", "area_o2", "area_lel", "cw_return_temp",
  "cw_supply_flow", "cw_return_flow", "o2_line_pressure"];

function groupOf(asset) { const m = /^(F\d+)/.exec(asset || ""); return m ? m[1] : asset || "site"; }

async function pollPlant() {
  if (!state.site || !state.token) return;
  renderFlood();
  const site = state.site;
  let sensors, gws;
  try {
    [sensors, gws] = await Promise.all([
      api(`/facilities/${encodeURIComponent(site)}/sensors`),
      api(`/facilities/${encodeURIComponent(site)}/gateways`)]);
  } catch (_) { return; }
  if (site !== state.site) return;
  const now = Date.now();
  const groups = new Map();
  const stale = [];
  for (const s of sensors) {
    const h = state.history.get(s.sensor) || [];
    if (s.ts && (!h.length || h[h.length - 1][0] !== s.ts)) h.push([s.ts, s.value]);
    if (h.length > 60) h.shift();
    state.history.set(s.sensor, h);
    const silent = !s.ts || (now - Date.parse(s.ts)) / 1000 > Math.max(5 * s.period_s, 15);
    if (silent) stale.push(s);
    if (!KEY_KINDS.includes(s.kind)) continue;
    const g = groupOf(s.asset);
    if (!groups.has(g)) groups.set(g, new Map());
    const byKind = groups.get(g);
    // The sensor of each kind to show: the highest value (the hottest, the most gas), bad
    // readings left out; the lowest for oxygen and flows.
    const low = /o2$|flow/.test(s.kind);
    const cur = byKind.get(s.kind);
    const usable = s.value !== null && s.quality !== 2;
    if (!cur || (usable && (cur.value === null || cur.quality === 2 || (low ? s.value < cur.value : s.value > cur.value)))) byKind.set(s.kind, s);
  }
  $("#overview").replaceChildren(...[...groups.entries()].map(([g, byKind]) => el("div", { class: "card" },
    el("h3", {}, g),
    ...KEY_KINDS.filter((k) => byKind.has(k)).slice(0, 8).map((k) => {
      const s = byKind.get(k);
      return el("div", { class: "metric", title: s.sensor },
        el("span", {}, `${k.replace(/_/g, " ")}`),
        el("span", { class: "v" }, s.value === null ? "no data" : `${fmtNum(s.value)} ${s.unit}${s.quality === 2 ? " (bad)" : ""}`),
        sparkline(state.history.get(s.sensor) || []));
    }))));
  const gwPills = gws.map((g) => {
    const down = g.online === false;
    return el("span", { class: `pill ${down ? "bad" : ""}` },
      `${g.gateway}: ${g.online === null ? "no status" : down ? "OFFLINE" : "online"}` +
      (g.last_message_at ? `, last message ${age(g.last_message_at)} ago` : ""));
  });
  const sensorPill = el("span", { class: `pill ${stale.length ? "bad" : ""}` },
    stale.length ? `${stale.length} of ${sensors.length} sensors silent: ${stale.slice(0, 6).map((s) => s.sensor).join(", ")}${stale.length > 6 ? ", ..." : ""}`
      : `all ${sensors.length} sensors reporting`);
  $("#health").replaceChildren(...gwPills, sensorPill);
  scheduleRender(); // ages
}

function sparkline(points) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", "80"); svg.setAttribute("height", "20"); svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "recent trend");
  const vals = points.map((p) => p[1]).filter((v) => v !== null);
  if (vals.length > 1) {
    const lo = Math.min(...vals), hi = Math.max(...vals), span = hi - lo || 1;
    const pl = document.createElementNS(ns, "polyline");
    pl.setAttribute("class", "spark");
    pl.setAttribute("points", vals.map((v, i) => `${(i / (vals.length - 1)) * 78 + 1},${19 - ((v - lo) / span) * 18}`).join(" "));
    svg.append(pl);
  }
  return svg;
}

// --- inspector: record, status, timeline, journal, exports ------------------------------------

function toLocalInput(d) { return d.toISOString().slice(0, 16); }
function fromInput(v) { return new Date(`${v}:00Z`).toISOString(); }

async function loadInspector() {
  const site = encodeURIComponent(state.site);
  const form = $("#window");
  if (!form.elements.from.value) {
    const now = new Date();
    form.elements.to.value = toLocalInput(new Date(now.getTime() + 60000));
    form.elements.from.value = toLocalInput(new Date(now.getTime() - 6 * 3600 * 1000));
  }
  try {
    const [st, rec] = await Promise.all([api(`/facilities/${site}/status`), api(`/facilities/${site}/record`)]);
    $("#status-word").className = `status-${st.status}`;
    $("#status-word").textContent = st.status.replace("_", " ");
    $("#status-reasons").replaceChildren(...st.reasons.map((r) =>
      el("li", {}, el("strong", {}, r.severity.replace("_", " ")), `: ${r.message}`, r.asset ? ` [${r.asset}]` : "",
        r.escalates_alerts ? " (escalates alerts)" : "")));
    if (!st.reasons.length) $("#status-reasons").append(el("li", {}, "No reasons: compliant."));
    const f = rec.facility;
    const ident = [["Name", f.name], ["Company", f.company], ["IUI", f.iui_number], ["OSS NIB", f.oss_nib],
      ["KBLI", f.kbli], ["Estate", f.estate], ["SMK3", [f.smk3_level, f.smk3_certificate, f.smk3_expires_on && `expires ${f.smk3_expires_on}`].filter(Boolean).join(", ")]];
    $("#identity").replaceChildren(...ident.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v || "—")]));
    const parts = [["findings", ["asset", "description", "due_at", "closed_at"]], ["permits", ["kind", "asset", "opened_at", "closed_at"]],
      ["licences", ["kind", "number", "expires_on"]], ["periodic-reports", ["period", "due_at", "submitted_at"]],
      ["incidents", ["occurred_at", "kind", "investigation_status"]], ["sanctions", ["kind", "issued_on", "lifted_on"]]];
    $("#record").replaceChildren(...parts.filter(([p]) => rec[p] && rec[p].length).map(([p, cols]) => el("div", {},
      el("h3", {}, p.replace("-", " ")),
      el("table", {}, el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", {}, c.replace("_", " "))))),
        el("tbody", {}, ...rec[p].map((r) => el("tr", {}, ...cols.map((c) => el("td", {}, r[c] ?? "—")))))))));
  } catch (e) { $("#status-reasons").replaceChildren(el("li", { class: "error" }, e.message)); }
  await loadTimeline();
}

$("#window").addEventListener("submit", (ev) => { ev.preventDefault(); loadTimeline(); });

function windowParams() {
  const f = $("#window").elements;
  const p = new URLSearchParams({ from: fromInput(f.from.value), to: fromInput(f.to.value) });
  if (f.asset.value.trim()) p.set("asset", f.asset.value.trim());
  return p;
}

async function loadTimeline() {
  const site = encodeURIComponent(state.site);
  const p = windowParams();
  const charts = $("#charts");
  try {
    const [doc, journal] = await Promise.all([
      api(`/facilities/${site}/timeline?${p}&points=400`),
      api(`/facilities/${site}/journal?from=${encodeURIComponent(p.get("from"))}&to=${encodeURIComponent(p.get("to"))}&limit=20000`)]);
    drawCharts(doc);
    const asset = p.get("asset");
    const shown = journal.filter((e) => !asset || e.asset === asset || e.asset.startsWith(`${asset}-`)).reverse();
    $("#journal").replaceChildren(...shown.slice(0, 500).map((e) => el("li", {},
      `${new Date(e.at).toISOString().slice(0, 19).replace("T", " ")} #${e.seq} ${e.subject}: ${e.action} ${e.from_state} → `,
      el("strong", {}, e.to_state), e.actor !== "engine" ? ` by ${e.actor}` : "", e.reason ? ` — ${e.reason}` : "")));
  } catch (e) { charts.replaceChildren(el("p", { class: "error" }, `Timeline refused: ${e.message}`)); }
}

function drawCharts(doc) {
  for (const c of state.charts) c.destroy();
  state.charts = [];
  const groups = new Map();
  for (const s of doc.series) {
    if (!s.t.length) continue;
    const k = `${s.asset} · ${s.kind}`;
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(s);
  }
  const box = $("#charts");
  box.replaceChildren();
  if (!groups.size) { box.append(el("p", { class: "quiet" }, "No readings in this window.")); return; }
  const spans = doc.alerts.map((a) => {
    // Shaded while the condition is active: from the window's start when the alert was active
    // then (unack or ack; latched and returned ones had already cleared).
    let start = ["unack", "ack"].includes(a.state_at_start) ? Date.parse(doc.from) : null;
    const out = [];
    for (const t of a.transitions) {
      if (t.action === "activate" && start === null) start = Date.parse(t.at);
      if (t.action === "clear" && start !== null) { out.push([start, Date.parse(t.at)]); start = null; }
    }
    if (start !== null) out.push([start, Date.parse(doc.to)]);
    return { subject: a.subject, spans: out };
  });
  let shown = 0;
  for (const [title, series] of groups) {
    if (++shown > 24) { box.append(el("p", { class: "quiet" }, `${groups.size - 24} more groups not drawn: narrow the asset.`)); break; }
    const times = series[0].t.map((t) => t / 1000);
    const data = [times];
    const specs = [{}];
    for (const s of series.slice(0, 6)) {
      const at = new Map(s.t.map((t, i) => [t / 1000, i]));
      const pick = (arr) => times.map((t) => (at.has(t) ? arr[at.get(t)] : null));
      data.push(pick(s.mean), pick(s.min), pick(s.max));
      specs.push({ label: `${s.sensor} mean`, stroke: "#1f5fbf", width: 1.5 },
        { label: `${s.sensor} min`, stroke: "#9bb7e0", dash: [2, 3] },
        { label: `${s.sensor} max`, stroke: "#9bb7e0", dash: [2, 3] });
    }
    const sensorIds = new Set(series.map((s) => s.sensor));
    // Limits on the value itself: thresholds, and exposure levels (on the 8-h / 15-min mean).
    const onValue = (l) => l.rule_kind === "threshold" || l.rule_kind === "exposure";
    for (const lim of doc.limits.filter((l) => onValue(l) && l.sensors.some((id) => sensorIds.has(id)))) {
      for (const lv of lim.levels) {
        data.push(times.map(() => lv.level));
        specs.push({ label: `${lim.rule_id} ${lv.severity} ${lv.level} ${series[0].unit}`,
          stroke: lv.severity === "critical" ? "#c00000" : "#d08000", dash: lv.severity === "critical" ? [] : [6, 4],
          points: { show: false } });
      }
    }
    const shade = spans.filter((s) => sensorIds.has(s.subject)).flatMap((s) => s.spans);
    const div = el("div", { class: "chart", "data-group": title }, el("h3", {}, `${title} (${series[0].unit})`));
    box.append(div);
    const opts = {
      width: Math.min(900, box.clientWidth || 800), height: 220, series: specs,
      scales: { x: { time: true } }, legend: { live: false },
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
      hooks: { drawClear: [(u) => {
        const ctx = u.ctx;
        ctx.save();
        ctx.fillStyle = "rgba(220, 0, 0, 0.12)";
        for (const [a, b] of shade) {
          const x0 = u.valToPos(a / 1000, "x", true), x1 = u.valToPos(b / 1000, "x", true);
          ctx.fillRect(x0, u.bbox.top, Math.max(2, x1 - x0), u.bbox.height);
        }
        ctx.restore();
      }] },
    };
    state.charts.push(new uPlot(opts, data, div));
  }
}

for (const a of document.querySelectorAll(".export")) {
  a.addEventListener("click", async (ev) => {
    ev.preventDefault();
    const fmt = a.dataset.format;
    const r = await fetch(`${API}/facilities/${encodeURIComponent(state.site)}/timeline/export?${windowParams()}&format=${fmt}`,
      { headers: { Authorization: `Bearer ${state.token}` } });
    if (!r.ok) { alert(`Export refused: ${r.status}`); return; }
    const name = (/filename="([^"]+)"/.exec(r.headers.get("Content-Disposition") || "") || [])[1] || `tungku.${fmt}`;
    const url = URL.createObjectURL(await r.blob());
    const link = el("a", { href: url, download: name });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  });
}

// A reload while the API restarts keeps the session: only a 401 (in api()) logs out.
async function resume() {
  for (let delay = 1000; state.token; delay = Math.min(delay * 2, 15000)) {
    try { await start(); return; } catch (e) {
      if (e instanceof ApiError && e.message === "logged out") return;
      $("#login-error").textContent = `The API is not answering (${e.message}); retrying.`;
      await new Promise((res) => setTimeout(res, delay));
    }
  }
}
if (state.token) resume();
