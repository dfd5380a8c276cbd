// edgebench workbench: talks to the gateway's own API only (/v1, /admin, /workbench/api).
// Model output is untrusted: markdown is rendered by marked, then DOMPurify sanitises the HTML
// before it reaches the DOM; everything else is inserted as text, never as HTML.
import { marked } from "./vendor/marked.esm.js";

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") n.className = v;
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) n.setAttribute(k, v === true ? "" : v);
  }
  for (const c of kids.flat()) if (c !== null && c !== undefined) n.append(c.nodeType ? c : String(c));
  return n;
};
const fmt = (x, d = 1) => (x === null || x === undefined ? "—" : Number(x).toFixed(d));

// ------------------------------------------------------------------------------- API

const keyInput = $("#api-key");
keyInput.value = localStorage.getItem("edgebench.key") || "";
keyInput.addEventListener("change", () => localStorage.setItem("edgebench.key", keyInput.value));

function headers(extra = {}) {
  const h = { "content-type": "application/json", ...extra };
  if (keyInput.value) h.authorization = `Bearer ${keyInput.value}`;
  return h;
}

// the gateway's error body {"error": {"message", "type"}} in words, with the HTTP status
async function errorOf(resp) {
  let msg = `${resp.status} ${resp.statusText}`;
  try {
    const doc = await resp.json();
    if (doc && doc.error) msg = `${resp.status} ${doc.error.type || ""}: ${doc.error.message}`;
  } catch (_) { /* not JSON: the status says it */ }
  const retry = resp.headers.get("retry-after");
  return retry ? `${msg} (retry after ${retry} s)` : msg;
}

async function api(path, body) {
  const resp = await fetch(path, body === undefined ? { headers: headers() }
    : { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!resp.ok) throw new Error(await errorOf(resp));
  return resp.json();
}

function notice(msg, kind = "error") {
  const n = $("#notice");
  n.textContent = msg;
  n.className = kind;
  n.hidden = !msg;
}

// ------------------------------------------------------------------------------- tabs

for (const b of document.querySelectorAll("nav [data-tab]")) {
  b.addEventListener("click", () => {
    for (const o of document.querySelectorAll("nav [data-tab]")) o.setAttribute("aria-selected", o === b);
    for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== `tab-${b.dataset.tab}`;
    if (b.dataset.tab === "results") loadResults(false);
    if (b.dataset.tab === "history") drawHistory();
  });
}

// ------------------------------------------------------------------------------- models

let models = [];
let tiers = [];
let cpus = [];
const cards = new Map();
const KV = ["f16", "bf16", "f32", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl"];

function controlInputs(m) {
  const c = m.config || m.preset || {};
  const num = (name, label, min, value) => el("label", {}, label,
    el("input", { name, type: "number", min, step: 1, value: value ?? "" }));
  const sel = (name, label, opts, value) => el("label", {}, label,
    el("select", { name }, opts.map((o) => el("option", { value: o, selected: o === value }, o))));
  return [
    num("ctx", "context", 0, c.ctx),
    sel("cache_type_k", "KV K", KV, c.cache_type_k),
    sel("cache_type_v", "KV V", KV, c.cache_type_v),
    sel("flash_attn", "flash attn", ["auto", "on", "off"], c.flash_attn),
    num("threads", "threads", 1, c.threads),
    num("threads_batch", "threads batch", 1, c.threads_batch),
    el("label", {}, "CPU set", el("input", { name: "cpus", placeholder: `all (${cpus.join(",")})`,
      value: c.cpus ? c.cpus.join(",") : "" })),
    num("reasoning_budget", "reasoning budget", -1, c.reasoning_budget),
  ];
}

function readControls(card, m) {
  const out = {};
  for (const input of card.querySelectorAll(".controls [name]")) {
    const name = input.name;
    let v = input.value.trim();
    if (name === "cpus") v = v ? v.split(",").map((x) => parseInt(x, 10)) : null;
    else if (["ctx", "threads", "threads_batch", "reasoning_budget"].includes(name)) v = v === "" ? null : parseInt(v, 10);
    const preset = m.preset ? m.preset[name] : undefined;
    if (JSON.stringify(v) !== JSON.stringify(preset ?? null)) out[name] = v;
  }
  return out;
}

function stateText(m) {
  if (m.state === "loading") {
    const tail = m.log_tail ? ` — ${m.log_tail}` : "";
    return `loading ${m.loading_s !== undefined ? fmt(m.loading_s) + " s" : ""}${tail}`;
  }
  if (m.state === "failed") return `failed: ${m.error || "unknown cause"}`;
  return m.state;
}

function buildCard(m) {
  const card = el("article", { class: "model", "data-model": m.id });
  const controls = el("div", { class: "controls" }, controlInputs(m));
  const conseq = el("p", { class: "consequence muted" }, "…");
  const load = el("button", { class: "load", type: "button" }, "Load");
  const unload = el("button", { class: "unload", type: "button" }, "Unload");
  const reset = el("button", { class: "reset", type: "button" }, "Preset");
  card.append(...[
    el("header", {}, el("h3", {}, m.id), el("span", { class: "state" }, "")),
    el("p", { class: "facts" }),
    m.preset ? controls : el("p", { class: "muted" }, `${m.kind}: runs outside edgebench, no runtime controls`),
    m.preset ? conseq : null,
    el("div", { class: "row" }, m.preset ? load : null, m.preset ? reset : null, unload),
  ].filter(Boolean));
  let timer = null;
  controls.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => consequence(card, m.id), 300); });
  load.addEventListener("click", () => loadModel(card, m.id));
  unload.addEventListener("click", () => unloadModel(m.id));
  reset.addEventListener("click", () => {
    controls.replaceChildren(...controlInputs({ config: models.find((x) => x.id === m.id).preset }));
    consequence(card, m.id);
  });
  return card;
}

function updateCard(card, m) {
  const st = $(".state", card);
  st.textContent = stateText(m);
  st.className = `state ${m.state}`;
  const tiersOf = m.tiers && m.tiers.length ? ` · tiers: ${m.tiers.join(", ")}` : "";
  const meas = m.measured || {};
  $(".facts", card).textContent =
    `${m.kind}${m.chat_template === false ? " (base model: plain completion, no chat template)" : ""}` +
    (meas.tg_ts ? ` · preset measured: prefill ${fmt(meas.pp_ts)} t/s, decode ${fmt(meas.tg_ts)} t/s`
      : " · preset speed not measured") +
    ` · memory ${fmt(m.memory_mib, 0)} MiB (${m.memory_source || "unknown"})${tiersOf}`;
  for (const b of card.querySelectorAll("button.load, button.reset")) b.disabled = m.state === "loading";
  $("button.unload", card).disabled = !(m.state === "ready" || m.state === "loading") || m.kind !== "llama-server";
}

async function consequence(card, name) {
  const m = models.find((x) => x.id === name);
  const out = $(".consequence", card);
  if (!m || !out) return;
  try {
    const c = await api("/workbench/api/consequence", { model: name, runtime: readControls(card, m) });
    const mem = c.memory.mib !== undefined
      ? `memory ${fmt(c.memory.mib, 0)} MiB (${c.memory.source}${c.memory.detail ? ": " + c.memory.detail : ""})`
      : `memory ${c.memory.source}${c.memory.detail ? ": " + c.memory.detail : ""}`;
    const sp = (k, label) => c.speed[k] && c.speed[k].source === "measured"
      ? `${label} ${fmt(c.speed[k].ts)} t/s (measured${c.speed[k].ci ? `, 95% CI ${fmt(c.speed[k].ci[0])}–${fmt(c.speed[k].ci[1])}` : ""})`
      : `${label}: not measured`;
    const free = c.free_mib !== null && c.free_mib !== undefined ? ` · ${fmt(c.free_mib, 0)} MiB free in the budget` : "";
    out.textContent = `${mem}${free} · ${sp("pp", "prefill")} · ${sp("tg", "decode")}`;
    out.classList.remove("error");
  } catch (e) {
    out.textContent = e.message;
    out.classList.add("error");
  }
}

async function loadModel(card, name) {
  const m = models.find((x) => x.id === name);
  notice("");
  const runtime = readControls(card, m);
  refreshSoon(300);
  try {
    await api("/admin/load", Object.keys(runtime).length ? { model: name, runtime } : { model: name });
  } catch (e) {
    notice(`Load ${name}: ${e.message}`);
  }
  refreshModels();
}

async function unloadModel(name) {
  notice("");
  try { await api("/admin/unload", { model: name }); } catch (e) { notice(`Unload ${name}: ${e.message}`); }
  refreshModels();
}

let refreshTimer = null;
function refreshSoon(ms) { clearTimeout(refreshTimer); refreshTimer = setTimeout(refreshModels, ms); }

async function refreshModels() {
  try {
    const doc = await api("/workbench/api/models");
    models = doc.models; tiers = doc.tiers; cpus = doc.cpus;
    $("#budget").textContent = doc.budget_mib
      ? `Memory budget ${fmt(doc.budget_mib, 0)} MiB, ${fmt(doc.used_mib, 0)} MiB in use.` : "No memory budget.";
    const box = $("#models");
    for (const m of models) {
      if (!cards.has(m.id)) { const c = buildCard(m); cards.set(m.id, c); box.append(c); consequence(c, m.id); }
      updateCard(cards.get(m.id), m);
    }
    drawTiers();
    fillModelSelects();
    refreshSoon(models.some((m) => m.state === "loading") ? 500 : 4000);
  } catch (e) {
    notice(`Models: ${e.message}`);
    refreshSoon(4000);
  }
}

function drawTiers() {
  const stateOf = (name) => (models.find((m) => m.id === name) || {}).state || "not served";
  const rows = tiers.map((t) => el("tr", { "data-tier": t.name }, el("td", {}, t.name),
    el("td", {}, t.primary || "—"), el("td", {}, t.backup || "—"), el("td", {}, t.closest || "—"),
    el("td", { class: "tier-state" }, stateOf(t.primary || t.closest)), el("td", {}, t.why || "")));
  $("#tiers").replaceChildren(tiers.length
    ? el("table", {}, el("thead", {}, el("tr", {}, ["tier", "primary", "backup", "closest", "state", "why"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows))
    : el("p", { class: "muted" }, "No routing tiers: every model is addressed by name."));
}

// ------------------------------------------------------------------------------- chat

let conversation = newConversation();
let controllers = [];

function newConversation() {
  return { id: `c${Date.now()}`, created: new Date().toISOString(), panes: [{ model: null, messages: [] }, { model: null, messages: [] }] };
}

function paneCount() { return $("#side-by-side").checked ? 2 : 1; }

function drawPanes() {
  const box = $("#panes");
  box.replaceChildren();
  for (let i = 0; i < paneCount(); i++) {
    const p = conversation.panes[i];
    const select = el("select", { class: "model-select", "aria-label": `model ${i + 1}` });
    select.addEventListener("change", () => { p.model = select.value; });
    const log = el("div", { class: "log", "aria-live": "polite" });
    box.append(el("div", { class: "pane", "data-pane": i }, el("label", {}, `Model ${i + 1} `, select), log));
    for (const msg of p.messages) log.append(messageView(msg));
  }
  box.classList.toggle("two", paneCount() === 2);
  fillModelSelects();
}

function fillModelSelects() {
  const names = [...models.map((m) => m.id), ...tiers.map((t) => t.name), ...(tiers.length ? ["auto"] : [])];
  document.querySelectorAll(".pane").forEach((pane) => {
    const i = Number(pane.dataset.pane);
    const s = $(".model-select", pane);
    const want = conversation.panes[i].model || names[Math.min(i, names.length - 1)] || "";
    if (s.options.length !== names.length) s.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
    s.value = want;
    conversation.panes[i].model = s.value;
  });
}

// markdown → sanitised HTML; <think> blocks and reasoning_content shown folded
function renderMarkdown(target, text) {
  const html = DOMPurify.sanitize(marked.parse(text, { gfm: true, breaks: false }), {
    FORBID_TAGS: ["style", "form", "input", "button", "iframe", "svg", "math"],
    FORBID_ATTR: ["style"],
  });
  target.innerHTML = html;
  for (const a of target.querySelectorAll("a")) { a.target = "_blank"; a.rel = "noopener noreferrer nofollow"; }
  for (const pre of target.querySelectorAll("pre")) {
    const b = el("button", { class: "copy", type: "button" }, "copy");
    b.addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText(pre.textContent));
    pre.prepend(b);
  }
}

function splitThink(text) {
  const open = text.indexOf("<think>");
  if (open < 0) return { think: "", answer: text };
  const close = text.indexOf("</think>", open);
  if (close < 0) return { think: text.slice(open + 7), answer: text.slice(0, open) };
  return { think: text.slice(open + 7, close), answer: text.slice(0, open) + text.slice(close + 8) };
}

function messageView(msg) {
  const box = el("div", { class: `msg ${msg.role}` });
  if (msg.role === "user") { box.append(el("div", { class: "body" }, msg.content)); return box; }
  const { think, answer } = splitThink(msg.content || "");
  const reasoning = (msg.reasoning || "") + think;
  if (reasoning) box.append(el("details", { class: "think" }, el("summary", {}, "reasoning"), el("div", { class: "body" }, reasoning)));
  const body = el("div", { class: "body md" });
  renderMarkdown(body, answer);
  box.append(body);
  if (msg.error) box.append(el("p", { class: "error" }, msg.error));
  if (msg.stats) box.append(el("p", { class: "stats" }, msg.stats));
  return box;
}

function statsText(s) {
  const parts = [`TTFT ${fmt(s.ttft_ms, 0)} ms`];
  if (s.prompt_ts) parts.push(`prompt ${fmt(s.prompt_ts)} t/s`);
  if (s.decode_ts) parts.push(`decode ${fmt(s.decode_ts)} t/s`);
  if (s.tokens) parts.push(`${s.tokens} tokens`);
  parts.push(`served by ${s.model || "?"}${s.route ? ` (${s.route})` : ""}`);
  return parts.join(" · ");
}

async function* sseEvents(resp, signal) {
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    if (signal.aborted) return;
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
      let event = "message"; const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      yield { event, data: data.join("\n") };
    }
  }
}

async function ask(i, prompt, shared) {
  const pane = conversation.panes[i];
  const view = $(`.pane[data-pane="${i}"] .log`);
  pane.messages.push({ role: "user", content: prompt });
  view.append(messageView({ role: "user", content: prompt }));
  const msg = { role: "assistant", content: "", reasoning: "" };
  pane.messages.push(msg);
  let node = messageView(msg); view.append(node);
  const ctrl = new AbortController(); controllers.push(ctrl);
  const info = models.find((m) => m.id === pane.model);
  const plain = info && info.chat_template === false; // a base model: a plain completion
  const history = pane.messages.slice(0, -1).map((m) => ({ role: m.role, content: m.content }));
  const body = {
    model: pane.model, stream: true, temperature: shared.temperature, top_p: shared.top_p,
    max_tokens: shared.max_tokens, stream_options: { include_usage: true },
  };
  if (plain) body.prompt = (shared.system ? shared.system + "\n\n" : "") + prompt;
  else body.messages = shared.system ? [{ role: "system", content: shared.system }, ...history] : history;
  const t0 = performance.now();
  let first = null, last = null, chunks = 0, done = false, timings = null, usage = null;
  const redraw = () => { const n = messageView(msg); node.replaceWith(n); node = n; view.scrollTop = view.scrollHeight; };
  try {
    const resp = await fetch(plain ? "/v1/completions" : "/v1/chat/completions",
      { method: "POST", headers: headers(), body: JSON.stringify(body), signal: ctrl.signal });
    if (!resp.ok) throw new Error(await errorOf(resp));
    msg.served = { model: resp.headers.get("x-edgebench-model"), route: resp.headers.get("x-edgebench-route") };
    for await (const ev of sseEvents(resp, ctrl.signal)) {
      if (ev.data === "[DONE]") { done = true; break; }
      let doc; try { doc = JSON.parse(ev.data); } catch (_) { continue; }
      if (ev.event === "error" || doc.error) throw new Error(doc.error ? `${doc.error.type || "error"}: ${doc.error.message}` : ev.data);
      if (doc.timings) timings = doc.timings;
      if (doc.usage) usage = doc.usage;
      const ch = (doc.choices || [])[0] || {};
      const piece = plain ? ch.text : (ch.delta || {}).content;
      const rpiece = (ch.delta || {}).reasoning_content;
      if (piece || rpiece) {
        const now = performance.now();
        if (first === null) first = now;
        last = now; chunks++;
        msg.content += piece || ""; msg.reasoning += rpiece || "";
        redraw();
      }
    }
    if (!done && !ctrl.signal.aborted) msg.error = "The stream was cut before it finished (no [DONE]).";
  } catch (e) {
    msg.error = ctrl.signal.aborted ? "Stopped." : e.message;
  }
  const s = {
    ttft_ms: first !== null ? first - t0 : null,
    prompt_ts: timings ? timings.prompt_per_second : null,
    decode_ts: timings ? timings.predicted_per_second : (chunks > 1 ? (chunks - 1) / ((last - first) / 1000) : null),
    tokens: timings ? timings.predicted_n : (usage ? usage.completion_tokens : chunks),
    ...(msg.served || {}),
  };
  msg.stats = statsText(s);
  redraw();
  saveConversation();
}

$("#composer").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const prompt = $("#prompt").value.trim();
  if (!prompt) return;
  $("#prompt").value = "";
  notice("");
  const shared = {
    system: $("#system").value.trim(),
    temperature: Number($("#temperature").value), top_p: Number($("#top_p").value),
    max_tokens: parseInt($("#max_tokens").value, 10) || 256,
  };
  controllers = [];
  $("#send").disabled = true; $("#stop").disabled = false;
  await Promise.all([...Array(paneCount()).keys()].map((i) => ask(i, prompt, shared)));
  $("#send").disabled = false; $("#stop").disabled = true;
});
$("#prompt").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("#composer").requestSubmit(); }
});
$("#stop").addEventListener("click", () => controllers.forEach((c) => c.abort()));
$("#side-by-side").addEventListener("change", drawPanes);
$("#new-chat").addEventListener("click", () => { conversation = newConversation(); drawPanes(); });

// ------------------------------------------------------------------------------- history

function loadHistory() {
  try { return JSON.parse(localStorage.getItem("edgebench.history") || "[]"); } catch (_) { return []; }
}

function saveConversation() {
  const all = loadHistory().filter((c) => c.id !== conversation.id);
  all.unshift(conversation);
  localStorage.setItem("edgebench.history", JSON.stringify(all.slice(0, 100)));
}

function drawHistory() {
  const list = $("#history");
  list.replaceChildren(...loadHistory().map((c) => {
    const first = c.panes[0].messages.find((m) => m.role === "user");
    const b = el("button", { type: "button" }, `${c.created.slice(0, 16).replace("T", " ")} · ${c.panes.filter((p) => p.messages.length).map((p) => p.model).join(" vs ")} · ${first ? first.content.slice(0, 60) : ""}`);
    b.addEventListener("click", () => {
      conversation = c;
      $("#side-by-side").checked = c.panes[1].messages.length > 0;
      document.querySelector('nav [data-tab="chat"]').click();
      drawPanes();
    });
    return el("li", {}, b);
  }));
}

$("#export").addEventListener("click", () => {
  const blob = new Blob([JSON.stringify(loadHistory(), null, 2)], { type: "application/json" });
  const a = el("a", { href: URL.createObjectURL(blob), download: "edgebench-conversations.json" });
  document.body.append(a); a.click(); a.remove();
});
$("#clear-history").addEventListener("click", () => { localStorage.removeItem("edgebench.history"); drawHistory(); });

// ------------------------------------------------------------------------------- results

let resultsLoaded = false;
async function loadResults(force) {
  if (resultsLoaded && !force) return;
  try {
    const resp = await fetch("/workbench/results", { headers: headers() });
    if (!resp.ok) throw new Error(await errorOf(resp));
    $("#results").srcdoc = await resp.text(); // sandbox="": no script runs in it
    resultsLoaded = true;
  } catch (e) { notice(`Results: ${e.message}`); }
}
$("#reload-results").addEventListener("click", () => loadResults(true));

drawPanes();
refreshModels();
