"""The JSON API: every route against the model it wraps, and every refusal."""
from __future__ import annotations

import base64
import json
import logging
import shutil
import socket
import contextlib
import threading
import time
import warnings

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from rnnscope.app.inference import compute
from rnnscope.app.cli import cli
from rnnscope.app.main import create_app
from rnnscope.app.inference.registry import ModelRegistry
from rnnscope.app.inference.compute import norms
from rnnscope.app.web.vendor import PLOTLY_JS
from rnnscope.model.analysis import gate_saturation, gradient_through_time, recurrent_singular_values
from rnnscope.model.checkpoint import save_model
from rnnscope.model.lm import LanguageModel
from rnnscope.model.sample import GREEDY_BELOW, sample

CELLS = ("lstm", "gru", "rnn")
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"


def decode(enc: dict) -> np.ndarray:
    """An EncodedArray back to numbers, as its schema documents."""
    if enc["values"] is not None:
        return np.array(enc["values"], dtype=np.float64)
    dtype = {"int8": "<i1", "float16": "<f2", "float32": "<f4"}[enc["dtype"]]
    q = np.frombuffer(base64.b64decode(enc["data"]), dtype=dtype).reshape(enc["shape"])
    return q.astype(np.float64) * enc["scale"]


def events(body: str) -> list[tuple[str, dict]]:
    """Server-sent events as (event, JSON data); keep-alive comments are skipped."""
    out = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if fields:
            out.append((fields.get("event", "message"), json.loads(fields["data"])))
    return out


def error_message(r) -> str:
    detail = r.json()["detail"]
    return detail if isinstance(detail, str) else " | ".join(e["msg"] for e in detail)


@pytest.fixture
def limited(settings):
    """A client whose limits are small enough to reach cheaply."""
    app = create_app(settings.model_copy(update={"max_text_chars": 50, "max_sample_length": 30,
                                                 "max_prime_chars": 20, "max_gradient_chars": 10,
                                                 "max_trace_bytes": 10_000, "max_body_bytes": 2_000}))
    with TestClient(app) as c:
        yield c


# --- health, models, static ----------------------------------------------------------

def test_healthz_counts_the_models(client):
    assert client.get("/healthz").json() == {"status": "ok", "models": 3, "warming": False}


def test_models_list_describes_every_model(client, models):
    listed = {m["id"]: m for m in client.get("/api/models").json()}
    assert set(listed) == set(CELLS)
    for mid, m in models.items():
        assert listed[mid] == {
            "id": mid, "name": f"{mid} ({mid.upper()} 2x32)", "cell": mid, "hidden_size": 32, "num_layers": 2,
            "vocab_size": len(m.vocab), "parameters": m.num_parameters, "val_loss": m.history["best_val_loss"],
            "shared": True, "yours": False}


@pytest.mark.parametrize("cell", CELLS)
def test_model_detail_adds_vocabulary_history_and_quantities(client, models, cell):
    m = models[cell]
    d = client.get(f"/api/models/{cell}").json()
    assert d["vocab"] == "".join(m.vocab.chars)
    assert d["quantities"] == {"lstm": list("hcifgo"), "gru": list("hrzn"), "rnn": ["h"]}[cell]
    assert d["gates"] == d["quantities"][2 if cell == "lstm" else 1:]
    assert d["history"]["steps"] == 60
    assert d["history"]["corpus_name"] == "tinyshakespeare.txt"
    assert d["history"]["corpus_chars"] == 30_000


ROUTES = [("get", "", None), ("post", "/trace", {"text": "ab"}), ("post", "/gradients", {"text": "ab"}),
          ("post", "/gates", {"text": "ab"}), ("post", "/sample", {}), ("post", "/sample/stream", {})]


@pytest.mark.parametrize("method,suffix,body", ROUTES)
def test_unknown_model_is_404_naming_the_ones_there_are(client, method, suffix, body):
    r = client.request(method, f"/api/models/nope{suffix}", json=body)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert r.json()["detail"] == "no model 'nope'; available: gru, lstm, rnn"


def test_plotly_is_served_from_the_installed_package(client):
    r = client.get("/static/vendor/plotly.min.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    assert r.content == PLOTLY_JS.read_bytes()
    assert client.head("/static/vendor/plotly.min.js").status_code == 200


def test_openapi_offers_the_loaded_model_ids(client):
    doc = client.get("/openapi.json").json()
    ops = [op for path in doc["paths"].values() for op in path.values()]
    params = [p for op in ops for p in op.get("parameters", ()) if p["name"] == "model_id"]
    assert len(params) == sum(len(ops) for path, ops in doc["paths"].items() if "{model_id}" in path) >= 6
    assert all(p["schema"]["enum"] == ["gru", "lstm", "rnn"] for p in params)
    assert "int8" in doc["components"]["schemas"]["EncodedArray"]["description"]
    assert client.get("/docs").status_code == 200


def test_empty_data_dir_serves_no_models(settings, tmp_path):
    with TestClient(create_app(settings.model_copy(update={"data_dir": tmp_path}))) as c:
        assert c.get("/healthz").json() == {"status": "ok", "models": 0, "warming": False}
        assert c.get("/api/models").json() == []
        assert c.get("/openapi.json").status_code == 200


def test_registry_skips_files_it_cannot_serve_and_says_why(data_dir, models, tmp_path, settings, caplog):
    (tmp_path / "models").mkdir()
    shutil.copy(data_dir / "models" / "lstm.safetensors", tmp_path / "models" / "good_one.safetensors")
    shutil.copy(data_dir / "models" / "gru.safetensors", tmp_path / "models" / "Bad Name.safetensors")
    (tmp_path / "models" / "broken.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    m = models["rnn"]
    params = {k: v.copy() for k, v in m.params.items()}
    params["decoder.bias"][0] = np.nan
    save_model(LanguageModel(m.config, m.vocab, params), tmp_path / "models" / "nan.safetensors")
    with caplog.at_level(logging.WARNING, logger="rnnscope.app.inference.registry"):
        registry = ModelRegistry.load(settings.model_copy(update={"data_dir": tmp_path}))
    assert registry.ids() == ["good_one"]
    log = caplog.text
    assert "'Bad Name'" in log and "rename the file" in log
    assert "broken.safetensors is not a readable safetensors file" in log
    assert "non-finite values in decoder.bias" in log


def test_data_dir_model_cannot_take_a_bundled_id(data_dir, settings, tmp_path, monkeypatch, caplog):
    from rnnscope.app.inference import registry as registry_module

    (tmp_path / "models").mkdir()
    shutil.copy(data_dir / "models" / "gru.safetensors", tmp_path / "models" / "lstm.safetensors")
    monkeypatch.setattr(registry_module, "bundled_paths", lambda: {"lstm": data_dir / "models" / "lstm.safetensors"})
    with caplog.at_level(logging.WARNING, logger="rnnscope.app.inference.registry"):
        registry = ModelRegistry.load(settings.model_copy(update={"data_dir": tmp_path, "load_bundled": True}))
    assert registry.ids() == ["lstm"]
    assert registry.get("lstm").bundled and registry.get("lstm").model.config.cell == "lstm"
    assert registry.get("lstm").name == "Shakespeare LSTM 2x256"
    assert "the id 'lstm' is taken" in caplog.text


# --- trace ---------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["int8", "float16", "float32", "json"])
@pytest.mark.parametrize("cell", CELLS)
def test_trace_matches_the_model(client, models, cell, encoding):
    m = models[cell]
    r = client.post(f"/api/models/{cell}/trace", json={"text": TEXT, "encoding": encoding})
    assert r.status_code == 200, r.text
    d = r.json()
    logits, losses, cache = m.run(TEXT)
    T = len(TEXT)
    assert d["text"] == TEXT and d["chars"] == list(TEXT) and d["dropped"] == []
    np.testing.assert_allclose(d["loss"], losses, atol=2e-6)
    assert d["mean_loss"] == pytest.approx(float(losses.mean()), rel=1e-6)
    # Top 5 by the model's own logits, most likely first, with softmax probabilities.
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    order = np.argsort(-p, axis=1)[:, :5]
    assert d["predictions"]["chars"] == np.array(m.vocab.chars)[order].tolist()
    np.testing.assert_allclose(d["predictions"]["probs"], np.take_along_axis(p, order, 1), atol=2e-6)
    assert [layer["layer"] for layer in d["layers"]] == [0, 1]
    for layer in d["layers"]:
        assert list(layer["quantities"]) == list(m.cell.quantities)
        for q, enc in layer["quantities"].items():
            want = m.internals(cache, layer["layer"], q)
            assert enc["shape"] == [T, 32]
            got = decode(enc)
            if encoding == "int8":
                assert enc["scale"] == pytest.approx(np.abs(want).max() / 127)
                assert np.abs(got - want).max() <= enc["scale"] / 2 + 1e-7
            elif encoding == "float16":
                np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
            else:
                np.testing.assert_allclose(got, want, atol=1e-6 if encoding == "json" else 0)


def test_trace_returns_chosen_layers_and_quantities_in_order_once(client):
    d = client.post("/api/models/lstm/trace", json={"text": TEXT, "layers": [1, 1, 0],
                                                    "quantities": ["o", "h", "o"], "top_k": 2}).json()
    assert [(layer["layer"], list(layer["quantities"])) for layer in d["layers"]] == [(1, ["o", "h"]), (0, ["o", "h"])]
    assert all(len(row) == 2 for row in d["predictions"]["chars"])
    empty = client.post("/api/models/lstm/trace", json={"text": TEXT, "layers": [], "top_k": 0}).json()
    assert empty["layers"] == [] and empty["predictions"]["chars"] == [[]] * len(TEXT)


@pytest.mark.parametrize("text", [TEXT, "T"])
def test_a_trace_answer_built_unvalidated_is_its_schema_exactly(client, text):
    """The route builds its answer without validation (TraceResponse.model_construct): what it
    sends must still be the schema, strictly, and serialise without a warning."""
    from rnnscope.app.traces.schemas import TraceResponse
    with warnings.catch_warnings():
        warnings.simplefilter("error")                    # a serialiser's type warning fails here
        r = client.post("/api/models/lstm/trace", json={"text": text, "encoding": "json", "top_k": 3})
    assert r.status_code == 200, r.text
    TraceResponse.model_validate_json(r.text, strict=True)


def test_trace_of_one_character_has_no_loss(client):
    d = client.post("/api/models/rnn/trace", json={"text": "T"}).json()
    assert d["loss"] == [] and d["mean_loss"] is None
    assert d["layers"][0]["quantities"]["h"]["shape"] == [1, 32]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_reading_in_chunks_equals_reading_at_once(models, corpus, cell):
    m = models[cell]
    text = corpus[:200]
    ids = m.encode(text)
    _, losses, cache = m.run(text)
    wanted = [(l, q) for l in range(2) for q in m.cell.quantities]
    r = compute.read(m, ids, wanted, 3, chunk=7)
    np.testing.assert_allclose(r.loss, losses, rtol=1e-5, atol=1e-6)
    for key in wanted:
        np.testing.assert_allclose(r.internals[key], m.internals(cache, *key), rtol=1e-5, atol=1e-6)
    sat = gate_saturation(m, text, chunk=7)
    for key, (left, right) in gate_saturation(m, text, chunk=len(text)).items():
        # A unit sitting exactly on a threshold could flip by one step between the two orders of sums.
        np.testing.assert_allclose(sat[key][0], left, atol=1.01 / len(text))
        np.testing.assert_allclose(sat[key][1], right, atol=1.01 / len(text))


def test_int8_encoding_keeps_every_value_within_half_a_step():
    a = np.random.default_rng(0).standard_normal((50, 7)).astype(np.float32) * 3
    enc = compute.encode_array(a, "int8")
    q = np.frombuffer(base64.b64decode(enc.data), np.int8)
    assert q.min() >= -127 and q.max() <= 127 and 127 in np.abs(q)
    assert np.abs(q.reshape(50, 7) * enc.scale - a).max() <= enc.scale / 2 * (1 + 1e-6)
    zeros = compute.encode_array(np.zeros((3, 4), np.float32), "int8")
    assert zeros.scale == 1.0 and base64.b64decode(zeros.data) == bytes(12)


def test_unknown_characters_are_named_or_dropped(client):
    r = client.post("/api/models/lstm/trace", json={"text": "Tö be, or € not"})
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "text"] and error["type"] == "unknown_characters"
    assert error["ctx"] == {"chars": ["ö", "€"]}
    assert "'ö', '€'" in error["msg"] and "drop_unknown" in error["msg"]
    d = client.post("/api/models/lstm/trace", json={"text": "Tö be, or € not", "drop_unknown": True}).json()
    assert d["text"] == "T be, or  not" and d["dropped"] == ["ö", "€"]
    assert len(d["loss"]) == len(d["text"]) - 1


REFUSED_TRACES = [
    ({"text": ""}, "at least 1 character"),
    ({"text": "€€", "drop_unknown": True}, "once characters outside the vocabulary are dropped"),
    ({"text": "ab", "layers": [2]}, "has no 2; choose from 0, 1"),
    ({"text": "ab", "layers": [-1]}, "greater than or equal to 0"),
    ({"text": "ab", "quantities": ["c"]}, "a gru has no 'c'; choose from h, r, z, n"),
    ({"text": "ab", "top_k": 21}, "less than or equal to 20 (setting RNNSCOPE_MAX_TOP_K)"),
    ({"text": "ab", "top_k": -1}, "greater than or equal to 0"),
    ({"text": "ab", "top_k": "5"}, "valid integer"),
    ({"text": "ab", "encoding": "int4"}, "'int8', 'float16', 'float32' or 'json'"),
    ({"text": "ab", "tpo_k": 3}, "Extra inputs are not permitted"),
    ({"text": 5}, "valid string"),
    ({}, "Field required"),
]


@pytest.mark.parametrize("body,message", REFUSED_TRACES)
def test_bad_trace_requests_are_422_saying_why(client, body, message):
    r = client.post("/api/models/gru/trace", json=body)
    assert r.status_code == 422
    assert message in error_message(r)


def test_malformed_and_non_finite_json_are_422(client):
    for body in (b'{"text": "ab"', b'{"temperature": NaN}', b'{"temperature": Infinity}', b'{"text": "\\ud800"}'):
        r = client.post("/api/models/lstm/sample" if b"temp" in body else "/api/models/lstm/trace", content=body,
                        headers={"content-type": "application/json"})
        assert r.status_code == 422, body
        json.loads(r.text, parse_constant=lambda c: pytest.fail(f"{c} in {r.text}"))


def test_over_the_limits_is_422_naming_the_limit_and_setting(limited):
    """A limit is part of the schema (maxLength from the settings), so going over it is a
    validation error like any other, in pydantic's shape, naming the setting."""
    r = limited.post("/api/models/lstm/trace", json={"text": "a" * 51})
    assert r.status_code == 422
    assert r.json()["detail"] == [{"type": "string_too_long", "loc": ["body", "text"], "ctx": {"max_length": 50},
                                   "msg": "String should have at most 50 characters (setting RNNSCOPE_MAX_TEXT_CHARS)"}]
    assert limited.post("/api/models/lstm/trace", json={"text": "a" * 50, "quantities": ["h"]}).status_code == 200
    for path in ("/gates", "/gradients"):
        r = limited.post(f"/api/models/lstm{path}", json={"text": "a" * 51, "position": 3})
        assert r.status_code == 422 and "RNNSCOPE_MAX_TEXT_CHARS" in error_message(r)
    r = limited.post("/api/models/lstm/sample", json={"prime": "a" * 21, "length": 5})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "prime"]
    assert error_message(r) == "String should have at most 20 characters (setting RNNSCOPE_MAX_PRIME_CHARS)"


def test_the_schema_publishes_the_servers_own_limits(limited):
    schemas = limited.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["TraceRequest"]["properties"]["text"]["maxLength"] == 50
    assert schemas["TraceRequest"]["properties"]["top_k"]["maximum"] == 20
    assert schemas["SampleRequest"]["properties"]["length"]["maximum"] == 30
    assert schemas["SampleRequest"]["properties"]["prime"]["maxLength"] == 20
    assert schemas["SampleRequest"]["properties"]["seed"]["anyOf"][0]["maximum"] == 2**53 - 1
    assert schemas["GradientsRequest"]["properties"]["position"]["anyOf"][0]["maximum"] == 9
    assert schemas["GradientsRequest"]["then"]["properties"]["text"]["maxLength"] == 11
    assert schemas["ProbeRequest"]["properties"]["text"]["maxLength"] == 50            # under max_probe_chars
    assert schemas["ProbeRequest"]["properties"]["regex"]["anyOf"][0]["maxLength"] == 200
    assert schemas["ProbeRequest"]["properties"]["top"]["maximum"] == 100
    assert schemas["ClampSpec"]["properties"]["units"]["maxItems"] == 256
    assert schemas["MemorisedRequest"]["properties"]["text"]["maxLength"] == 20_000
    assert schemas["TraceRequest"]["properties"]["text"]["x-settings"] == ["RNNSCOPE_MAX_TEXT_CHARS"]
    assert "x-rnnscope-limit" not in json.dumps(schemas)


def test_a_trace_too_large_to_send_is_413_with_advice(limited):
    # 40 characters x 32 units x 2 layers x 6 quantities, at 4/3 bytes a value in base64.
    r = limited.post("/api/models/lstm/trace", json={"text": "a" * 40})
    assert r.status_code == 413
    assert r.json()["detail"] == ("the trace's arrays would be 20,480 bytes; the limit is 10,000 (setting "
                                  "RNNSCOPE_MAX_TRACE_BYTES): ask for fewer layers or quantities, a shorter "
                                  "text, or int8")
    assert limited.post("/api/models/lstm/trace", json={"text": "a" * 40, "layers": [1],
                                                        "quantities": ["h", "c"]}).status_code == 200
    r = limited.post("/api/models/lstm/trace", json={"text": "a" * 40, "layers": [1], "quantities": ["h", "c"],
                                                     "encoding": "json"})
    assert r.status_code == 413


def test_oversized_bodies_are_413_whether_declared_or_streamed(limited):
    body = b'{"text": "' + b"a" * 3_000 + b'"}'
    r = limited.post("/api/models/lstm/trace", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["detail"] == (f"the request body is {len(body):,} bytes; the limit is 2,000 bytes "
                                  "(setting RNNSCOPE_MAX_BODY_BYTES)")

    def chunks():
        yield b'{"text": "'
        for _ in range(5):
            yield b"a" * 1_000
        yield b'"}'

    r = limited.post("/api/models/lstm/trace", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over the limit of 2,000 bytes" in r.json()["detail"]


# --- gradients -----------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_gradients_are_what_bptt_computes(client, models, cell):
    m = models[cell]
    d = client.post(f"/api/models/{cell}/gradients", json={"text": TEXT}).json()
    g = gradient_through_time(m, TEXT)
    assert d["position"] == len(TEXT) - 2 == g.position
    assert d["target"] == TEXT[-1] and d["loss"] == pytest.approx(g.loss)
    assert d["dropped"] == []
    blocks = list(m.cell.gate_names) or ["h"]
    for layer, sv in zip(d["layers"], recurrent_singular_values(m)):
        l = layer["layer"]
        assert len(layer["h_grad_norm"]) == len(TEXT) - 1
        np.testing.assert_allclose(layer["h_grad_norm"], g.h_grad_norm[l], rtol=1e-6)
        if cell == "lstm":
            np.testing.assert_allclose(layer["c_grad_norm"], g.c_grad_norm[l], rtol=1e-6)
        else:
            assert layer["c_grad_norm"] is None
        assert [s["block"] for s in layer["singular_values"]] == blocks
        for s, want in zip(layer["singular_values"], sv):
            assert s["values"] == sorted(s["values"], reverse=True) and len(s["values"]) == 32
            np.testing.assert_allclose(s["values"], want)


def test_gradients_at_a_chosen_position_read_only_that_far(client, models):
    d = client.post("/api/models/lstm/gradients", json={"text": TEXT, "position": 5}).json()
    g = gradient_through_time(models["lstm"], TEXT, 5)
    assert d["position"] == 5 and d["target"] == TEXT[6]
    assert [len(layer["h_grad_norm"]) for layer in d["layers"]] == [6, 6]
    np.testing.assert_allclose(d["layers"][0]["h_grad_norm"], g.h_grad_norm[0], rtol=1e-6)


@pytest.mark.parametrize("body,message", [
    ({"text": "F"}, "at least 2 characters"),
    ({"text": "First", "position": 4}, "position must be at most 3 (len(text) - 2) for a text of 5 characters"),
    ({"text": "First", "position": -1}, "greater than or equal to 0"),
    ({"text": "First", "position": 1.5}, "valid integer"),
])
def test_bad_gradient_requests_are_422(client, body, message):
    r = client.post("/api/models/lstm/gradients", json=body)
    assert r.status_code == 422 and message in error_message(r)


def test_gradient_span_over_its_limit_is_422(limited):
    """BPTT reads position + 1 characters, at most max_gradient_chars (10 here): position is at
    most 9, and without one (the last, len(text) - 2) the text is at most 11 characters."""
    for path in ("/gradients", "/saliency"):
        r = limited.post(f"/api/models/rnn{path}", json={"text": "a" * 30})
        assert r.status_code == 422 and r.json()["detail"][0]["ctx"] == {"max_length": 11}, r.text
        assert "send a position or a shorter text" in error_message(r)
        r = limited.post(f"/api/models/rnn{path}", json={"text": "a" * 30, "position": 10})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "position"]
        assert "RNNSCOPE_MAX_GRADIENT_CHARS" in error_message(r)
        assert limited.post(f"/api/models/rnn{path}", json={"text": "a" * 30, "position": 9}).status_code == 200
        assert limited.post(f"/api/models/rnn{path}", json={"text": "a" * 11}).status_code == 200


def test_overflowed_gradient_norms_become_null():
    assert norms(np.array([1.0, np.inf, np.nan], np.float32)) == [1.0, None, None]


# --- gates ---------------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_gate_saturation_matches_the_model(client, models, cell):
    m = models[cell]
    d = client.post(f"/api/models/{cell}/gates", json={"text": TEXT}).json()
    want = gate_saturation(m, TEXT)
    assert d["steps"] == len(TEXT) and d["dropped"] == []
    assert [layer["layer"] for layer in d["layers"]] == [0, 1]
    for layer in d["layers"]:
        assert [g["gate"] for g in layer["gates"]] == list(m.cell.gate_names)
        for g in layer["gates"]:
            left, right = want[layer["layer"], g["gate"]]
            np.testing.assert_allclose(g["left"], left, atol=1e-6)
            np.testing.assert_allclose(g["right"], right, atol=1e-6)
            assert all(0 <= a + b <= 1 + 1e-9 for a, b in zip(g["left"], g["right"]))


# --- sampling ------------------------------------------------------------------------

def test_sample_is_the_models_sample_for_a_seed(client, models):
    m = models["lstm"]
    body = {"prime": "First", "length": 120, "temperature": 0.8, "top_k": 10, "seed": 3}
    d = client.post("/api/models/lstm/sample", json=body).json()
    text, probs = sample(m, "First", 120, 0.8, 10, 3)
    assert d == {"text": text, "probs": pytest.approx(probs), "seed": 3, "dropped": []}
    assert set(d["text"]) <= set(m.vocab.chars) and all(0 < p <= 1 for p in d["probs"])
    assert client.post("/api/models/lstm/sample", json=body).json() == d


def test_sample_without_seed_returns_the_seed_that_repeats_it(client):
    first = client.post("/api/models/gru/sample", json={"length": 80}).json()
    assert 0 <= first["seed"] < 2**32
    again = client.post("/api/models/gru/sample", json={"length": 80, "seed": first["seed"]}).json()
    assert again == first


def test_greedy_sampling_two_ways(client):
    greedy = client.post("/api/models/rnn/sample", json={"prime": "A", "length": 40, "temperature": 0}).json()
    top1 = client.post("/api/models/rnn/sample", json={"prime": "A", "length": 40, "top_k": 1}).json()
    assert greedy["text"] == top1["text"] and greedy["probs"] == top1["probs"] == [1.0] * 40
    assert client.post("/api/models/rnn/sample", json={"length": 0}).json()["text"] == ""


@pytest.mark.parametrize("temperature", [0, 5e-324, 1e-308, GREEDY_BELOW / 2, GREEDY_BELOW])
def test_temperatures_near_zero_write_finite_answers_on_every_route(client, models, temperature):
    """Below the floor a temperature is greedy (each character drawn with probability 1); at
    it, a low-temperature sample; never logits / T overflowing into NaN probabilities."""
    body = {"prime": "First", "length": 40, "temperature": temperature, "seed": 1}
    greedy, _ = sample(models["lstm"], "First", 40, 0.0)
    whole = client.post("/api/models/lstm/sample", json=body)
    assert whole.status_code == 200, whole.text
    d = whole.json()
    assert all(isinstance(p, float) and 0 < p <= 1 for p in d["probs"]), d["probs"]
    streamed = client.post("/api/models/lstm/sample/stream", json=body)
    chunks = [data for name, data in events(streamed.text) if name == "chunk"]
    assert "".join(c["text"] for c in chunks) == d["text"]
    assert [p for c in chunks for p in c["probs"]] == d["probs"]
    intervened = client.post("/api/models/lstm/intervene", json={
        "text": TEXT, "clamp": [{"layer": 0, "units": [0]}], "prime": "First", "length": 40,
        "temperature": temperature, "seed": 1})
    assert intervened.status_code == 200, intervened.text
    if temperature < GREEDY_BELOW:
        assert d["text"] == greedy and d["probs"] == [1.0] * 40
        assert intervened.json()["sample"] == greedy
    else:
        text, probs = sample(models["lstm"], "First", 40, temperature, seed=1)
        assert d["text"] == text and d["probs"] == pytest.approx(probs)


def test_temperatures_past_the_schema_are_422(client):
    for path, extra in (("/sample", {}), ("/sample/stream", {}),
                        ("/intervene", {"text": TEXT, "clamp": [{"layer": 0, "units": [0]}]})):
        for t in (1e300, 5.000001, -5e-324):
            r = client.post(f"/api/models/lstm{path}", json={"temperature": t, **extra})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "temperature"], r.text


def test_sample_prime_outside_the_vocabulary(client):
    r = client.post("/api/models/lstm/sample", json={"prime": "Noë"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "prime"]
    d = client.post("/api/models/lstm/sample", json={"prime": "Noë", "drop_unknown": True, "length": 5}).json()
    assert d["dropped"] == ["ë"] and len(d["text"]) == 5


@pytest.mark.parametrize("body,message", [
    ({"temperature": 5.01}, "less than or equal to 5"),
    ({"temperature": -0.1}, "greater than or equal to 0"),
    ({"top_k": -1}, "greater than or equal to 0"),
    ({"seed": -1}, "greater than or equal to 0"),
    ({"seed": 2**53}, "less than or equal to 9007199254740991"),
    ({"length": -1}, "greater than or equal to 0"),
    ({"length": "10"}, "valid integer"),
    ({"temprature": 1}, "Extra inputs are not permitted"),
])
def test_bad_sample_requests_are_422(client, body, message):
    for path in ("/sample", "/sample/stream"):
        r = client.post(f"/api/models/lstm{path}", json=body)
        assert r.status_code == 422 and message in error_message(r)


def test_sample_length_over_the_limit_is_422(limited):
    for path in ("/sample", "/sample/stream"):
        r = limited.post(f"/api/models/lstm{path}", json={"length": 31})
        assert r.status_code == 422 and r.headers["content-type"] == "application/json"
        assert r.json()["detail"] == [{"type": "less_than_equal", "loc": ["body", "length"], "ctx": {"le": 30},
                                       "msg": "Input should be less than or equal to 30 "
                                              "(setting RNNSCOPE_MAX_SAMPLE_LENGTH)"}]


def test_stream_sends_the_same_sample_in_chunks_then_done(client, settings):
    body = {"prime": "ROMEO:", "length": 70, "temperature": 1.2, "seed": 11, "drop_unknown": True}
    whole = client.post("/api/models/gru/sample", json=body).json()
    r = client.post("/api/models/gru/sample/stream", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    evs = events(r.text)
    chunks = [data for name, data in evs if name == "chunk"]
    assert [name for name, _ in evs] == ["chunk"] * len(chunks) + ["done"]
    assert all(0 < len(c["text"]) <= settings.stream_chunk_chars for c in chunks)
    assert "".join(c["text"] for c in chunks) == whole["text"]
    assert [p for c in chunks for p in c["probs"]] == whole["probs"]
    assert evs[-1][1] == {"length": 70, "seed": 11, "dropped": []}


def test_stream_over_real_http_arrives_event_by_event(live_server):
    import httpx

    body = {"prime": "ROMEO:", "length": 200, "seed": 5}
    with httpx.Client(base_url=live_server, timeout=30) as http:
        whole = http.post("/api/models/lstm/sample", json=body).json()
        with http.stream("POST", "/api/models/lstm/sample/stream", json=body) as r:
            assert r.status_code == 200 and r.headers["cache-control"] == "no-cache"
            raw = [line for line in r.iter_lines()]
    evs = events("\n".join(raw))
    assert "".join(d["text"] for name, d in evs if name == "chunk") == whole["text"]
    assert evs[-1] == ("done", {"length": 200, "seed": 5, "dropped": []})


def test_stream_refuses_before_its_first_event(client):
    r = client.post("/api/models/lstm/sample/stream", json={"prime": "€"})
    assert r.status_code == 422 and r.headers["content-type"] == "application/json"
    assert r.json()["detail"][0]["ctx"] == {"chars": ["€"]}


# --- robustness ----------------------------------------------------------------------

def test_unknown_routes_and_methods_answer_json(client):
    r = client.get("/api/nothing")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    r = client.get("/api/models/lstm/trace")
    assert r.status_code == 405 and r.json() == {"detail": "Method Not Allowed"}


def test_a_bug_still_answers_json_500_and_is_logged(app, caplog):
    def broken():
        raise RuntimeError("a bug")

    app.add_api_route("/broken", broken)
    with TestClient(app, raise_server_exceptions=False) as c, caplog.at_level(logging.ERROR):
        r = c.get("/broken")
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error; the server log has the details"}
    assert "unhandled error in GET /broken" in caplog.text and "a bug" in caplog.text


def test_health_answers_while_every_compute_slot_is_busy(client, app):
    slots = app.state.compute_slots
    held = contextlib.ExitStack()
    for _ in range(app.state.settings.max_concurrent_jobs):
        held.enter_context(slots.slot())
    result = {}
    worker = threading.Thread(target=lambda: result.update(
        r=client.post("/api/models/lstm/trace", json={"text": TEXT})))
    worker.start()
    try:
        start = time.perf_counter()
        assert client.get("/healthz").status_code == 200
        assert time.perf_counter() - start < 2
        time.sleep(0.2)
        assert "r" not in result                  # the trace waits for a slot...
    finally:
        held.close()
    worker.join(10)
    assert result["r"].status_code == 200        # ...and runs once one is free


# --- command line --------------------------------------------------------------------

def test_cli_sample_prints_the_prime_then_the_models_text(data_dir, models):
    path = data_dir / "models" / "lstm.safetensors"
    r = CliRunner().invoke(cli, ["sample", str(path), "--prime", "First", "--length", "50", "--seed", "4",
                                 "--temperature", "0.7", "--top-k", "5"])
    assert r.exit_code == 0, r.output
    assert r.output == "First" + sample(models["lstm"], "First", 50, 0.7, 5, 4)[0] + "\n"


def test_cli_sample_refusals(data_dir):
    path = str(data_dir / "models" / "lstm.safetensors")
    r = CliRunner().invoke(cli, ["sample", path, "--prime", "Noë"])
    assert r.exit_code == 2 and "'ë'" in r.output
    r = CliRunner().invoke(cli, ["sample", "no/such/file.safetensors"])
    assert r.exit_code == 2 and "cannot read" in r.output


def test_cli_serve_runs_one_worker_with_the_given_settings(monkeypatch, tmp_path):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    with socket.socket() as s:                  # a port nothing listens on: the CLI's real check runs
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = CliRunner().invoke(cli, ["serve", "--port", str(port), "--data-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    (app, kw), = calls
    assert kw["host"] == "127.0.0.1" and kw["port"] == port and kw["workers"] == 1
    assert app.state.settings.data_dir == tmp_path
    assert CliRunner().invoke(cli, ["serve", "--port", "0"]).exit_code == 2
