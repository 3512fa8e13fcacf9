"""Vocabulary, sampling, checkpoints and training: behaviour users rely on."""
import numpy as np
import pytest
from safetensors.numpy import save_file

from rnnscope.model import network
from rnnscope.model.analysis import gate_saturation, gradient_through_time, recurrent_singular_values
from rnnscope.model.checkpoint import CheckpointError, load_model, save_model
from rnnscope.model.data import split, stream_batches
from rnnscope.model.lm import LanguageModel
from rnnscope.model.network import ModelConfig
from rnnscope.model.sample import GREEDY_BELOW, generate, next_char_distribution, sample
from rnnscope.model.train import TrainConfig, TrainingDiverged, train
from rnnscope.model.vocab import UnknownCharactersError, Vocab

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
        "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n") * 20


def make_model(cell="lstm", hidden=16, layers=2, seed=0):
    vocab = Vocab.from_text(TEXT)
    cfg = ModelConfig(cell, len(vocab), hidden, layers)
    return LanguageModel(cfg, vocab, network.init_params(cfg, seed))


def test_vocab_round_trip_and_unknown_characters_are_named():
    vocab = Vocab.from_text("hello wörld")
    assert vocab.decode(vocab.encode("wörld")) == "wörld"
    with pytest.raises(UnknownCharactersError) as err:
        vocab.encode("hello 🙂 zebra")
    assert err.value.chars == ["a", "b", "z", "🙂"]
    assert "'🙂'" in str(err.value)


def test_model_refuses_empty_text():
    with pytest.raises(ValueError, match="empty"):
        make_model().run("")


def test_sampling_is_deterministic_per_seed():
    model = make_model()
    a = sample(model, "First", 80, temperature=1.0, seed=3)
    b = sample(model, "First", 80, temperature=1.0, seed=3)
    c = sample(model, "First", 80, temperature=1.0, seed=4)
    assert a == b
    assert a[0] != c[0]
    assert len(a[0]) == 80 and len(a[1]) == 80
    assert all(0 < p <= 1 for p in a[1])


def test_temperature_zero_and_top_k_one_are_greedy():
    model = make_model()
    greedy, probs = sample(model, "All:", 30, temperature=0.0)
    assert probs == [1.0] * 30
    assert sample(model, "All:", 30, temperature=0.7, top_k=1, seed=9)[0] == greedy


def test_top_k_restricts_the_distribution():
    logits = np.array([0.0, 3.0, 1.0, 2.0])
    probs = next_char_distribution(logits, 1.0, top_k=2)
    assert np.count_nonzero(probs) == 2 and probs[1] > probs[3] > 0
    assert np.isclose(probs.sum(), 1.0)


TEMPERATURES = [0.0, 5e-324, 1e-308, 1e-300, 1e-6, GREEDY_BELOW / 2, GREEDY_BELOW, 1e-2, 0.8, 1.0, 5.0, 1e300,
                float("inf")]


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("top_k", [0, 3])
def test_every_temperature_gives_a_finite_distribution(temperature, top_k):
    f32 = np.finfo(np.float32)
    for logits in (np.array([2.5, -1.0, 7.25, 7.0, 0.0], np.float32),
                   np.array([f32.max, -f32.max, 1.0, f32.max / 2, 0.0], np.float32)):
        probs = next_char_distribution(logits, temperature, top_k)
        assert np.isfinite(probs).all() and (probs >= 0).all() and np.isclose(probs.sum(), 1.0)
        if temperature < GREEDY_BELOW:
            assert probs.tolist() == [1.0 if i == int(np.argmax(logits)) else 0.0 for i in range(5)]


def test_temperature_divides_the_logits_before_the_softmax():
    logits = np.array([2.5, -1.0, 7.25, 7.0, 0.0], np.float32)
    for t in (GREEDY_BELOW, 0.01, 0.5, 1.0, 5.0):
        z = logits.astype(np.float64) / t
        want = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        np.testing.assert_allclose(next_char_distribution(logits, t), want, rtol=1e-12, atol=1e-300)
    # Low but above the floor: a logit 0.25 below the best is drawn now and then (e^-5), as T asks.
    assert 0 < next_char_distribution(logits, 0.05)[3] < 0.01


@pytest.mark.parametrize("temperature", [5e-324, 1e-308, GREEDY_BELOW / 2])
def test_temperatures_below_the_floor_write_the_greedy_text_with_probability_one(temperature):
    model = make_model()
    greedy = sample(model, "All:", 30, temperature=0.0)
    assert sample(model, "All:", 30, temperature=temperature, seed=4) == greedy
    assert greedy[1] == [1.0] * 30
    text, probs = sample(model, "All:", 30, temperature=GREEDY_BELOW, seed=4)
    assert len(text) == 30 and all(np.isfinite(p) and 0 < p <= 1 for p in probs)


def test_a_temperature_that_is_not_a_number_is_refused():
    with pytest.raises(ValueError, match="non-negative"):
        sample(make_model(), "All:", 5, temperature=float("nan"))


def test_generate_streams_the_same_characters_as_sample():
    model = make_model("gru")
    streamed = "".join(c for c, _ in generate(model, "Speak", 40, 0.8, 5, seed=1))
    assert streamed == sample(model, "Speak", 40, 0.8, 5, seed=1)[0]


def test_checkpoint_round_trip(tmp_path):
    model = make_model("gru")
    model.history = {"steps": 12, "best_val_loss": 1.5, "corpus_name": "x.txt"}
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.config == model.config and loaded.vocab == model.vocab
    assert loaded.history == model.history
    for k in model.params:
        np.testing.assert_array_equal(loaded.params[k], model.params[k])
    assert not list(tmp_path.glob(".*tmp")), "the temporary file must be renamed away"


def test_broken_checkpoints_give_clear_errors(tmp_path):
    model = make_model()
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    data = path.read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(tmp_path / "truncated.safetensors")
    (tmp_path / "noise.bin").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "noise.bin")
    save_file({"w": np.zeros(3, np.float32)}, tmp_path / "foreign.safetensors")
    with pytest.raises(CheckpointError, match="not an rnnscope checkpoint"):
        load_model(tmp_path / "foreign.safetensors")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_model(tmp_path / "missing.safetensors")


def test_batches_are_contiguous_streams():
    ids = np.arange(1 + 2 * 3 * 4)
    batches = list(stream_batches(ids, batch_size=2, seq_length=3))
    assert len(batches) == 4
    x0, y0 = batches[0]
    x1, _ = batches[1]
    np.testing.assert_array_equal(y0, x0 + 1)
    np.testing.assert_array_equal(x1[:, 0], x0[:, -1] + 1)     # batch k+1 continues each stream


def test_split_keeps_the_last_fraction_for_validation():
    assert split("abcdefghij", 0.2) == ("abcdefgh", "ij")


def small_config(**overrides):
    base = dict(batch_size=4, seq_length=16, learning_rate=1e-2, max_steps=40, eval_every=20, seed=5)
    return TrainConfig(**(base | overrides))


def test_training_learns_and_is_reproducible():
    cfg = ModelConfig("lstm", 1, 24, 1)
    events = []
    a = train(TEXT, cfg, small_config(max_steps=120, eval_every=60), progress=events.append)
    b = train(TEXT, cfg, small_config(max_steps=120, eval_every=60))
    assert a.history.loss[0] > 3.0 and a.history.val_loss[-1] < 1.5    # from ln(V) to a memorised text
    assert a.history.val_step == [60, 120] and len(events) == 120
    assert events[-1].best_val_loss == min(a.history.val_loss)
    for k in a.model.params:
        np.testing.assert_array_equal(a.model.params[k], b.model.params[k])
    assert a.model.history["corpus_chars"] == len(TEXT)
    assert len(a.model.history["corpus_sha256"]) == 64


def test_training_can_be_cancelled():
    calls = []
    result = train(TEXT, ModelConfig("rnn", 1, 8, 1), small_config(max_steps=1000),
                   should_stop=lambda: calls.append(1) or len(calls) >= 3)
    assert result.stopped == "cancelled" and result.history.step[-1] == 3


def test_exploding_loss_stops_with_a_clear_message():
    with pytest.raises(TrainingDiverged, match="exploding"):
        train(TEXT, ModelConfig("rnn", 1, 64, 1), small_config(learning_rate=50.0, grad_clip=0, max_steps=200))


def test_clipping_records_the_pre_clip_norm():
    result = train(TEXT, ModelConfig("gru", 1, 16, 1), small_config(grad_clip=0.05, max_steps=5))
    assert all(result.history.clipped)
    assert all(n > 0.05 for n in result.history.grad_norm)


def test_too_short_corpus_is_refused_with_advice():
    with pytest.raises(ValueError, match="too few"):
        train("tiny text", ModelConfig(), TrainConfig())


def test_gradient_profile_and_spectra_and_saturation():
    model = make_model("lstm")
    text = TEXT[:60]
    profile = gradient_through_time(model, text)
    assert profile.position == len(text) - 2
    assert len(profile.h_grad_norm) == 2 and profile.h_grad_norm[0].shape == (len(text) - 1,)
    assert profile.c_grad_norm is not None
    # The loss at the last position cannot depend on... nothing after it; it does depend on h at it.
    assert profile.h_grad_norm[1][-1] > 0
    with pytest.raises(ValueError, match="position"):
        gradient_through_time(model, text, position=len(text))
    sv = recurrent_singular_values(model)
    assert sv[0].shape == (4, 16) and (np.diff(sv[0], axis=1) <= 1e-9).all()
    sat = gate_saturation(model, text)
    assert set(sat) == {(l, g) for l in range(2) for g in "ifgo"}
    left, right = sat[(0, "f")]
    assert left.shape == (16,) and ((0 <= left) & (left <= 1)).all() and ((left + right) <= 1).all()


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_resuming_from_a_saved_state_equals_never_stopping(cell, tmp_path):
    """Stop mid-epoch with dropout on, save, load, continue: the same weights, history
    and best checkpoint as one uninterrupted run."""
    from rnnscope.model.checkpoint import load_train_state, save_train_state

    cfg = ModelConfig(cell, 1, 12, 2)
    tc = small_config(max_steps=30, eval_every=10, dropout=0.2)
    whole = train(TEXT, cfg, tc)
    calls = []
    first = train(TEXT, cfg, tc, should_stop=lambda: calls.append(1) or len(calls) >= 13)
    assert first.stopped == "cancelled" and first.state.step == 13
    save_train_state(tmp_path / "run.state", first.model, first.state)
    _, state = load_train_state(tmp_path / "run.state")
    second = train(TEXT, cfg, tc, resume=state)
    assert second.history.step == list(range(1, 31))
    assert second.history.loss[:13] == first.history.loss
    np.testing.assert_allclose(second.history.loss, whole.history.loss, rtol=0, atol=0)
    for k in whole.model.params:
        np.testing.assert_array_equal(second.model.params[k], whole.model.params[k])
        np.testing.assert_array_equal(second.state.params[k], whole.state.params[k])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_snapshot_resumes_exactly_even_when_kept_while_training_goes_on(cell):
    """A snapshot taken mid-run and used only after the run went on (as the Ray executor
    ships a checkpoint while training continues) resumes to the uninterrupted run."""
    cfg = ModelConfig(cell, 1, 12, 2)
    tc = small_config(max_steps=30, eval_every=10, dropout=0.2)
    whole = train(TEXT, cfg, tc)
    kept = []
    train(TEXT, cfg, tc, progress=lambda e: kept.append(e.snapshot()) if e.step == 13 else None)
    (state,) = kept
    assert state.step == 13 and state.history.step == list(range(1, 14))
    resumed = train(TEXT, cfg, tc, resume=state)
    np.testing.assert_allclose(resumed.history.loss, whole.history.loss, rtol=0, atol=0)
    for k in whole.model.params:
        np.testing.assert_array_equal(resumed.state.params[k], whole.state.params[k])


def test_overlapping_and_touching_memorised_spans_merge_into_one():
    from rnnscope.model.memorisation import Span, SuffixIndex, merge_spans

    # 147-171 and 150-174 were reported as two spans of one copied passage (issue 9).
    assert merge_spans([Span(150, 174, 9), Span(147, 171, 3), Span(174, 180, 40), Span(200, 220, 5)]) == [
        Span(147, 180, 3), Span(200, 220, 5)]
    assert merge_spans([]) == []
    corpus = "the cat sat on the mat. the cat ran. a bat sat on a hat."
    query = "xx the cat sat on a hat! the mat"
    merged = merge_spans(SuffixIndex(corpus).spans(query, min_length=6))
    assert [query[s.start:s.end] for s in merged] == [" the cat sat on a hat", " the mat"]
    assert corpus[merged[0].corpus_position:].startswith(" the cat ")
