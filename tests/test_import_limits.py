"""Issue 18, item 3: imports are parsed defensively and in bounded memory. The safetensors
header is checked (size, nesting, tensor count, rank, dtype, offsets tiling the data) before
any tensor is read; the vocabulary, embedding rows and parameters are checked from the shapes
before anything is converted; the conversion asks the compute gate for its estimated peak;
weights that overflow on a probe text are refused; and no file, however malformed, answers
500 (a seeded fuzz over mutated headers of a real export). The issue's cases (the fold bomb,
the nested header, [2^32, 2^32], 65 dimensions, surrogates, overlapping offsets, +-3e38) cost
gigabytes, answered 500 or were accepted before."""
from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save
from typer.testing import CliRunner

from rnnscope.app.cli import cli
from rnnscope.app.inference.compute_gate import ComputeGate
from rnnscope.app.main import create_app
from rnnscope.app.settings import Settings
from rnnscope.model.checkpoint import save_model
from rnnscope.model.importer import (ImportLimits, ImportRefused, Roles, SafetensorsReader, import_file,
                                     import_tensors, reading_peak_bytes, stage_safetensors, vocab_from_file,
                                     vocab_from_string)
from tests.conftest import TEST_HOSTS, serving

TEXT = "the quick brown fox jumps over the lazy dog. THE END!\n"
CHARS = sorted(set(TEXT))
V = len(CHARS)
OWNER = {"X-Rnnscope-Owner": "importer"}
MB = 1_000_000


# ---- files -----------------------------------------------------------------------------------------

def export(V=V, E=8, H=12, L=2, gates=4, scale=0.3, seed=0, embedding=True) -> dict[str, np.ndarray]:
    """A PyTorch character model's state dict as safetensors.torch.save_file writes it:
    nn.Embedding `embed`, a stacked nn.LSTM (gates=4; GRU 3, RNN 1) `rnn`, nn.Linear `fc`."""
    rng = np.random.default_rng(seed)
    D = E if embedding else V
    t = {"embed.weight": rng.normal(0, scale, (V, E))} if embedding else {}
    for l in range(L):
        t[f"rnn.weight_ih_l{l}"] = rng.normal(0, scale, (gates * H, D if l == 0 else H))
        t[f"rnn.weight_hh_l{l}"] = rng.normal(0, scale, (gates * H, H))
        t[f"rnn.bias_ih_l{l}"] = rng.normal(0, scale, gates * H)
        t[f"rnn.bias_hh_l{l}"] = rng.normal(0, scale, gates * H)
    t["fc.weight"] = rng.normal(0, scale, (V, H))
    t["fc.bias"] = rng.normal(0, scale, V)
    return {k: v.astype(np.float32) for k, v in t.items()}


def safetensors_file(header: dict | bytes, data: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data


def split(blob: bytes) -> tuple[dict, bytes]:
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def layout(shapes: dict[str, tuple[int, ...]], dtype="F32", itemsize=4) -> tuple[dict, int]:
    """A header placing `shapes` one after another, and the data's length."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        nbytes = int(np.prod(shape, dtype=object)) * itemsize
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    return header, offset


def zeros_file(shapes: dict[str, tuple[int, ...]]) -> bytes:
    """A well-formed safetensors file of zeros, in memory."""
    header, nbytes = layout(shapes)
    return safetensors_file(header, b"\0" * nbytes)


def sparse_file(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    """A well-formed safetensors file of zeros, written as a hole: any size costs no disk."""
    header, nbytes = layout(shapes)
    head = safetensors_file(header)
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(len(head) + nbytes)
    return path


def lstm_shapes(V, E, H, L=1, embedding=True) -> dict[str, tuple[int, ...]]:
    shapes = {"embed.weight": (V, E)} if embedding else {}
    for l in range(L):
        shapes |= {f"rnn.weight_ih_l{l}": (4 * H, (E if embedding else V) if l == 0 else H),
                   f"rnn.weight_hh_l{l}": (4 * H, H), f"rnn.bias_ih_l{l}": (4 * H,),
                   f"rnn.bias_hh_l{l}": (4 * H,)}
    return shapes | {"fc.weight": (V, H), "fc.bias": (V,)}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), load_bundled=False, allowed_hosts=TEST_HOSTS)
    with TestClient(create_app(settings), headers=OWNER) as c:
        yield c


def status_kb(field: str) -> int:
    """VmRSS, VmHWM... of this process, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> None:
    """VmHWM starts again from the current RSS (Linux's clear_refs, 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def post(client, model: bytes, vocab: tuple[str, bytes] | None = None, **fields) -> httpx.Response:
    files = {"model": ("m.safetensors", model, "application/octet-stream")}
    if vocab is not None:
        files["vocab"] = (vocab[0], vocab[1], "application/octet-stream")
    if vocab is None and "chars" not in fields:
        fields["chars"] = json.dumps(CHARS)
    return client.post("/api/models/import", files=files, data={k: v for k, v in fields.items() if v is not None})


def post_without_chars(client, blob: bytes) -> httpx.Response:
    """The model alone: its vocabulary must come from its own metadata."""
    return client.post("/api/models/import", files={"model": ("m.safetensors", blob)})


def message(r: httpx.Response) -> str:
    detail = r.json()["detail"]
    return detail if isinstance(detail, str) else " ".join(e["msg"] for e in detail)


def refused(r: httpx.Response, *fragments: str, field: str = "model") -> str:
    assert r.status_code == 422, r.text
    error = r.json()["detail"][0]
    assert error["loc"] == ["body", field], error
    for fragment in fragments:
        assert fragment in error["msg"], (fragment, error["msg"])
    return error["msg"]


def test_a_real_export_imports(client):
    """The control for every refusal below: the same kind of file, well formed, is a model."""
    r = post(client, save(export()))
    assert r.status_code == 201, r.text
    assert r.json()["recognised"]["cell"] == "lstm" and r.json()["recognised"]["embedding_folded"]


# ---- refused from the header, before any tensor is read ------------------------------------------

FOLD_BOMB = lstm_shapes(V=1_000_000, E=10, H=10, L=1)          # 84 MB: two 1,000,000-row tables


MEASURE = """
import sys, tracemalloc
from rnnscope.model.importer import ImportRefused, import_file, vocab_from_string
tracemalloc.start()
try:
    import_file(sys.argv[1], vocab_from_string(sys.argv[2]))
    print("imported")
except ImportRefused as e:
    print(tracemalloc.get_traced_memory()[1], e)
"""


def refusal_and_peak(path: Path, chars: str) -> tuple[str, int]:
    """import_file's refusal and the most it allocated meanwhile, in a process of its own (in
    this one, the module's server threads allocate too)."""
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path), chars], capture_output=True, text=True,
                         check=True).stdout
    peak, _, msg = out.partition(" ")
    assert peak.isdigit(), out
    return msg, int(peak)


def test_a_fold_bomb_is_refused_from_its_header_reading_no_tensor(tmp_path):
    """1,000,000 characters: the embedding's fold (W_ih E^T, 40 x 1,000,000 in float64 twice)
    and the decoder cost 2.5 GB before the 422; now the header's shapes refuse it."""
    path = sparse_file(tmp_path / "bomb.safetensors", FOLD_BOMB)
    assert path.stat().st_size > 80 * MB
    msg, peak = refusal_and_peak(path, "ab")
    assert "1,000,000 characters" in msg and "RNNSCOPE_MAX_VOCAB" in msg
    assert peak < 200_000, peak
    # Parameters are counted as rnnscope would keep them (after folding), from the shapes too:
    # 120 MB of LSTM weights in a file that holds nothing but a hole.
    path = sparse_file(tmp_path / "big.safetensors", lstm_shapes(V=100, E=8, H=1024, L=4, embedding=False))
    msg, peak = refusal_and_peak(path, "".join(chr(0x41 + i) for i in range(100)))
    assert "29,904,996 parameters as rnnscope keeps them; the limit is 20,000,000 (setting " \
           "RNNSCOPE_MAX_PARAMETERS)" in msg
    assert peak < 200_000, peak


def test_deep_and_wide_stacks_are_refused_from_their_shapes(client):
    """As training's limits: 2,400 layers of one unit fit the tensor count and imported in
    5.6 s, then every view stepped through them all; every unit over 1,024 a layer costs ~H^2."""
    refused(post(client, zeros_file(lstm_shapes(V=V, E=1, H=1, L=2400))), "rnn has 2,400 layers", "at most 8")
    wide = zeros_file({"rnn.weight_ih_l0": (1025, 1), "rnn.weight_hh_l0": (1025, 1025), "rnn.bias_ih_l0": (1025,),
                       "rnn.bias_hh_l0": (1025,), "embed.weight": (V, 1), "fc.weight": (V, 1025), "fc.bias": (V,)})
    refused(post(client, wide), "rnn has 1,025 units a layer", "RNNSCOPE_MAX_HIDDEN_SIZE")


def test_a_fold_bomb_over_http_answers_422_in_bounded_memory(tmp_path):
    """The 84 MB upload streamed to a live server: refused naming the setting, everything
    allocated during the request a few MB (the upload is spooled to disk), the conversion
    never admitted to the gate."""
    path = sparse_file(tmp_path / "bomb.safetensors", FOLD_BOMB)
    settings = Settings(data_dir=tmp_path / "data", load_bundled=False, allowed_hosts=TEST_HOSTS)
    app = create_app(settings)
    asked: list[tuple[int, str]] = []
    with serving(app) as url:
        gate = app.state.compute_slots
        job = gate.job
        gate.job = lambda nbytes, what="": (asked.append((nbytes, what)), job(nbytes, what))[1]
        tracemalloc.start()
        try:
            with open(path, "rb") as f:
                r = httpx.post(f"{url}/api/models/import", headers=OWNER, timeout=60,
                               files={"model": ("bomb.safetensors", f)}, data={"chars": "ab"})
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    msg = refused(r, "1,000,000 characters", "RNNSCOPE_MAX_VOCAB")
    assert "embed" in msg or "fc" in msg
    assert peak < 24 * MB, peak          # ~10 MB measured: the request's chunks and the spool's first MB
    assert [what for _, what in asked] == ["reading the model's header and vocabulary"]


def test_bombs_and_huge_headers_at_once_keep_the_server_small(tmp_path):
    """Two fold bombs and six 8 MB headers sent together to a live server (two bombs reached
    5.7 GB, six 47 MB headers 3.4 GB): every one a 422, the process's peak RSS barely moves."""
    bomb = sparse_file(tmp_path / "bomb.safetensors", lstm_shapes(V=1_000_000, E=1, H=1))
    header = tmp_path / "header.safetensors"
    body = b'{"a": "' + b"x" * (8 * MB - 9) + b'"}'
    header.write_bytes(len(body).to_bytes(8, "little") + body)
    settings = Settings(data_dir=tmp_path / "data", load_bundled=False, allowed_hosts=TEST_HOSTS)
    answers: list[httpx.Response] = []

    def send(url: str, path: Path) -> None:
        with open(path, "rb") as f:
            answers.append(httpx.post(f"{url}/api/models/import", headers=OWNER, timeout=60,
                                      files={"model": (path.name, f)}, data={"chars": "ab"}))

    with serving(create_app(settings)) as url:
        send(url, header)                                 # the first request's one-off costs
        answers.clear()
        reset_peak_rss()
        before = status_kb("VmRSS")
        senders = [threading.Thread(target=send, args=(url, p)) for p in [bomb] * 2 + [header] * 6]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        rise = (status_kb("VmHWM") - before) * 1000
    assert len(answers) == 8
    for r in answers:
        refused(r, "RNNSCOPE_MAX_VOCAB" if "characters" in message(r) else "header of 8,000,000 bytes")
    assert sum("1,000,000 characters" in message(r) for r in answers) == 2
    assert rise < 64 * MB, rise


def test_reading_a_header_at_its_size_limit_stays_within_what_it_asks_the_gate_for():
    """The bytes the route asks for while reading bound what json.loads makes of the worst
    headers at the size limit (a quarter of the default's, to be quick; the bound scales with
    it): empty lists (Python objects cost ~26 bytes a byte of them), and the most tensors the
    size allows."""
    limits = ImportLimits(max_header_bytes=250_000)
    n = limits.max_header_bytes
    worst = {
        "empty lists": b'{"a":[' + b"[]," * (n // 3 - 4) + b"[]]}",
        "tensors": b"{" + b",".join(b'"%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % i
                                     for i in range(n // 110)) + b"}",
    }
    for name, header in worst.items():
        assert len(header) <= n, name
        tracemalloc.start()
        try:
            try:
                SafetensorsReader(io.BytesIO(safetensors_file(header)), "m", limits)
            except ImportRefused:
                pass
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert 4 * len(header) < peak <= reading_peak_bytes(limits), (name, peak)


def nested(depth: int) -> bytes:
    return b'{"a":' + b"[" * depth + b"]" * depth + b"}"


MALFORMED = {
    # 400 KB of brackets: json.loads recursed until RecursionError, a 500.
    "nested": (safetensors_file(nested(200_000)), ["nests brackets 200,001 levels deep", "at most 3"]),
    # 2^64 elements with no data: np.prod overflowed to 0 and the empty data "fit", then reshape raised.
    "2^32 x 2^32": (safetensors_file({"w": {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 0]}}),
                    ["'w' is F32 4294967296 x 4294967296", "73,786,976,294,838,206,464 bytes", "span 0"]),
    # numpy allows 64 dimensions: reshape raised ValueError, a 500.
    "65 dimensions": (safetensors_file({"w": {"dtype": "F32", "shape": [1] * 65, "data_offsets": [0, 4]}},
                                       b"\0" * 4), ["65 dimensions", "at most 8"]),
    "overlapping": (safetensors_file({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                                      "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}},
                                     b"\0" * 24), ["'b' (bytes 8..24) overlaps 'a' (bytes 0..16)"]),
    "a gap": (safetensors_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, b"\0" * 16),
              ["bytes 0..8 of the data belong to no tensor"]),
    "truncated": (safetensors_file({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 10),
                  ["the tensors' data is 16 bytes but the file holds 10", "truncated"]),
    "trailing bytes": (safetensors_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 9),
                       ["bytes follow the last tensor"]),
    "dtype": (safetensors_file({"a": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, b"\0"),
              ["dtype 'F8_E4M3', which rnnscope does not read"]),
    "negative size": (safetensors_file({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}),
                      ["the shape of 'a' is [-1]"]),
    "float size": (safetensors_file({"a": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 0]}}),
                   ["the shape of 'a' is [1.5]"]),
    "offsets": (safetensors_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}),
                ["data_offsets of 'a' are [4, 0]"]),
    "not a tensor": (safetensors_file({"a": [1, 2]}), ["the entry for 'a' is not a safetensors tensor"]),
    "not an object": (safetensors_file(b"[1]"), ["is neither safetensors nor a PyTorch file"]),
    "header past the end": (b"\xff\x00\x00\x00\x00\x00\x00\x00{}", ["shorter than its own 255-byte header"]),
    "a 47 MB header": ((47 * MB).to_bytes(8, "little") + b"{" + b" " * 100, ["header of 47,000,000 bytes",
                                                                              "at most 1,000,000"]),
    "unclosed string": (safetensors_file(b'{"a": {"dtype": "F32}}'), ["a string is not closed"]),
    # 900 kB of escaped quotes: a string pattern that also took escapes retried at each one (hours).
    "escaped quotes": (safetensors_file(b'{"a": "' + b'\\"' * 450_000), ["a string is not closed"]),
    "NaN": (safetensors_file(b'{"a": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 0]}}'),
            ["NaN is not JSON"]),
    "5,000 digits": (safetensors_file(b'{"a": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], '
                                      b'"data_offsets": [0, 0]}}'), ["not valid JSON", "digits"]),
    "not UTF-8": (safetensors_file(b'{"\xff": {}}'), ["not UTF-8 (byte 2"]),
    "metadata": (safetensors_file({"__metadata__": {"vocab": ["a"]}}), ["__metadata__ must map names to strings"]),
    "a long name": (safetensors_file({"x" * 2000: {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}),
                    ["a tensor name is 2,000 characters long"]),
    "layer 10^12": (zeros_file({"rnn.weight_ih_l999999999999": (4, 4)}), ["found no recurrent layer"]),
    "a decoder of 0 characters": (zeros_file(lstm_shapes(V=0, E=0, H=2, embedding=False)), ["writes no characters"]),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_file_answers_422_saying_what_is_wrong(client, case):
    blob, fragments = MALFORMED[case]
    refused(post(client, blob), *fragments)


def test_thousands_of_look_alike_modules_are_refused_before_weighing_every_pairing(client):
    """300 Linear(H, 0) and 300 Embedding(0, 0) modules: 90,000 decoder-embedding pairs, each
    listing the unused tensors, held a compute slot for 22 s (and hours at 1 MB); now the
    count alone asks for the roles to be named, and named, the pairs are few."""
    shapes = {"rnn.weight_ih_l0": (1, 0), "rnn.weight_hh_l0": (1, 1), "rnn.bias_ih_l0": (1,), "rnn.bias_hh_l0": (1,)}
    for i in range(300):
        shapes |= {f"d{i}.weight": (0, 1), f"e{i}.weight": (0, 0)}
    blob = zeros_file(shapes)
    refused(post(client, blob), "300 modules could be the decoder and 300 the embedding (90,300 ways",
            "--decoder")
    refused(post(client, blob, decoder="d7"), "the embedding is ambiguous", "and 288 more")


def test_surrogates_in_a_vocabulary_are_refused(client):
    """A lone surrogate (JSON's "\\ud800") is no character and cannot be written as UTF-8: it
    made the response's own encoding fail, a 500."""
    model = save(export())
    escaped = json.dumps(CHARS[:-1] + ["\ud800"])               # ensure_ascii: the escape \ud800
    assert "\\ud800" in escaped
    refused(post(client, model, ("vocab.json", escaped.encode())), "\\ud800", "surrogate", field="vocab")
    refused(post(client, model, chars=escaped), "\\ud800", "surrogate", field="chars")
    # A pair is a character outside the Basic Multilingual Plane: accepted as one.
    paired = json.dumps(CHARS[:-1] + ["\U0001F600"])
    assert "\\ud83d\\ude00" in paired
    assert post(client, model, chars=paired).status_code == 201
    # In an rnnscope checkpoint's metadata: escaped twice (a JSON list inside a JSON string)...
    header, data = split(save(export(embedding=False)))
    header["__metadata__"] = {"vocab": escaped}
    refused(post(client, safetensors_file(header, data), chars=None), "the file's metadata vocab", "\\ud800")
    # ... or once, in the header itself.
    raw = json.dumps(header).replace("\\\\ud800", "\\ud800").encode()
    assert b'"\\ud800\\"' in raw
    refused(post(client, safetensors_file(raw, data), chars=None), "safetensors header", "\\ud800")
    # And from the library, for the CLI.
    with pytest.raises(ImportRefused, match="surrogate"):
        vocab_from_file(escaped.encode(), "v.json")


def test_vocabulary_files_are_bounded_before_they_are_parsed(client):
    model = save(export())
    refused(post(client, model, ("v.json", b" " * 300_000 + b"[]")), "is 300,002 bytes", "RNNSCOPE_MAX_VOCAB",
            field="vocab")
    # 100,000 levels: json.loads raised RecursionError, a 500.
    refused(post(client, model, ("v.json", b"[" * 100_000 + b"]" * 100_000)), "nests brackets 100,000 levels deep",
            field="vocab")
    # Typed characters that only look like JSON are characters.
    refused(post(client, model, chars="[" * 500 + "]" * 500), "'[', ']' more than once", field="chars")
    many = json.dumps([chr(0x100 + i) for i in range(1500)]).encode()
    refused(post(client, model, ("v.json", many)), "lists 1,500 characters", "RNNSCOPE_MAX_VOCAB", field="vocab")
    corpus = "".join(chr(0x100 + i) for i in range(1500)).encode()
    refused(post(client, model, ("corpus.txt", corpus)), "has 1,500 characters", "RNNSCOPE_MAX_VOCAB",
            field="vocab")
    refused(post(client, model, ("v.json", b'{"\xc2\xb2": "a"}')), "neither", field="vocab")


# ---- the weights must compute ------------------------------------------------------------------------

def test_huge_finite_weights_are_refused_by_the_probe(client, tmp_path):
    """+-3e38 is finite float32, so the old check passed it; every loss was then NaN (the
    trace's `loss` null where the schema says number)."""
    rng = np.random.default_rng(3)
    t = {k: np.where(rng.random(v.shape) < 0.5, 3e38, -3e38).astype(np.float32)
         for k, v in export(embedding=False).items()}
    msg = refused(post(client, save(t)), "finite but too large", "overflows")
    assert "float32" in msg
    # With an embedding, folding it into W_ih already overflows float32.
    t = {k: np.where(rng.random(v.shape) < 0.5, 3e38, -3e38).astype(np.float32) for k, v in export().items()}
    refused(post(client, save(t)), "non-finite values", "rnn.weight_ih_l0", "folded")
    (tmp_path / "huge.safetensors").write_bytes(save(t))
    with pytest.raises(ImportRefused, match="too large"):
        import_file(tmp_path / "huge.safetensors", vocab_from_string("".join(CHARS)))
    # NaN itself, as before.
    t = export()
    t["rnn.bias_hh_l1"][3] = np.nan
    refused(post(client, save(t)), "non-finite values", "rnn.bias_hh_l1")
    # Large but harmless weights (a saturated recurrent layer) are a model.
    t = export()
    t["rnn.weight_hh_l0"] *= 1e30
    assert post(client, save(t)).status_code == 201


def test_the_cli_gives_the_same_refusals(tmp_path):
    out = tmp_path / "out.safetensors"
    for name, blob in (("nested", MALFORMED["nested"][0]), ("dims", MALFORMED["65 dimensions"][0])):
        (tmp_path / f"{name}.safetensors").write_bytes(blob)
        r = CliRunner().invoke(cli, ["import", str(tmp_path / f"{name}.safetensors"), "--chars", "ab",
                                     "--out", str(out)])
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert "nests brackets" in r.output or "65 dimensions" in r.output
    sparse_file(tmp_path / "bomb.safetensors", FOLD_BOMB)
    r = CliRunner().invoke(cli, ["import", str(tmp_path / "bomb.safetensors"), "--chars", "ab", "--out", str(out)])
    assert r.exit_code == 2 and "RNNSCOPE_MAX_VOCAB" in r.output, r.output
    r = CliRunner().invoke(cli, ["import", str(tmp_path / "nested.safetensors"), "--chars", '["\\ud800"]',
                                 "--out", str(out)])
    assert r.exit_code == 2 and "surrogate" in r.output, r.output
    assert not out.exists()


# ---- the compute gate's memory budget ----------------------------------------------------------------

def test_the_conversion_asks_the_gate_for_its_estimated_peak(client):
    """A budget too small for the conversion's estimate is a 413 naming the setting before
    anything is converted; a model that fits is converted holding its bytes, and gives them back."""
    gate = ComputeGate(2, 8, 10.0, memory_budget=40 * MB)       # the header's reading asks for 32 MB
    shared, client.app.state.compute_slots = client.app.state.compute_slots, gate
    try:
        budgeted_conversion(client, gate)
    finally:
        client.app.state.compute_slots = shared


def budgeted_conversion(client, gate):
    asked = []
    job = gate.job
    gate.job = lambda nbytes, what="": (asked.append((nbytes, what, gate.held_bytes)), job(nbytes, what))[1]
    big = save(export(V=1000, E=8, H=256, L=1, gates=1, embedding=False, scale=0.01))   # 2.3 MB, ~44 MB to convert
    r = post(client, big, chars=json.dumps([chr(0x100 + i) for i in range(1000)]))
    assert r.status_code == 413 and "RNNSCOPE_MEMORY_BUDGET" in message(r), r.text
    assert [what for _, what, _ in asked] == ["reading the model's header and vocabulary", "converting the model"]
    assert 40 * MB < asked[1][0] < 60 * MB and asked[1][2] == 0      # the reading's bytes were given back
    asked.clear()
    assert post(client, save(export())).status_code == 201
    assert asked[1][0] < 5 * MB and gate.held_bytes == 0


@pytest.mark.parametrize("shape", [dict(V=300, E=64, H=256, L=2, gates=4), dict(V=200, H=384, L=1, gates=3,
                                                                                    embedding=False)],
                         ids=["lstm-embedding", "gru-one-hot"])
def test_the_estimate_is_within_a_quarter_of_the_conversions_peak(shape):
    staged = stage_safetensors(SafetensorsReader(io.BytesIO(save(export(scale=0.05, **shape))), "m"),
                               vocab_from_string("".join(chr(0x100 + i) for i in range(shape["V"]))), Roles())
    tracemalloc.start()
    try:
        staged.finish()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 0.75 * peak <= staged.peak_bytes <= 1.25 * peak, (staged.peak_bytes, peak)


# ---- fuzz: never a 500, memory bounded --------------------------------------------------------------

DTYPES = ["F32", "F16", "BF16", "F64", "I64", "BOOL", "U8", "F8_E5M2", "", 7, None]
ODD_VALUES = [-1, 0, 1, 2**31, 2**63, 2**64 + 1, 10**30, 1.5, -0.0, True, None, "4", [], [1, [2]], {"a": 1},
              "\ud800", 1e308]


def mutate(rng: random.Random, blob: bytes) -> bytes:
    """One random change to a safetensors file: bytes flipped (in the header, or anywhere), a
    cut, a new length prefix, or an edit to the header's JSON re-serialised with its length."""
    n = int.from_bytes(blob[:8], "little")
    kind = rng.randrange(8)
    if kind == 0:                                           # flip bytes in the header
        b = bytearray(blob)
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(8, 8 + n)] = rng.randrange(256)
        return bytes(b)
    if kind == 1:                                           # flip bytes anywhere, the length too
        b = bytearray(blob)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == 2:                                           # truncated
        return blob[:rng.randrange(len(blob))]
    if kind == 3:                                           # a lying length prefix
        length = rng.choice([0, 1, n - 1, n + 1, n + 7, len(blob), 2**63, rng.randrange(2**32)])
        return (length % 2**64).to_bytes(8, "little") + blob[8:]
    header, data = split(blob)
    names = [k for k in header if k != "__metadata__"]
    a, b = rng.choice(names), rng.choice(names)
    if kind == 4:                                           # two tensors' fields swapped
        field = rng.choice(["dtype", "shape", "data_offsets"])
        header[a][field], header[b][field] = header[b][field], header[a][field]
    elif kind == 5:                                         # names swapped: a role moved
        header[a], header[b] = header[b], header[a]
    elif kind == 6:                                         # a field's value replaced
        field = rng.choice(["dtype", "shape", "data_offsets", "extra"])
        if field == "dtype":
            header[a][field] = rng.choice(DTYPES)
        elif rng.random() < 0.5 and isinstance(header[a].get(field), list) and header[a][field]:
            i = rng.randrange(len(header[a][field]))
            header[a][field][i] = rng.choice(ODD_VALUES + [header[a][field][i] + rng.choice([-4, -1, 1, 4])])
        else:
            header[a][field] = rng.choice(ODD_VALUES)
    else:                                                   # entries dropped, renamed or added
        what = rng.randrange(4)
        if what == 0:
            del header[a]
        elif what == 1:
            header[a + rng.choice(["_reverse", ".x", "\ud800", "_l0"])] = header.pop(a)
        elif what == 2:
            header["__metadata__"] = rng.choice([{"vocab": json.dumps(CHARS)}, {"vocab": "[[["}, [], "x",
                                                 {"vocab": json.dumps(CHARS + ["ab"])}, {"vocab": '"\\ud800"'}])
        else:
            header[rng.choice(["x.weight", "rnn.weight_hr_l0", "rnn.weight_ih_l7"])] = dict(header[a])
    return safetensors_file(json.dumps(header).encode(), data)


def test_fuzzed_headers_never_answer_500_and_stay_in_bounded_memory(client, tmp_path):
    """300 mutations (seeded) of a real export and of an rnnscope checkpoint through the route:
    every answer a 201 or a 4xx whose message says something; no request raises the process's
    peak RSS more than a small bound (the header's reading may ask the gate for 32 MB), and
    every 10th request's allocations, traced, stay under it too."""
    torch_style = save(export(L=2, E=6, H=8))
    lm, _ = import_tensors(export(L=1, E=6, H=8, gates=3, seed=1), vocab_from_string("".join(CHARS)))
    save_model(lm, tmp_path / "checkpoint.safetensors")
    rnnscope_style = (tmp_path / "checkpoint.safetensors").read_bytes()
    rng = random.Random(18)
    statuses: dict[int, int] = {}
    worst_rss = worst_traced = 0
    for i in range(300):
        base, with_chars = (torch_style, True) if i % 3 else (rnnscope_style, False)
        blob = mutate(rng, base)
        traced = i % 10 == 0
        if traced:
            tracemalloc.start()
        reset_peak_rss()
        before = status_kb("VmRSS")
        try:
            r = post(client, blob, chars=json.dumps(CHARS)) if with_chars else post_without_chars(client, blob)
            worst_rss = max(worst_rss, (status_kb("VmHWM") - before) * 1000)
            if traced:
                worst_traced = max(worst_traced, tracemalloc.get_traced_memory()[1])
        finally:
            if traced:
                tracemalloc.stop()
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code in (201, 413, 422), (i, r.status_code, r.text)
        if r.status_code != 201:
            assert len(message(r)) > 20, (i, r.text)
    assert statuses.get(422, 0) > 150 and statuses.get(201, 0) > 10, statuses
    assert worst_rss < 40 * MB and 0 < worst_traced < 40 * MB, (worst_rss, worst_traced)
