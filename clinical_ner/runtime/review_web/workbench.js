// Review workbench: plain JavaScript, no build step (docs/review.md).
// The API speaks Python code-point offsets; the DOM speaks UTF-16 code units. `Offsets`
// converts both ways, so spans stay exact for emoji (astral characters) and combining marks.
"use strict";

const Offsets = {
  // cp2u[i] = UTF-16 index of code point i (length codePoints + 1); u2cp inverts it.
  build(text) {
    const cp2u = [0];
    let u = 0;
    for (const ch of text) { u += ch.length; cp2u.push(u); }
    const u2cp = new Map();
    cp2u.forEach((unit, cp) => u2cp.set(unit, cp));
    return { cp2u, u2cp };
  },
  toUtf16(map, cp) { return map.cp2u[cp]; },
  toCodePoint(map, unit) {
    const cp = map.u2cp.get(unit);
    if (cp === undefined) throw new Error("offset inside a surrogate pair");
    return cp;
  },
};

const state = {
  reviewer: localStorage.getItem("reviewer") || "",
  token: sessionStorage.getItem("id_token") || "",
  task: null, lease: "", note: null, map: null, items: [], current: 0, loadedAt: 0,
};
const $ = (id) => document.getElementById(id);

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (state.token) h["Authorization"] = "Bearer " + state.token;
  else if (state.reviewer) h["X-Reviewer"] = state.reviewer;
  if (state.lease) h["X-Lease-Token"] = state.lease;
  return h;
}

async function api(method, path, body) {
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body) init.body = JSON.stringify(body);
  const resp = await fetch(path, init);
  const data = await resp.json().catch(() => ({}));
  if (resp.status === 401 && state.token) {  // the token expired: sign in again
    sessionStorage.removeItem("id_token");
    state.token = "";
    $("sign-in").hidden = false;
    $("sign-out").hidden = true;
  }
  if (!resp.ok) throw new Error(data.reason || ("HTTP " + resp.status));
  return data;
}

function say(message, isError) {
  const el = $("status");
  el.textContent = message;
  el.className = isError ? "error" : "";
}

async function refreshQueue() {
  if (!state.reviewer && !state.token) { $("progress").textContent = "Queue: enter your name"; return; }
  try {
    const q = await api("GET", "/api/queue?limit=1");
    const p = q.progress;
    $("progress").textContent = `Queue: ${p.done} reviewed, ${p.open} waiting (of ${p.total})`;
    $("progress").dataset.done = p.done;
    $("progress").dataset.open = p.open;
  } catch (e) { say(e.message, true); }
}

async function nextNote() {
  if (!state.reviewer && !state.token) { say("Enter your name first.", true); return; }
  try {
    const lease = await api("POST", "/api/claim", {});
    state.lease = lease.lease_token;
    const note = await api("GET", "/api/tasks/" + encodeURIComponent(lease.task_id));
    load(lease.task_id, note);
    say("Note opened. Decide on every finding, then submit.");
  } catch (e) { say(e.message, true); }
  refreshQueue();
}

function load(taskId, note) {
  state.task = taskId;
  state.note = note;
  state.map = Offsets.build(note.text);
  state.items = note.entities.map((e) => ({
    entity_id: e.entity_id, model: e, decision: null,
    start: e.start, end: e.end, label: e.label,
  }));
  state.current = 0;
  state.loadedAt = Date.now();
  const select = $("new-label");
  select.innerHTML = "";
  note.labels.forEach((label, i) => {
    const opt = document.createElement("option");
    opt.value = label; opt.textContent = `${i + 1} ${label}`;
    select.appendChild(opt);
  });
  $("legend").innerHTML = "";
  note.labels.forEach((label, i) => {
    const s = document.createElement("span");
    s.className = "l" + (i % 9); s.textContent = `${i + 1} ${label}`;
    $("legend").appendChild(s);
  });
  $("meta").textContent = `Note ${note.note_id} - model ${note.model_version}`;
  $("submit").disabled = false;
  $("release").disabled = false;
  render();
}

function labelClass(label) { return "l" + (Math.max(0, state.note.labels.indexOf(label)) % 9); }

function render() {
  const text = state.note.text;
  const pre = $("note");
  pre.innerHTML = "";
  // Segment the text at every span boundary (UTF-16 units), so overlaps still render.
  const spans = state.items.map((it, i) => ({
    i, s: Offsets.toUtf16(state.map, it.start), e: Offsets.toUtf16(state.map, it.end),
  }));
  const cuts = new Set([0, text.length]);
  spans.forEach((sp) => { cuts.add(sp.s); cuts.add(sp.e); });
  const points = [...cuts].sort((a, b) => a - b);
  for (let k = 0; k + 1 < points.length; k++) {
    const a = points[k], b = points[k + 1];
    const covering = spans.filter((sp) => sp.s <= a && b <= sp.e);
    if (!covering.length) { pre.appendChild(document.createTextNode(text.slice(a, b))); continue; }
    const it = state.items[covering[0].i];
    const el = document.createElement("span");
    el.className = `ent ${labelClass(it.label)} ${it.decision || "undecided"}`;
    if (covering.some((c) => c.i === state.current)) el.classList.add("current");
    if (b === covering[0].e) el.dataset.tag = it.label + (it.model && it.model.negated ? " (negated)" : "");
    el.dataset.index = covering[0].i;
    el.title = `${it.label}${it.model ? " - confidence " + it.model.confidence.toFixed(2) : " - added"}`;
    el.textContent = text.slice(a, b);
    el.addEventListener("click", () => { state.current = covering[0].i; render(); });
    pre.appendChild(el);
  }
  const list = $("entities");
  list.innerHTML = "";
  state.items.forEach((it, i) => {
    const li = document.createElement("li");
    li.className = labelClass(it.label) + (i === state.current ? " current" : "");
    li.dataset.index = i;
    const words = text.slice(Offsets.toUtf16(state.map, it.start), Offsets.toUtf16(state.map, it.end));
    const conf = it.model ? `confidence ${it.model.confidence.toFixed(2)}` : "added by you";
    const neg = it.model && it.model.negated ? ' <span class="neg">negated</span>' : "";
    li.innerHTML = `<b></b> <span class="words"></span> - ${conf}${neg} - <span class="state"></span>` +
      '<div class="details"></div>';
    li.querySelector("b").textContent = it.label;
    li.querySelector(".words").textContent = `"${words}"`;
    li.querySelector(".details").textContent = detailsLine(it.model && it.model.details, text);
    li.querySelector(".state").textContent = it.decision ? it.decision.replace("_", " ") : "to decide";
    li.addEventListener("click", () => { state.current = i; render(); });
    list.appendChild(li);
  });
  const left = state.items.filter((it) => it.model && !it.decision).length;
  $("submit").textContent = left ? `Submit note (S) - ${left} to decide` : "Submit note (S)";
}

// The model's structured fields of an entity (section, traits, top ICD-10-CM codes, DrugBank id,
// medication attributes), as one line. The queue keeps ids and offsets only (no clinical
// words): attribute words are sliced from the note by their offsets.
function detailsLine(details, text) {
  if (!details) return "";
  const parts = [];
  if (details.section) parts.push(details.section.replace(/_/g, " "));
  (details.traits || []).forEach((t) => { if (t !== "negated") parts.push(t); });
  if (details.codes && details.codes.length) parts.push(`ICD-10-CM ${details.codes.join(", ")}`);
  if (details.drugbank_id) parts.push(`DrugBank ${details.drugbank_id}`);
  (details.attributes || []).forEach((a) => {
    const words = text.slice(Offsets.toUtf16(state.map, a.start), Offsets.toUtf16(state.map, a.end));
    parts.push(`${a.type.toLowerCase().replace(/_/g, " ")}: ${words}`);
  });
  return parts.join(" · ");
}

function selectionUtf16() {
  const sel = window.getSelection();
  const pre = $("note");
  if (!sel || sel.rangeCount === 0 || sel.isCollapsed) return null;
  const range = sel.getRangeAt(0);
  if (!pre.contains(range.startContainer) || !pre.contains(range.endContainer)) return null;
  const before = document.createRange();
  before.setStart(pre, 0);
  before.setEnd(range.startContainer, range.startOffset);
  const start = before.toString().length;
  return { start, end: start + range.toString().length };
}

function selectionCodePoints() {
  const sel = selectionUtf16();
  if (!sel) { say("Select the words in the note first.", true); return null; }
  try {
    return { start: Offsets.toCodePoint(state.map, sel.start), end: Offsets.toCodePoint(state.map, sel.end) };
  } catch (e) { say("That selection splits a character; select again.", true); return null; }
}

function decide(decision) {
  const it = state.items[state.current];
  if (!it) return;
  if (!it.model) { say("This mention was added by you; press U to remove it.", true); return; }
  if (decision === "accepted") {
    it.start = it.model.start; it.end = it.model.end; it.label = it.model.label;
  }
  it.decision = decision;
  advance();
}

function relabel(index) {
  const labels = state.note.labels;
  if (index >= labels.length) return;
  const it = state.items[state.current];
  if (!it) return;
  it.label = labels[index];
  if (it.model) {
    const moved = it.start !== it.model.start || it.end !== it.model.end;
    if (moved) it.decision = "span_fixed";
    else it.decision = it.label === it.model.label ? "accepted" : "relabelled";
  }
  render();
}

function fixSpan() {
  const it = state.items[state.current];
  const sel = selectionCodePoints();
  if (!it || !sel) return;
  it.start = sel.start; it.end = sel.end;
  if (it.model) {
    const moved = it.start !== it.model.start || it.end !== it.model.end;
    it.decision = moved ? "span_fixed" : (it.label === it.model.label ? "accepted" : "relabelled");
  }
  window.getSelection().removeAllRanges();
  render();
}

function addMention() {
  const sel = selectionCodePoints();
  if (!sel) return;
  state.items.push({ entity_id: null, model: null, decision: "added", start: sel.start, end: sel.end, label: $("new-label").value });
  state.current = state.items.length - 1;
  window.getSelection().removeAllRanges();
  render();
}

function undo() {
  const it = state.items[state.current];
  if (!it) return;
  if (!it.model) { state.items.splice(state.current, 1); state.current = Math.max(0, state.current - 1); }
  else { it.decision = null; it.start = it.model.start; it.end = it.model.end; it.label = it.model.label; }
  render();
}

function advance() {
  const next = state.items.findIndex((it, i) => i > state.current && it.model && !it.decision);
  if (next >= 0) state.current = next;
  render();
}

function move(step) {
  if (!state.items.length) return;
  state.current = (state.current + step + state.items.length) % state.items.length;
  render();
}

async function submit() {
  if (!state.task) return;
  const left = state.items.filter((it) => it.model && !it.decision).length;
  if (left) { say(`Decide on every finding first (${left} left).`, true); return; }
  const decisions = state.items.map((it) => {
    const d = { decision: it.decision };
    if (it.model) d.entity_id = it.entity_id;
    if (it.decision === "relabelled" || it.decision === "added" || it.decision === "span_fixed") d.label = it.label;
    if (it.decision === "added" || it.decision === "span_fixed") { d.start = it.start; d.end = it.end; }
    return d;
  });
  const seconds = Math.round((Date.now() - state.loadedAt) / 100) / 10;
  try {
    const out = await api("POST", `/api/tasks/${encodeURIComponent(state.task)}/submit`,
      { decisions, seconds_spent: seconds });
    say(`Saved (${out.decisions} decisions). Press N for the next note.`);
    clearNote();
  } catch (e) { say("Not saved: " + e.message, true); }
  refreshQueue();
}

async function release() {
  if (!state.task) return;
  try { await api("POST", `/api/tasks/${encodeURIComponent(state.task)}/release`, {}); say("Note given back."); }
  catch (e) { say(e.message, true); }
  clearNote();
  refreshQueue();
}

function clearNote() {
  state.task = null; state.lease = ""; state.note = null; state.items = [];
  $("note").textContent = ""; $("entities").innerHTML = ""; $("meta").textContent = "";
  $("submit").disabled = true; $("release").disabled = true;
}

async function refreshKpis() {
  try {
    const k = await api("GET", "/api/kpis");
    const cols = ["dt", "model_version", "notes_reviewed", "production_precision", "production_recall",
      "corrections_per_100_entities", "median_review_seconds", "hours_saved"];
    const table = $("kpis");
    table.innerHTML = "";
    const head = table.insertRow();
    cols.forEach((c) => { const th = document.createElement("th"); th.textContent = c.replaceAll("_", " "); head.appendChild(th); });
    k.kpis.forEach((row) => {
      const tr = table.insertRow();
      cols.forEach((c) => {
        const v = row[c];
        tr.insertCell().textContent = typeof v === "number" && !Number.isInteger(v) ? v.toFixed(2) : (v ?? "-");
      });
    });
  } catch (e) { say(e.message, true); }
}

document.addEventListener("keydown", (ev) => {
  const tag = (ev.target.tagName || "").toLowerCase();
  if (tag === "input" || tag === "select" || tag === "textarea" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const key = ev.key;
  let handled = true;
  if (key === "n" || key === "N") {
    if (state.note) say("Submit the note (S) or give it back (Esc) first.", true);
    else nextNote();
  }
  else if (!state.note) handled = false;
  else if (key === "A") { state.items.forEach((it) => { if (it.model && !it.decision) it.decision = "accepted"; }); render(); }
  else if (key === "a") decide("accepted");
  else if (key === "r" || key === "R") decide("rejected");
  else if (key === "f" || key === "F") fixSpan();
  else if (key === "m" || key === "M") addMention();
  else if (key === "u" || key === "U") undo();
  else if (key === "s" || key === "S") submit();
  else if (key === "Escape") release();
  else if (key === "ArrowDown" || key === "j" || key === "J") move(1);
  else if (key === "ArrowUp" || key === "k" || key === "K") move(-1);
  else if (/^[1-9]$/.test(key)) relabel(Number(key) - 1);
  else handled = false;
  if (handled) ev.preventDefault();
});

// Sign-in in AWS: Cognito's hosted pages, authorization code + PKCE (RFC 7636), no client
// secret in the page. The app writes the domain and client id into <meta name="sign-in">;
// locally there is none and the reviewer types a name (header identity, local only).
const SignIn = {
  config() {
    const meta = document.querySelector('meta[name="sign-in"]');
    if (!meta || !meta.content) return null;
    try { return JSON.parse(meta.content); } catch (e) { return null; }
  },
  redirectUri() { return location.origin + location.pathname; },
  b64url(bytes) {
    let s = "";
    bytes.forEach((b) => { s += String.fromCharCode(b); });
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  },
  async start(cfg) {
    const verifier = SignIn.b64url(crypto.getRandomValues(new Uint8Array(32)));
    const nonce = SignIn.b64url(crypto.getRandomValues(new Uint8Array(16)));
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
    sessionStorage.setItem("pkce_verifier", verifier);
    sessionStorage.setItem("pkce_state", nonce);
    const q = new URLSearchParams({
      response_type: "code", client_id: cfg.client_id, redirect_uri: SignIn.redirectUri(),
      scope: "openid email", state: nonce,
      code_challenge: SignIn.b64url(new Uint8Array(digest)), code_challenge_method: "S256",
    });
    location.assign(cfg.domain + "/oauth2/authorize?" + q.toString());
  },
  // Back from the hosted page with ?code=...&state=...: exchange the code for tokens.
  async finish(cfg) {
    const q = new URLSearchParams(location.search);
    const code = q.get("code");
    if (!code) return;
    history.replaceState(null, "", location.pathname);
    const verifier = sessionStorage.getItem("pkce_verifier");
    const expected = sessionStorage.getItem("pkce_state");
    sessionStorage.removeItem("pkce_verifier");
    sessionStorage.removeItem("pkce_state");
    if (!verifier || !expected || q.get("state") !== expected) {
      throw new Error("This sign-in answer was not requested by this page: sign in again.");
    }
    const body = new URLSearchParams({
      grant_type: "authorization_code", client_id: cfg.client_id, code,
      redirect_uri: SignIn.redirectUri(), code_verifier: verifier,
    });
    const resp = await fetch(cfg.domain + "/oauth2/token", {
      method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded" }, body,
    });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok || !data.id_token) throw new Error("Sign-in failed (HTTP " + resp.status + "): sign in again.");
    state.token = data.id_token;
    sessionStorage.setItem("id_token", state.token);
  },
  signOut(cfg) {
    sessionStorage.removeItem("id_token");
    state.token = "";
    const q = new URLSearchParams({ client_id: cfg.client_id, logout_uri: SignIn.redirectUri() });
    location.assign(cfg.domain + "/logout?" + q.toString());
  },
};

async function init() {
  $("next").addEventListener("click", nextNote);
  $("submit").addEventListener("click", submit);
  $("release").addEventListener("click", release);
  $("kpi-refresh").addEventListener("click", refreshKpis);
  const cfg = SignIn.config();
  if (cfg) {
    $("reviewer-label").hidden = true;
    $("sign-in").addEventListener("click", () => SignIn.start(cfg));
    $("sign-out").addEventListener("click", () => SignIn.signOut(cfg));
    try { await SignIn.finish(cfg); } catch (e) { say(e.message, true); }
    $("sign-in").hidden = Boolean(state.token);
    $("sign-out").hidden = !state.token;
    if (!state.token) { $("progress").textContent = "Queue: sign in first"; return; }
  } else {
    sessionStorage.removeItem("id_token");  // tokens only where sign-in is configured
    state.token = "";
    $("reviewer").value = state.reviewer;
    $("reviewer").addEventListener("change", () => {
      state.reviewer = $("reviewer").value.trim();
      localStorage.setItem("reviewer", state.reviewer);
      refreshQueue();
    });
  }
  refreshQueue();
  refreshKpis();
}

// For tests and power users: select note text by UTF-16 offsets (what a mouse drag does).
window.workbench = {
  Offsets, state,
  selectUtf16(start, end) {
    const pre = $("note");
    const walker = document.createTreeWalker(pre, NodeFilter.SHOW_TEXT);
    let pos = 0, node, range = document.createRange(), startSet = false;
    while ((node = walker.nextNode())) {
      const len = node.nodeValue.length;
      if (!startSet && start <= pos + len) { range.setStart(node, start - pos); startSet = true; }
      if (startSet && end <= pos + len) { range.setEnd(node, end - pos); break; }
      pos += len;
    }
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  },
};
init();
