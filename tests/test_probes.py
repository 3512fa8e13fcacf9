"""Concept probes, clamping, saliency and the memory horizon, proved on planted structure:
small models trained in the test on synthetic corpora whose state is known."""
from __future__ import annotations

import re
import time
import unicodedata

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from rnnscope.model import network
from rnnscope.model.attribution import ablate, losses, memory_horizon, saliency
from rnnscope.model.layers import Clamp
from rnnscope.model.lm import LanguageModel
from rnnscope.model.memorisation import SuffixIndex, codes, suffix_array
from rnnscope.model.network import ModelConfig
from rnnscope.model.patterns import PatternError, PatternTooSlow, compile_pattern, matches
from rnnscope.model.probes import (CONCEPTS, auc, best_threshold, bracket_depth, correlation, indentation,
                          inside_quotes, line_position, probe, python_literals, regex_indicator, top_contexts)
from rnnscope.model.sample import Stepper, sample
from rnnscope.model.train import TrainConfig, train
from rnnscope.model.vocab import Vocab
from tests.corpus import shakespeare_full


def quote_corpus(n_chars: int, seed: int) -> str:
    """Words of a-h; some runs of words are quoted, and exactly the letters between the
    (balanced) quotes are upper case, so predicting a letter's case needs a quote state."""
    rng = np.random.default_rng(seed)
    out, size = [], 0
    while size < n_chars:
        words = ["".join(rng.choice(list("abcdefgh"), rng.integers(1, 5))) for _ in range(rng.integers(2, 6))]
        if rng.random() < 0.5:
            k = int(rng.integers(0, len(words)))
            m = int(rng.integers(k + 1, len(words) + 1))
            words[k:m] = ['"' + " ".join(words[k:m]).upper() + '"']
        line = " ".join(words) + ("\n" if rng.random() < 0.3 else " ")
        out.append(line)
        size += len(line)
    return "".join(out)


def copy_corpus(lines: int, seed: int) -> tuple[str, list[tuple[int, int]]]:
    """Lines "x|x": a random letter, a separator, the same letter again. Returns the text and,
    per line, (position whose prediction is the copy, position of the letter copied)."""
    rng = np.random.default_rng(seed)
    text, pairs = [], []
    for i in range(lines):
        c = str(rng.choice(list("abcdefgh")))
        text.append(f"{c}|{c}\n")
        pairs.append((4 * i + 1, 4 * i))
    return "".join(text), pairs


@pytest.fixture(scope="module")
def quote_model() -> LanguageModel:
    """A 1x16 LSTM trained for 300 steps (about a second) on the quote corpus."""
    with threadpool_limits(1):
        return train(quote_corpus(40_000, seed=0), ModelConfig("lstm", 1, 16, 1),
                     TrainConfig(batch_size=16, seq_length=64, max_steps=300, learning_rate=1e-2,
                                 eval_every=300)).model


@pytest.fixture(scope="module")
def quote_text() -> str:
    return quote_corpus(3000, seed=1)


# ---- the concept library -----------------------------------------------------------------

def test_concepts_mark_the_characters_they_name():
    t = 'say "Hi (a[b]) x" ok)\n  # note http://x.io/a\n'
    assert "".join("1" if v else "0" for v in inside_quotes(t)[:18]) == "0000" + "1" * 12 + "00"
    depth = bracket_depth(t)
    assert depth[t.index("(")] == 1 and depth[t.index("[")] == 2 and depth[t.index("]")] == 1
    assert depth[t.index(")")] == 0 and depth.min() == 0               # the stray ")" does not go negative
    pos = line_position(t)
    assert pos[0] == 0 and pos[t.index("\n")] == t.index("\n") and pos[t.index("\n") + 1] == 0
    assert indentation(t)[t.index("#")] == 2 and indentation(t)[0] == 0
    url = CONCEPTS["url"].indicator(t)
    assert "".join(c for c, v in zip(t, url) if v) == "http://x.io/a"
    comment = CONCEPTS["comment"].indicator(t)
    assert "".join(c for c, v in zip(t, comment) if v) == "# note http://x.io/a"
    assert "".join(c for c, v in zip(t, regex_indicator(t, r"o\w")) if v) == "okot"
    for c in CONCEPTS.values():
        assert c.indicator(t).shape == (len(t),), c.name


def marked(text: str, labels: np.ndarray) -> str:
    """The text with every unlabelled character shown as '.'."""
    return "".join(c if v else "." for c, v in zip(text, labels))


def test_strings_and_comments_are_told_apart_as_pythons_tokenizer_does():
    t = r'''x = "a#b"  # it's "fine"
y = '\'' + r"\d\\" + f'{a["k"]}' + b'' + "\\"
'''
    string, comment, triple = python_literals(t)
    # The opening quote is inside, the closing one outside; an escaped quote does not
    # close, an escaped backslash does not escape the quote after it; prefixes are code.
    assert marked(t, string) == ('...."a#b' + "." * 17 + "...." +
                                 r''''\'....."\d\\.....'{a["k"]}.....'...."\\..''')
    assert marked(t, comment) == '...........# it\'s "fine"' + "." * (len(t) - t.index("\n"))
    assert np.array_equal(CONCEPTS["string"].indicator(t), string)
    assert np.array_equal(CONCEPTS["comment"].indicator(t), comment)
    assert not triple.any() and np.array_equal(CONCEPTS["inline_string"].indicator(t), string)
    # Prose: a string or a comment, every other character code.
    assert np.array_equal(CONCEPTS["prose"].indicator(t), np.maximum(string, comment))


def test_a_docstring_spans_lines_and_hides_what_looks_like_code():
    t = 'def f():\n    """Doc "x" \'y\n    # not a comment\n    """\n    return ""  # empty\n'
    string, comment, triple = python_literals(t)
    doc_open, doc_close = t.index('"""'), t.rindex('"""')
    want = np.zeros(len(t), bool)
    want[doc_open:doc_close + 2] = True                  # the closing triple's third quote is outside
    want[t.index('""  #')] = True                        # an empty string: its opening quote only
    assert np.array_equal(string.astype(bool), want)
    want[t.index('""  #')] = False
    assert np.array_equal(triple.astype(bool), want)                # the docstring, not the empty string
    assert np.flatnonzero(CONCEPTS["inline_string"].indicator(t)).tolist() == [t.index('""  #')]
    assert marked(t, comment) == "." * t.index("# empty") + "# empty" + "."
    # Six quotes are an empty triple-quoted string; a fourth closing quote opens another.
    t = '""""""+"""a""""'
    assert marked(t, python_literals(t).string) == '""""".."""a""."'


def test_unterminated_strings_end_at_the_newline_or_the_end_of_the_text():
    t = "s = 'open\nz = '''tail\n# still a string"
    string, comment, triple = python_literals(t)
    assert marked(t, string) == "....'open.....'''tail\n# still a string"
    assert not comment.any() and marked(t, triple) == "." * t.index("'''") + "'''tail\n# still a string"
    t = 'x = "cut'
    assert marked(t, python_literals(t).string) == '...."cut'
    assert all(a.shape == (0,) for a in python_literals(""))


def test_code_bracket_depth_skips_brackets_in_strings_and_comments():
    t = 'f(x, "[", g(y)) # (\nz = [1, \'{\']\n'
    depth = CONCEPTS["code_bracket_depth"].indicator(t)
    assert depth[t.index("g(") + 1] == 2 and depth[t.index(")) #") + 1] == 0
    assert depth[t.index("\n")] == 0 and depth[-1] == 0 and depth[t.index("1,")] == 1
    assert CONCEPTS["bracket_depth"].indicator(t)[-1] == 3                  # the plain concept counts them all


def test_the_literal_scanner_is_linear_in_the_text():
    """Quotes, hashes and backslashes packed densely, where a scan that looked ahead for a
    closing quote from every opening one would be quadratic."""
    dense = ("'\\'#\"\\" * 20_000 + "\n") * 10
    start = time.perf_counter()
    python_literals(dense[: len(dense) // 10])
    short = time.perf_counter() - start
    start = time.perf_counter()
    found = python_literals(dense)
    assert time.perf_counter() - start < 30 * short + 0.5
    assert all(a.shape == (len(dense),) for a in found)


# ---- user patterns: RE2, linear in the text -----------------------------------------------

CODE = ('def parse(line):  # split "key = value"\n    key, _, value = line.partition("=")\n'
        '    return key.strip(), value  # naïve: Ωμέγα = 3, café ٣٤\u00a0ok\n\n'
        'undef = "define" if defined else "x"  # def_ is a word, def is one too\n'
        'Visit http://example.org/a?b=1 or www.example.com.\n') * 3


@pytest.mark.parametrize("pattern", [
    r"\bdef\b", r'"[^"\n]*"', r"#.*", r"(?m)^\s+", r"\w+", r"\W+", r"\d+", r"\s+", r"\S+", r"[\w\s]+",
    r"[\W\d]+", r"(?i)DEF\w*", r"(?s)def.*?def", r"(?x) k e y  # verbose", r"[^\s\"'<>()]+",
    r"(?:https?://|www\.)\S+", r"x{,3}", r"a|ab|abc", r"(?P<word>[A-Z][a-z]+)",
    r"\N{GREEK SMALL LETTER OMEGA}|\u00e9", r"[-\]^\\]", r"(?a)\w+", r"", r".",
])
def test_user_patterns_match_where_pythons_re_does(pattern):
    assert list(matches(compile_pattern(pattern), CODE)) == [m.span() for m in re.finditer(pattern, CODE)]


def test_unicode_classes_are_pythons_for_every_assigned_character():
    # RE2's \w, \d and \s are ASCII; the translation keeps Python's (Unicode 14 here:
    # characters assigned later are left out, as Python does not know them).
    text = "".join(chr(c) for c in range(0x10000) if unicodedata.category(chr(c)) not in ("Cn", "Cs"))
    for pattern in (r"\w", r"\d", r"\s", r"[\W\d]"):
        got = [s for s, _ in matches(compile_pattern(pattern), text)]
        assert got == [m.start() for m in re.finditer(pattern, text)], pattern


@pytest.mark.parametrize("pattern,feature", [
    (r"(a)\1", "backreference"), (r"(?P<q>')\w+(?P=q)", "backreference"), (r"\w+(?=:)", "lookahead"),
    (r"\w+(?!:)", "negative lookahead"), (r"(?<=def )\w+", "lookbehind"), (r"(?<!x)y", "negative lookbehind"),
    (r"a*+b", "possessive"), (r"(?>a|ab)c", "atomic group"), (r"(')?x(?(1)')", "conditional"),
    (r"x{1001}", "over 1000"), (r"[^\W\d]", r"\W in a negated class"),
])
def test_patterns_needing_backtracking_are_refused_by_name(pattern, feature):
    with pytest.raises(PatternError) as e:
        compile_pattern(pattern)
    assert e.value.kind == "regex_unsupported" and feature in e.value.feature and feature in str(e.value)


@pytest.mark.parametrize("pattern", ["(unclosed", "a{99999999999999999999}", "*a", "[z-a]"])
def test_what_is_not_a_regular_expression_says_so(pattern):
    with pytest.raises(PatternError, match="not a regular expression") as e:
        compile_pattern(pattern)
    assert e.value.kind == "regex_error"


def test_catastrophic_backtracking_patterns_run_in_linear_time():
    # Python's re takes ~27 s for the first on 28 a's, doubling with each one more.
    for text in ("a" * 27 + "b", "a" * 19_999 + "b"):
        for pattern in (r"(a+)+$", r"(a|aa)*c", r"(a*)*b$", r"(\w+\s?)+$", r"(.*a){12}x"):
            start = time.perf_counter()
            assert regex_indicator(text, pattern).sum() in (0, len(text))
            assert time.perf_counter() - start < 1.0, (pattern, len(text))


def test_finding_every_match_has_a_time_budget():
    # Each search reads to the end of the text hoping for a z: quadratic over all matches.
    slow = compile_pattern(r"a(?:[\w ]*?\w{20}z)?")
    start = time.perf_counter()
    with pytest.raises(PatternTooSlow, match="took over 0.05 s"):
        regex_indicator("a" * 10_000, slow, max_seconds=0.05)
    assert time.perf_counter() - start < 1.0
    assert regex_indicator("a" * 100, slow, max_seconds=1.0).sum() == 100


def test_auc_equals_the_pairwise_definition_with_ties_counted_half():
    rng = np.random.default_rng(0)
    y = rng.random(300) > 0.6
    x = rng.standard_normal((8, 300)).astype(np.float32)
    x[1] = 1.0                                    # constant: AUC 0.5 exactly
    x[2] = np.round(x[2])                         # heavy ties
    x[3] = np.where(y, 0.9, 0.1) + 0.0 * x[3]     # a perfect separator
    x[4] = -x[3]
    x[5] = np.clip(x[5], -0.3, 0.3)
    pos, neg = x[:, y], x[:, ~y]
    want = ((pos[:, :, None] > neg[:, None, :]).mean(axis=(1, 2))
            + 0.5 * (pos[:, :, None] == neg[:, None, :]).mean(axis=(1, 2)))
    np.testing.assert_allclose(auc(x, y, block=3), want, atol=1e-9)
    # Columns picked from a wider array (a column-major result) rank the same.
    wide = np.repeat(x, 2, axis=1)
    picked = wide[:, ::2][:, np.ones(300, bool)]
    np.testing.assert_allclose(auc(picked, y, block=3), want, atol=1e-9)
    assert auc(x, y)[3] == 1.0 and auc(x, y)[4] == 0.0 and auc(x, y)[1] == 0.5


def test_correlation_and_threshold():
    rng = np.random.default_rng(1)
    t = rng.standard_normal(200)
    x = np.stack([t * 2 + 1, -t, rng.standard_normal(200), np.zeros(200)]).astype(np.float32)
    r = correlation(x, t)
    np.testing.assert_allclose(r[:2], [1, -1], atol=1e-6)
    assert abs(r[2]) < 0.3 and r[3] == 0.0
    y = t > 0.5
    threshold, j, sign = best_threshold(x[0], y)
    assert j == 1.0 and sign == 1 and 2.0 <= threshold <= 2 * t[y].min() + 1
    assert best_threshold(x[1], y)[2] == -1


def test_top_contexts_are_extremes_kept_apart():
    v = np.zeros(100, np.float32)
    v[[10, 11, 12, 50]] = [5, 4.5, 4, 3]
    v[[70, 90]] = [-2, -1]
    high, low = top_contexts(v, 2, min_gap=5)
    assert [c.position for c in high] == [10, 50]
    assert [c.position for c in low] == [70, 90]


# ---- planted structure ---------------------------------------------------------------------

def test_the_quote_probe_finds_a_quote_neuron(quote_model, quote_text):
    concept = CONCEPTS["quotes"]
    result = probe(quote_model, quote_text, concept.indicator(quote_text), graded=False, top=5)
    best = result.ranked[0]
    assert result.total_units == 16 * 6                     # h, c, i, f, g, o of one layer
    assert max(best.score, 1 - best.score) >= 0.95, best
    assert best.separation > 0.85
    # Upper case is a consequence of the quote state, so a neuron tracks it too.
    upper = probe(quote_model, quote_text, CONCEPTS["upper"].indicator(quote_text), graded=False, top=1)
    assert upper.ranked[0].strength > 0.8


def test_ablating_the_quote_neuron_hurts_upper_case_inside_quotes(quote_model, quote_text):
    ids = quote_model.encode(quote_text)
    best = probe(quote_model, quote_text, CONCEPTS["quotes"].indicator(quote_text), False, 1).ranked[0]
    base = losses(quote_model, ids)
    ablated = losses(quote_model, ids, ablate({best.layer: [best.unit]}))
    target = np.array([c.isupper() for c in quote_text[1:]])          # the predicted characters
    rise_inside = (ablated - base)[target].mean()
    rise_elsewhere = (ablated - base)[~target].mean()
    assert rise_inside > 0.2 and rise_inside > 10 * max(rise_elsewhere, 0.0), (rise_inside, rise_elsewhere)
    # An ablated random unit that tracks nothing costs far less.
    other = next(u for u in range(16) if u != best.unit)
    assert (losses(quote_model, ids, ablate({0: [other]})) - base)[target].mean() < rise_inside


def test_memory_horizon_of_the_quote_model(quote_model, quote_text):
    h = memory_horizon(quote_model, quote_text, positions=8, window=120)
    assert h.lags.shape == (1, 8) and h.profile.shape == (1, 121)
    assert h.profile[0, 0] == pytest.approx(1.0)
    assert 1 <= h.mean[0] <= 120
    # Each lag is where the profile of that position first falls below 1 %.
    single = memory_horizon(quote_model, quote_text[:200], positions=1, window=120)
    assert single.profile[0, single.lags[0, 0]] < 0.01 or single.censored[0, 0]
    assert (single.profile[0, :single.lags[0, 0]] >= 0.01).all()


def test_saliency_peaks_at_the_copied_character():
    """Predicting the copy, the letter copied stands out from every earlier character; only
    the separator just read (which says "copy now") comes near it."""
    text, _ = copy_corpus(4000, seed=0)
    with threadpool_limits(1):
        model = train(text, ModelConfig("lstm", 1, 32, 1),
                      TrainConfig(batch_size=16, seq_length=48, max_steps=400, learning_rate=1e-2,
                                  eval_every=400)).model
    test, pairs = copy_corpus(12, seed=5)
    over_others, over_separator = [], []
    for position, copied in pairs[2:]:
        s = saliency(model, test, position)
        assert s.norms.shape == (position + 1,)
        earlier = s.norms[:position]                                   # all but the separator just read
        assert int(np.argmax(earlier)) == copied, (position, np.round(s.norms[copied - 4:], 4))
        over_others.append(s.norms[copied] / np.delete(earlier, copied).max())
        over_separator.append(s.norms[copied] / s.norms[position])
    assert np.median(over_others) > 3.0, np.round(over_others, 2)
    assert np.median(over_separator) > 0.5, np.round(over_separator, 2)


def test_saliency_equals_finite_differences_through_the_one_hot_input():
    """dL/dx_k from backward against centred differences on x_k, in float64 on tiny sizes."""
    text = "abcab"
    vocab = Vocab.from_text(text)
    for cell in ("rnn", "gru", "lstm"):
        cfg = ModelConfig(cell, len(vocab), 5, 2)
        model = LanguageModel(cfg, vocab, network.init_params(cfg, seed=3, dtype=np.float64))
        ids = vocab.encode(text)
        s = saliency(model, text, 3)

        def loss_with(k, e, eps):
            # x_k = onehot + eps e: the input term of layer 0 at step k moves by eps W_ih e.
            W_ih = model.params["rnn.weight_ih_l0"]
            logits = forward_with_input_shift(cfg, model.params, ids[None, :4], k, eps * (W_ih @ e))
            logp = logits[0, -1] - np.log(np.exp(logits[0, -1]).sum())
            return -logp[ids[4]]

        for k in range(4):
            grad = np.array([(loss_with(k, e, 1e-6) - loss_with(k, e, -1e-6)) / 2e-6 for e in np.eye(len(vocab))])
            assert np.linalg.norm(grad) == pytest.approx(s.norms[k], rel=1e-5, abs=1e-9), (cell, k)


def forward_with_input_shift(cfg, params, ids, k, shift):
    """The network's forward with `shift` added to layer 0's input pre-activation at step k."""
    from rnnscope.model.layers import dense_forward, onehot_forward, recurrent_forward
    from rnnscope.model.cells import get_cell
    cell = get_cell(cfg.cell)
    x = None
    for l in range(cfg.num_layers):
        W_ih, W_hh, b_ih, b_hh = network.layer_params(params, l)
        xa = onehot_forward(ids.T, W_ih, b_ih) if l == 0 else dense_forward(x, W_ih, b_ih)
        if l == 0:
            xa = xa.copy()
            xa[k, 0] += shift
        H = cfg.hidden_size
        lc = recurrent_forward(cell, xa, W_hh, b_hh, np.zeros((1, H)), np.zeros((1, H)) if cell.has_cell_state else None)
        x = lc.hs[1:]
    return dense_forward(x, params["decoder.weight"], params["decoder.bias"]).transpose(1, 0, 2)


# ---- clamping ----------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_a_clamp_holds_units_in_every_step_and_the_stepper_agrees(cell):
    text = "hello there, general kenobi\n" * 3
    vocab = Vocab.from_text(text)
    cfg = ModelConfig(cell, len(vocab), 8, 2)
    model = LanguageModel(cfg, vocab, network.init_params(cfg, seed=1))
    ids = model.encode(text)
    clamp = {0: Clamp(np.array([1, 5]), np.float32(0.0)), 1: Clamp(np.array([2]), np.float32(0.7))}
    logits, _, cache = model.forward(ids[None], clamp=clamp)
    assert (cache.layers[0].hs[1:, 0, [1, 5]] == 0).all() and (cache.layers[1].hs[1:, 0, 2] == np.float32(0.7)).all()
    if cache.layers[0].cs is not None:
        assert (cache.layers[0].cs[1:, 0, [1, 5]] == 0).all()
    # Stepping with the clamp equals the whole-sequence forward with it.
    stepper = Stepper(model, clamp=clamp)
    stepped = np.stack([stepper.step(int(i)).copy() for i in ids])
    np.testing.assert_allclose(stepped, logits[0], rtol=1e-5, atol=1e-5)
    # Without a clamp nothing changes, bit for bit.
    plain, _, _ = model.forward(ids[None])
    assert np.array_equal(plain, model.forward(ids[None], clamp=None)[0])
    assert not np.allclose(plain, logits)
    # The same seed draws the same numbers: a zero-effect clamp gives the same sample.
    no_effect = {0: Clamp(np.array([], np.int64), np.float32(0.0))}
    assert sample(model, "hel", 40, seed=3, clamp=no_effect) == sample(model, "hel", 40, seed=3)


# ---- memorisation ------------------------------------------------------------------------

def test_suffix_array_sorts_suffixes_and_spans_are_verbatim():
    text = "the cat sat on the mat. the cat ran. a bat sat on a hat."
    sa = suffix_array(codes(text), depth=64)
    assert [text[i:] for i in sa] == sorted(text[i:] for i in range(len(text)))
    query = "xx the cat sat on a hat! the mat"
    for depth in (4, 64):                                     # a match past the depth is followed on
        spans = SuffixIndex(text, max_match=depth).spans(query, min_length=6)
        found = [query[s.start:s.end] for s in spans]
        assert found == [" the cat ", "the cat sat on ", "at sat on a hat", " the mat"]
    for s, f in zip(spans, found):
        assert text[s.corpus_position:s.corpus_position + len(f)] == f
    assert SuffixIndex(text).spans("zzzzzzzz", min_length=4) == []


# ---- the bundled models --------------------------------------------------------------------

def test_the_bundled_lstm_remembers_longer_than_the_bundled_rnn():
    """Issue 5: the memory horizon of the bundled LSTM exceeds the bundled RNN's on the same
    validation text (figures in docs/analyses.md, "Finding neurons")."""
    from rnnscope.model.bundled import bundled_paths
    from rnnscope.model.checkpoint import load_model
    from rnnscope.model.data import split

    paths = bundled_paths()
    if not {"lstm", "rnn"} <= paths.keys():
        pytest.skip("the bundled LSTM and RNN are not both in model/weights")
    _, val = split(shakespeare_full(), 0.1)
    text = val[:20_000]
    with threadpool_limits(1):
        horizon = {mid: memory_horizon(load_model(paths[mid]), text, positions=16, window=200)
                   for mid in ("lstm", "rnn")}
    assert horizon["lstm"].mean.max() > horizon["rnn"].mean.max(), {k: h.mean for k, h in horizon.items()}
