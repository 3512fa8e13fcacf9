// The guided path: one chapter shown at a time, each drawn from one call under /api/learn.
// Every setting lives in `state`, read from the URL once and written back on each change.
import {
  api, queryParams, writeQuery, toInt, toFloat, setStatus, latest, isAbort, logAxis, PLOT_CONFIG, PLOT_FONT,
  DIVERGING, SEQUENTIAL, plotlyScale, colourAt, inkOn, rgb, CELL_COLOURS, showChar, renderChars, decodeQuantity,
} from "./common.js";

const $ = (id) => document.getElementById(id);
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
const sections = [...document.querySelectorAll(".learn-chapter")];
const CHAPTERS = sections.map((s) => Number(s.dataset.chapter));
// The built-in passages, in the order of the passage menus (the page embeds them).
const PASSAGE_TEXT = JSON.parse(document.getElementById("learn-passages").textContent);

// ---- State ------------------------------------------------------------------------------

const q = queryParams();
const floats = (s, n, fallback) => {
  const parts = (s || "").split(",").map(Number);
  return parts.length === n && parts.every(Number.isFinite) ? parts : fallback;
};
const W_DEFAULT = [1, 0.5, 0.2, 0.8];
const state = {
  chapter: CHAPTERS.includes(toInt(q.get("chapter"), 1)) ? toInt(q.get("chapter"), 1) : CHAPTERS[0],
  seed: clamp(toInt(q.get("seed"), 0), 0, 2 ** 31 - 1),
  t: clamp(toInt(q.get("t"), 0), 0, 3),
  temperature: 1,
  sampleSeed: 1,
  steps: clamp(toInt(q.get("steps"), 20), 2, 60),
  w: floats(q.get("w"), 4, W_DEFAULT).map((v) => clamp(v, -2, 2)),
  h0: floats(q.get("h0"), 2, [-0.5, 1]).map((v) => clamp(v, -1, 1)),
  mode: q.get("mode") === "tanh" ? "tanh" : "normalise",
  iters: clamp(toInt(q.get("iters"), 12), 1, 40),
  model: q.get("model") || "rnn",
  passage: clamp(toInt(q.get("passage"), 0), 0, $("backward-passage")?.options.length - 1 || 0),
  position: q.get("position") ? Math.max(0, toInt(q.get("position"), 0)) : null,   // null: the passage's last
  scale: clamp(toFloat(q.get("scale"), 1), 0.25, 2),
  span: clamp(toInt(q.get("span"), 80), 10, 150),
  layer: q.get("layer") === "bottom" ? "bottom" : "top",
  clip: clamp(toFloat(q.get("clip"), 1), 0.25, 10),
  lr: clamp(toFloat(q.get("lr"), 1), 0.1, 2),
};

function saveState() {
  const s = state;
  writeQuery({
    chapter: s.chapter, seed: s.seed || "", t: s.t || "", steps: s.steps === 20 ? "" : s.steps,
    w: s.w.join(",") === W_DEFAULT.join(",") ? "" : s.w.join(","),
    h0: s.h0.join(",") === "-0.5,1" ? "" : s.h0.join(","), mode: s.mode === "tanh" ? "tanh" : "",
    iters: s.iters === 12 ? "" : s.iters, model: s.model === "rnn" ? "" : s.model, passage: s.passage || "",
    position: s.position ?? "",
    scale: s.scale === 1 ? "" : s.scale, span: s.span === 80 ? "" : s.span, layer: s.layer === "top" ? "" : s.layer,
    clip: s.clip === 1 ? "" : s.clip, lr: s.lr === 1 ? "" : s.lr,
  });
}

const fmt = (v, d = 2) => (v === null || v === undefined ? "—" : (v < 0 ? "−" : "") + Math.abs(v).toFixed(d));
const vec = (a, d = 2) => `[${a.map((v) => fmt(v, d)).join(", ")}]`;
const sci = (v) => (v === null || v === undefined ? "overflow" : v === 0 ? "0" : v.toExponential(1).replace("-", "−"));

function draw(el, traces, layout) {
  Plotly.react(el, traces, { font: PLOT_FONT, ...layout }, PLOT_CONFIG);
}

/** Run a chapter's call: status while it runs, the error if it fails, `then(data)` if it works.
 * What the answer draws (the chart's .learn-figure and `alsoDrawn`) is kept, dimmed, when a
 * newer call fails, and the address keeps the settings it shows: saved once an answer is drawn. */
function loader(statusEl, chartEl, ...alsoDrawn) {
  const next = latest();
  const view = [chartEl.closest(".learn-figure"), ...alsoDrawn];
  return async (path, body, then) => {
    const signal = next();
    setStatus(statusEl, "loading", "Computing…");
    let data;
    try {
      data = await api(path, body, { signal, status: statusEl, view });
    } catch (e) {
      if (isAbort(e) || signal.aborted) return;
      setStatus(statusEl, "error", e);
      if (!chartEl.data) chartEl.hidden = true;  // nothing drawn yet: no empty frame
      return;
    }
    if (signal.aborted) return;                // a newer request for this chart is on its way
    setStatus(statusEl, "");
    chartEl.hidden = false;
    then(data);
    saveState();
  };
}

// ---- Chapter 1: "hello" -------------------------------------------------------------------

const hello = { data: null, load: loader($("hello-status"), $("hello-chart"), $("hello-sample-out")) };

function loadHello() {
  const body = { seed: state.seed, sample_length: 30, temperature: state.temperature, sample_seed: state.sampleSeed };
  return hello.load("/api/learn/hello", body, (data) => {
    hello.data = data;
    drawHello();
  });
}

const ROWS = [  // top to bottom, as in the lecture figure: output above hidden above input
  { key: "p", title: "softmax p<sub>t</sub>", stops: SEQUENTIAL, range: [0, 1] },
  { key: "y", title: "scores y<sub>t</sub>", stops: DIVERGING },
  { key: "h", title: "hidden h<sub>t</sub>", stops: DIVERGING, range: [-1, 1] },
  { key: "x", title: "input x<sub>t</sub>", stops: SEQUENTIAL, range: [0, 1] },
];

function drawHello() {
  const d = hello.data, V = d.vocab.length, H = d.hidden_size, T = d.steps.length;
  const heights = ROWS.map((r) => (r.key === "h" ? H : V));
  const gap = 1.4, total = heights.reduce((a, b) => a + b, 0) + gap * (ROWS.length - 1);
  const cols = d.steps.map((s, t) => `t = ${t + 1}: “${s.input}”`);
  const traces = [], shapes = [], annotations = [];
  const yMax = Math.max(...d.steps.flatMap((s) => s.y.map(Math.abs)));
  let top = 1;
  ROWS.forEach((row, i) => {
    const h = heights[i] / total, axis = i === 0 ? "" : String(i + 1);
    const domain = [top - h, top];
    top -= h + gap / total;
    const labels = row.key === "h" ? Array.from({ length: H }, (_, j) => `h${j + 1}`) : d.vocab.map((c) => `“${c}”`);
    const z = labels.map((_, j) => d.steps.map((s) => s[row.key][j]));
    const [lo, hi] = row.range || [-yMax, yMax];
    const colour = (v) => colourAt(row.stops, row.stops === DIVERGING ? (2 * (v - lo)) / (hi - lo) - 1 : v);
    traces.push({
      type: "heatmap", x: cols, y: labels, z, zmin: lo, zmax: hi, xaxis: `x${axis}`, yaxis: `y${axis}`,
      colorscale: plotlyScale(row.stops), showscale: false, xgap: 3, ygap: 3, meta: row.key,
      hovertemplate: `${row.key}: %{y} at %{x}<br>%{z:.4f}<extra></extra>`,
    });
    z.forEach((r, j) => r.forEach((v, t) => annotations.push({
      xref: `x${axis}`, yref: `y${axis}`, x: cols[t], y: labels[j], showarrow: false,
      text: row.key === "x" ? String(v) : fmt(v, 2), font: { size: 14, color: inkOn(colour(v)) },
    })));
    annotations.push({ xref: "paper", yref: "paper", x: -0.075, y: (domain[0] + domain[1]) / 2, xanchor: "right",
      text: row.title, showarrow: false, font: { size: 14 } });
    if (row.key === "p" || row.key === "y") {
      d.steps.forEach((s, t) => {
        const j = d.vocab.indexOf(s.target);
        const ok = s.predicted === s.target;
        shapes.push({ type: "rect", xref: `x${axis}`, yref: `y${axis}`, x0: t - 0.5, x1: t + 0.5, y0: j - 0.5, y1: j + 0.5,
          line: { color: ok ? "#2f9e44" : "#c92a2a", width: 3 } });
      });
    }
  });
  d.steps.forEach((s, t) => annotations.push({ xref: "x", yref: "paper", x: cols[t], y: -0.015, yanchor: "top",
    showarrow: false, text: `target “${s.target}” · L = ${s.loss.toFixed(3)}`, font: { size: 13 } }));
  annotations.push({ xref: "paper", yref: "paper", x: -0.075, y: -0.015, xanchor: "right", yanchor: "top",
    showarrow: false, text: "loss", font: { size: 14 } });
  const layout = { height: 550, margin: { l: 200, r: 20, t: 34, b: 36 }, shapes, annotations, meta: "hello" };
  ROWS.forEach((_, i) => {
    const axis = i === 0 ? "" : String(i + 1);
    let lo = 1;
    for (let k = 0; k < i; k++) lo -= (heights[k] + gap) / total;
    layout[`xaxis${axis}`] = { anchor: `y${axis}`, side: "top", showticklabels: i === 0, fixedrange: true,
      matches: i === 0 ? undefined : "x", tickfont: { size: 14 } };
    layout[`yaxis${axis}`] = { domain: [Math.max(0, lo - heights[i] / total), lo], autorange: "reversed",
      fixedrange: true, tickfont: { size: 13 } };
  });
  draw($("hello-chart"), traces, layout);
  const loss = d.loss_history;
  $("hello-summary").textContent = `Seed ${d.seed}: ${d.train_steps} Adam steps in ${d.train_ms.toFixed(0)} ms on the `
    + `server, the loss falling from ${loss[0].toFixed(2)} to ${loss[loss.length - 1].toFixed(3)} nats per character. `
    + `Outlined in the two top rows: the correct next character, green where it is also the likeliest.`;
  drawWeights(d);
  $("hello-sample-out").textContent = d.sample;
  $("hello-sample-out").dataset.seed = d.seed;
  stepHello(state.t);
}

/** The trained weights as small tables, rows and columns named as in the figure. */
function drawWeights(d) {
  const hs = Array.from({ length: d.hidden_size }, (_, j) => `h${j + 1}`), vs = d.vocab.map((c) => `“${c}”`);
  const table = (title, M, rows, cols) => {
    const t = document.createElement("table");
    t.className = "data nocaps learn-matrix-table";
    t.innerHTML = `<caption>${title}</caption>`;
    t.append(Object.assign(document.createElement("tr"), { innerHTML: `<th></th>${cols.map((c) => `<th>${c}</th>`).join("")}` }));
    M.forEach((row, i) => {
      const tr = document.createElement("tr");
      tr.innerHTML = `<th>${rows[i]}</th>` + row.map((v) => `<td>${fmt(v, 2)}</td>`).join("");
      t.append(tr);
    });
    return t;
  };
  const w = d.weights;
  $("hello-weights").replaceChildren(
    table("W<sub>xh</sub> (hidden × input)", w.W_xh, hs, vs),
    table("W<sub>hh</sub> (hidden × hidden)", w.W_hh, hs, hs),
    table("b<sub>h</sub>", w.b_h.map((v) => [v]), hs, [""]),
    table("W<sub>hy</sub> (output × hidden)", w.W_hy, vs, hs),
    table("b<sub>y</sub>", w.b_y.map((v) => [v]), vs, [""]));
}

function matvec(M, v) {
  return M.map((row) => row.reduce((s, m, j) => s + m * v[j], 0));
}

function stepHello(t) {
  const d = hello.data;
  if (!d) return;
  state.t = clamp(t, 0, d.steps.length - 1);
  saveState();
  $("hello-t").textContent = state.t + 1;
  const s = d.steps[state.t], w = d.weights;
  const xh = matvec(w.W_xh, s.x), hh = matvec(w.W_hh, s.h_prev);
  const pt = s.p[d.vocab.indexOf(s.target)];
  $("hello-step").innerHTML = `
    <p><b>Step ${state.t + 1}.</b> The network reads “${s.input}”, x<sub>${state.t + 1}</sub> = ${vec(s.x, 0)}
      (in the order ${d.vocab.map((c) => `“${c}”`).join(", ")}).</p>
    <p class="equation">W<sub>xh</sub> x<sub>t</sub> = ${vec(xh)} &nbsp;+&nbsp; W<sub>hh</sub> h<sub>t−1</sub> =
      ${vec(hh)} &nbsp;+&nbsp; b<sub>h</sub> = ${vec(w.b_h)} &nbsp;→ tanh →&nbsp; h<sub>t</sub> = ${vec(s.h)}</p>
    <p>It should predict “${s.target}”: p<sub>t</sub>[“${s.target}”] = ${pt.toFixed(3)}, so the loss at this step
      is −ln ${pt.toFixed(3)} = <b>${s.loss.toFixed(3)}</b> nats. Its likeliest guess is “${s.predicted}”
      ${s.predicted === s.target ? "— right." : "— wrong."}
      ${state.t === 2 ? " The input is “l”, as at the next step, yet the answer differs: only h<sub>t−1</sub> can tell them apart." : ""}</p>`;
  const chart = $("hello-chart");
  if (chart.data) {
    const cols = chart.data[0].x;
    const shapes = (chart.layout.shapes || []).filter((sh) => sh.name !== "now");
    shapes.push({ name: "now", type: "rect", xref: "x", yref: "paper", x0: state.t - 0.5, x1: state.t + 0.5, y0: 0, y1: 1,
      line: { color: "#3557d4", width: 2, dash: "dot" }, fillcolor: "rgba(53,87,212,0.05)" });
    Plotly.relayout(chart, { shapes });
    chart.dataset.step = String(state.t);
    void cols;
  }
}

$("hello-prev").addEventListener("click", () => stepHello(state.t - 1));
$("hello-next").addEventListener("click", () => stepHello(state.t + 1));
$("hello-train").addEventListener("click", () => {
  state.seed += 1;
  state.t = 0;
  loadHello();
  chapterLoaded[2] = false;
});
$("hello-sample").addEventListener("click", () => { state.sampleSeed += 1; loadHello(); });
$("hello-temperature").addEventListener("input", (e) => {
  state.temperature = Number(e.target.value);
  $("hello-temperature-out").textContent = state.temperature.toFixed(1);
});
$("hello-temperature").addEventListener("change", () => loadHello());

// ---- Chapter 2: one step, many steps ---------------------------------------------------------

const unroll = { load: loader($("unroll-status"), $("unroll-chart")) };

function loadUnroll() {
  return unroll.load("/api/learn/unroll", { seed: state.seed, steps: state.steps }, (d) => {
    const ts = Array.from({ length: state.steps }, (_, t) => t + 1);
    const colours = { e: "#1c6dd0", l: "#2f9e44", o: "#e8590c", h: "#495057" };
    const traces = d.first.map((c, k) => ({
      type: "scatter", mode: "lines+markers", x: ts, y: d.distance[k].map((v) => (v > 0 ? v : null)), name: `first “${c}”`,
      line: { color: colours[c] || "#7048e8", width: 2 }, marker: { size: 5 },
      hovertemplate: `first “${c}”, t = %{x}<br>‖h<sub>t</sub>(${c}) − h<sub>t</sub>(h)‖ = %{y:.2e}<extra></extra>`,
    })).filter((_, k) => d.first[k] !== "h");
    draw($("unroll-chart"), traces, {
      height: 380, margin: { l: 70, r: 20, t: 20, b: 50 }, meta: "unroll",
      xaxis: { title: { text: "step t (the first character is read at t = 1)" }, range: [0.5, state.steps + 0.5] },
      yaxis: { ...logAxis(traces.flatMap((tr) => tr.y)), title: { text: "‖h<sub>t</sub>(c) − h<sub>t</sub>(h)‖" } },
      legend: { orientation: "h", y: 1.08 },
    });
    const first = Math.max(...traces.map((tr) => tr.y[0] || 0));
    const last = Math.max(...traces.map((tr) => tr.y[tr.y.length - 1] || 0));
    $("unroll-caption").textContent = `After reading a different first character the hidden states are up to `
      + `${first.toFixed(2)} apart; after ${state.steps} steps of the same input (“${d.continuation.slice(0, 12)}…”), `
      + `${last === 0 ? "0: the runs are the same to the last bit" : sci(last)}. What this network read long ago `
      + "no longer moves its state at all.";
  });
}

$("unroll-steps").addEventListener("input", (e) => {
  state.steps = Number(e.target.value);
  $("unroll-steps-out").textContent = state.steps;
});
$("unroll-steps").addEventListener("change", () => loadUnroll());

// ---- Chapter 3: going forwards --------------------------------------------------------------

const power = { load: loader($("power-status"), $("power-chart"), $("power-eigen")) };
const W_IDS = ["w11", "w12", "w21", "w22"];

function complex([re, im]) {
  return Math.abs(im) < 1e-12 ? fmt(re, 3) : `${fmt(re, 3)} ${im < 0 ? "−" : "+"} ${Math.abs(im).toFixed(3)}i`;
}

// A label needs about this much room on the ±1.6 square (a label's height at 460 px).
const LABEL_ROOM = 0.2;

/** "hk" beside each point far enough from every point labelled before it (the last one first,
 * so where h settles is named), so the labels of points that close in on the eigenvector do
 * not pile up; the hover still names every point. */
function trajectoryLabels(points) {
  const placed = [];
  const labels = points.map(() => "");
  const order = [0, points.length - 1, ...points.keys()];
  for (const k of order) {
    if (labels[k]) continue;
    const [x, y] = points[k];
    if (placed.some(([px, py]) => Math.abs(px - x) < 2 * LABEL_ROOM && Math.abs(py - y) < LABEL_ROOM)) continue;
    placed.push(points[k]);
    labels[k] = `h${k}`;
  }
  return labels;
}

function loadPower() {
  const [w11, w12, w21, w22] = state.w;
  const body = { w11, w12, w21, w22, x0: state.h0[0], y0: state.h0[1], steps: state.iters, mode: state.mode };
  return power.load("/api/learn/power", body, (d) => {
    const traces = [];
    if (d.mode === "normalise") {
      const a = Array.from({ length: 121 }, (_, i) => (i / 120) * 2 * Math.PI);
      traces.push({ type: "scatter", mode: "lines", x: a.map(Math.cos), y: a.map(Math.sin), name: "‖h‖ = 1",
        line: { color: "#cfd4dc", width: 1, dash: "dot" }, hoverinfo: "skip" });
    }
    const eColours = ["#c92a2a", "#7048e8"];
    d.eigen.forEach((e, i) => {
      if (!e.vector) return;
      const [vx, vy] = e.vector;
      traces.push({ type: "scatter", mode: "lines", x: [-1.6 * vx, 1.6 * vx], y: [-1.6 * vy, 1.6 * vy],
        name: `eigenvector of λ${i + 1} = ${complex(e.value)}`, meta: "eigenvector",
        line: { color: eColours[i], width: i === 0 ? 3 : 2, dash: i === 0 ? "solid" : "dash" }, hoverinfo: "name" });
    });
    const tr = d.trajectory;
    traces.push({ type: "scatter", mode: "lines+markers+text", x: tr.map((p) => p[0]), y: tr.map((p) => p[1]),
      text: trajectoryLabels(tr), textposition: "top right",
      name: "h<sub>k</sub>", meta: "trajectory", line: { color: "#1d2330", width: 1.5 },
      marker: { size: tr.map((_, k) => (k === 0 ? 11 : 7)), color: tr.map((_, k) => k), colorscale: "Blues", reversescale: false,
        line: { color: "#1d2330", width: 1 } },
      hovertemplate: "h<sub>%{text}</sub> = (%{x:.3f}, %{y:.3f})<extra></extra>" });
    draw($("power-chart"), traces, {
      height: 460, margin: { l: 40, r: 10, t: 10, b: 30 }, meta: "power", showlegend: true,
      legend: { orientation: "h", y: -0.08 },
      xaxis: { range: [-1.6, 1.6], zeroline: true, constrain: "domain" },
      yaxis: { range: [-1.6, 1.6], zeroline: true, scaleanchor: "x", scaleratio: 1 },
    });
    const rows = d.eigen.map((e, i) => [`λ${i + 1}`, complex(e.value) + (e.vector ? `, v${i + 1} = ${vec(e.vector, 3)}` : " (a complex pair: h rotates)")]);
    rows.push(["spectral radius", d.spectral_radius.toFixed(3)]);
    const last = d.alignment[d.alignment.length - 1];
    if (d.mode === "normalise") {
      rows.push(["h after the last step", last === null ? "no single real eigenvalue dominates, so h never settles"
        : `${(Math.acos(Math.min(1, last)) * 180 / Math.PI).toFixed(2)}° from the line of v1`]);
    } else {
      const n = Math.hypot(...tr[tr.length - 1]);
      rows.push(["‖h‖ after the last step", (n < 1e-3 ? n.toExponential(2) : n.toFixed(3))
        + (d.spectral_radius < 1 ? " — shrinking towards 0" : " — held inside the square by tanh")]);
    }
    $("power-eigen").replaceChildren(...rows.flatMap(([k, v]) => [
      Object.assign(document.createElement("dt"), { innerHTML: k }), Object.assign(document.createElement("dd"), { textContent: v })]));
  });
}

function syncPowerInputs() {
  W_IDS.forEach((id, i) => {
    const input = $(`power-${id}`);
    input.value = state.w[i];
    input.nextElementSibling.textContent = state.w[i].toFixed(2);
  });
  $("power-x0").value = state.h0[0];
  $("power-y0").value = state.h0[1];
  $("power-h0-out").textContent = `(${state.h0[0].toFixed(2)}, ${state.h0[1].toFixed(2)})`;
  $("power-iters").value = state.iters;
  $("power-iters").nextElementSibling.textContent = state.iters;
  document.querySelectorAll("[data-mode]").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.mode === state.mode)));
}

function readPowerInputs() {
  state.w = W_IDS.map((id) => Number($(`power-${id}`).value));
  state.h0 = [Number($("power-x0").value), Number($("power-y0").value)];
  state.iters = Number($("power-iters").value);
  syncPowerInputs();
  loadPower();
}

for (const id of [...W_IDS.map((w) => `power-${w}`), "power-x0", "power-y0", "power-iters"]) {
  $(id).addEventListener("input", readPowerInputs);
}
document.querySelectorAll("[data-mode]").forEach((b) => b.addEventListener("click", () => {
  state.mode = b.dataset.mode;
  syncPowerInputs();
  loadPower();
}));

// ---- Chapter 4: going backwards -----------------------------------------------------------

const backward = { load: loader($("backward-status"), $("backward-chart")) };
const LAYER_COLOURS = ["#f08c00", "#e8590c", "#c92a2a", "#862e9c"];

function loadBackward() {
  const body = { passage: state.passage, scale: state.scale, position: state.position };
  return backward.load(`/api/learn/backward/${encodeURIComponent(state.model)}`, body, (d) => {
    syncPosition(d.position);
    const ks = d.layers[0].h_grad_norm.map((_, k) => k);
    const chars = [...d.text].map(showChar);
    const traces = d.layers.map((l) => ({
      type: "scatter", mode: "lines", x: ks, y: l.h_grad_norm.map((v) => (v === 0 ? null : v)), customdata: chars,
      name: `layer ${l.layer}: ‖∂L/∂h<sub>k</sub>‖`, meta: `layer-${l.layer}`,
      line: { color: LAYER_COLOURS[l.layer % LAYER_COLOURS.length], width: 2 },
      hovertemplate: `layer ${l.layer}, k = %{x} ‘%{customdata}’<br>‖∂L/∂h<sub>k</sub>‖ = %{y:.3g}<extra></extra>`,
    }));
    draw($("backward-chart"), traces, {
      height: 420, margin: { l: 70, r: 20, t: 20, b: 50 }, meta: "backward", legend: { orientation: "h", y: 1.1 },
      xaxis: { title: { text: `k (the loss is at t = ${d.position}, predicting ‘${showChar(d.target)}’)` },
        range: [Math.max(0, d.position - 150) - 0.5, d.position + 0.5] },
      yaxis: { ...logAxis(traces.flatMap((tr) => tr.y)), title: { text: "‖∂L/∂h<sub>k</sub>‖" } },
    });
    $("backward-spectrum").replaceChildren(...d.layers.flatMap((l) => {
      // The vanilla RNN's one block; for a gated cell its candidate's (g, n), the tanh the RNN's block plays.
      const b = l.blocks.find((x) => x.block === "g" || x.block === "n") || l.blocks[0];
      const far = l.h_grad_norm[Math.max(0, d.position - 30)];
      const which = l.blocks.length === 1 ? "W<sub>hh</sub>" : `W<sub>hh</sub>’s ${b.block} block`;
      return [Object.assign(document.createElement("dt"), { innerHTML: `layer ${l.layer}, ${which} × ${d.scale.toFixed(2)}` }),
        Object.assign(document.createElement("dd"), { innerHTML: `spectral radius ${b.spectral_radius.toFixed(3)}, `
          + `σ<sub>1</sub> = ${b.sigma_max.toFixed(3)}${b.sigma_max < 1 ? " (below 1: it can only vanish)" : " (above 1: it may grow)"}; `
          + `30 steps back ‖∂L/∂h‖ = ${sci(far)}` })];
    }));
  });
}

$("backward-scale").addEventListener("input", (e) => {
  state.scale = Number(e.target.value);
  $("backward-scale-out").textContent = state.scale.toFixed(2);
});
$("backward-scale").addEventListener("change", () => loadBackward());
$("backward-model").addEventListener("change", (e) => { state.model = e.target.value; loadBackward(); });

async function fillModels() {
  let models = [];
  try {
    models = await api("/api/models");
  } catch (e) {
    return [];
  }
  const select = $("backward-model");
  select.replaceChildren(...models.map((m) => new Option(`${m.name} (${m.id})`, m.id)));
  if (!models.some((m) => m.id === state.model)) state.model = models.find((m) => m.cell === "rnn")?.id || models[0]?.id || "rnn";
  select.value = state.model;
  return models;
}

// ---- Chapter 5: clipping --------------------------------------------------------------------

const clipping = { load: loader($("clip-status"), $("clip-chart")) };
const RUN_COLOURS = ["#c92a2a", "#1c6dd0"];

function loadClipping() {
  const body = { passage: state.passage, clip: state.clip, learning_rate: state.lr, steps: 400, seed: 0 };
  return clipping.load("/api/learn/clipping", body, (d) => {
    const traces = [];
    d.runs.forEach((r, i) => {
      const name = r.clip ? `clipped at ${r.clip}` : "no clipping";
      const steps = r.loss.map((_, k) => k + 1);
      traces.push({ type: "scatter", mode: "lines", x: steps, y: r.grad_norm, name, legendgroup: name, meta: `norm-${i}`,
        line: { color: RUN_COLOURS[i], width: 1.5 }, hovertemplate: `${name}, step %{x}<br>‖g‖ = %{y:.3g}<extra></extra>` });
      traces.push({ type: "scatter", mode: "lines", x: steps, y: r.loss, name, legendgroup: name, showlegend: false,
        meta: `loss-${i}`, xaxis: "x2", yaxis: "y2", line: { color: RUN_COLOURS[i], width: 1.5 },
        hovertemplate: `${name}, step %{x}<br>loss %{y:.3f}<extra></extra>` });
    });
    const clip = d.runs[1].clip;
    draw($("clip-chart"), traces, {
      height: 400, margin: { l: 60, r: 20, t: 50, b: 50 }, meta: "clipping",
      grid: { rows: 1, columns: 2, pattern: "independent", xgap: 0.12 },
      legend: { orientation: "h", x: 0, y: 1.18 },
      xaxis: { title: { text: "SGD step" } }, xaxis2: { title: { text: "SGD step" } },
      // The threshold's dashed line is on the axis too.
      yaxis: { ...logAxis([clip, ...d.runs.flatMap((r) => r.grad_norm)]), title: { text: "‖∂L/∂θ‖ before clipping" } },
      yaxis2: { title: { text: "training loss (nats/char)" } },
      shapes: [{ type: "line", xref: "x domain", yref: "y", x0: 0, x1: 1, y0: clip, y1: clip,
        line: { color: "#1d2330", width: 1, dash: "dash" } }],
      annotations: [{ xref: "x domain", yref: "y", x: 1, y: Math.log10(clip), xanchor: "right", yanchor: "bottom",
        text: `threshold ${clip}`, showarrow: false, font: { size: 12 } }],
    });
    const [free, held] = d.runs;
    const tell = (r) => (r.diverged ? `stopped at step ${r.loss.length + 1}: ${r.diverged.split(",")[0]}`
      : `ended at loss ${r.loss[r.loss.length - 1].toFixed(2)}`);
    const cut = held.clipped.filter(Boolean).length;
    $("clip-caption").textContent = `Without clipping the gradient norm reached ${Math.max(...free.grad_norm).toFixed(1)} `
      + `and the run ${tell(free)}. With clipping at ${clip} (${cut} of ${held.loss.length} steps clipped) it `
      + `${tell(held)}. Both runs are the same until the first step whose gradient exceeds the threshold.`;
  });
}

for (const [id, key, digits] of [["clip-threshold", "clip", 2], ["clip-lr", "lr", 1]]) {
  $(id).addEventListener("input", (e) => {
    state[key] = Number(e.target.value);
    $(`${id}-out`).textContent = state[key].toFixed(digits);
  });
  $(id).addEventListener("change", () => loadClipping());
}

// ---- Chapter 6: the highways -----------------------------------------------------------------

const highway = { load: loader($("highway-status"), $("highway-chart")) };

function loadHighway() {
  const body = { passage: state.passage, span: state.span, layer: state.layer, position: state.position };
  return highway.load("/api/learn/highway", body, (d) => {
    syncPosition(d.position);
    if (!d.curves.length) {
      setStatus($("highway-status"), "empty", "This chapter reads the bundled models rnn, lstm and gru; none is loaded.");
      $("highway-chart").hidden = true;
      return;
    }
    const traces = [];
    for (const c of d.curves) {
      const n = c.rms.map((_, i) => i);
      const name = { rnn: "RNN ‖∂h<sub>t</sub>/∂h<sub>k</sub>‖", lstm: "LSTM ∏ f<sub>j</sub>", gru: "GRU ∏ z<sub>j</sub>" }[c.cell];
      traces.push({ type: "scatter", mode: "lines", x: n, y: c.rms.map((v) => (v ? v : null)), name: `${name} (RMS over units)`,
        meta: `${c.model}-rms`, line: { color: CELL_COLOURS[c.cell], width: 2.5 },
        hovertemplate: `${c.model} layer ${c.layer}, %{x} steps back<br>%{y:.3g}<extra>${c.label}</extra>` });
      if (c.top) {
        traces.push({ type: "scatter", mode: "lines", x: n, y: c.top.map((v) => (v ? v : null)), name: `${name}, best unit`,
          meta: `${c.model}-top`, line: { color: CELL_COLOURS[c.cell], width: 1.5, dash: "dot" },
          hovertemplate: `${c.model}: the unit that keeps most, %{x} steps back<br>%{y:.3g}<extra></extra>` });
      }
    }
    draw($("highway-chart"), traces, {
      // The legend (six long entries) under the chart: above it, the mode bar sat on an entry.
      height: 500, margin: { l: 70, r: 20, t: 20, b: 50 }, meta: "highway",
      legend: { orientation: "h", x: 0, y: -0.16, yanchor: "top" },
      xaxis: { title: { text: `t − k: steps back from the last character read (t = ${d.position})` } },
      yaxis: { ...logAxis(traces.flatMap((tr) => tr.y)), title: { text: "gain of the path from k to t" } },
    });
    const at = Math.min(40, d.ks.length - 1);
    $("highway-caption").textContent = `${at} steps back: ` + d.curves.map((c) => `${c.model} ${sci(c.rms[at])}`
      + (c.top ? ` (best unit ${sci(c.top[at])})` : "")).join(", ") + ". The vanilla RNN’s path is a product of "
      + "matrices and falls like a stone; the gated paths are products of numbers the network sets itself, and "
      + "where it keeps them near 1 the past stays within reach.";
  });
}

$("highway-span").addEventListener("input", (e) => {
  state.span = Number(e.target.value);
  $("highway-span-out").textContent = state.span;
});
$("highway-span").addEventListener("change", () => loadHighway());
document.querySelectorAll("[data-layer]").forEach((b) => b.addEventListener("click", () => {
  state.layer = b.dataset.layer;
  document.querySelectorAll("[data-layer]").forEach((x) => x.setAttribute("aria-pressed", String(x === b)));
  loadHighway();
}));

/** A position past the passage's end is read as its last: show the one the server used. */
function syncPosition(used) {
  if (state.position === null || state.position === used) return;
  state.position = used;
  document.querySelectorAll(".learn-position").forEach((i) => { i.value = used; });
}

document.querySelectorAll(".learn-position").forEach((input) => input.addEventListener("change", () => {
  const v = input.value === "" ? null : toInt(input.value, null);
  state.position = v === null ? null : Math.max(0, v);
  document.querySelectorAll(".learn-position").forEach((i) => { i.value = state.position ?? ""; });
  chapterLoaded[4] = chapterLoaded[6] = false;
  loadChapter();
}));

document.querySelectorAll(".learn-passage").forEach((select) => select.addEventListener("change", () => {
  state.passage = Number(select.value);
  state.position = null;
  document.querySelectorAll(".learn-position").forEach((i) => { i.value = ""; });
  document.querySelectorAll(".learn-passage").forEach((s) => { s.value = String(state.passage); });
  chapterLoaded[4] = chapterLoaded[5] = chapterLoaded[6] = chapterLoaded[7] = false;
  loadChapter();
}));

// ---- Chapter 7: the cells -----------------------------------------------------------------------

const CELLS = [
  { model: "lstm", title: "A line-length cell", href: "/explore?model=lstm&layer=0&quantity=c&neuron=194",
    text: "Cell 194 of the Shakespeare LSTM’s first layer resets at every newline and falls as the line grows." },
  { model: "lstm", title: "Find it yourself", href: "/probe?model=lstm&concept=line_position",
    text: "Every unit of the LSTM ranked by how well it tracks the position in the line." },
  { model: "python", title: "Inside a string", href: "/probe?model=python&concept=string",
    text: "The Python model’s units that switch on between quotes and off after them." },
  { model: "python", title: "Inside a comment", href: "/probe?model=python&concept=comment",
    text: "The units that know a # has begun a comment, and that the newline ends it." },
  { model: "rnn", title: "Forgetting, measured", href: "/compare?models=rnn,gru,lstm",
    text: "The three Shakespeare models side by side: loss per character, memory horizon, gradients." },
];

// Karpathy's line-length cell in the bundled LSTM (README's picture: r = -0.90 with the position in the line).
const LINE_CELL = { model: "lstm", layer: 0, quantity: "c", unit: 194 };
const cell = { load: loader($("cell-status"), $("cell-chart")) };

function loadLineCell(models) {
  const m = models.find((x) => x.id === LINE_CELL.model);
  if (!m || m.hidden_size <= LINE_CELL.unit) {
    setStatus($("cell-status"), "empty", "This figure reads the bundled Shakespeare LSTM (2x256), which this server "
      + "has not loaded.");
    $("cell-chart").hidden = $("cell-text").hidden = true;
    return;
  }
  const text = document.getElementById("backward-passage").options.length ? PASSAGE_TEXT[state.passage] : "";
  const body = { text, layers: [LINE_CELL.layer], quantities: [LINE_CELL.quantity], top_k: 0, drop_unknown: true };
  return cell.load(`/api/models/${LINE_CELL.model}/trace`, body, (d) => {
    const values = decodeQuantity(d.layers[0].quantities[LINE_CELL.quantity]).column(LINE_CELL.unit);
    const chars = [...d.text];
    const scale = Math.max(...values.map(Math.abs)) || 1;
    renderChars($("cell-text"), chars).forEach((span, i) => {
      const c = colourAt(DIVERGING, values[i] / scale);
      span.style.background = rgb(c);
      span.style.color = inkOn(c);
      span.title = `c[${LINE_CELL.unit}] = ${values[i].toFixed(3)}`;
    });
    $("cell-text").hidden = false;
    let run = 0;
    const column = chars.map((ch) => { const v = run; run = ch === "\n" ? 0 : run + 1; return v; });
    const xs = chars.map((_, i) => i);
    draw($("cell-chart"), [
      { type: "scatter", mode: "lines", x: xs, y: values, name: `c[${LINE_CELL.unit}], layer ${LINE_CELL.layer}`,
        meta: "cell", customdata: chars.map(showChar), line: { color: CELL_COLOURS.lstm, width: 2 },
        hovertemplate: "‘%{customdata}’ at %{x}<br>c = %{y:.3f}<extra></extra>" },
      { type: "scatter", mode: "lines", x: xs, y: column, name: "characters since the newline", meta: "column",
        yaxis: "y2", line: { color: "#8a93a3", width: 1.5, dash: "dot" }, hoverinfo: "skip" },
    ], {
      height: 300, margin: { l: 60, r: 60, t: 20, b: 40 }, meta: "cell", legend: { orientation: "h", y: 1.15 },
      xaxis: { title: { text: "position in the passage" } },
      yaxis: { title: { text: "cell value" } },
      // Ticks of its own (whole characters at round steps), not the left axis's grid lines
      // carried over (which put them at 13.6, 32.2, 50.9).
      yaxis2: { title: { text: "characters since ↵" }, overlaying: "y", side: "right", showgrid: false,
        tickmode: "auto", rangemode: "tozero", tickformat: "d", nticks: 6 },
    });
  });
}

function drawCells(models) {
  const ids = new Set(models.map((m) => m.id));
  $("cells").replaceChildren(...CELLS.map((c) => {
    const have = ids.has(c.model);
    const card = document.createElement(have ? "a" : "div");
    card.className = "view-card";
    if (have) card.href = c.href;
    card.innerHTML = "<h3></h3><p></p><p class=\"learn\"></p>";
    card.querySelector("h3").textContent = c.title;
    card.querySelector("p").textContent = c.text;
    card.querySelector(".learn").textContent = have ? `Open ${c.href.split("?")[0].slice(1)} →`
      : `Needs the bundled ${c.model} model, which this server has not loaded.`;
    return card;
  }));
}

// ---- Chapters ----------------------------------------------------------------------------------

const chapterLoaded = {};
let modelsReady = null;

async function loadChapter() {
  const n = state.chapter;
  // A chapter left showing an earlier answer (its last call failed) asks again when shown.
  if (chapterLoaded[n] && !sections.find((s) => Number(s.dataset.chapter) === n).querySelector(".stale")) return;
  chapterLoaded[n] = true;
  if (n === 1) await loadHello();
  else if (n === 2) await loadUnroll();
  else if (n === 3) { syncPowerInputs(); await loadPower(); }
  else if (n === 4) { await modelsReady; await loadBackward(); }
  else if (n === 5) await loadClipping();
  else if (n === 6) await loadHighway();
  else if (n === 7) {
    const models = await modelsReady;
    drawCells(models);
    await loadLineCell(models);
  }
}

function showChapter(n) {
  state.chapter = n;
  for (const s of sections) s.hidden = Number(s.dataset.chapter) !== n;
  saveState();                                 // once shown: a chapter put away no longer holds the address
  document.querySelectorAll("#chapters [data-chapter]").forEach((b) => b.setAttribute("aria-pressed", String(Number(b.dataset.chapter) === n)));
  const i = CHAPTERS.indexOf(n);
  $("chapter-prev").disabled = i === 0;
  $("chapter-next").disabled = i === CHAPTERS.length - 1;
  $("chapter-where").textContent = `Chapter ${n} · ${i + 1} of ${CHAPTERS.length}`;
  loadChapter();
  // Plotly sizes a chart drawn while hidden to a default width: fit the shown ones.
  for (const el of sections.find((s) => Number(s.dataset.chapter) === n).querySelectorAll(".js-plotly-plot")) {
    Plotly.Plots.resize(el);
  }
}

document.querySelectorAll("#chapters [data-chapter]").forEach((b) => {
  if (!CHAPTERS.includes(Number(b.dataset.chapter))) b.remove();
  else b.addEventListener("click", () => showChapter(Number(b.dataset.chapter)));
});
$("chapter-prev").addEventListener("click", () => { showChapter(CHAPTERS[CHAPTERS.indexOf(state.chapter) - 1]); window.scrollTo(0, 0); });
$("chapter-next").addEventListener("click", () => { showChapter(CHAPTERS[CHAPTERS.indexOf(state.chapter) + 1]); window.scrollTo(0, 0); });

document.addEventListener("keydown", (e) => {
  if (state.chapter !== 1 || e.altKey || e.ctrlKey || e.metaKey) return;
  if (e.target.closest("input, select, textarea")) return;
  if (e.key === "ArrowRight") { e.preventDefault(); stepHello(state.t + 1); }
  if (e.key === "ArrowLeft") { e.preventDefault(); stepHello(state.t - 1); }
});

function main() {
  document.querySelectorAll(".learn-passage").forEach((s) => { s.value = String(state.passage); });
  document.querySelectorAll(".learn-position").forEach((i) => { i.value = state.position ?? ""; });
  $("backward-scale").value = state.scale;
  $("backward-scale-out").textContent = state.scale.toFixed(2);
  $("unroll-steps").value = state.steps;
  $("unroll-steps-out").textContent = state.steps;
  $("clip-threshold").value = state.clip;
  $("clip-threshold-out").textContent = state.clip.toFixed(2);
  $("clip-lr").value = state.lr;
  $("clip-lr-out").textContent = state.lr.toFixed(1);
  $("highway-span").value = state.span;
  $("highway-span-out").textContent = state.span;
  document.querySelectorAll("[data-layer]").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.layer === state.layer)));
  modelsReady = fillModels();
  showChapter(state.chapter);
}

main();
