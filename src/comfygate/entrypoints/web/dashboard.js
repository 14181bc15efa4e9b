// The operator dashboard: asks GET /v1/reports/usage with the key typed in, and draws
// the report as tables and inline SVG. No dependencies, nothing fetched but same-origin
// /v1. The helpers down to "The page" are pure: the tests load them in node.
"use strict";

const KEY_STORAGE = "comfygate.dashboard.key";
const WINDOWS = {
  "24h": { hours: 24, bucket: "hour" },
  "7d": { hours: 24 * 7, bucket: "day" },
  "28d": { hours: 24 * 28, bucket: "day" }, // four whole weeks: an even heatmap
};
const DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const PALETTE = ["#3b6fb6", "#e07b39", "#4c9f70", "#c44e52", "#8172b3", "#b8860b", "#2a9d8f"];
const NONE = "—";

function formatNumber(value, maxFractionDigits = 0) {
  if (value === null || value === undefined) return NONE;
  return value.toLocaleString("en-US", { maximumFractionDigits: maxFractionDigits });
}

function formatSeconds(value) {
  if (value === null || value === undefined) return NONE;
  const digits =
    Math.abs(value) >= 100 ? { maximumFractionDigits: 0 } : { maximumSignificantDigits: 3 };
  return `${value.toLocaleString("en-US", digits)} s`;
}

// One formatter for a report field, by its name: cards and tables share it.
function formatField(key, value) {
  if (typeof value === "string") return value;
  if (key.endsWith("_s") || key === "gpu_seconds_per_token") return formatSeconds(value);
  return formatNumber(value, key === "avg_tokens_per_call" ? 2 : 0);
}

// The query for a window ending now (to the minute): since, until, bucket, account_id.
function reportQuery(choice, nowMs, accountId) {
  const span = WINDOWS[choice];
  const untilMs = Math.floor(nowMs / 60000) * 60000;
  const stamp = (ms) => new Date(ms).toISOString().replace(".000Z", "Z");
  const query = new URLSearchParams({
    since: stamp(untilMs - span.hours * 3600000),
    until: stamp(untilMs),
    bucket: span.bucket,
  });
  if (accountId) query.set("account_id", accountId);
  return query.toString();
}

// Bucket starts are local times in the report's zone ("2026-11-21T00:00:00+08:00"): they
// are cut as text, since a Date would move them to the browser's zone.
function bucketLabel(stamp, bucket, long = false) {
  if (bucket === "day") return long ? stamp.slice(0, 10) : stamp.slice(5, 10);
  return long ? stamp.slice(0, 16).replace("T", " ") : stamp.slice(11, 16);
}

// The top of an axis: the first round number at or above value (56 -> 60, 1210 -> 1500).
function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10].find((m) => m * power >= value) * power;
}

// Which buckets the window covers only in part: the first, when the window starts
// after it does, and the last, when the window ends before it does (a day is taken as
// 24 hours: off by one near a clock change, at worst).
function partialBuckets(buckets, bucket, since, until) {
  const span = (bucket === "day" ? 24 : 1) * 3600000;
  const [from, to] = [Date.parse(since), Date.parse(until)];
  return buckets.map((stamp) => {
    const start = Date.parse(stamp);
    return start < from || start + span > to;
  });
}

function bucketTotals(series, field, bucketCount) {
  const totals = new Array(bucketCount).fill(0);
  for (const entry of series) entry[field].forEach((value, i) => (totals[i] += value));
  return totals;
}

// A heatmap cell's fill: pale grey for none, then light to dark blue as calls grow.
function heatColor(value, max) {
  if (!(value > 0) || !(max > 0)) return "rgb(238,241,245)";
  const t = 0.15 + 0.85 * Math.min(value / max, 1);
  const [light, dark] = [[198, 219, 239], [8, 69, 148]];
  return `rgb(${light.map((c, i) => Math.round(c + (dark[i] - c) * t)).join(",")})`;
}

function colorsFor(capabilities) {
  const names = [...new Set(capabilities)].sort();
  return new Map(names.map((name, i) => [name, PALETTE[i % PALETTE.length]]));
}

// What to tell the operator about a refused request: the problem+json detail, and for
// 401 and 403 what the key lacks.
function problemMessage(status, body) {
  const hints = {
    401: "The gateway did not accept this API key (missing, unknown or revoked).",
    403: "This key may not read reports: use an operator's key or an account admin's.",
  };
  const detail = body && typeof body.detail === "string" ? body.detail : `HTTP ${status}`;
  return hints[status] ? `${hints[status]} ${detail}` : detail;
}

// ---- The page ---------------------------------------------------------------------

// SVG elements need the SVG namespace: each is made in its parent's, and the charts'
// roots are <svg> elements of the page, so no namespace URI is spelled out here.
function svgChild(parent, tag, attributes = {}, text = "") {
  const element = document.createElementNS(parent.namespaceURI, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  if (text) element.textContent = text;
  parent.append(element);
  return element;
}

function svgText(parent, x, y, text, anchor = "middle") {
  return svgChild(parent, "text", { x, y, "text-anchor": anchor }, text);
}

const PLOT = { left: 52, right: 712, top: 12, bottom: 212 };

function drawStackedBars(svg, report, field, colors, unit) {
  svg.replaceChildren();
  const { buckets, series } = report;
  const totals = bucketTotals(series, field, buckets.length);
  if (!totals.some((v) => v > 0)) {
    svgText(svg, 360, 120, "None in this window");
    return;
  }
  const top = niceCeiling(Math.max(...totals));
  const y = (v) => PLOT.bottom - (v / top) * (PLOT.bottom - PLOT.top);
  for (const tick of [0, top / 2, top]) {
    const [x1, x2, y1] = [PLOT.left, PLOT.right, y(tick)];
    svgChild(svg, "line", { x1, x2, y1, y2: y1, class: "grid" });
    svgText(svg, x1 - 6, y1 + 4, formatNumber(tick, 1), "end");
  }
  const slot = (PLOT.right - PLOT.left) / buckets.length;
  const base = new Array(buckets.length).fill(0);
  const partial = partialBuckets(buckets, report.bucket, report.since, report.until);
  for (const entry of series) {
    entry[field].forEach((value, i) => {
      if (!(value > 0)) return;
      const bar = svgChild(svg, "rect", {
        x: PLOT.left + i * slot + slot * 0.15,
        width: slot * 0.7,
        y: y(base[i] + value),
        height: y(base[i]) - y(base[i] + value),
        fill: colors.get(entry.capability),
        ...(partial[i] ? { class: "partial" } : {}),
      });
      const part = partial[i] ? " (part of it: the window starts or ends inside it)" : "";
      const when = bucketLabel(buckets[i], report.bucket, true) + part;
      svgChild(bar, "title", {}, `${entry.capability}, ${when}: ${formatNumber(value)} ${unit}`);
      base[i] += value;
    });
  }
  const every = Math.ceil(buckets.length / 12);
  buckets.forEach((stamp, i) => {
    if (i % every !== 0) return;
    svgText(svg, PLOT.left + (i + 0.5) * slot, PLOT.bottom + 18, bucketLabel(stamp, report.bucket));
  });
}

function drawHeatmap(svg, heatmap) {
  svg.replaceChildren();
  const max = Math.max(0, ...heatmap.flat());
  const [left, top, width, height] = [40, 22, 26, 22];
  for (let hour = 0; hour < 24; hour += 3) {
    svgText(svg, left + hour * width + width / 2, top - 8, `${hour}h`);
  }
  heatmap.forEach((row, day) => {
    const rowY = top + day * height;
    svgText(svg, left - 8, rowY + 15, DAYS[day], "end");
    row.forEach((calls, hour) => {
      const cell = svgChild(svg, "rect", {
        x: left + hour * width,
        y: rowY,
        width: width - 2,
        height: height - 2,
        rx: 3,
        fill: heatColor(calls, max),
      });
      const hours = `${String(hour).padStart(2, "0")}:00–${String(hour + 1).padStart(2, "0")}:00`;
      svgChild(cell, "title", {}, `${DAYS[day]} ${hours}: ${formatNumber(calls)} calls`);
    });
  });
}

// Fills a table's body from rows, one cell per header cell: its data-key names the field.
function fillTable(table, rows) {
  const headers = [...table.tHead.rows[0].cells];
  const body = table.tBodies[0];
  body.replaceChildren();
  if (!rows.length) {
    const cell = body.insertRow().insertCell();
    cell.colSpan = headers.length;
    cell.className = "muted";
    cell.textContent = "None in this window";
    return;
  }
  for (const row of rows) {
    const line = body.insertRow();
    for (const header of headers) {
      const cell = line.insertCell();
      cell.className = header.className;
      cell.textContent = formatField(header.dataset.key, row[header.dataset.key]);
    }
  }
}

function drawLegend(list, colors) {
  list.replaceChildren();
  for (const [name, color] of colors) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.style.background = color;
    item.append(swatch, name);
    list.append(item);
  }
}

function render(report) {
  const byId = (id) => document.getElementById(id);
  const stamp = (s) => s.replace("T", " ").replace(/Z$/, " UTC");
  const step = report.bucket === "hour" ? "hourly" : "daily";
  byId("window").textContent = `${stamp(report.since)} to ${stamp(report.until)}, ${step}`;
  byId("timezone").textContent = report.timezone;
  byId("heatmap-timezone").textContent = report.timezone;
  byId("account").textContent = report.account_id ? `account ${report.account_id}` : "all accounts";
  for (const card of document.querySelectorAll("[data-total]")) {
    card.textContent = formatField(card.dataset.total, report.totals[card.dataset.total]);
  }
  const colors = colorsFor(report.series.map((entry) => entry.capability));
  drawLegend(byId("legend"), colors);
  drawStackedBars(byId("calls-chart"), report, "calls", colors, "calls");
  drawStackedBars(byId("tokens-chart"), report, "tokens_charged", colors, "tokens");
  fillTable(byId("capabilities"), report.capabilities);
  drawHeatmap(byId("heatmap"), report.heatmap);
  fillTable(byId("failures"), report.failures);
  fillTable(byId("top-accounts"), report.top_accounts);
  byId("report").hidden = false;
}

// The report, or a message saying why there is none.
async function fetchReport(key, query) {
  let response;
  try {
    response = await fetch(`/v1/reports/usage?${query}`, {
      headers: { Authorization: `Bearer ${key}`, Accept: "application/json" },
      cache: "no-store",
    });
  } catch (error) {
    return { error: `Could not reach the gateway (${error.message}).` };
  }
  const body = await response.json().catch(() => null);
  if (response.ok && body) return { report: body };
  return { error: problemMessage(response.status, body) };
}

let latestRequest = 0;

async function load(form) {
  const status = document.getElementById("status");
  const key = form.elements.key.value.trim();
  sessionStorage.setItem(KEY_STORAGE, key);
  const request = ++latestRequest;
  status.className = "";
  status.textContent = "Loading…";
  const account = form.elements.account.value.trim();
  const query = reportQuery(form.elements.window.value, Date.now(), account);
  const { report, error } = await fetchReport(key, query);
  if (request !== latestRequest) return; // a newer reload is on its way
  if (report) render(report);
  else document.getElementById("report").hidden = true;
  status.className = error ? "error" : "";
  status.textContent = error || `Loaded at ${new Date().toLocaleTimeString()}`;
}

function start() {
  const form = document.getElementById("controls");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load(form);
  });
  const saved = sessionStorage.getItem(KEY_STORAGE);
  if (saved) {
    form.elements.key.value = saved;
    load(form);
  }
}

if (typeof module === "object" && module.exports) {
  module.exports = {
    formatField, reportQuery, bucketLabel, niceCeiling, bucketTotals, heatColor, colorsFor,
    problemMessage, partialBuckets,
  };
} else {
  start();
}
