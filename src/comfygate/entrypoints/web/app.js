// The end user's page: choose a photo, see its price, pay, watch the progress, compare
// before and after, follow the balance and the history, and buy a plan when the tokens
// run out. No dependencies, nothing fetched but same-origin /v1 with the key typed in,
// and every value from the API written as text. The helpers down to "The page" are
// pure: the tests load them in node.
"use strict";

const KEY_STORAGE = "comfygate.app.key";
const ENDS = new Set(["succeeded", "failed", "canceled"]); // end states, and end events
const HISTORY_PAGE = 10;
const ORDER_POLL_MS = 5000;
const STREAM_RETRIES = 6;

// A Server-Sent Events parser: give it text as it arrives, cut anywhere, and it returns
// the events completed so far. Comment lines (": keep-alive") are skipped and data lines
// joined with "\n". lastEventId is the id of the last frame completed (an id line of a
// frame cut short does not count): a new connection resumes from it, with a new parser.
function sseParser(lastEventId = "") {
  const parser = { lastEventId, push };
  let [pending, data, type, id] = ["", [], "", lastEventId];

  function field(line) {
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (name === "data") data.push(value);
    else if (name === "event") type = value;
    else if (name === "id" && !value.includes("\0")) id = value;
  }

  function push(chunk) {
    // A "\r" that ends the text so far may be the first half of a "\r\n": kept back.
    const lines = (pending + chunk).split(/\r\n|\n|\r(?!$)/);
    pending = lines.pop();
    const events = [];
    for (const line of lines) {
      if (line === "") {
        parser.lastEventId = id;
        if (data.length) events.push({ id, event: type || "message", data: data.join("\n") });
        [data, type] = [[], ""];
      } else if (!line.startsWith(":")) {
        field(line);
      }
    }
    return events;
  }
  return parser;
}

// An Idempotency-Key from random bytes (getRandomValues works on plain http, where
// crypto.randomUUID does not). The page makes one per quote: every attempt to pay that
// price (a double click, a retry after a lost answer) is the same submission.
function idempotencyKey(bytes) {
  return `app-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

// How to draw one option of a capability, from its schema in /v1/capabilities: a flag
// is a checkbox, a choice a list, an integer with a small range a list of its values,
// any other number a number field (1.5 is an upscale too). Values are strings, as the
// controls hold.
function optionControl(spec) {
  const label = spec.description || spec.name;
  if (spec.type === "boolean") return { kind: "checkbox", label, value: spec.default === true };
  if (spec.type === "choice") {
    return { kind: "select", label, values: spec.choices, value: String(spec.default) };
  }
  const [min, max] = [spec.min, spec.max].map((v) => (v === null ? NaN : Number(v)));
  const whole = spec.type === "integer" && Number.isInteger(min) && Number.isInteger(max);
  if (whole && max - min <= 12) {
    const values = Array.from({ length: max - min + 1 }, (_, i) => String(min + i));
    return { kind: "select", label, values, value: String(spec.default) };
  }
  const step = spec.type === "integer" ? "1" : "any";
  return { kind: "number", label, min: spec.min, max: spec.max, step, value: String(spec.default) };
}

// The value a control holds, typed as its option's schema says.
// (An emptied number field is its default.)
function optionValue(spec, raw) {
  if (spec.type === "boolean") return raw === true;
  if (spec.type === "choice") return raw;
  return Number(String(raw).trim() === "" ? spec.default : raw);
}

function formatTokens(count) {
  return `${count.toLocaleString("en-US")} ${count === 1 ? "token" : "tokens"}`;
}

// An API time (ISO 8601) in the browser's zone, to the minute: "2026-11-28 18:12".
function formatTime(iso) {
  const t = new Date(iso);
  const two = (n) => String(n).padStart(2, "0");
  const day = `${t.getFullYear()}-${two(t.getMonth() + 1)}-${two(t.getDate())}`;
  return `${day} ${two(t.getHours())}:${two(t.getMinutes())}`;
}

// How long a quote's price stays locked: "18:12 (10 min)", "18:12 (expired)".
function formatLock(expiresAt, nowMs) {
  const left = Date.parse(expiresAt) - nowMs;
  const until = formatTime(expiresAt).slice(11);
  return left > 0 ? `${until} (${Math.ceil(left / 60000)} min)` : `${until} (expired)`;
}

// What a job's event says while it runs: the bar's fraction (null: leave it) and a line.
function describeEvent(kind, data) {
  if (kind === "queued") {
    const why = data.reason ? `again (${data.reason})` : "";
    return { fraction: 0, text: `Queued ${why || "for a worker"}` };
  }
  if (kind === "started") return { fraction: null, text: "Running" };
  if (kind === "progress") {
    const text = [data.message, `${Math.round(data.fraction * 100)}%`].filter(Boolean).join(", ");
    return { fraction: data.fraction, text };
  }
  return { fraction: null, text: kind };
}

// A job in one line: its state, what it cost or why it did not end well.
function jobOutcome(job) {
  const state = job.state.charAt(0).toUpperCase() + job.state.slice(1);
  if (job.state === "succeeded") {
    const gone = job.result ? "" : " (the result is no longer kept)";
    return `${state}: ${formatTokens(job.tokens_charged ?? job.tokens)} charged${gone}`;
  }
  if (!ENDS.has(job.state)) return `${state}: ${formatTokens(job.tokens)} on hold`;
  const why = job.failure ? `: ${job.failure.reason || job.failure.code}` : "";
  const paid = job.tokens_charged ? formatTokens(job.tokens_charged) : "nothing";
  return `${state}${why} (${paid} charged)`;
}

function historyPath(cursor) {
  const query = new URLSearchParams({ limit: String(HISTORY_PAGE) });
  if (cursor) query.set("cursor", cursor);
  return `/v1/jobs?${query}`;
}

// What to tell the user about a refused request: the problem+json detail and code,
// after a word on what 401 and 403 mean here.
function problemMessage(status, body) {
  const hints = {
    401: "The gateway did not accept this API key (missing, unknown or revoked).",
    403: "This API key may not do that: ask your account's admin for a user key.",
  };
  const detail = body && typeof body.detail === "string" ? body.detail : `HTTP ${status}`;
  const code = body && typeof body.code === "string" ? ` (${body.code})` : "";
  return [hints[status], `${detail}${code}`].filter(Boolean).join(" ");
}

// ---- The page ---------------------------------------------------------------------

const $ = (id) => document.getElementById(id);
const state = {
  key: "", file: null, size: null, quote: null, originals: new Map(),
  ordering: false, orderId: null, orderKey: null, capabilities: new Map(), bookVersion: "",
};
const urls = { original: "", result: "" }; // object URLs this page made
let latestQuote = 0;
let following = null; // the AbortController of the job shown
let cursor = null;
let orderTimer = 0;

// An error to show, with the HTTP status that refused the request (0: none came).
function refusal(status, body) {
  const code = body && typeof body.code === "string" ? body.code : "";
  return Object.assign(new Error(problemMessage(status, body)), { status, code });
}

// fetch with the key and the browser's language; a refusal throws (see refusal).
async function api(path, { method = "GET", json, body, headers = {}, signal } = {}) {
  const init = { method, body, signal, cache: "no-store" };
  init.headers = { Authorization: `Bearer ${state.key}`, "Accept-Language": navigator.language };
  Object.assign(init.headers, headers);
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw refusal(0, { detail: `Could not reach the gateway (${error.message}).` });
  }
  if (!response.ok) throw refusal(response.status, await response.json().catch(() => null));
  return response;
}

const getJson = async (path, options) => (await api(path, options)).json();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

// An event handler that shows its failure on the status line.
function guarded(handler) {
  const show = (error) => error.name === "AbortError" || say(error.message, true);
  return (...args) => handler(...args).catch(show);
}

function formData(fields) {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) form.append(name, value);
  return form;
}

function element(tag, text = "", className = "") {
  const made = document.createElement(tag);
  made.textContent = text;
  if (className) made.className = className;
  return made;
}

function button(text, onClick) {
  const made = element("button", text);
  made.type = "button";
  made.addEventListener("click", guarded(onClick));
  return made;
}

function showImage(image, url) {
  image.closest("figure").hidden = !url;
  if (url) image.src = url;
  else image.removeAttribute("src");
}

async function refreshBalance() {
  const balance = await getJson("/v1/balance");
  const until = balance.unlimited_until ? ` until ${formatTime(balance.unlimited_until)}` : "";
  const available = balance.unlimited ? `unlimited${until}` : formatTokens(balance.available);
  $("balance").textContent = available;
  $("held").textContent = balance.held ? `(${formatTokens(balance.held)} on hold)` : "";
  $("balance-line").hidden = false;
}

async function loadHistory(more = false) {
  const page = await getJson(historyPath(more ? cursor : null));
  const list = $("history");
  if (!more) list.replaceChildren();
  for (const job of page.items) {
    const line = element("li");
    const what = `${job.capability}, ${job.image.width}×${job.image.height}`;
    line.append(element("span", formatTime(job.created_at), "muted"), element("span", what));
    line.append(element("span", jobOutcome(job)), button("Open", () => openJob(job)));
    list.append(line);
  }
  if (!list.children.length) list.append(element("li", "No jobs yet.", "muted"));
  cursor = page.next_cursor;
  $("more").hidden = !cursor;
}

const refreshAccount = guarded(async () => {
  await refreshBalance();
  await loadHistory();
});

// Refusals that say the page's capabilities are out of date: the book changed.
const STALE_OFFER = new Set(["unknown_capability", "invalid_option"]);

// Prices the photo now. The first quote of a file uploads it, so the gateway reads its
// size from the image header; a change of kind or upscale then prices that size with
// a JSON quote, without sending the file again.
async function requote(reloaded = false) {
  const { file, size } = state;
  if (!file) return;
  if (!state.key) return say("Type your API key above to see the price.", true);
  const capability = $("job-form").elements.capability.value;
  if (!capability) return; // the capabilities are on their way: they quote when they come
  const request = ++latestQuote;
  const options = chosenOptions();
  const init = { method: "POST" };
  if (size) init.json = { capability, ...size, options };
  else init.body = formData({ image: file, capability, options: JSON.stringify(options) });
  state.quote = null;
  $("pay").disabled = true;
  $("quote").classList.add("stale");
  say("Pricing…");
  let quote;
  try {
    quote = await getJson("/v1/quotes", init);
  } catch (error) {
    if (reloaded || !STALE_OFFER.has(error.code)) throw error;
    return loadCapabilities(true); // the book changed under the page: read it again
  }
  if (request !== latestQuote || file !== state.file) return; // a newer quote is on its way
  if (quote.price_book_version !== state.bookVersion && !reloaded) {
    return loadCapabilities(true); // priced by another book than the options came from
  }
  state.size = { width: quote.width, height: quote.height };
  const key = idempotencyKey(crypto.getRandomValues(new Uint8Array(16)));
  state.quote = { ...quote, idempotencyKey: key };
  showQuote(quote);
  say("");
}

function showQuote(quote) {
  $("quote-tokens").textContent = formatTokens(quote.tokens);
  $("quote-size").textContent = `${quote.capability}, ${quote.width}×${quote.height} pixels`;
  $("quote-book").textContent = quote.price_book_version;
  $("quote-lock").textContent = formatLock(quote.expires_at, Date.now());
  const rows = $("breakdown").tBodies[0];
  rows.replaceChildren();
  for (const line of quote.breakdown) {
    const row = rows.insertRow();
    row.append(element("td", line.step), element("td", line.note, "muted"));
    row.append(element("td", line.amount, "num"));
  }
  $("quote").classList.remove("stale");
  $("quote").hidden = false;
  $("pay").disabled = false;
}

async function pay() {
  const quote = state.quote;
  if (!quote) return;
  const { capability, options, quote_id } = quote; // the options as the quote read them
  const fields = { image: state.file, capability, options: JSON.stringify(options), quote_id };
  const body = formData(fields);
  const original = urls.original; // (another photo may be chosen while this one goes)
  $("pay").disabled = true;
  say("Sending the photo…");
  let job;
  try {
    const headers = { "Idempotency-Key": quote.idempotencyKey };
    job = await getJson("/v1/jobs", { method: "POST", body, headers });
  } catch (error) {
    $("pay").disabled = false; // (paid, it stays off until the next quote)
    if (error.status === 402) await showPlans();
    if (error.status !== 410) throw error;
    // The price lock ran out (the gateway's clock says so, not the browser's).
    await requote();
    return say("The price lock ran out: this is a new quote. Press Pay again to accept it.");
  }
  state.originals.set(job.id, original);
  const again = "You sent this photo before: this is that job, and nothing was charged again.";
  say(job.duplicate_of ? again : `Paid: ${formatTokens(job.tokens)} held until the job ends.`);
  refreshAccount();
  guarded(openJob)(job);
}

// Shows a job, follows its progress to the end if it has not ended, then shows how it
// ended and its result. Opening another job stops following this one.
async function openJob(job) {
  following?.abort();
  following = new AbortController();
  const { signal } = following;
  $("job").hidden = false;
  $("job-id").textContent = job.id;
  $("progress").value = job.state === "succeeded" ? 1 : 0;
  $("job-state").textContent = jobOutcome(job);
  $("engine").textContent = "";
  $("download").hidden = true;
  showImage($("before"), state.originals.get(job.id));
  showImage($("after"), "");
  $("job").scrollIntoView({ behavior: "smooth", block: "nearest" });
  if (!ENDS.has(job.state)) {
    await followEvents(job.id, signal);
    job = await getJson(`/v1/jobs/${job.id}`, { signal });
    $("job-state").textContent = jobOutcome(job);
    const lost = "Lost this job's progress (it goes on): open it from the history later.";
    say(ENDS.has(job.state) ? "" : lost, !ENDS.has(job.state));
    refreshAccount();
  }
  if (job.state === "succeeded") $("progress").value = 1;
  if (job.result) await showResult(job, signal);
}

// EventSource cannot send the key, so the stream is read with fetch. A dropped stream
// is resumed after the last event had (Last-Event-ID), with a growing pause; after
// STREAM_RETRIES drops in a row the job is read as it is.
async function followEvents(jobId, signal) {
  let lastEventId = "";
  for (let drops = 0; drops < STREAM_RETRIES; drops += 1) {
    const parser = sseParser(lastEventId);
    try {
      const headers = lastEventId ? { "Last-Event-ID": lastEventId } : {};
      const response = await api(`/v1/jobs/${jobId}/events`, { headers, signal });
      if (response.status === 204) return; // its end was the last event had
      // Read and decoded here, not through a TextDecoderStream: a piped stream that
      // fails drops what it had not passed on yet, and the events with it.
      const [reader, decoder] = [response.body.getReader(), new TextDecoder()];
      for (let read = await reader.read(); !read.done; read = await reader.read()) {
        for (const event of parser.push(decoder.decode(read.value, { stream: true }))) {
          if (ENDS.has(event.event)) return;
          const { fraction, text } = describeEvent(event.event, JSON.parse(event.data));
          if (fraction !== null) $("progress").value = fraction;
          $("job-state").textContent = text;
          drops = 0;
        }
      }
    } catch (error) {
      if (error.name === "AbortError" || (error.status >= 400 && error.status < 500)) throw error;
    }
    lastEventId = parser.lastEventId;
    $("job-state").textContent = "The progress stream dropped: reconnecting…";
    await sleep(500 * 2 ** drops);
  }
}

async function showResult(job, signal) {
  const blob = await (await api(`/v1/jobs/${job.id}/result`, { signal })).blob();
  URL.revokeObjectURL(urls.result);
  urls.result = URL.createObjectURL(blob);
  showImage($("after"), urls.result);
  const engine = job.result.engine;
  $("engine").textContent = engine === "preview" ? "(preview engine, not DDColor)" : `(${engine})`;
  const link = $("download");
  link.href = urls.result;
  link.download = `${job.id}.${blob.type === "image/jpeg" ? "jpg" : "png"}`;
  link.hidden = false;
}

async function showPlans() {
  const plans = await getJson("/v1/plans");
  const list = $("plan-list");
  list.replaceChildren();
  for (const plan of plans) {
    const unlimited = plan.kind === "unlimited";
    const what = unlimited ? `unlimited for a ${plan.period}` : formatTokens(plan.tokens);
    const line = element("li");
    line.append(element("strong", plan.title), element("span", what), element("span", plan.price));
    line.append(button("Order", () => placeOrder(plan.name)));
    list.append(line);
  }
  $("plans").hidden = false;
  $("plans").scrollIntoView({ behavior: "smooth", block: "nearest" });
}

// One order at a time: the plan buttons wait while one is being placed (a double
// click placed two), and only the newest order is followed.
async function placeOrder(plan) {
  const buttons = document.querySelectorAll("#plan-list button");
  if (state.ordering) return;
  state.ordering = true;
  buttons.forEach((b) => (b.disabled = true));
  try {
    clearTimeout(orderTimer);
    // One key per plan until an order is shown: a click again after a lost answer is
    // the same order, not a second one.
    if (state.orderKey?.plan !== plan) {
      state.orderKey = { plan, key: idempotencyKey(crypto.getRandomValues(new Uint8Array(16))) };
    }
    const headers = { "Idempotency-Key": state.orderKey.key };
    const order = await getJson("/v1/orders", { method: "POST", json: { plan }, headers });
    state.orderKey = null;
    state.orderId = order.id;
    showOrder(order);
  } finally {
    state.ordering = false;
    buttons.forEach((b) => (b.disabled = false));
  }
}

// Shows the order as the API has it; a pending one is asked again until it is not.
function showOrder(order) {
  if (order.id !== state.orderId) return; // an answer about an order replaced since
  const shown = { ...order, amount: `${order.amount} ${order.currency}` };
  const cells = document.querySelectorAll("[data-order]");
  for (const cell of cells) cell.textContent = shown[cell.dataset.order];
  $("order").hidden = false;
  if (order.state === "pending") {
    say(`Order ${order.id} waits for its payment to be confirmed; this page checks again.`);
    const poll = async () => showOrder(await getJson(`/v1/orders/${order.id}`));
    orderTimer = setTimeout(guarded(poll), ORDER_POLL_MS);
  } else if (order.state === "paid") {
    say(`Order ${order.id} is paid: the ${order.plan} plan is yours.`);
    refreshAccount();
  } else {
    say(`Order ${order.id} is ${order.state}.`, true);
  }
}

// The capabilities this account may ask for, from the price book pricing it: a
// capability added by data (a workflow and a price-book entry) shows up here.
async function loadCapabilities(reloaded = false) {
  const offered = await getJson("/v1/capabilities");
  const served = offered.capabilities.filter((c) => c.served);
  state.bookVersion = offered.price_book_version;
  state.capabilities = new Map(served.map((c) => [c.name, c]));
  const select = $("job-form").elements.capability;
  const previous = select.value;
  select.replaceChildren();
  for (const cap of state.capabilities.values()) {
    const option = element("option", cap.description || cap.name);
    option.value = cap.name;
    select.append(option);
  }
  if (state.capabilities.has(previous)) select.value = previous;
  showOptions();
  if (!served.length) {
    return say("Nothing can be ordered now: no service of this account is running.", true);
  }
  await requote(reloaded);
}

// The chosen capability's options as controls: at the values they had (when the
// capabilities are read again, or another kind chosen, the user's choices stay, where
// the option still exists), else at their defaults.
function showOptions() {
  const cap = state.capabilities.get($("job-form").elements.capability.value);
  const before = new Map(
    [...$("options").querySelectorAll("[data-option]")].map((input) => [
      input.dataset.option,
      input.type === "checkbox" ? input.checked : input.value,
    ]),
  );
  const controls = [];
  for (const spec of cap ? cap.options : []) {
    const drawn = optionControl(spec);
    const label = element("label", drawn.label);
    let input;
    if (drawn.kind === "select") {
      input = element("select");
      for (const value of drawn.values) {
        const option = element("option", value);
        option.value = value;
        input.append(option);
      }
    } else {
      input = element("input");
      input.type = drawn.kind;
      if (drawn.kind === "number") {
        Object.assign(input, { min: drawn.min ?? "", max: drawn.max ?? "", step: drawn.step });
      }
    }
    const kept = before.get(spec.name);
    const keep = kept !== undefined && (drawn.kind !== "select" || drawn.values.includes(kept));
    if (drawn.kind === "checkbox") input.checked = keep ? kept : drawn.value;
    else input.value = keep ? kept : drawn.value;
    input.dataset.option = spec.name;
    label.append(input);
    controls.push(label);
  }
  $("options").replaceChildren(...controls);
}

function chosenOptions() {
  const cap = state.capabilities.get($("job-form").elements.capability.value);
  const options = {};
  for (const spec of cap ? cap.options : []) {
    const input = $("options").querySelector(`[data-option="${CSS.escape(spec.name)}"]`);
    options[spec.name] = optionValue(spec, input.type === "checkbox" ? input.checked : input.value);
  }
  return options;
}

function choose(file) {
  if (!file) return;
  Object.assign(state, { file, size: null, quote: null });
  if (urls.original && ![...state.originals.values()].includes(urls.original)) {
    URL.revokeObjectURL(urls.original); // a photo chosen and never paid for
  }
  urls.original = URL.createObjectURL(file); // kept: the job it becomes shows it
  $("preview").src = urls.original;
  $("preview").hidden = false;
  guarded(requote)();
}

function useKey(key) {
  state.key = key;
  sessionStorage.setItem(KEY_STORAGE, key);
  refreshAccount();
  guarded(loadCapabilities)();
}

function start() {
  const [keyForm, jobForm, drop] = ["key-form", "job-form", "drop"].map($);
  keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    useKey(keyForm.elements.key.value.trim());
  });
  jobForm.addEventListener("change", (event) => {
    if (event.target.name === "image") return choose(event.target.files[0]);
    if (event.target.name === "capability") showOptions();
    guarded(requote)();
  });
  for (const type of ["dragover", "dragleave", "drop"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.toggle("over", type === "dragover");
      if (type !== "drop" || !event.dataTransfer.files.length) return;
      jobForm.elements.image.files = event.dataTransfer.files; // the input names it too
      choose(jobForm.elements.image.files[0]);
    });
  }
  $("pay").addEventListener("click", guarded(pay));
  $("more").addEventListener("click", guarded(() => loadHistory(true)));
  $("buy").addEventListener("click", guarded(showPlans));
  const saved = sessionStorage.getItem(KEY_STORAGE);
  if (saved) {
    keyForm.elements.key.value = saved;
    useKey(saved);
  }
}

if (typeof module === "object" && module.exports) {
  module.exports = {
    sseParser, idempotencyKey, formatTokens, formatTime, formatLock, describeEvent, jobOutcome,
    historyPath, problemMessage, optionControl, optionValue,
  };
} else {
  start();
}
