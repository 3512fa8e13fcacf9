// Neurons in groups (the explorer's panel): factorise the layer and quantity on screen into K
// groups (POST /groups, NMF over the model's validation text), list each with its heaviest
// units; a group colours the text by its track, a unit opens that neuron. ?groups=K&group=k
// keep the view in the address.
import { api, colourAt, cssGradient, inkOn, isAbort, latest, queryParams, rgb, scaleFor, setStatus, toInt } from "./common.js";

const $ = (id) => document.getElementById(id);
const DEFAULT_K = 8;
const STOPS = scaleFor("o");        // 0 (white) to 1 (dark green): a track is never negative

/**
 * `hooks` come from explore.js: the charmap, the "coloured by" line, the legend and its hint, getters
 * for the model, layer, quantity, the text on screen (as read) and the corpus on the server (null: the
 * groups are fitted on that text), `view(layer, quantity,
 * unit)` to show a neuron and `save()` to write the address.
 */
export function initGroups(hooks) {
  const els = { panel: $("groups-panel"), k: $("groups-k"), run: $("groups-run"), status: $("groups-status"),
    note: $("groups-note"), list: $("groups-list") };
  const params = queryParams();
  let K = toInt(params.get("groups"), DEFAULT_K);
  let pending = toInt(params.get("group"), null);   // a group named by the address, coloured once read
  let result = null;         // {key, data}: the last /groups answer and what it was asked for
  let shown = null;          // the group the text is coloured by, or null (a neuron)
  const next = latest();
  els.k.value = K;

  const keyNow = () => JSON.stringify([hooks.model(), hooks.layer(), hooks.quantity(), K, hooks.text()]);

  async function factorise(then = null) {
    const text = hooks.text();
    if (!text) { setStatus(els.status, "error", "Read a text first: the groups colour it."); return; }
    K = Math.max(1, toInt(els.k.value, DEFAULT_K));
    const key = keyNow(), model = hooks.model(), layer = hooks.layer(), quantity = hooks.quantity();
    const signal = next();
    // The server fits on the validation text when it has the model's corpus, else on the text sent.
    const corpus = hooks.corpus();
    setStatus(els.status, "loading", `Factorising ${quantity} of layer ${layer} into ${K} groups over `
      + (corpus ? `${corpus}’s validation text (the first time per layer and K reads it: several seconds)…`
        : "the text above (this model’s training corpus is not on this server)…"));
    els.run.disabled = true;
    try {
      const data = await api(`/api/models/${encodeURIComponent(model)}/groups`,
        { layer, quantity, components: K, text, top: 8 }, { signal, status: els.status });
      result = { key, data };
      setStatus(els.status, "");
      draw();
      if (then !== null && then < data.groups.length) colour(then);
      else hooks.save();
    } catch (e) {
      if (!isAbort(e)) setStatus(els.status, "error", e);
    } finally {
      els.run.disabled = false;
    }
  }

  function draw() {
    const { data } = result;
    els.note.textContent = `${data.groups.length} groups of layer ${data.layer}’s ${data.quantity}, fitted on `
      + (data.source === "validation" ? `${data.chars.toLocaleString()} characters of ${data.corpus}’s validation text`
        : "the text above (this model’s training corpus is not on the server)")
      + `; together they rebuild ${(100 * data.explained).toFixed(0)} % of the units’ variation above their floors. `
      + "Click a group to colour the text by it, a unit to see it alone.";
    els.list.replaceChildren(...data.groups.map((g) => {
      const row = Object.assign(document.createElement("div"), { className: "group-row" });
      const pick = Object.assign(document.createElement("button"), { type: "button", className: "chip group-pick",
        textContent: `group ${g.index}`, title: `${(100 * g.share).toFixed(0)} % of the factorisation: colour the text by it` });
      pick.dataset.k = g.index;
      pick.setAttribute("aria-pressed", String(g.index === shown));
      pick.addEventListener("click", () => choose(g.index));
      const share = Object.assign(document.createElement("span"), { className: "muted small group-share",
        textContent: `${(100 * g.share).toFixed(0)} %` });
      const units = Object.assign(document.createElement("div"), { className: "chips" });
      units.append(...g.units.map((u) => {
        const b = Object.assign(document.createElement("button"), { type: "button", className: "chip secondary unit-chip",
          textContent: `#${u.unit}`, title: `${data.quantity}[${u.unit}] of layer ${data.layer}, weight ${u.weight.toFixed(2)}: view it` });
        b.style.opacity = String(0.45 + 0.55 * u.weight);
        b.addEventListener("click", () => hooks.view(data.layer, data.quantity, u.unit));
        return b;
      }));
      row.append(pick, share, units);
      return row;
    }));
  }

  /** Colour the text by group k, reading the groups again if the view has changed since. */
  function choose(k) {
    if (!result || result.key !== keyNow()) { factorise(k); return; }
    colour(k);
  }

  function colour(k) {
    const { data } = result;
    const g = data.groups[k], high = g.high > 0 ? g.high : 1;
    for (const ch of hooks.charmap.querySelectorAll(".ch")) {
      const c = colourAt(STOPS, g.track[Number(ch.dataset.i)] / high);
      ch.style.backgroundColor = rgb(c);
      ch.style.color = inkOn(c);
    }
    shown = k;
    for (const b of els.list.querySelectorAll(".group-pick")) b.setAttribute("aria-pressed", String(Number(b.dataset.k) === k));
    hooks.colouredBy.innerHTML = `Coloured by <b>group ${k}</b> of layer ${data.layer}’s ${data.quantity}: `
      + `${g.units.slice(0, 4).map((u) => `#${u.unit}`).join(", ")}… Pick a neuron to colour by it again.`;
    hooks.legend.innerHTML = `<div class="legend-block"><div class="bar"></div>
      <div class="ticks"><span>0</span><span>${(high / 2).toPrecision(2)}</span><span>${high.toPrecision(2)}</span></div></div>`;
    hooks.legend.querySelector(".bar").style.background = cssGradient(STOPS);
    hooks.rangeHint.textContent = "";                // it spoke of the neuron
    hooks.save();
  }

  els.run.addEventListener("click", () => factorise());
  els.k.addEventListener("keydown", (e) => { if (e.key === "Enter") factorise(); });
  els.panel.hidden = false;

  return {
    /** The address's part of the view. */
    query: () => ({ groups: result || pending !== null ? K : "", group: shown ?? pending ?? "" }),
    /** The explorer has just coloured the text by a neuron: no group is shown any more, unless
     * the address named one, which is read now that there is a text. */
    redrawn: () => {
      if (pending !== null && hooks.text()) {
        const k = pending;
        pending = null;
        factorise(k);
        return;
      }
      shown = null;
      for (const b of els.list.querySelectorAll(".group-pick")) b.setAttribute("aria-pressed", "false");
    },
  };
}
