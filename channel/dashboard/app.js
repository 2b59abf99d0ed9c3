// hoplink live dashboard: vanilla JS, no build step, no external resources.
//
// Data: /stats/stream (SSE) of the Rx, the channel and the Tx; the Rx's /thumbnails/latest
// (polled); the channel's /impairments/schemas, from which the impairment controls are built,
// so a new impairment module appears here without any change to this file.
// Control: POST/PATCH/DELETE /impairments/... and POST /events/corrupt on the channel (this
// page's origin; channel/control.py).
"use strict";

const THUMB_INTERVAL_MS = 330; // about 3 thumbnails per second
const MIN_SLOTS = 120; // the timeline keeps bars this wide until it has more frames
const RECENT_MS = 10000; // the "last 10 s" figures beside the session's
const OUTCOMES = [
  ["decoded", "var(--hit)"],
  ["recovered_lookup", "var(--lookup)"],
  ["recovered_refresh", "var(--refresh)"],
  ["concealed", "var(--concealed)"],
  ["lost", "var(--lost)"],
];

const api = { channel: "", rx: null, tx: null };
const live = { rx: null, channel: null, tx: null };
const cards = new Map(); // "direction/name" -> card controller
let directions = ["tx_to_rx", "rx_to_tx"];
let shownDirection = "tx_to_rx";

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const isNum = (x) => typeof x === "number" && Number.isFinite(x);
const fmt = (x, digits = 1) => (isNum(x) ? x.toFixed(digits) : "—");
const pct = (x) => (isNum(x) ? (100 * x).toFixed(1) + " %" : "—");
const esc = (s) =>
  String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

function setText(id, text) {
  const el = $(id);
  const value = String(text);
  if (el && el.textContent !== value) el.textContent = value;
}

function say(text, kind = "info") {
  const el = $("message");
  el.textContent = text;
  el.dataset.kind = kind;
}

// The channel's HOPLINK_CONTROL_TOKEN, when it has one: sent with every state-changing request.
const TOKEN_KEY = "hoplink-control-token";

function controlToken() {
  return $("control-token").value.trim();
}

async function request(method, url, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (method !== "GET" && controlToken()) init.headers.Authorization = "Bearer " + controlToken();
  const response = await fetch(url, init);
  if (response.status === 401 && method !== "GET") {
    $("token-box").hidden = false;
    say("the channel needs its control token (HOPLINK_CONTROL_TOKEN): enter it above the controls");
  }
  const text = await response.text();
  let data = text;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    // not JSON: keep the text for the message
  }
  if (!response.ok) {
    let detail = data && data.detail !== undefined ? data.detail : data || response.statusText;
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    const error = new Error(`${response.status}: ${detail}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

// --- services and streams ------------------------------------------------------------------------

function markService(name, state, label) {
  const el = $("svc-" + name);
  if (!el) return;
  el.dataset.state = state;
  el.querySelector("b").textContent = label || state;
}

function subscribe(name, base, render) {
  const source = new EventSource(base + "/stats/stream");
  source.addEventListener("stats", (event) => {
    let stats;
    try {
      stats = JSON.parse(event.data);
    } catch (_) {
      return;
    }
    live[name] = stats;
    markService(name, stats.link.state);
    render(stats);
  });
  source.onerror = () => {
    markService(name, "unreachable");
    if (source.readyState === EventSource.CLOSED) {
      setTimeout(() => subscribe(name, base, render), 5000);
    }
  };
}

async function pollThumbnails() {
  let shown = null;
  for (;;) {
    let wait = document.hidden ? 2000 : THUMB_INTERVAL_MS;
    try {
      const t = await request("GET", api.rx + "/thumbnails/latest");
      const key = `${t.session}/${t.seq}`;
      if (t.seq !== null && key !== shown) {
        shown = key;
        if (t.original) $("thumb-original").src = t.original;
        if (t.reconstruction) $("thumb-reconstruction").src = t.reconstruction;
        setText("frame-seq", `frame ${t.seq}`);
        setText(
          "frame-quality",
          t.original
            ? `PSNR ${fmt(t.psnr, 2)} dB · SSIM ${fmt(t.ssim, 3)}`
            : "no reference at the Rx (start it with --reference): reconstruction only",
        );
      }
    } catch (_) {
      wait = 3000; // the Rx's badge says it is unreachable; ask again less often
    }
    await sleep(wait);
  }
}

// --- the Rx --------------------------------------------------------------------------------------

const previous = {};
// "session/seq" -> when this page first saw the frame settled (performance.now() ms); frames
// already in the timeline when the page opened count as old (-Infinity), so "last 10 s" means
// frames settled in the last 10 s of this page's life, not the Rx's whole window.
let seenAt = null;

function recentFrames(s) {
  const now = performance.now();
  const next = new Map();
  for (const e of s.timeline) {
    const key = `${s.link.session}/${e.seq}`;
    next.set(key, seenAt === null ? -Infinity : seenAt.has(key) ? seenAt.get(key) : now);
  }
  seenAt = next; // only what the timeline still holds: bounded like it
  return s.timeline.filter((e) => now - next.get(`${s.link.session}/${e.seq}`) <= RECENT_MS);
}

// Hit rate and mean PSNR of the frames settled in the last 10 s (null when there were none).
function recentFigures(s) {
  const recent = recentFrames(s);
  const psnrs = recent.map((e) => e.psnr).filter(isNum);
  return {
    frames: recent.length,
    hitRate: recent.length ? recent.filter((e) => e.kind === "HIT").length / recent.length : null,
    psnr: psnrs.length ? psnrs.reduce((a, b) => a + b, 0) / psnrs.length : null,
  };
}

function setCounter(id, value) {
  // counters that signal trouble light up while they rise
  const el = $(id);
  if (!el) return;
  const tile = el.closest(".tile.alert");
  if (tile && previous[id] !== undefined) tile.classList.toggle("rising", value > previous[id]);
  previous[id] = value;
  setText(id, value);
}

function renderRx(s) {
  const c = s.counters;
  const q = s.quality;
  setText("session", `session ${s.link.session}${s.link.session_ended ? " (ended)" : ""}`);
  const recent = recentFigures(s);
  setText("hit-rate-recent", pct(recent.hitRate));
  setText("hit-rate", pct(s.hit_rate));
  setText("bits-semantic", fmt(s.bits.semantic_per_frame, 1));
  setText("bits-wire", fmt(s.bits.wire_bits_per_frame, 0));
  setText("psnr-recent", q.reference ? fmt(recent.psnr, 2) : "no reference");
  setText("psnr", q.reference ? fmt(q.psnr_mean, 2) : "—");
  setText("ssim", q.reference ? `${fmt(q.ssim_mean, 3)} · ${fmt(q.ssim_last, 2)}` : "—");
  setText("frames-count", s.frames);
  setText("hits-news", `${s.hits} · ${s.news}`);
  setText("efficiency", `${fmt(s.bits.efficiency, 2)} · ${fmt(s.bits.capacity, 2)}`);
  setCounter("cue-failures", c.cue_failures);
  setText("lookups-ok", c.lookups_ok);
  setText("lookups-failed", c.lookups_failed);
  setCounter("refresh-requests", c.refresh_requests);
  setText("refreshes-applied", c.refreshes_applied);
  setCounter("bad-messages", s.traffic.decode_errors + c.errors);

  const m = s.memory;
  $("memory-bar").style.width = (100 * m.occupancy).toFixed(1) + "%";
  setText("memory", `${m.filled} / ${m.capacity} slots (${pct(m.occupancy)})`);

  const d = s.digest;
  const badge = $("digest");
  badge.dataset.state = d.agree === null ? "unknown" : d.agree ? "agree" : "diverged";
  setText(
    "digest",
    d.agree === null ? "no DIGEST yet" : d.agree ? "Tx and Rx memories agree" : "memories DIVERGED",
  );
  setText(
    "digest-hashes",
    `Rx ${d.rx.slice(0, 8)} · Tx ${d.tx_last ? d.tx_last.slice(0, 8) : "—"}` +
      (d.last_digest_seq !== null ? ` @ frame ${d.last_digest_seq}` : ""),
  );

  const total = Object.values(s.frames_by_outcome).reduce((a, b) => a + b, 0);
  $("outcome-bar").innerHTML = OUTCOMES.map(([k, color]) => {
    const n = s.frames_by_outcome[k] || 0;
    const w = total ? (100 * n) / total : 0;
    return `<div style="width:${w}%;background:${color}" title="${k}: ${n}"></div>`;
  }).join("");
  $("outcome-legend").innerHTML = OUTCOMES.map(
    ([k, color]) =>
      `<span><i class="sw" style="background:${color}"></i>${k.replace("_", " ")} ` +
      `<b id="outcome-${k}">${s.frames_by_outcome[k] || 0}</b></span>`,
  ).join("");

  drawTimeline(s.timeline);
  drawPsnr(s.timeline);
}

function niceMax(x) {
  const p = Math.pow(10, Math.floor(Math.log10(x)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

// Draw in the SVG's own pixels (viewBox = its size), so text is never stretched.
function sizeOf(svg, height) {
  const W = Math.max(320, Math.round(svg.clientWidth || 960));
  svg.setAttribute("viewBox", `0 0 ${W} ${height}`);
  return W;
}

function drawTimeline(entries) {
  const svg = $("timeline");
  const H = 220;
  const W = sizeOf(svg, H);
  const left = 46;
  const right = 6;
  const top = 14;
  const bottom = 22;
  const plotW = W - left - right;
  const plotH = H - top - bottom;
  // The Rx lists frames as they settle (a lost frame only when a later one shows it missing):
  // draw them in frame order, each at its own seq, so a loss sits where it happened.
  entries = [...entries].sort((a, b) => a.seq - b.seq);
  const n = entries.length;
  const first = n ? entries[0].seq : 0;
  const slot = plotW / Math.max(n ? entries[n - 1].seq - first + 1 : 0, MIN_SLOTS);
  const barW = Math.max(slot * 0.8, 0.6);
  const yMax = niceMax(Math.max(8, ...entries.map((e) => e.bits + e.refresh_bits)));
  const log = $("timeline-log").checked;
  // log: 1 bit at the baseline, so a HIT's few dozen bits and a NEW's hundreds both show
  const y = log
    ? (bits) => top + plotH - (plotH * Math.log10(Math.max(bits, 1))) / Math.log10(yMax)
    : (bits) => top + plotH - (plotH * bits) / yMax;
  const base = top + plotH;
  const parts = [];
  const ticks = log
    ? [1, 10, 100, 1000, 10000, 100000].filter((v) => v <= yMax)
    : [0, yMax / 2, yMax];
  for (const v of ticks) {
    parts.push(
      `<line class="axis" x1="${left}" x2="${W - right}" y1="${y(v)}" y2="${y(v)}"/>`,
      `<text x="${left - 4}" y="${y(v) + 4}" text-anchor="end">${v}</text>`,
    );
  }
  parts.push(`<text x="4" y="${top - 3}">bits${log ? " (log)" : ""}</text>`);
  entries.forEach((e) => {
    const x = left + (e.seq - first) * slot + (slot - barW) / 2;
    const cx = (x + barW / 2).toFixed(1);
    const what =
      `frame ${e.seq}: ${e.kind || "lost"}, ${e.bits} bits` +
      (e.refresh_bits ? ` + ${e.refresh_bits} refresh bits` : "") +
      `, ${e.outcome.replace("_", " ")}` +
      (isNum(e.psnr) ? `, PSNR ${e.psnr.toFixed(1)} dB` : "");
    if (e.kind === null) {
      parts.push(
        `<rect class="lost" x="${x.toFixed(1)}" y="${base + 2}" width="${barW.toFixed(1)}" height="6"><title>${esc(what)}</title></rect>`,
      );
      return;
    }
    const cls = (e.kind === "HIT" ? "hit" : "new") + (e.outcome === "concealed" ? " concealed" : "");
    parts.push(
      `<rect class="${cls}" x="${x.toFixed(1)}" y="${y(e.bits).toFixed(1)}" width="${barW.toFixed(1)}" height="${(base - y(e.bits)).toFixed(1)}"><title>${esc(what)}</title></rect>`,
    );
    let topY = y(e.bits);
    if (e.refresh_bits) {
      const y1 = y(e.bits + e.refresh_bits);
      parts.push(
        `<rect class="refresh" x="${x.toFixed(1)}" y="${y1.toFixed(1)}" width="${barW.toFixed(1)}" height="${(topY - y1).toFixed(1)}"><title>${esc(what)}</title></rect>`,
      );
      topY = y1;
    }
    if (e.outcome === "recovered_refresh") {
      const t = topY - 2;
      parts.push(
        `<path class="refresh" d="M${cx} ${t} l-3.5 -6 h7 z"><title>${esc(what)}</title></path>`,
      );
    } else if (e.outcome === "recovered_lookup") {
      parts.push(`<circle class="lookup" cx="${cx}" cy="${(topY - 5).toFixed(1)}" r="3"><title>${esc(what)}</title></circle>`);
    }
  });
  if (!n) parts.push(`<text x="${left + 8}" y="${top + plotH / 2}">waiting for the first frame…</text>`);
  if (n) {
    parts.push(
      `<text x="${left}" y="${H - 4}">frame ${entries[0].seq}</text>`,
      `<text x="${W - right}" y="${H - 4}" text-anchor="end">frame ${entries[n - 1].seq}</text>`,
    );
  }
  svg.innerHTML = parts.join("");
  svg.dataset.points = String(n);
  svg.dataset.lastSeq = n ? String(entries[n - 1].seq) : "";
}

function drawPsnr(entries) {
  const svg = $("psnr-line");
  const H = 70;
  const W = sizeOf(svg, H);
  const left = 46;
  const right = 6;
  const plotW = W - left - right;
  entries = [...entries].sort((a, b) => a.seq - b.seq); // frame order, as the timeline
  const first = entries.length ? entries[0].seq : 0;
  const span = entries.length ? entries[entries.length - 1].seq - first + 1 : 0;
  const slot = plotW / Math.max(span, MIN_SLOTS);
  const values = entries.map((e) => e.psnr).filter(isNum);
  if (!values.length) {
    svg.innerHTML = `<text x="${left}" y="40">PSNR per frame: waiting for quality figures…</text>`;
    svg.dataset.points = "0";
    return;
  }
  let lo = Math.floor(Math.min(...values) - 0.5);
  let hi = Math.ceil(Math.max(...values) + 0.5);
  if (hi - lo < 2) hi = lo + 2;
  const y = (v) => 6 + (H - 18) * (1 - (v - lo) / (hi - lo));
  const segments = [];
  let current = [];
  entries.forEach((e, i) => {
    const gap = i > 0 && e.seq !== entries[i - 1].seq + 1; // frames the window does not hold
    if (gap && current.length) {
      segments.push(current);
      current = [];
    }
    if (isNum(e.psnr)) {
      current.push(`${(left + (e.seq - first) * slot + slot / 2).toFixed(1)},${y(e.psnr).toFixed(1)}`);
    } else if (current.length) {
      segments.push(current);
      current = [];
    }
  });
  if (current.length) segments.push(current);
  svg.innerHTML =
    `<line class="axis" x1="${left}" x2="${W - right}" y1="${y(hi)}" y2="${y(hi)}"/>` +
    `<line class="axis" x1="${left}" x2="${W - right}" y1="${y(lo)}" y2="${y(lo)}"/>` +
    `<text x="${left - 4}" y="${y(hi) + 4}" text-anchor="end">${hi}</text>` +
    `<text x="${left - 4}" y="${y(lo) + 4}" text-anchor="end">${lo}</text>` +
    `<text x="4" y="${H / 2}">PSNR</text><text x="4" y="${H / 2 + 12}">dB</text>` +
    segments.map((s) => `<polyline class="psnr" points="${s.join(" ")}"/>`).join("");
  svg.dataset.points = String(values.length);
}

// --- the Tx --------------------------------------------------------------------------------------

function renderTx(s) {
  const t = s.traffic;
  setText(
    "tx-summary",
    `${s.scenario}: ${s.frames_sent} frames sent at ${fmt(s.fps, 1)} fps ` +
      `(target ${s.fps_target || "max"}), memory ${s.memory_count}/${s.memory_capacity}, ` +
      `reconnects ${t.reconnects}` +
      (s.link.last_error ? ` — ${s.link.last_error}` : ""),
  );
}

// --- the channel: controls built from the impairment schemas ------------------------------------

function deref(schema, root) {
  if (schema && schema.$ref) {
    const path = schema.$ref.replace(/^#\//, "").split("/");
    let target = root;
    for (const p of path) target = target ? target[p] : undefined;
    const { $ref, ...rest } = schema;
    return { ...deref(target || {}, root), ...rest };
  }
  if (schema && Array.isArray(schema.allOf) && schema.allOf.length === 1) {
    const { allOf, ...rest } = schema;
    return { ...deref(allOf[0], root), ...rest };
  }
  return schema || {};
}

// One attribute's JSON schema -> {kind, nullable, min, max, integer, enum, default, description}
function describe(property, root) {
  let s = deref(property, root);
  let nullable = false;
  if (Array.isArray(s.anyOf)) {
    const others = s.anyOf.filter((a) => deref(a, root).type !== "null");
    nullable = others.length < s.anyOf.length;
    if (others.length === 1) {
      const { anyOf, ...rest } = s;
      s = { ...deref(others[0], root), ...rest };
    } else {
      return { kind: "json", nullable, default: s.default, description: s.description };
    }
  }
  const out = { nullable, default: s.default, description: s.description || s.title || "" };
  if (Array.isArray(s.enum)) return { ...out, kind: "enum", enum: s.enum };
  if (s.const !== undefined) return { ...out, kind: "enum", enum: [s.const] };
  if (s.type === "boolean") return { ...out, kind: "boolean" };
  if (s.type === "number" || s.type === "integer") {
    const min = isNum(s.minimum) ? s.minimum : isNum(s.exclusiveMinimum) ? s.exclusiveMinimum : null;
    const max = isNum(s.maximum) ? s.maximum : isNum(s.exclusiveMaximum) ? s.exclusiveMaximum : null;
    return { ...out, kind: "number", integer: s.type === "integer", min, max };
  }
  return { ...out, kind: "json" };
}

// A slider for a number: logarithmic when the range spans decades around the default (BER,
// probabilities, delays, rates), linear otherwise; position 0 is the minimum (0 turns it off).
function sliderScale(d) {
  if (d.min === null || d.max === null || d.max <= d.min) return null;
  const def = isNum(d.default) ? d.default : 0;
  const span = d.max - d.min;
  if (def > 0 && span / def < 100) {
    return {
      log: false,
      toValue: (p) => d.min + (span * p) / 1000,
      toPos: (v) => (1000 * (v - d.min)) / span,
    };
  }
  const hi = def > 0 ? Math.min(d.max, def * 1000) : d.max;
  const lo = Math.max(def > 0 ? def / 1000 : d.max * 1e-6, d.min > 0 ? d.min : 0, 1e-12);
  const decades = Math.log10(hi / lo);
  return {
    log: true,
    toValue: (p) => (p <= 0 ? d.min : lo * Math.pow(10, (decades * p) / 1000)),
    toPos: (v) => (v <= lo ? (v <= d.min ? 0 : 1) : Math.min(1000, (1000 * Math.log10(v / lo)) / decades)),
  };
}

function roundValue(v, d) {
  if (!isNum(v)) return v;
  if (d.integer) return Math.round(v);
  if (v === 0) return 0;
  return Number(v.toPrecision(2));
}

function makeField(dir, name, key, d) {
  const id = `ctl-${dir}-${name}-${key}`;
  const row = document.createElement("div");
  row.className = "field";
  row.title = d.description;
  row.innerHTML = `<span>${esc(key)}</span>`;
  const field = { key, d, row, input: null, slider: null, scale: null };
  if (d.kind === "number") {
    field.scale = sliderScale(d);
    const input = document.createElement("input");
    input.type = "number";
    input.step = d.integer ? "1" : "any";
    if (d.min !== null) input.min = d.min;
    if (d.max !== null) input.max = d.max;
    if (d.nullable) input.placeholder = "none";
    input.id = id;
    field.input = input;
    if (field.scale) {
      const slider = document.createElement("input");
      slider.type = "range";
      slider.min = "0";
      slider.max = "1000";
      slider.step = "1";
      slider.id = id + "-slider";
      slider.setAttribute("aria-label", `${dir} ${name} ${key}`);
      field.slider = slider;
      slider.addEventListener("input", () => {
        input.value = roundValue(field.scale.toValue(Number(slider.value)), d);
      });
      row.append(slider, input);
    } else {
      input.className = "wide";
      row.append(input);
    }
  } else if (d.kind === "enum") {
    const select = document.createElement("select");
    select.id = id;
    select.className = "wide";
    d.enum.forEach((v, i) => select.add(new Option(String(v), String(i))));
    field.input = select;
    row.append(select);
  } else if (d.kind === "boolean") {
    const box = document.createElement("input");
    box.type = "checkbox";
    box.id = id;
    const wrap = document.createElement("label");
    wrap.className = "wide";
    wrap.append(box);
    field.input = box;
    row.append(wrap);
  } else {
    const text = document.createElement("input");
    text.type = "text";
    text.id = id;
    text.className = "wide";
    text.placeholder = "JSON, empty: none";
    field.input = text;
    row.append(text);
  }
  field.read = () => readField(field);
  field.write = (v) => writeField(field, v);
  field.write(d.default === undefined ? null : d.default);
  return field;
}

function readField(f) {
  const { d, input } = f;
  if (d.kind === "number") {
    if (input.value.trim() === "") {
      if (d.nullable) return null;
      throw new Error(`${f.key}: a number is needed`);
    }
    const v = Number(input.value);
    if (!Number.isFinite(v)) throw new Error(`${f.key}: not a number`);
    return v;
  }
  if (d.kind === "enum") return d.enum[Number(input.value)];
  if (d.kind === "boolean") return input.checked;
  const text = input.value.trim();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch (_) {
    throw new Error(`${f.key}: not valid JSON`);
  }
}

function writeField(f, v) {
  const { d, input, slider, scale } = f;
  if (d.kind === "number") {
    input.value = v === null || v === undefined ? "" : String(v);
    if (slider) slider.value = String(isNum(v) ? Math.round(scale.toPos(v)) : 0);
  } else if (d.kind === "enum") {
    const i = d.enum.findIndex((e) => e === v);
    if (i >= 0) input.value = String(i);
  } else if (d.kind === "boolean") {
    input.checked = Boolean(v);
  } else {
    input.value = v === null || v === undefined ? "" : JSON.stringify(v);
  }
}

function makeCard(dir, name, schema, common) {
  const props = schema.properties || {};
  const card = document.createElement("div");
  card.className = "card";
  card.dataset.direction = dir;
  card.dataset.impairment = name;
  card.id = `card-${dir}-${name}`;
  const head = document.createElement("header");
  const enabled = document.createElement("input");
  enabled.type = "checkbox";
  enabled.id = `ctl-${dir}-${name}-enabled`;
  enabled.title = "set on this direction (unchecked: removed)";
  const title = document.createElement("label");
  title.htmlFor = enabled.id;
  title.textContent = name.replace(/_/g, " ");
  head.append(enabled, title);
  if (schema.description) head.title = schema.description;
  const counters = document.createElement("div");
  counters.className = "counters";
  const error = document.createElement("div");
  error.className = "error";
  card.append(head, counters);
  const ctl = { dir, name, card, enabled, counters, error, fields: [], busy: 0, on: false };
  const advanced = document.createElement("details");
  advanced.innerHTML = "<summary>selection: toxicity, types, seq_range</summary>";
  for (const [key, property] of Object.entries(props)) {
    const field = makeField(dir, name, key, describe(property, schema));
    ctl.fields.push(field);
    (common.has(key) ? advanced : card).append(field.row);
    const send = () => {
      try {
        put(ctl, { [key]: field.read() });
      } catch (e) {
        error.textContent = e.message;
      }
    };
    if (field.slider) field.slider.addEventListener("change", send);
    field.input.addEventListener("change", send);
  }
  if (advanced.children.length > 1) {
    advanced.querySelector("summary").textContent =
      "selection: " + [...common].filter((k) => k in props).join(", ");
    card.append(advanced);
  }
  card.append(error);
  enabled.addEventListener("change", () => {
    if (enabled.checked) {
      const attributes = {};
      try {
        for (const f of ctl.fields) {
          const v = f.read();
          if (v !== null) attributes[f.key] = v;
        }
      } catch (e) {
        error.textContent = e.message;
        enabled.checked = false;
        return;
      }
      put(ctl, attributes);
    } else {
      remove(ctl);
    }
  });
  return ctl;
}

function impairmentUrl(ctl) {
  return `${api.channel}/impairments/${ctl.dir}/${encodeURIComponent(ctl.name)}`;
}

// Each card is the impairment named by its type: PATCH it while it is set, POST it otherwise
// (and the other one if the channel's state changed meanwhile: 404 / 409).
async function setImpairment(ctl, attributes) {
  const add = () =>
    request("POST", `${api.channel}/impairments/${ctl.dir}`, {
      type: ctl.name,
      name: ctl.name,
      attributes,
    });
  const update = () => request("PATCH", impairmentUrl(ctl), { attributes });
  try {
    return await (ctl.on ? update() : add());
  } catch (e) {
    if (e.status === (ctl.on ? 404 : 409)) return await (ctl.on ? add() : update());
    throw e;
  }
}

async function put(ctl, attributes) {
  ctl.busy += 1;
  try {
    const view = await setImpairment(ctl, attributes);
    ctl.error.textContent = "";
    applyState(ctl, view.attributes, true);
    say(`${ctl.dir} ${ctl.name}: ${describeAttributes(attributes)}`, "ok");
  } catch (e) {
    ctl.error.textContent = e.message;
  } finally {
    ctl.busy -= 1;
  }
}

async function remove(ctl) {
  ctl.busy += 1;
  try {
    await request("DELETE", impairmentUrl(ctl)).catch((e) => {
      if (e.status !== 404) throw e; // already gone: what the user asked for
    });
    ctl.error.textContent = "";
    applyState(ctl, null, true);
    say(`${ctl.dir} ${ctl.name} removed`, "ok");
  } catch (e) {
    ctl.error.textContent = e.message;
  } finally {
    ctl.busy -= 1;
  }
}

function describeAttributes(a) {
  const parts = Object.entries(a).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  return parts.length ? parts.join(", ") : "set";
}

// Show the channel's state of one impairment (null: not set), except in a field being edited.
function applyState(ctl, state, force = false) {
  if (ctl.busy && !force) return;
  ctl.on = state !== null;
  ctl.card.classList.toggle("on", ctl.on);
  ctl.enabled.checked = ctl.on;
  if (!state) return;
  for (const f of ctl.fields) {
    const editing = document.activeElement === f.input || document.activeElement === f.slider;
    if (f.key in state && (!editing || force)) f.write(state[f.key]);
  }
}

function buildControls(schemas) {
  const names = Object.keys(schemas);
  // attributes every impairment shares (selection) go under "selection" in each card
  const common = new Set(
    names.length > 1
      ? Object.keys(schemas[names[0]].properties || {}).filter((k) =>
          names.every((n) => k in (schemas[n].properties || {})),
        )
      : [],
  );
  const tabs = $("direction-tabs");
  const box = $("impairments");
  for (const dir of directions) {
    const tab = document.createElement("button");
    tab.type = "button";
    tab.id = `tab-${dir}`;
    tab.setAttribute("role", "tab");
    tab.textContent = dir === "tx_to_rx" ? "Tx → Rx (forward)" : dir === "rx_to_tx" ? "Rx → Tx (feedback)" : dir;
    tab.addEventListener("click", () => showDirection(dir));
    tabs.append(tab);
    for (const name of names) {
      const ctl = makeCard(dir, name, schemas[name], common);
      cards.set(`${dir}/${name}`, ctl);
      box.append(ctl.card);
    }
  }
  showDirection(shownDirection);
}

function showDirection(dir) {
  shownDirection = dir;
  for (const d of directions) $(`tab-${d}`).setAttribute("aria-selected", String(d === dir));
  for (const ctl of cards.values()) ctl.card.classList.toggle("shown", ctl.dir === dir);
  if (live.channel) renderChannel(live.channel);
}

function renderChannel(s) {
  for (const ctl of cards.values()) {
    const state = (s.impairments[ctl.dir] || {})[ctl.name] || null;
    applyState(ctl, state);
    const totals = ((s.directions[ctl.dir] || {}).impairments || {})[ctl.name];
    const text = totals
      ? Object.entries(totals)
          .map(([k, v]) => `${k.replace(/_/g, " ")} ${v}`)
          .join(" · ")
      : "";
    if (ctl.counters.textContent !== text) ctl.counters.textContent = text;
  }
  const d = s.directions[shownDirection];
  if (d) {
    setText(
      "direction-summary",
      `${shownDirection}: ${d.messages_in} messages in, ${d.messages_out} out, ` +
        `${d.dropped} dropped, ${d.duplicated} duplicated, ${d.held} held · ` +
        `corruption events: ${s.events.corrupt || 0}`,
    );
  }
}

function bindCorrupt(limits) {
  const pairs = [
    ["rho", limits.rho],
    ["sigma", Math.min(limits.sigma, 1)],
  ];
  for (const [key, max] of pairs) {
    const slider = $(`corrupt-${key}-slider`);
    const input = $(`corrupt-${key}`);
    slider.max = String(max);
    input.max = String(key === "sigma" ? limits.sigma : max);
    slider.addEventListener("input", () => (input.value = slider.value));
    input.addEventListener("change", () => (slider.value = input.value));
  }
  $("corrupt-send").addEventListener("click", async () => {
    const body = { rho: Number($("corrupt-rho").value) || 0, sigma: Number($("corrupt-sigma").value) || 0 };
    try {
      const r = await request("POST", `${api.channel}/events/corrupt`, body);
      setText("corrupt-result", `sent: ρ=${r.rho}, σ=${r.sigma}`);
      say(`corruption event sent (ρ=${r.rho}, σ=${r.sigma})`, "ok");
    } catch (e) {
      setText("corrupt-result", e.message);
    }
  });
  $("clear-all").addEventListener("click", async () => {
    try {
      await request("DELETE", `${api.channel}/impairments`);
      for (const ctl of cards.values()) applyState(ctl, null, true);
      say("all impairments cleared", "ok");
    } catch (e) {
      say(e.message);
    }
  });
}

// --- start ---------------------------------------------------------------------------------------

async function main() {
  const token = $("control-token");
  token.value = sessionStorage.getItem(TOKEN_KEY) || "";
  $("token-box").hidden = !token.value;
  token.addEventListener("change", () => sessionStorage.setItem(TOKEN_KEY, token.value.trim()));
  $("token-box").addEventListener("submit", (event) => event.preventDefault());
  $("timeline-log").addEventListener("change", () => live.rx && drawTimeline(live.rx.timeline));
  let config;
  try {
    config = await request("GET", "config.json");
  } catch (e) {
    say(`cannot read the dashboard configuration: ${e.message}`);
    return;
  }
  // ?rx=URL&tx=URL override the host's view (e.g. behind a port forward)
  const params = new URLSearchParams(location.search);
  api.channel = config.channel_api || "";
  api.rx = params.get("rx") || config.rx_api;
  api.tx = params.get("tx") || config.tx_api;
  directions = config.directions || directions;
  bindCorrupt(config.corrupt || { rho: 1, sigma: 1 });
  try {
    buildControls(await request("GET", `${api.channel}/impairments/schemas`));
  } catch (e) {
    say(`cannot read the impairment schemas: ${e.message}`);
  }
  subscribe("channel", api.channel, renderChannel);
  if (api.rx) {
    subscribe("rx", api.rx, renderRx);
    pollThumbnails();
  } else {
    markService("rx", "off", "not configured");
  }
  if (api.tx) {
    subscribe("tx", api.tx, renderTx);
  } else {
    markService("tx", "off", "not configured");
    setText("tx-summary", "start the channel with --tx-api URL to see the Tx here");
  }
}

main();
