// Select, find, match (the explorer's panel): drag over the text to select stretches (Shift
// adds one), rank the units on there and off around them (POST /select), tick a set and find
// where they are on together in the model's validation text (POST /match).
import { api, colourAt, formatNumber, isAbort, isTanhQuantity, latest, rgb, scaleFor, setStatus, showChar } from "./common.js";

const $ = (id) => document.getElementById(id);

/**
 * `hooks` come from explore.js: the charmap element, getters for the model, the text on
 * screen (as read) and the model's corpus on the server (null when absent), `view(layer, quantity, unit)`
 * to show a neuron and `open(text)` to read a snippet.
 */
export function initSelect(hooks) {
  const els = {
    panel: $("select-panel"), spans: $("select-spans"), clear: $("select-clear"), find: $("select-find"),
    status: $("select-status"), units: $("select-units"), match: $("select-match"),
    matchStatus: $("select-match-status"), matches: $("select-matches"),
  };
  const map = hooks.charmap;
  let spans = [];            // [[start, end), ...] in character offsets of the text on screen
  let drag = null;           // {anchor, index of the span being drawn}
  let ranked = [];           // the last /select answer's neurons
  let rankedModel = "";      // the model they were ranked on
  const nextSelect = latest(), nextMatch = latest();

  const indexOf = (el) => { const ch = el?.closest?.(".ch"); return ch && map.contains(ch) ? Number(ch.dataset.i) : null; };

  function paint() {
    const inside = new Set();
    for (const [a, b] of spans) for (let t = a; t < b; t++) inside.add(t);
    for (const ch of map.querySelectorAll(".ch")) ch.classList.toggle("selected", inside.has(Number(ch.dataset.i)));
    const text = hooks.text() || "";
    els.spans.replaceChildren(...(spans.length ? spans.map(([a, b]) => Object.assign(document.createElement("span"), {
      className: "sel-span", textContent: [...text.slice(a, b)].map(showChar).join(""), title: `characters ${a}–${b - 1}`,
    })) : [Object.assign(document.createElement("span"), { className: "muted small",
      textContent: "Nothing selected: drag over the text above; hold Shift to add another stretch." })]));
    els.clear.disabled = els.find.disabled = !spans.length;
  }

  map.addEventListener("mousedown", (e) => {
    const t = indexOf(e.target);
    if (t === null || e.button !== 0) return;
    e.preventDefault();                          // no native text selection while dragging
    if (!e.shiftKey) spans = [];
    spans.push([t, t + 1]);
    drag = { anchor: t, k: spans.length - 1 };
    paint();
  });
  map.addEventListener("mouseover", (e) => {
    if (!drag) return;
    const t = indexOf(e.target);
    if (t === null) return;
    spans[drag.k] = [Math.min(drag.anchor, t), Math.max(drag.anchor, t) + 1];
    paint();
  });
  document.addEventListener("mouseup", () => {
    if (!drag) return;
    drag = null;
    spans = merged(spans);
    paint();
  });
  // A new text on screen: offsets into the old one mean nothing.
  new MutationObserver(() => { spans = []; paint(); }).observe(map, { childList: true });

  els.clear.addEventListener("click", () => { spans = []; paint(); });

  els.find.addEventListener("click", async () => {
    const text = hooks.text();
    if (!text || !spans.length) return;
    const signal = nextSelect();
    setStatus(els.status, "loading", `Ranking every unit for ${spans.length === 1 ? "the stretch" : `${spans.length} stretches`}…`);
    try {
      const body = { text, spans, top: 12 };
      const data = await api(`/api/models/${encodeURIComponent(hooks.model())}/select`, body, { signal, status: els.status });
      ranked = data.neurons;
      rankedModel = hooks.model();
      setStatus(els.status, "");
      drawUnits(data);
    } catch (e) {
      if (!isAbort(e)) setStatus(els.status, "error", e);
    }
  });

  function drawUnits(data) {
    const rows = ranked.map((n, k) => {
      const tr = document.createElement("tr");
      const auc = n.sign > 0 ? n.score : 1 - n.score;
      tr.innerHTML = `<td><input type="checkbox" aria-label="match with this unit"${k === 0 ? " checked" : ""}></td>
        <td class="unit"></td><td>${formatNumber(auc, { digits: 3 })}</td><td>${n.sign > 0 ? "on above" : "on below"} ${formatNumber(n.threshold, { precision: 3 })}</td>
        <td><button type="button" class="secondary chip">view</button></td>`;
      tr.querySelector(".unit").textContent = `layer ${n.layer} · ${n.quantity}[${n.unit}]`;
      tr.querySelector("button").addEventListener("click", () => hooks.view(n.layer, n.quantity, n.unit));
      tr.querySelector("input").dataset.k = k;
      return tr;
    });
    const table = document.createElement("table");
    table.className = "data nocaps";
    table.innerHTML = `<thead><tr><th></th><th>unit</th><th title="How well it separates the selection from the characters around it, read with its sign">AUC</th><th>on</th><th></th></tr></thead><tbody></tbody>`;
    table.querySelector("tbody").append(...rows);
    const note = Object.assign(document.createElement("p"), { className: "explain small",
      textContent: `${data.inside} selected characters against the ${data.compared - data.inside} around them, `
        + `${data.units.toLocaleString()} units ranked. Tick the units to match, then search ${searched()}.` });
    els.units.replaceChildren(note, table);
    els.match.hidden = false;
    els.match.title = `Search ${searched()}`;
  }

  /** The text /match searches: the validation text when the server has the model's corpus. */
  const searched = () => (hooks.corpus() ? `${hooks.corpus()}’s validation text`
    : "the text above (this model’s training corpus is not on this server)");

  els.match.addEventListener("click", async () => {
    const ticked = [...els.units.querySelectorAll("input:checked")].map((i) => ranked[Number(i.dataset.k)]);
    if (!ticked.length) { setStatus(els.matchStatus, "error", "Tick at least one unit to match."); return; }
    if (rankedModel !== hooks.model()) {
      setStatus(els.matchStatus, "error", `These units are ${rankedModel}’s: find units again for ${hooks.model()}.`);
      return;
    }
    const length = spans.length ? spans.reduce((s, [a, b]) => s + b - a, 0) / spans.length : 10;
    const units = ticked.map(({ layer, quantity, unit, sign, threshold }) => ({ layer, quantity, unit, sign, threshold }));
    const signal = nextMatch();
    const model = hooks.model();
    setStatus(els.matchStatus, "loading", `Matching ${units.length === 1 ? "the unit" : `${units.length} units`} in ${searched()}`
      + (hooks.corpus() ? " (the first search per model reads it: up to half a minute)…" : "…"));
    const url = `/api/models/${encodeURIComponent(model)}/match`;
    // Without a text the server searches the model's validation text, which it refuses (422)
    // when the corpus is not here: then the text on screen is searched, and asked for at once.
    const body = { units, length, top: 12 };
    if (!hooks.corpus()) body.text = hooks.text();
    try {
      let data;
      try {
        data = await api(url, body, { signal, status: els.matchStatus });
      } catch (e) {
        // The corpus went away since the page asked (an upload deleted): the text on screen.
        if (body.text !== undefined || !(e.status === 422 && e.detail?.[0]?.type === "corpus_unavailable")) throw e;
        data = await api(url, { ...body, text: hooks.text() }, { signal, status: els.matchStatus });
      }
      setStatus(els.matchStatus, data.matches.length ? "" : "empty",
        `No stretch of ${Math.round(length / 4)}–${Math.round(length * 4)} characters has these units on together.`);
      drawMatches(data, ticked);
    } catch (e) {
      if (!isAbort(e)) setStatus(els.matchStatus, "error", e);
    }
  });

  function drawMatches(data, units) {
    const head = Object.assign(document.createElement("p"), { className: "explain small",
      textContent: `${data.matches.length} best of ${data.chars.toLocaleString()} characters of `
        + `${data.source === "validation" ? `${data.corpus}’s validation text`
          : "the text above (this model’s training corpus is not on the server)"}, best agreement first. `
        + "Under each, one strip per unit coloured by its value. Click one to read it in the explorer." });
    els.matches.replaceChildren(head, ...data.matches.map((m) => matchBlock(m, units)));
  }

  function colourFor(n) {
    const stops = scaleFor(n.quantity);
    if (isTanhQuantity(n.quantity)) {
      const s = Math.max(Math.abs(n.low), Math.abs(n.high)) || 1;
      return (v) => colourAt(stops, v / s);
    }
    const span = n.high - n.low || 1;
    return (v) => colourAt(stops, (v - n.low) / span);
  }

  function matchBlock(m, units) {
    const block = Object.assign(document.createElement("a"), { className: "match", href: "#" });
    block.title = `characters ${m.start}–${m.end - 1}, agreement ${formatNumber(m.score, { digits: 2 })}: read it in the explorer`;
    const chars = [...m.snippet];
    const line = document.createElement("div");
    line.className = "match-text";
    chars.forEach((c, i) => {
      const t = m.snippet_start + i;
      line.append(Object.assign(document.createElement("span"), {
        className: t >= m.start && t < m.end ? "in" : "", textContent: c === "\n" ? "↵" : c === "\t" ? "⇥" : c }));
    });
    const strips = units.map((n, k) => {
      const row = document.createElement("div");
      row.className = "match-strip";
      row.title = `layer ${n.layer} · ${n.quantity}[${n.unit}]`;
      const colour = colourFor(n);
      for (const v of m.values[k]) row.append(Object.assign(document.createElement("i"), { style: `background:${rgb(colour(v))}` }));
      return row;
    });
    const score = Object.assign(document.createElement("span"), { className: "match-score", textContent: formatNumber(m.score, { digits: 2 }) });
    const body = document.createElement("div");
    body.append(line, ...strips);
    block.append(score, body);
    block.addEventListener("click", (e) => {
      e.preventDefault();
      const first = units[0];
      hooks.open(m.snippet, first.layer, first.quantity, first.unit);
      window.scrollTo({ top: 0, behavior: "smooth" });
    });
    return block;
  }

  paint();
  els.panel.hidden = false;
  return { clear: () => { spans = []; paint(); } };
}

/** Overlapping or touching spans joined, in order. */
function merged(spans) {
  const out = [];
  for (const [a, b] of [...spans].sort((x, y) => x[0] - y[0])) {
    const last = out[out.length - 1];
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}
