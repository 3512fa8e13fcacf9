"""The pages' views as objects a notebook shows: a model, its trace of a text, the text
coloured by one unit, gradients through time, gate saturation, probes and samples.

Every number comes from the same rnnscope.model functions the server calls; the coloured
text uses rnnscope.colours, the Python half of the pages' colour maths. HTML is
self-contained (inline styles, hover titles, no script, no network), so it survives nbconvert
and a notebook opened offline. Figures are plotly.graph_objects.Figure, to restyle and save.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np

from rnnscope.model.analysis import gate_saturation, gradient_through_time
from rnnscope.model.layers import log_softmax
from rnnscope.model.lm import LanguageModel
from rnnscope.model.probes import CONCEPTS, activations, rank_units, regex_indicator
from rnnscope.model.sample import generate

from . import colours

FONT = "system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', sans-serif"
LAYER_COLOURS = ["#1c6dd0", "#e8590c", "#2f9e44", "#ae3ec9", "#0c8599", "#f08c00"]


def figure(**layout):
    import plotly.graph_objects as go              # plotly is a dependency; imported when drawn
    fig = go.Figure()
    fig.update_layout(template="plotly_white", font=dict(family=FONT, size=13, color="#1d2330"),
                      margin=dict(l=70, r=30, t=60, b=60), **layout)
    return fig


# ---- a trace: every internal value per step --------------------------------------------------

@dataclass
class LayerTrace:
    """One layer's values after reading each character: h, c (LSTM) and each gate, (T, H)."""

    h: np.ndarray
    c: np.ndarray | None
    gates: dict[str, np.ndarray]

    def __getattr__(self, name: str) -> np.ndarray:      # trace.layers[0].f, .i, .o, .g, .r, .z, .n
        gates = self.__dict__.get("gates", {})
        if name in gates:
            return gates[name]
        raise AttributeError(name)

    def quantity(self, name: str) -> np.ndarray:
        if name == "h":
            return self.h
        if name == "c" and self.c is not None:
            return self.c
        if name in self.gates:
            return self.gates[name]
        known = ["h"] + (["c"] if self.c is not None else []) + list(self.gates)
        raise ValueError(f"no quantity {name!r}; choose from {', '.join(known)}")


@dataclass
class Trace:
    """A model's reading of `text` from a zero state.

    loss[t] is -ln p(text[t+1] | text[..t]) in nats (len(text) - 1 values); layers[l].h,
    .c and the gates are (len(text), H); top_chars/top_probs are the 5 likeliest next
    characters after each position."""

    model: Model
    text: str
    loss: np.ndarray
    layers: list[LayerTrace]
    top_chars: list[list[str]]
    top_probs: np.ndarray

    def __repr__(self) -> str:
        cfg = self.model.lm.config
        return (f"<Trace of {len(self.text):,} characters through {self.model.name}: mean loss "
                f"{self.loss.mean() if len(self.loss) else float('nan'):.3f} nats, {cfg.num_layers} layers x "
                f"{cfg.hidden_size} units, quantities {', '.join(self.model.lm.cell.quantities)}>")

    def values(self, layer: int = 0, quantity: str = "h") -> np.ndarray:
        if not 0 <= layer < len(self.layers):
            raise ValueError(f"layer {layer} does not exist; the model has {len(self.layers)}")
        return self.layers[layer].quantity(quantity)

    def show(self, layer: int = 0, quantity: str = "h", neuron: int = 0, range: str = "auto") -> ColouredText:
        values = self.values(layer, quantity)
        if not 0 <= neuron < values.shape[1]:
            raise ValueError(f"neuron {neuron} does not exist; the layer has {values.shape[1]}")
        return ColouredText(self, layer, quantity, neuron, colours.display_range(values[:, neuron], quantity, range))

    def heatmap(self, layer: int = 0, quantity: str = "h", neurons=None):
        """Units (rows) over the characters (columns), on the quantity's colour scale."""
        values = self.values(layer, quantity)
        rows = np.arange(values.shape[1]) if neurons is None else np.asarray(neurons, int).reshape(-1)
        lo, hi = colours.unit_range(quantity)
        labels = [f"{i}: {colours.show_char(c)}" for i, c in enumerate(self.text)]
        fig = figure(title=f"{self.model.name}: layer {layer} {quantity}, {len(rows)} units",
                     xaxis=dict(title="character position in the text"),
                     yaxis=dict(title="neuron", autorange="reversed"))
        import plotly.graph_objects as go
        fig.add_trace(go.Heatmap(z=values[:, rows].T, x=np.arange(len(self.text)), y=[str(r) for r in rows],
                                 zmin=lo, zmax=hi, colorscale=colours.plotly_scale(colours.scale_for(quantity)),
                                 customdata=np.tile(np.array(labels, object), (len(rows), 1)),
                                 hovertemplate="read %{customdata}<br>neuron %{y}: %{z:.3f}<extra></extra>",
                                 colorbar=dict(title=dict(text=quantity, side="right"))))
        return fig


def read(model: Model, text: str) -> Trace:
    lm = model.lm
    ids = lm.encode(text)
    cfg, cell = lm.config, lm.cell
    T, H = len(ids), cfg.hidden_size
    keep = {(l, q): np.empty((T, H), lm.dtype) for l in range(cfg.num_layers) for q in cell.quantities}
    logits = np.empty((T, cfg.vocab_size), np.float64)
    for s, piece, cache in lm.read(ids):
        logits[s:s + len(piece)] = piece
        for (l, q), out in keep.items():
            out[s:s + len(piece)] = lm.internals(cache, l, q)
    logp = log_softmax(logits)
    loss = -logp[np.arange(T - 1), ids[1:]] if T > 1 else np.zeros(0)
    top = np.argsort(-logp, axis=1, kind="stable")[:, :5]
    layers = [LayerTrace(keep[l, "h"], keep.get((l, "c")), {g: keep[l, g] for g in cell.gate_names})
              for l in range(cfg.num_layers)]
    return Trace(model, text, loss, layers, [[lm.vocab.chars[i] for i in row] for row in top],
                 np.exp(np.take_along_axis(logp, top, axis=1)))


# ---- the text coloured by one unit ------------------------------------------------------------

def minus(v: float, plus: bool = False) -> str:
    """A legend number as the page writes it: 3 significant digits, a real minus sign."""
    return (f"{v:+.3g}" if plus and v > 0 else f"{v:.3g}").replace("-", "−")


CHAR_STYLE = ("display:inline-block;min-width:0.62em;padding:1px 0;margin:0 0 2px 0;border-radius:2px;"
              "text-align:center;white-space:pre")


@dataclass
class ColouredText:
    """/explore's view of one unit in a notebook cell: each character's background is the
    unit's value after reading it; hover shows the value, the loss and the top 5 guesses."""

    trace: Trace
    layer: int
    quantity: str
    neuron: int
    value_range: tuple[float, float]

    @property
    def values(self) -> np.ndarray:
        return self.trace.values(self.layer, self.quantity)[:, self.neuron]

    def colours(self) -> list[tuple[int, int, int]]:
        """Each character's background, exactly as /explore computes it."""
        lo, hi = self.value_range
        a, b = colours.unit_range(self.quantity)
        stops = colours.scale_for(self.quantity)
        return [colours.colour_at(stops, a + (float(v) - lo) / (hi - lo) * (b - a)) for v in self.values]

    def hover(self, t: int) -> str:
        tr, v = self.trace, float(self.values[t])
        lines = [f"read {colours.show_char(tr.text[t])} at {t}: {self.quantity}[{self.neuron}] = {v:.3f}"]
        if t + 1 < len(tr.text):
            loss = float(tr.loss[t])
            lines.append(f"next is {colours.show_char(tr.text[t + 1])}: p = {np.exp(-loss):.3f}, "
                         f"loss {loss:.2f} nats")
        else:
            lines.append("the last character: nothing to predict")
        lines.append("top 5 guesses: " + ", ".join(f"{colours.show_char(c)} {p:.3f}"
                                                   for c, p in zip(tr.top_chars[t], tr.top_probs[t])))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        tr = self.trace
        parts = []
        for t, (c, colour) in enumerate(zip(tr.text, self.colours())):
            shown = "↵" if c == "\n" else (c if c in " \t" or c.isprintable() else colours.show_char(c))
            parts.append(f'<span style="{CHAR_STYLE};background:{colours.rgb(colour)};color:{colours.ink_on(colour)}"'
                         f' title="{html.escape(self.hover(t))}">{html.escape(shown)}</span>')
            if c == "\n":
                parts.append("<br>")
        lo, hi = self.value_range
        stops = colours.scale_for(self.quantity)
        legend = (f'<div style="display:flex;align-items:center;gap:8px;margin:6px 0;font-size:12px">'
                  f'<span>{minus(lo)}</span><span style="display:inline-block;width:180px;height:10px;'
                  f'border-radius:2px;background:{colours.css_gradient(stops)}"></span><span>{minus(hi, plus=True)}</span>'
                  f'<span style="color:#5c6370">hover a character for its value and the top 5 guesses</span></div>')
        head = (f'<div style="font-weight:600;margin-bottom:4px">{html.escape(tr.model.name)}: layer '
                f'{self.layer} {html.escape(self.quantity)}[{self.neuron}]</div>')
        body = f'<div style="font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;line-height:1.5">{"".join(parts)}</div>'
        return f'<div style="font-family:{html.escape(FONT)};color:#1d2330">{head}{legend}{body}</div>'

    def __repr__(self) -> str:
        return (f"<ColouredText: layer {self.layer} {self.quantity}[{self.neuron}] over {len(self.trace.text)} "
                "characters; display it in a notebook>")


# ---- gradients through time, gates, probes, samples ---------------------------------------------

@dataclass
class Gradients:
    """How the loss at `position` reaches back: ||dL/dh_k|| per layer for k = 0..position."""

    model: Model
    text: str
    position: int
    loss: float
    h: list[np.ndarray]
    c: list[np.ndarray] | None

    def plot(self):
        fig = figure(title=f"{self.model.name}: how the loss at character {self.position} reaches back",
                     xaxis=dict(title="characters back from the prediction"),
                     yaxis=dict(title="‖∂L/∂h<sub>k</sub>‖", type="log", exponentformat="power"))
        import plotly.graph_objects as go
        for l, norms in enumerate(self.h):
            back = np.arange(len(norms))[::-1]
            fig.add_trace(go.Scatter(x=back, y=norms, mode="lines", name=f"layer {l} h",
                                     line=dict(color=LAYER_COLOURS[l % len(LAYER_COLOURS)])))
        return fig


@dataclass
class GateSaturation:
    """Per layer and gate, per unit: the fraction of steps below 0.1 and above 0.9."""

    model: Model
    text: str
    fractions: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]

    def plot(self):
        import plotly.graph_objects as go
        fig = figure(title=f"{self.model.name}: how often each gate saturates over {len(self.text):,} characters",
                     xaxis=dict(title="fraction of steps left-saturated (< 0.1)", range=[0, 1]),
                     yaxis=dict(title="fraction right-saturated (> 0.9)", range=[0, 1]))
        for k, ((layer, gate), (left, right)) in enumerate(self.fractions.items()):
            fig.add_trace(go.Scatter(x=left, y=right, mode="markers", name=f"layer {layer} {gate}",
                                     marker=dict(size=5, opacity=0.6, color=LAYER_COLOURS[k % len(LAYER_COLOURS)])))
        if not self.fractions:
            fig.add_annotation(text="a vanilla RNN has no gates", showarrow=False, x=0.5, y=0.5)
        return fig


@dataclass
class ProbeTable:
    """The units that track a concept best, strongest first (AUC or correlation, signed)."""

    concept: str
    description: str
    graded: bool
    rows: list[dict] = field(default_factory=list)

    def __repr__(self) -> str:
        head = f"{self.concept}: {self.description} ({'correlation' if self.graded else 'AUC'})"
        return "\n".join([head] + [f"  layer {r['layer']} {r['quantity']}[{r['unit']}]  score {r['score']:+.3f}  "
                                   f"strength {r['strength']:.3f}" for r in self.rows])

    def _repr_html_(self) -> str:
        score = "r" if self.graded else "AUC"
        td = '<td style="padding:2px 10px;text-align:right">'
        cells = "".join(f"<tr>{td}{r['layer']}</td>{td}{html.escape(r['quantity'])}</td>{td}{r['unit']}</td>"
                        f"{td}{r['score']:.3f}</td>{td}{r['strength']:.3f}</td>{td}{'up' if r['sign'] > 0 else 'down'}"
                        "</td></tr>" for r in self.rows)
        head = "".join(f"<th style='padding:2px 10px'>{h}</th>"
                       for h in ("layer", "quantity", "unit", score, "strength", "on the concept"))
        return (f"<div><b>{html.escape(self.concept)}</b>: {html.escape(self.description)}</div>"
                "<table style='border-collapse:collapse;font-variant-numeric:tabular-nums'>"
                f"<thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")

    def to_pandas(self):
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_pandas needs pandas: pip install pandas") from None
        return pd.DataFrame(self.rows)


class Sample(str):
    """Generated text (a str) that also knows each character's probability when drawn."""

    probabilities: list[float]

    def __new__(cls, text: str, probabilities: list[float]):
        s = super().__new__(cls, text)
        s.probabilities = probabilities
        return s

    def _repr_html_(self) -> str:
        spans = []
        for c, p in zip(self, self.probabilities):
            colour = colours.colour_at(colours.SURPRISE, p)
            shown = "↵" if c == "\n" else c
            spans.append(f'<span style="{CHAR_STYLE};background:{colours.rgb(colour)}" '
                         f'title="p = {p:.3f} when drawn">{html.escape(shown)}</span>' + ("<br>" if c == "\n" else ""))
        return ('<div style="font-family:ui-monospace,Menlo,Consolas,monospace;line-height:1.5">'
                f'{"".join(spans)}</div><div style="font-size:12px;color:#5c6370">orange: the model was surprised '
                '(low probability when drawn)</div>')


# ---- the model --------------------------------------------------------------------------------

class Model:
    """A character-level RNN, GRU or LSTM language model, with the pages' views as methods."""

    def __init__(self, lm: LanguageModel, name: str):
        self.lm, self.name = lm, name

    def __repr__(self) -> str:
        cfg = self.lm.config
        return (f"<rnnscope.Model {self.name!r}: {cfg.cell.upper()} {cfg.num_layers}x{cfg.hidden_size}, "
                f"{len(self.lm.vocab)} characters, {self.lm.num_parameters:,} parameters>")

    @property
    def chars(self) -> list[str]:
        return list(self.lm.vocab.chars)

    def trace(self, text: str) -> Trace:
        return read(self, text)

    def show(self, text: str, layer: int = 0, quantity: str = "h", neuron: int = 0, range: str = "auto"):
        return self.trace(text).show(layer, quantity, neuron, range)

    def heatmap(self, text: str, layer: int = 0, quantity: str = "h", neurons=None):
        return self.trace(text).heatmap(layer, quantity, neurons)

    def gradients(self, text: str, position: int | None = None) -> Gradients:
        g = gradient_through_time(self.lm, text, position)
        return Gradients(self, text, g.position, float(g.loss), list(g.h_grad_norm), g.c_grad_norm)

    def gates(self, text: str) -> GateSaturation:
        return GateSaturation(self, text, gate_saturation(self.lm, text))

    def probe(self, text: str, concept: str | None = None, regex: str | None = None, top: int = 10) -> ProbeTable:
        """Rank every unit against a concept of the library (rnnscope.concepts()) or a regex."""
        if (concept is None) == (regex is None):
            raise ValueError(f"give a concept ({', '.join(CONCEPTS)}) or a regex, one of them")
        if regex is not None:
            indicator, name, description, graded = (regex_indicator(text, regex), "regex",
                                                    f"inside a match of /{regex}/", False)
        else:
            if concept not in CONCEPTS:
                raise ValueError(f"no concept {concept!r}; choose from {', '.join(CONCEPTS)}")
            c = CONCEPTS[concept]
            indicator, name, description, graded = c.indicator(text), c.name, c.description, c.graded
        positives = int((indicator != 0).sum())
        if (not graded and positives in (0, len(text))) or (graded and np.ptp(indicator) == 0):
            raise ValueError(f"the concept ({description}) holds {'everywhere' if positives else 'nowhere'} in "
                             "this text; use a text where it holds for some characters only")
        result = rank_units(activations(self.lm, self.lm.encode(text)), indicator, graded, top)
        rows = [dict(layer=r.layer, quantity=r.quantity, unit=r.unit, score=r.score, strength=r.strength,
                     sign=r.sign) for r in result.ranked]
        return ProbeTable(name, description, graded, rows)

    def sample(self, prime: str = "", length: int = 200, temperature: float = 1.0, top_k: int = 0,
               seed: int | None = None) -> Sample:
        pairs = list(generate(self.lm, prime, length, temperature, top_k, seed))
        return Sample("".join(c for c, _ in pairs), [p for _, p in pairs])

    def save(self, path) -> None:
        from rnnscope.model.checkpoint import save_model
        save_model(self.lm, path)

    def open(self, **kwargs):
        """Serve this model (with the bundled ones) on loopback in the background: see rnnscope.serve."""
        from .server import serve
        return serve(self, **kwargs)
