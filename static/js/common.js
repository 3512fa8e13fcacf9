// What every page shares: calling the JSON API, keeping state in the URL, the status
// panel (loading / empty / error), the int8 trace decoding and the colour scales.

/**
 * POST `body` (or GET when absent) to the API; throws an Error carrying the server's `detail`.
 *
 * What every page does with a failed or refused request, in one place:
 * - `view`, the element (or list of them) drawing this request's answer: on success it is marked
 *   current; on a failure, when it still shows an earlier answer, it is dimmed with a line naming
 *   the settings it shows, and the address keeps those settings (writeQuery writes nothing while
 *   it is stale). Requests sharing a signal are one question: once one fails, another's success
 *   does not mark the view current.
 * - `status`, the page's status panel: a 503 "busy" answer with a short Retry-After is tried
 *   again once by itself after that many seconds, counting down there; the request's `signal`
 *   (a newer request superseding it) cancels the wait.
 * A 503's message is in plain words; the server's own (which names its setting, for the
 * operator) is the Error's `operatorDetail`, which setStatus shows folded away.
 */
export async function api(path, body, { signal, status = null, view = null } = {}) {
  try {
    let answer = await ask(path, body, signal);
    const wait = answer.busy ? retryAfterSeconds(answer.response) : null;
    if (wait !== null && status) {
      await countDown(status, wait, signal);
      answer = await ask(path, body, signal);
      if (answer.busy) answer.retried = true;
    }
    if (!answer.response.ok) throw refusal(answer.response, answer.data, { retried: answer.retried });
    if (view) markCurrent([view].flat(), signal);
    return answer.data;
  } catch (e) {
    if (view && !isAbort(e)) markStale([view].flat(), signal);
    throw e;
  }
}

async function ask(path, body, signal) {
  const init = body === undefined ? { signal } : {
    method: "POST", signal,
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new Error("The server did not answer. Is `rnnscope serve` still running?");
  }
  // A body cut short by the request's own abort is an abort too, not an empty answer: the
  // caller that superseded it must not draw null (the Learn page did, stepping fast).
  const data = await response.json().catch((e) => {
    if (isAbort(e)) throw e;
    if (signal?.aborted) throw new DOMException("The request was superseded", "AbortError");
    return null;
  });
  return { response, data, busy: response.status === 503 };
}

// Longer waits are not worth holding a page for: the message asks to try again later instead.
const MAX_AUTO_RETRY_SECONDS = 30;

/** Retry-After's seconds when they are few enough to wait for by ourselves, else null. */
function retryAfterSeconds(response) {
  const seconds = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
  return seconds >= 0 && seconds <= MAX_AUTO_RETRY_SECONDS ? Math.max(1, seconds) : null;
}

// The waits counting down in each status panel. Several requests refused at once (/compare asks
// five kinds for each model) share one panel: it counts down the longest of their waits, once,
// and gets its earlier message back when the last of them is over.
const countdowns = new WeakMap();          // status -> { waits: Set<{until}>, kind, earlier, timer }

/** Wait `seconds` before trying again, counting down in `status`; rejects when `signal` aborts. */
function countDown(status, seconds, signal) {
  let board = countdowns.get(status);
  if (!board) {
    board = { waits: new Set(), kind: status.dataset.state ?? "", earlier: status.querySelector("p")?.textContent ?? "",
      timer: null };
    countdowns.set(status, board);
  }
  return new Promise((resolve, reject) => {
    const wait = { until: Date.now() + seconds * 1000, timer: null };
    const leave = (restore) => {
      clearTimeout(wait.timer);
      signal?.removeEventListener("abort", stop);
      board.waits.delete(wait);
      if (board.waits.size) return showCountdown(status, board);
      clearTimeout(board.timer);
      countdowns.delete(status);
      // Superseded, the panel is the newer request's: its earlier message is not put back.
      if (restore) setStatus(status, board.kind, board.earlier);
    };
    const stop = () => {
      leave(false);
      reject(new DOMException("The request was superseded", "AbortError"));
    };
    if (signal?.aborted) return stop();
    signal?.addEventListener("abort", stop, { once: true });
    wait.timer = setTimeout(() => { leave(true); resolve(); }, seconds * 1000);
    board.waits.add(wait);
    showCountdown(status, board);
  });
}

/** "Trying again in N s", N the longest wait on the panel, shown again as each second passes. */
function showCountdown(status, board) {
  clearTimeout(board.timer);
  const left = Math.max(...[...board.waits].map((w) => w.until)) - Date.now();
  const seconds = Math.max(1, Math.ceil(left / 1000));
  setStatus(status, "loading", `The server is busy with other people’s requests: trying again in ${seconds} s…`);
  board.timer = setTimeout(() => showCountdown(status, board), Math.max(50, left - (seconds - 1) * 1000));
}

/**
 * The Error for a refused request (api's, and changes.js's for the Train page): the server's
 * detail (or `detail`, a page's own reading of it), except a 503's or a 429's, said plainly; their
 * detail, which names a setting for the server's operator, is the Error's `operatorDetail`.
 * `retried`: asked twice already.
 */
export function refusal(response, data, { retried = false, detail = formatDetail(data?.detail) } = {}) {
  detail ||= `${response.status} ${response.statusText}`;
  const plain = response.status === 503 ? busyMessage(detail, response, retried)
    : response.status === 429 ? queueFullMessage(detail, response) : null;
  const error = new Error(plain ?? detail);
  error.status = response.status;
  error.detail = data?.detail;         // for a page that acts on a 422's type and ctx
  if (plain) error.operatorDetail = detail;
  return error;
}

/** When to try again, from Retry-After: "in 5 s", "in about 2 min", or "in a little while". */
function retryWhen(response) {
  const seconds = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
  if (!(seconds >= 1)) return "in a little while";
  return seconds <= 90 ? `in ${seconds} s` : `in about ${Math.ceil(seconds / 60)} min`;
}

function busyMessage(detail, response, retried) {
  if (!/busy|are open/.test(detail)) return "The server cannot answer this right now (it is restarting part of "
    + "itself). Try again in a few seconds.";
  // Asked twice over a short wait: the wait said is no promise any more.
  const when = retried && retryAfterSeconds(response) !== null ? "in a little while" : retryWhen(response);
  return `The server is busy with other people’s requests${retried ? " (asked twice)" : ""}. Try again ${when}.`;
}

/** A 429 comes from /train's queue (app/training/router.py): the person's own share of it is
 * full, or everyone's; either way not retried by itself, since it starts a run. */
function queueFullMessage(detail, response) {
  const fewer = /max_steps/.test(detail) ? ", or ask for fewer steps" : "";
  if (/\byour\b/i.test(detail)) {
    return "You already have as much training waiting on this server as it allows one person: wait for one of "
      + `your runs to finish or cancel one${fewer}, then try again.`;
  }
  return `The server’s training queue is full with other people’s runs. Try again ${retryWhen(response)}${fewer}.`;
}

// ---- Views that keep an earlier answer after a failure -------------------------------------

const staleViews = new Set();

const failedSignals = new WeakMap();      // view -> the signal of the request that failed it

function markCurrent(views, signal) {
  for (const view of views) {
    if (signal && failedSignals.get(view) === signal) continue;
    view.dataset.drawn = "1";
    view.classList.remove("stale");
    view.querySelector(":scope > .stale-note")?.remove();
    staleViews.delete(view);
  }
}

/** `views` now show the answer to the settings above, drawn from several requests' answers once
 * all came (api marks a view current when its own answer comes: pass it only views already
 * showing an earlier answer, or an empty one would be said to show the previous settings). */
export function markDrawn(views) {
  markCurrent([views].flat(), null);
}

/** `views` show nothing any more (a page took its chart away for a message): nothing left to
 * mistake for the settings above, so they no longer hold the address either. */
export function clearView(views) {
  for (const view of [views].flat()) {
    markCurrent([view], null);
    delete view.dataset.drawn;
    failedSignals.delete(view);
  }
}

/** The settings in the address, as "model lstm · layer 0 · text “First Citizen…”". */
function describeQuery() {
  const parts = [...queryParams().entries()].map(([k, v]) => {
    const shown = v.length > 24 ? `“${v.slice(0, 20).replace(/\s+/g, " ")}…” (${[...v].length.toLocaleString()} characters)` : v;
    return `${k} ${shown}`;
  });
  return parts.length ? parts.join(" · ") : "the page’s defaults";
}

/** Dim `views` (those showing an earlier answer) under one line, in the first, naming its settings. */
function markStale(views, signal) {
  const drawn = views.filter((view) => view.dataset.drawn);   // nothing drawn yet: nothing to mistake
  drawn.forEach((view, k) => {
    if (signal) failedSignals.set(view, signal);
    view.classList.add("stale");
    staleViews.add(view);
    if (k > 0) return;
    let note = view.querySelector(":scope > .stale-note");
    if (!note) {
      note = Object.assign(document.createElement("p"), { className: "stale-note" });
      const head = view.querySelector(":scope > .card-head");
      if (head) head.after(note); else view.prepend(note);
    }
    note.textContent = `${drawn.length > 1 ? "These still show" : "This still shows"} the previous settings `
      + `(${describeQuery()}), not the ones above: the request for those failed.`;
  });
}

/** FastAPI's `detail` is a string, or for validation errors a list of {loc, msg}. */
export function formatDetail(detail) {
  if (!detail) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => {
      const where = (d.loc || []).filter((p) => p !== "body").join(".");
      return where ? `${where}: ${d.msg}` : d.msg;
    }).join("; ");
  }
  return JSON.stringify(detail);
}

/** Runs only the latest of overlapping requests: starting a new one aborts the previous. */
export function latest() {
  let controller = null;
  return () => {
    controller?.abort();
    controller = new AbortController();
    return controller.signal;
  };
}

export const isAbort = (e) => e?.name === "AbortError";

// ---- URL state ------------------------------------------------------------------------

export function queryParams() {
  return new URLSearchParams(window.location.search);
}

// uvicorn (h11) refuses request heads over 16 kB, so a link must stay well under that.
const MAX_QUERY_CHARS = 8000;

/**
 * Replace the query string with `state` (empty values dropped), so the view is a link.
 * A value too long for a link (a pasted book) is left out, and the page says so.
 */
export function writeQuery(state) {
  // A view marked stale shows the settings in the address: they stay until it is redrawn. One
  // on screen only: a chapter of /learn put away does not hold the address of the one shown.
  if ([...staleViews].some((view) => view.isConnected && (view.checkVisibility?.() ?? true))) return;
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(state)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const dropped = [];
  while (q.toString().length > MAX_QUERY_CHARS) {
    const [longest] = [...q.entries()].sort((a, b) => b[1].length - a[1].length)[0];
    q.delete(longest);
    dropped.push(longest);
  }
  const note = document.getElementById("link-note");
  if (note) {
    note.hidden = dropped.length === 0;
    note.textContent = dropped.length ? `The ${dropped.join(" and ")} is too long to keep in this page’s address, `
      + "so a copied link opens without it." : "";
  }
  const url = `${window.location.pathname}${q.toString() ? "?" + q : ""}`;
  if (url !== window.location.pathname + window.location.search) window.history.replaceState(null, "", url);
}

/** An integer from a string, or `fallback` when it is not one. */
export function toInt(s, fallback) {
  const n = Number.parseInt(s, 10);
  return Number.isFinite(n) ? n : fallback;
}

export function toFloat(s, fallback) {
  const n = Number.parseFloat(s);
  return Number.isFinite(n) ? n : fallback;
}

// ---- Status panels --------------------------------------------------------------------

/**
 * Show one state in a `.status` element: "loading", "empty", "error" or "" (hidden).
 * `html` is trusted markup for links in empty states; `message` is always set as text. An
 * Error from api() may be given as the message: its operator's detail (a refusal's setting)
 * is then folded away under it.
 */
export function setStatus(el, kind, message = "", { html = "" } = {}) {
  const operatorDetail = message?.operatorDetail;
  if (message instanceof Error) message = message.message;
  el.dataset.state = kind;
  el.hidden = !kind;
  el.replaceChildren();
  if (!kind) return;
  el.setAttribute("role", kind === "error" ? "alert" : "status");
  if (kind === "loading") el.append(Object.assign(document.createElement("span"), { className: "spinner" }));
  const p = document.createElement("p");
  if (kind === "error") p.append(Object.assign(document.createElement("strong"), { textContent: "Error: " }));
  p.append(message);
  el.append(p);
  if (operatorDetail) {
    const details = Object.assign(document.createElement("details"), { className: "operator-detail small" });
    details.append(Object.assign(document.createElement("summary"), { textContent: "Details for the server’s operator" }),
      Object.assign(document.createElement("code"), { textContent: operatorDetail }));
    p.title = operatorDetail;
    el.append(details);
  }
  if (html) {
    const extra = document.createElement("div");
    extra.innerHTML = html;
    el.append(extra);
  }
}

// ---- Models -----------------------------------------------------------------------------

export const CELL_COLOURS = { rnn: "#e8590c", gru: "#2f9e44", lstm: "#1c6dd0" };
const EXTRA_COLOURS = ["#7048e8", "#d6336c", "#0c8599", "#f08c00", "#5c940d", "#862e9c", "#a61e4d", "#364fc7"];

/**
 * The one colour of each model, on every page: chips, lines, table swatches and cards.
 * The first model of each cell type (the bundled ones come first) has its cell's colour;
 * every other model the next unused colour, so the colours depend on the list of models
 * only, never on which are ticked. Past the palette, hues step by the golden angle.
 */
export function modelColours(models) {
  const out = {}, cellsSeen = new Set();
  let extra = 0;
  for (const m of models) {
    if (CELL_COLOURS[m.cell] && !cellsSeen.has(m.cell)) {
      out[m.id] = CELL_COLOURS[m.cell];
    } else {
      const k = extra++;
      out[m.id] = k < EXTRA_COLOURS.length ? EXTRA_COLOURS[k] : `hsl(${Math.round((k * 137.508) % 360)}, 65%, 42%)`;
    }
    cellsSeen.add(m.cell);
  }
  return out;
}

/** The bundled rnn, gru and lstm when at least two are present, else the first model of each cell type. */
export function defaultModels(models) {
  const bundled = ["rnn", "gru", "lstm"].filter((id) => models.some((m) => m.id === id));
  if (bundled.length >= 2) return bundled;
  const byCell = new Map();
  for (const m of models) if (!byCell.has(m.cell)) byCell.set(m.cell, m.id);
  return [...byCell.values()];
}

/** Fill a <select> with the models, choosing `wanted` if present, else the first. */
export function fillModelSelect(select, models, wanted) {
  select.replaceChildren(...models.map((m) => new Option(`${m.name} (${m.id})`, m.id)));
  const ids = models.map((m) => m.id);
  select.value = ids.includes(wanted) ? wanted : (ids.includes("lstm") ? "lstm" : ids[0]);
  select.disabled = models.length === 0;
  return select.value;
}

/**
 * A number written for reading (a table, a note, a tooltip): toFixed(`digits`), toPrecision(`precision`)
 * or toExponential(`exponent`), or as it is; a negative value or exponent with the minus sign (U+2212),
 * as type sets it. Values sent to the API, downloads and inputs keep JavaScript's hyphen-minus.
 */
export function formatNumber(v, { digits, precision, exponent } = {}) {
  const text = exponent !== undefined ? v.toExponential(exponent) : precision !== undefined ? v.toPrecision(precision)
    : digits !== undefined ? v.toFixed(digits) : String(v);
  return text.replaceAll("-", "\u2212");
}

export function formatCount(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return String(n);
}

// ---- Traces -----------------------------------------------------------------------------

/**
 * Decode one quantity of a trace. int8: value = q * scale, q signed int8, little-endian,
 * row-major (T, H). Returns {T, H, at(t, j), row(t), column(j)}.
 */
export function decodeQuantity(encoded) {
  const [T, H] = encoded.shape;
  let values;
  if (encoded.dtype === "int8") {
    const q = new Int8Array(base64Bytes(encoded.data).buffer);
    values = new Float32Array(q.length);
    for (let i = 0; i < q.length; i++) values[i] = q[i] * encoded.scale;
  } else if (encoded.dtype === "float16" || encoded.dtype === "float32") {
    const bytes = base64Bytes(encoded.data);
    values = encoded.dtype === "float32" ? new Float32Array(bytes.buffer) : halfToFloat(bytes);
    if (encoded.scale && encoded.scale !== 1) values = values.map((v) => v * encoded.scale);
  } else {
    throw new Error(`unknown trace encoding ${encoded.dtype}`);
  }
  return {
    T, H, values,
    at: (t, j) => values[t * H + j],
    column: (j) => Array.from({ length: T }, (_, t) => values[t * H + j]),
  };
}

function base64Bytes(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

function halfToFloat(bytes) {
  const u16 = new Uint16Array(bytes.buffer);
  const out = new Float32Array(u16.length);
  for (let i = 0; i < u16.length; i++) {
    const h = u16[i], s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
    out[i] = e === 0 ? s * 2 ** -14 * (f / 1024) : e === 31 ? (f ? NaN : s * Infinity) : s * 2 ** (e - 15) * (1 + f / 1024);
  }
  return out;
}

// ---- Colour scales ----------------------------------------------------------------------
// Stops are ColorBrewer's RdBu (diverging) and Greens (sequential); colours between stops
// are linear in RGB and rounded, so a test can recompute any cell's colour exactly.

export const DIVERGING = [
  [-1, [33, 102, 172]], [-0.5, [146, 197, 222]], [0, [247, 247, 247]],
  [0.5, [244, 165, 130]], [1, [178, 24, 43]],
];
export const SEQUENTIAL = [
  [0, [247, 252, 245]], [0.25, [199, 233, 192]], [0.5, [116, 196, 118]],
  [0.75, [35, 139, 69]], [1, [0, 68, 27]],
];
// Surprise for sampled characters: p = 1 is paper-white, p -> 0 is deep orange.
export const SURPRISE = [
  [0, [179, 48, 0]], [0.1, [241, 105, 19]], [0.3, [253, 174, 107]],
  [0.6, [254, 230, 206]], [1, [255, 255, 255]],
];

// Quantities in [-1, 1] (tanh outputs; c is unbounded and clamped) vs gates in [0, 1].
const TANH_QUANTITIES = new Set(["h", "c", "g", "n"]);
export const isTanhQuantity = (q) => TANH_QUANTITIES.has(q);
export const scaleFor = (q) => (isTanhQuantity(q) ? DIVERGING : SEQUENTIAL);

/** [r, g, b] for value v on a stop list, clamped to its ends. */
export function colourAt(stops, v) {
  const lo = stops[0][0], hi = stops[stops.length - 1][0];
  const x = Number.isFinite(v) ? Math.min(hi, Math.max(lo, v)) : lo;
  let k = 1;
  while (k < stops.length - 1 && x > stops[k][0]) k++;
  const [x0, c0] = stops[k - 1], [x1, c1] = stops[k];
  const u = (x - x0) / (x1 - x0);
  return c0.map((c, i) => Math.round(c + u * (c1[i] - c)));
}

export const rgb = ([r, g, b]) => `rgb(${r}, ${g}, ${b})`;

/** Ink that stays readable on background `c` (WCAG relative luminance). */
export function inkOn([r, g, b]) {
  const lin = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b) > 0.28 ? "#1d2330" : "#ffffff";
}

/** The same stops as a Plotly colorscale over [zmin, zmax]. */
export function plotlyScale(stops) {
  const lo = stops[0][0], hi = stops[stops.length - 1][0];
  return stops.map(([x, c]) => [(x - lo) / (hi - lo), rgb(c)]);
}

/** A CSS linear-gradient for a legend bar. */
export function cssGradient(stops) {
  const lo = stops[0][0], hi = stops[stops.length - 1][0];
  return `linear-gradient(to right, ${stops.map(([x, c]) => `${rgb(c)} ${((x - lo) / (hi - lo)) * 100}%`).join(", ")})`;
}

// ---- Characters -------------------------------------------------------------------------

// Characters that draw nothing (or look like a space), each with the name it shows in labels.
// Control characters go by their ASCII abbreviations (form feed: FF), not by Unicode's control
// pictures (␌), which common fonts (DejaVu among them) lack and draw as an empty box.
const NAMED_CHARS = { " ": "␣", "\n": "↵", "\t": "⇥", "\x7f": "DEL" };
const C0_NAMES = ["NUL", "SOH", "STX", "ETX", "EOT", "ENQ", "ACK", "BEL", "BS", "HT", "LF", "VT", "FF", "CR", "SO", "SI",
  "DLE", "DC1", "DC2", "DC3", "DC4", "NAK", "SYN", "ETB", "CAN", "EM", "SUB", "ESC", "FS", "GS", "RS", "US"];
const INVISIBLE = /^[\p{Cc}\p{Cf}\p{Z}\p{Co}\p{Cn}]$/u;

/** How a character reads in labels: space, newline and tab made visible, the other control
 * characters by their ASCII names (form feed FF), and anything else that draws nothing or
 * passes for a space (no-break space, zero-width joiner…) by its code point, U+00A0. */
export function showChar(c) {
  if (NAMED_CHARS[c]) return NAMED_CHARS[c];
  const code = c.codePointAt(0);
  if (code < 0x20) return C0_NAMES[code];
  if (INVISIBLE.test(c)) return `U+${code.toString(16).toUpperCase().padStart(4, "0")}`;
  return c;
}

/**
 * Render `text` into `container` as one <span class="ch" data-i> per character; a newline
 * is a visible ↵ followed by a line break, so every position stays hoverable. `removed`,
 * when given, holds per position the characters taken out just before it (its last entry:
 * after the end); they are shown struck through, between the characters, never as `.ch`.
 */
export function renderChars(container, chars, removed = null) {
  const frag = document.createDocumentFragment();
  const mark = (gone) => {
    if (!gone) return;
    const s = document.createElement("del");
    s.className = "dropped";
    s.textContent = [...gone].map(showChar).join("");
    s.title = `removed: ${[...gone].map((c) => `‘${showChar(c)}’`).join(" ")}`;
    frag.append(s);
  };
  chars.forEach((c, i) => {
    mark(removed?.[i]);
    const span = document.createElement("span");
    span.className = c === "\n" ? "ch nl" : c === " " ? "ch sp" : "ch";
    span.dataset.i = i;
    span.textContent = c === "\n" ? "↵" : c;
    frag.append(span);
    if (c === "\n") frag.append(document.createElement("br"));
  });
  mark(removed?.[chars.length]);
  container.replaceChildren(frag);
  return Array.from(container.querySelectorAll(".ch"));
}

/** plotly.js, once it has run: base.html loads it with defer (already run when a page's module
 * starts) or, on pages whose first chart waits on requests, preloads it ("lazy"): the first
 * call here runs it, so such a page calls this once its first requests are out, and awaits
 * it before it draws. */
let plotlyLoaded = null;
export function plotlyReady() {
  plotlyLoaded ??= globalThis.Plotly ? Promise.resolve(globalThis.Plotly) : new Promise((resolve, reject) => {
    let script = document.getElementById("plotly-js");
    if (!script) {
      const preloaded = document.getElementById("plotly-js-preload");
      script = Object.assign(document.createElement("script"), { id: "plotly-js", src: preloaded.href });
      document.head.append(script);
    }
    script.addEventListener("load", () => resolve(globalThis.Plotly));
    script.addEventListener("error", () => reject(new Error("plotly.js did not load: reload the page")));
  });
  return plotlyLoaded;
}

/** Standard Plotly options: responsive, no logo, only the useful mode-bar buttons. */
export const PLOT_CONFIG = {
  responsive: true, displaylogo: false,
  modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines"],
  toImageButtonOptions: { format: "png", scale: 2 },
};

export const PLOT_FONT = { family: "system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', sans-serif", size: 13, color: "#1d2330" };

/** The smallest and largest of `values` a log axis draws (positive and finite), and the
 * decades between them; zero decades when fewer than two distinct values remain. */
function logRange(values) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) {
    if (v > 0 && Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  }
  return { lo, hi, decades: hi > lo ? Math.log10(hi / lo) : 0 };
}

const SUPERSCRIPT_DIGITS = "⁰¹²³⁴⁵⁶⁷⁸⁹";
/** An integer in superscript digits: `10${superscript(-4)}` is "10⁻⁴". */
export const superscript = (n) => (n < 0 ? "⁻" : "") + [...String(Math.abs(n))].map((d) => SUPERSCRIPT_DIGITS[d]).join("");

/** A value on a log axis as its label: a decimal from 0.01 to 9,999 (0.5, 2, 1.4), else a power
 * of ten with its multiple (2×10⁻⁴, 10⁻⁴), as exponentformat "power" writes the powers. */
export function logTickLabel(v) {
  const e = Math.floor(Math.log10(v) + 1e-9);
  if (e >= -2 && e <= 3) return String(Number(v.toPrecision(3)));
  const m = Number((v / 10 ** e).toPrecision(3));
  return m === 1 ? `10${superscript(e)}` : `${m}×10${superscript(e)}`;
}

/** Ticks for a range too short for a tick at each power of ten: 1, 2 and 5 times each power,
 * else 1 to 9 times, else 1 and 3 times (two decades in a short panel), else (within a decade)
 * even steps; the first set that puts at least three between `lo` and `hi`, and at most
 * `maxLabels` + 1. */
function shortLogTicks(lo, hi, maxLabels) {
  const inside = (vs) => vs.filter((v) => v >= lo && v <= hi);
  const multiples = (ms) => {
    const out = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      for (const m of ms) out.push(Number((m * 10 ** e).toPrecision(3)));
    }
    return inside(out);
  };
  for (const ms of [[1, 2, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 3]]) {
    const ticks = multiples(ms);
    if (ticks.length >= 3 && ticks.length <= maxLabels + 1) return ticks;
  }
  // Even steps of 1, 2 or 5 times a power of ten, about four across the range.
  const rough = (hi - lo) / 4, power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough * 0.7);
  const ticks = [];
  for (let k = Math.ceil(lo / step); k * step <= hi; k++) ticks.push(Number((k * step).toPrecision(4)));
  return ticks;
}

/**
 * A Plotly log axis over `values` that labels enough ticks to read any value off it, whatever
 * its range (a fixed `dtick: 1` labelled a single tick on a range within a decade, and one or
 * two on the short ranges a short text gives). While three labels a decade fit (`maxLabels`
 * for the panel's height): labelled ticks between the powers of ten, written out in full
 * (Plotly's own write a lone "2" for 2×10⁻⁴); beyond that, powers of ten, every `dtick`-th
 * one, with faint unlabelled lines between them.
 */
export function logAxis(values, { maxLabels = 8 } = {}) {
  const { lo, hi, decades } = logRange(values);
  const axis = { type: "log", exponentformat: "power" };
  if (decades < 0.01) return axis;              // one value: Plotly's own ticks around it
  // Under two decades the powers of ten alone can label just two ticks (0.1 and 1 on a panel
  // from 0.1 to 4), however few labels fit: labels between them then.
  if (decades * 3 <= maxLabels || decades < 2) {
    const tickvals = shortLogTicks(lo, hi, maxLabels);
    return { ...axis, tickmode: "array", tickvals, ticktext: tickvals.map(logTickLabel) };
  }
  const dtick = Math.ceil(decades / maxLabels);
  return { ...axis, dtick, minor: { showgrid: true, dtick: dtick === 1 ? "D1" : 1, gridcolor: "#f4f5f8" } };
}

// ---- Passages ---------------------------------------------------------------------------

/** A model's passages from its own corpus (GET /api/models/{id}/passages), and the name of
 * that corpus when the server has it (null: the views that read a validation text must send
 * the text on screen instead). No passages when they cannot be had: the text box still works.
 * An aborted request stays aborted. */
export async function modelTexts(model) {
  if (!model) return { passages: [], corpus: null };
  try {
    const { passages, corpus } = await api(`/api/models/${encodeURIComponent(model)}/passages`);
    return { passages, corpus: corpus ?? null };
  } catch (e) {
    if (isAbort(e)) throw e;
    return { passages: [], corpus: null };
  }
}

export async function modelPassages(model) {
  return (await modelTexts(model)).passages;
}

/** The passage menu: a prompt, then one option per passage carrying its text (and its part). */
export function fillPassageMenu(select, passages) {
  select.replaceChildren(new Option("Pick a passage…", ""), ...passages.map((p, k) => {
    const o = new Option(p.title, String(k));
    o.dataset.text = p.text;
    if (p.part) o.dataset.part = p.part;
    return o;
  }));
}

/** Point the passage menu at the passage the text box holds, or at its prompt when it holds
 * none (typed or edited text), so the menu never names a text that is not the one read. */
export function matchPassage(select, text) {
  select.value = [...select.options].find((o) => o.value && o.dataset.text === text)?.value ?? "";
}

// ---- The models a page offers ---------------------------------------------------------------------

// Whether the model menus list everyone's models, not only yours and the bundled ones: kept
// in the browser, as every page rewrites its own query string.
const EVERYONE_KEY = "rnnscope.models.everyone";

export function everyonesModels() {
  try { return window.localStorage.getItem(EVERYONE_KEY) === "1"; } catch { return false; }
}

/** An "everyone's models" checkbox after the menu; changing it reloads the page's menus. */
export function everyoneToggle(menu) {
  if (!menu || menu.parentElement?.querySelector(".everyone-toggle")) return;
  const label = Object.assign(document.createElement("label"), { className: "everyone-toggle small",
    title: "Also list the newest 500 models other people on this server trained or imported: you can read any of "
      + "them (the page reloads)" });
  const box = Object.assign(document.createElement("input"), { type: "checkbox", checked: everyonesModels() });
  box.addEventListener("change", () => {
    try { window.localStorage.setItem(EVERYONE_KEY, box.checked ? "1" : "0"); } catch { /* private mode */ }
    window.location.reload();
  });
  label.append(box, " everyone's models");
  menu.after(label);
}

/** The models a link names (?model=, ?models=a,b) that the listing left out (someone else's):
 * a link to a classmate's model still opens it. */
async function linkedModels(models) {
  const q = queryParams();
  const named = [q.get("model"), ...(q.get("models") ?? "").split(",")].filter(Boolean).slice(0, 8);
  const missing = [...new Set(named)].filter((id) => !models.some((m) => m.id === id));
  const found = await Promise.all(missing.map((id) => api(`/api/models/${encodeURIComponent(id)}`).catch(() => null)));
  return found.filter(Boolean);
}

/** GET /api/models for a page — yours and the bundled ones, or everyone's newest 500 when the
 * menu's checkbox says so — or null once the page says why there is nothing to show: the
 * request failed (in `status`), or no model is loaded (`empty`, in `emptyStatus`, with the way to
 * add one; `menu` then reads "no models" and `onEmpty` clears what else the page has). */
export async function pageModels(status, empty, { menu = null, emptyStatus = status, onEmpty = null } = {}) {
  let models;
  try {
    models = await api(everyonesModels() ? "/api/models?owner=all&limit=500" : "/api/models");
    models = models.concat(await linkedModels(models));
    everyoneToggle(menu);
  } catch (e) {
    setStatus(status, "error", e.message);
    return null;
  }
  if (models.length === 0) {
    menu?.replaceChildren(new Option("no models", ""));
    onEmpty?.();
    setStatus(emptyStatus, "empty", empty, { html: `<p><a href="/">See how to add one →</a></p>` });
    return null;
  }
  return models;
}
