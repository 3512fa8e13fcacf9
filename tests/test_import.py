"""Opening a character model trained in PyTorch (model/importer.py, `rnnscope import`,
POST /api/models/import): every accepted architecture, saved as torch saves it, equals
torch's own forward and autograd once imported; what cannot be opened is refused with a
reason; uploads are owned, limited and survive a restart; the Train page's panel works."""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from rnnscope.app.cli import cli
from rnnscope.app.main import create_app
from rnnscope.app.settings import Settings
from rnnscope.model.analysis import backward_one_prediction
from rnnscope.model.checkpoint import load_model
from rnnscope.model.importer import (ImportRefused, Roles, import_file, read_model_file, vocab_from_corpus,
                            vocab_from_json, vocab_from_string)
from tests.conftest import TEST_HOSTS, serving
from tests.corpus import shakespeare_head

if os.environ.get("RNNSCOPE_REQUIRE_TORCH") == "1":
    import torch          # CI installs torch==2.13.0: a missing torch there is a failure
else:
    torch = pytest.importorskip("torch", reason="torch is not installed (`make test` installs torch==2.13.0 "
                                                   "where RNNSCOPE_REQUIRE_TORCH=1, as CI does)")
from safetensors.torch import save_file  # noqa: E402  (safetensors' torch half needs torch)

ROOT = Path(__file__).resolve().parents[1]
TORCH_CELLS = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}
TEXT = shakespeare_head(2_000)
CHARS = sorted(set(TEXT))                     # the tutorials' vocabulary: the corpus's sorted characters
V, H = len(CHARS), 16
READ = TEXT[:90]                              # what the parity tests read
TOL = {torch.float32: 1e-5, torch.float64: 1e-9}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Small models: threads only add scheduling noise on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class CharNet(torch.nn.Module):
    """A tutorial's character model: optional nn.Embedding, a stacked RNN/GRU/LSTM, a final
    nn.Linear, under whatever attribute names the test gives it."""

    def __init__(self, cell, layers, embed=None, batch_first=False, names=("embed", "rnn", "fc"), vocab=V):
        super().__init__()
        self.names, self.embed_dim, self.batch_first, self.vocab = names, embed, batch_first, vocab
        emb, rnn, dec = names
        if embed:
            setattr(self, emb, torch.nn.Embedding(vocab, embed))
        stack = getattr(torch.nn, TORCH_CELLS[cell])(embed or vocab, H, layers, batch_first=batch_first)
        setattr(self, rnn, stack)
        setattr(self, dec, torch.nn.Linear(H, vocab))

    @property
    def the_rnn(self):
        return getattr(self, self.names[1])

    @property
    def the_decoder(self):
        return getattr(self, self.names[2])

    def inputs(self, ids):
        """ids (N, T) -> what the recurrent stack reads, (N, T, D)."""
        if self.embed_dim:
            return getattr(self, self.names[0])(ids)
        return torch.nn.functional.one_hot(ids, self.vocab).to(self.the_decoder.weight.dtype)

    def forward(self, ids):
        x = self.inputs(ids)
        if not self.batch_first:
            x = x.transpose(0, 1)
        out, state = self.the_rnn(x)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return self.the_decoder(out), state


class Wrapped(torch.nn.Module):
    """As Lightning and DataParallel save it: the model under a prefix."""

    def __init__(self, net):
        super().__init__()
        self.model = net

    def forward(self, ids):
        return self.model(ids)


# cell, layers, embedding width, batch_first, attribute names, wrapped in another module
ARCHITECTURES = [
    ("lstm", 2, 12, True, ("encoder", "lstm", "decoder"), False),
    ("lstm", 1, None, False, ("unused", "rnn", "fc"), False),
    ("lstm", 3, 9, False, ("embedding", "lstm", "head"), True),
    ("gru", 1, 12, False, ("embed", "gru", "fc"), False),
    ("gru", 2, None, True, ("unused", "encoder", "head"), False),
    ("gru", 3, 16, True, ("tok", "core", "linear"), True),
    ("rnn", 1, None, True, ("unused", "rnn", "decoder"), False),
    ("rnn", 2, 10, False, ("encoder", "body", "fc"), False),
    ("rnn", 3, 8, True, ("emb", "rnn", "head"), True),
]


def arch_id(a):
    cell, layers, embed, batch_first, names, wrapped = a
    return (f"{cell}{layers}-{'emb' if embed else 'onehot'}-{'bf' if batch_first else 'tf'}-"
            f"{names[1]}-{names[2]}{'-wrapped' if wrapped else ''}")


def build(arch, dtype=torch.float32, seed=0):
    cell, layers, embed, batch_first, names, wrapped = arch
    torch.manual_seed(seed)
    net = CharNet(cell, layers, embed, batch_first, names).to(dtype).eval()
    return (Wrapped(net) if wrapped else net), net


def save(module, path: Path, how: str) -> Path:
    """As people save a state dict: safetensors from torch or from NumPy arrays, or torch.save."""
    if how == "safetensors":
        save_file(module.state_dict(), path.with_suffix(".safetensors"))
        return path.with_suffix(".safetensors")
    if how == "numpy":
        from safetensors.numpy import save_file as save_numpy
        save_numpy({k: v.numpy() for k, v in module.state_dict().items()}, path.with_suffix(".safetensors"))
        return path.with_suffix(".safetensors")
    torch.save(module.state_dict(), path.with_suffix(".pt"))
    return path.with_suffix(".pt")


def torch_steps(net: CharNet, ids: np.ndarray, position: int):
    """Torch's own values and autograd gradients for every layer and step: each layer is a
    one-layer copy of the module (its own kernel, the same weights), stepped one character at
    a time so every h_t is a graph node that feeds the next step, the layer above and the
    decoder. Returns per layer h (T, H) (and c), and dL/dh_t for t = 0..position, where
    L = -ln p(ids[position+1] | ids[..position])."""
    rnn, dtype = net.the_rnn, net.the_decoder.weight.dtype
    L = rnn.num_layers
    layers = []
    for l in range(L):
        one = type(rnn)(rnn.input_size if l == 0 else H, H, 1).to(dtype)
        one.load_state_dict({re.sub(r"_l\d+$", "_l0", k): v for k, v in rnn.state_dict().items()
                             if k.endswith(f"_l{l}")})
        layers.append(one)
    x_all = net.inputs(torch.from_numpy(ids)[None])[0].detach()           # (T, D)
    lstm = isinstance(rnn, torch.nn.LSTM)
    h = [torch.zeros(1, 1, H, dtype=dtype) for _ in range(L)]
    c = [torch.zeros(1, 1, H, dtype=dtype) for _ in range(L)]
    hs, cs = [[] for _ in range(L)], [[] for _ in range(L)]
    for t in range(len(ids)):
        x = x_all[t].view(1, 1, -1)
        for l in range(L):
            if lstm:
                _, (h[l], c[l]) = layers[l](x, (h[l], c[l]))
                cs[l].append(c[l])
            else:
                _, h[l] = layers[l](x, h[l])
            h[l].retain_grad()
            hs[l].append(h[l])
            x = h[l]
    logits = net.the_decoder(hs[-1][position])[0, 0]
    loss = torch.nn.functional.cross_entropy(logits[None], torch.tensor([int(ids[position + 1])]))
    loss.backward()
    values = [torch.cat(hl).reshape(-1, H).detach().numpy() for hl in hs]
    cvalues = [torch.cat(cl).reshape(-1, H).detach().numpy() for cl in cs] if lstm else None
    grads = [np.stack([hl[t].grad.reshape(H).numpy() for t in range(position + 1)]) for hl in hs]
    return values, cvalues, grads, loss.item()


def lstm_cell_grads(net: CharNet, ids: np.ndarray, position: int):
    """dL/dc_t, total through c_{t+1} and h_t, by autograd through the LSTM equations written
    in torch with the module's weights. torch's LSTM kernel returns h_t and c_t side by side
    from one node, so a gradient taken on its c_t would miss the path through h_t; the values
    these equations give are checked against the kernel's first."""
    rnn, dtype = net.the_rnn, net.the_decoder.weight.dtype
    x = net.inputs(torch.from_numpy(ids)[None])[0].detach()
    h = [torch.zeros(H, dtype=dtype) for _ in range(rnn.num_layers)]
    c = [torch.zeros(H, dtype=dtype) for _ in range(rnn.num_layers)]
    cs = [[] for _ in range(rnn.num_layers)]
    for t in range(position + 1):
        inp = x[t]
        for l in range(rnn.num_layers):
            W_ih, W_hh, b_ih, b_hh = (getattr(rnn, f"{k}_l{l}")
                                      for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            i, f, g, o = (W_ih @ inp + b_ih + W_hh @ h[l] + b_hh).chunk(4)
            c[l] = torch.sigmoid(f) * c[l] + torch.sigmoid(i) * torch.tanh(g)
            c[l].retain_grad()
            h[l] = torch.sigmoid(o) * torch.tanh(c[l])
            cs[l].append(c[l])
            inp = h[l]
    target = torch.tensor([int(ids[position + 1])])
    loss = torch.nn.functional.cross_entropy(net.the_decoder(h[-1])[None], target)
    loss.backward()
    return ([torch.stack(cl).detach().numpy() for cl in cs],
            [np.stack([ct.grad.numpy() for ct in cl]) for cl in cs])


def vocab_file(tmp_path: Path, kind: str) -> Path:
    """The vocabulary as people keep it: the corpus, a JSON list, or a JSON {char: id} mapping."""
    if kind == "corpus":
        (tmp_path / "input.txt").write_text(TEXT, encoding="utf-8")
        return tmp_path / "input.txt"
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(CHARS if kind == "list" else {c: i for i, c in enumerate(CHARS)}))
    return path


def read_vocab(path: Path):
    data = path.read_bytes()
    if path.suffix == ".txt":
        return vocab_from_corpus(data, path.name)
    return vocab_from_json(json.loads(data), path.name)


# ---- parity with torch ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("how", ["safetensors", "numpy", "torch.save"])
@pytest.mark.parametrize("arch", ARCHITECTURES, ids=arch_id)
def test_imported_model_equals_torch(arch, how, dtype, tmp_path):
    """Logits, every layer's h (and c) at every step, and the gradient through time of one
    prediction equal torch's, to 1e-5 in float32 and 1e-9 in float64."""
    module, net = build(arch, dtype)
    path = save(module, tmp_path / "model", how)
    kind = ("corpus", "list", "mapping")[ARCHITECTURES.index(arch) % 3]
    lm, rec = import_file(path, read_vocab(vocab_file(tmp_path, kind)))
    cell, layers, embed, *_ = arch
    assert (rec.cell, rec.num_layers, rec.hidden_size, rec.vocab_size) == (cell, layers, H, V)
    assert rec.embedding_folded == bool(embed) and lm.vocab.chars == CHARS
    assert lm.dtype == (np.float64 if dtype == torch.float64 else np.float32)
    tol = TOL[dtype]

    ids = np.array([CHARS.index(ch) for ch in READ])
    ours, _, cache = lm.forward(lm.encode(READ)[None])
    with torch.no_grad():
        theirs, final = module(torch.from_numpy(ids)[None])
    assert np.abs(ours[0] - theirs[0].numpy()).max() < tol

    position = len(READ) - 2
    h_ref, c_ref, dh_ref, loss_ref = torch_steps(net, ids, position)
    final_h = (final[0] if cell == "lstm" else final)[:, 0].numpy()
    for l in range(layers):
        assert np.abs(lm.internals(cache, l, "h") - h_ref[l]).max() < tol
        assert np.abs(h_ref[l][-1] - final_h[l]).max() < tol          # the stepped copy is the module
        if cell == "lstm":
            assert np.abs(lm.internals(cache, l, "c") - c_ref[l]).max() < tol
            assert np.abs(c_ref[l][-1] - final[1][l, 0].numpy()).max() < tol

    _, loss, grads = backward_one_prediction(lm, READ, position)
    assert abs(loss - loss_ref) < tol
    for l in range(layers):
        assert np.abs(grads.dh[l][0, 1:] - dh_ref[l]).max() < tol, f"dL/dh of layer {l}"
    if cell == "lstm":
        c_eq, dc_ref = lstm_cell_grads(net, ids, position)
        for l in range(layers):
            assert np.abs(c_eq[l] - c_ref[l][:position + 1]).max() < tol
            assert np.abs(grads.dc[l][0, 1:] - dc_ref[l]).max() < tol, f"dL/dc of layer {l}"


def test_vocabulary_order_is_the_models_own(tmp_path):
    """A mapping in any id order is honoured: rnnscope sorts its vocabulary, so the one-hot
    columns and decoder rows move with the characters, and each character's logit stays its own."""
    module, _ = build(ARCHITECTURES[0])
    rng = np.random.default_rng(3)
    shuffled = list(rng.permutation(CHARS))
    save_file(module.state_dict(), tmp_path / "m.safetensors")
    stoi = {c: i for i, c in enumerate(shuffled)}
    lm, _ = import_file(tmp_path / "m.safetensors", vocab_from_json(stoi, "m"))
    ids = np.array([shuffled.index(ch) for ch in READ])
    with torch.no_grad():
        theirs = module(torch.from_numpy(ids)[None])[0][0].numpy()
    ours = lm.forward(lm.encode(READ)[None])[0][0]
    assert lm.vocab.chars == CHARS
    assert np.abs(ours - theirs[:, [shuffled.index(c) for c in CHARS]]).max() < 1e-5
    # The same order typed out, or as an {id: char} mapping (itos), gives the same model.
    for spec in (vocab_from_string("".join(shuffled)), vocab_from_string(json.dumps(shuffled)),
                 vocab_from_json({str(i): c for i, c in enumerate(shuffled)}, "itos")):
        again, _ = import_file(tmp_path / "m.safetensors", spec)
        assert all(np.array_equal(again.params[k], lm.params[k]) for k in lm.params)


def test_bfloat16_and_a_training_checkpoint_dict(tmp_path):
    """A model saved in bfloat16 is widened exactly; a .pt holding {"model_state_dict": ...,
    "optimizer_state_dict": ...} yields its model's weights."""
    module, _ = build(ARCHITECTURES[3])
    save_file({k: v.to(torch.bfloat16) for k, v in module.state_dict().items()},
              tmp_path / "bf16.safetensors")
    lm, rec = import_file(tmp_path / "bf16.safetensors", vocab_from_string("".join(CHARS)))
    assert rec.source_dtype == "float32" and lm.dtype == np.float32   # widened on reading
    wide = module.state_dict()["gru.weight_hh_l0"].to(torch.bfloat16).float().numpy()
    assert np.array_equal(lm.params["rnn.weight_hh_l0"], wide)
    opt = torch.optim.Adam(module.parameters())
    torch.save({"epoch": 3, "model_state_dict": module.state_dict(),
                "optimizer_state_dict": opt.state_dict()}, tmp_path / "ckpt.pt")
    lm2, _ = import_file(tmp_path / "ckpt.pt", vocab_from_string("".join(CHARS)))
    assert lm2.params["rnn.weight_hh_l0"].shape == (3 * H, H)


# ---- refusals --------------------------------------------------------------------------------------

def refusal(module, tmp_path, roles=Roles(), chars=CHARS) -> str:
    save_file(module.state_dict(), tmp_path / "m.safetensors")
    with pytest.raises(ImportRefused) as e:
        import_file(tmp_path / "m.safetensors", vocab_from_string("".join(chars)), roles)
    return str(e.value)


class Custom(torch.nn.Module):
    def __init__(self, rnn, decoder_in=H, heads=("fc",)):
        super().__init__()
        self.embed = torch.nn.Embedding(V, 8)
        self.rnn = rnn
        for name in heads:
            setattr(self, name, torch.nn.Linear(decoder_in, V))


def test_bidirectional_is_refused(tmp_path):
    message = refusal(Custom(torch.nn.LSTM(8, H, 2, bidirectional=True), 2 * H), tmp_path)
    assert "bidirectional" in message and "_reverse" in message


def test_proj_size_is_refused(tmp_path):
    message = refusal(Custom(torch.nn.LSTM(8, H, 1, proj_size=4), 4), tmp_path)
    assert "proj_size" in message and "weight_hr" in message


def test_missing_biases_are_refused_naming_the_parameter(tmp_path):
    message = refusal(Custom(torch.nn.GRU(8, H, 1, bias=False)), tmp_path)
    assert "bias=False" in message and "bias_ih_l0" in message


def test_relu_rnn_is_refused_when_named_and_tanh_otherwise_said_to_be_assumed(tmp_path):
    module = Custom(torch.nn.RNN(8, H, 1, nonlinearity="relu"))
    message = refusal(module, tmp_path, Roles(nonlinearity="relu"))
    assert "relu" in message and "tanh" in message
    _, rec = import_file(tmp_path / "m.safetensors", vocab_from_string("".join(CHARS)))
    assert rec.nonlinearity.startswith("tanh (assumed")
    _, rec = import_file(tmp_path / "m.safetensors", vocab_from_string("".join(CHARS)),
                         Roles(nonlinearity="tanh"))
    assert rec.nonlinearity == "tanh"


def test_a_cell_hint_that_contradicts_the_shapes_is_refused(tmp_path):
    message = refusal(Custom(torch.nn.GRU(8, H, 1)), tmp_path, Roles(cell="lstm"))
    assert "you said lstm" in message and "GRU" in message


def test_mismatched_vocabulary_names_both_sizes(tmp_path):
    message = refusal(Custom(torch.nn.LSTM(8, H, 1)), tmp_path, chars=CHARS[:-3])
    assert f"has {V - 3} characters" in message and f"has {V}" in message
    # A corpus with a byte-order mark says so: the likeliest reason for one character too many.
    spec = vocab_from_corpus("\ufeff".encode() + TEXT.encode(), "bom.txt")
    with pytest.raises(ImportRefused, match="byte-order mark"):
        import_file(tmp_path / "m.safetensors", spec)


def test_bad_vocabularies_are_refused():
    with pytest.raises(ImportRefused, match="more than once"):
        vocab_from_string("abca")
    with pytest.raises(ImportRefused, match="not single characters"):
        vocab_from_json(["a", "<pad>"], "v.json")
    with pytest.raises(ImportRefused, match="0..2, each once"):
        vocab_from_json({"a": 0, "b": 2, "c": 3}, "v.json")


def test_two_candidate_decoders_need_a_name(tmp_path):
    module = Custom(torch.nn.LSTM(8, H, 1), heads=("fc", "head"))
    message = refusal(module, tmp_path)
    assert all(part in message for part in ("2 candidate decoders", "fc", "head", "--decoder"))
    lm, rec = import_file(tmp_path / "m.safetensors", vocab_from_string("".join(CHARS)),
                          Roles(decoder="head"))
    assert rec.decoder == "head" and rec.ignored == ["fc.bias", "fc.weight"]
    assert np.array_equal(lm.params["decoder.weight"], module.head.weight.detach().numpy())


def test_tensors_the_model_would_not_use_are_refused(tmp_path):
    """A layer norm between the LSTM and the decoder changes the function: not silently dropped."""
    module = Custom(torch.nn.LSTM(8, H, 1))
    module.norm = torch.nn.LayerNorm(H)
    message = refusal(module, tmp_path)
    assert "norm.weight" in message and "does not use" in message


def test_a_pickle_that_needs_arbitrary_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"rnn.weight_ih_l0": torch.zeros(4, 4), "payload": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ImportRefused) as e:
        import_file(tmp_path / "evil.pt", vocab_from_string("abcd"))
    assert "weights_only=True" in str(e.value) and "open" in str(e.value)
    assert not marker.exists()
    # A whole nn.Module saved with torch.save(model) needs its class: refused, saying what to save.
    torch.save(Custom(torch.nn.LSTM(8, H, 1)), tmp_path / "whole.pt")
    with pytest.raises(ImportRefused, match=r"state_dict\(\)"):
        import_file(tmp_path / "whole.pt", vocab_from_string("".join(CHARS)))


def test_pt_files_without_torch_are_refused_with_the_safetensors_way(tmp_path, monkeypatch):
    torch.save(Custom(torch.nn.LSTM(8, H, 1)).state_dict(), tmp_path / "m.pt")
    monkeypatch.setitem(sys.modules, "torch", None)              # `import torch` now fails
    with pytest.raises(ImportRefused, match="needs PyTorch.*save_file"):
        read_model_file(tmp_path / "m.pt")
    with pytest.raises(ImportRefused, match="only safetensors"):
        read_model_file(tmp_path / "m.pt", allow_torch=False)


def test_the_model_package_imports_no_torch():
    """model/ reads safetensors itself; torch is imported only when a .pt file is read."""
    import subprocess
    code = "import rnnscope.model.importer, sys; assert 'torch' not in sys.modules and 'fastapi' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# ---- the command line ------------------------------------------------------------------------------

def test_cli_import_prints_what_it_recognised_and_writes_a_checkpoint(tmp_path):
    module, _ = build(ARCHITECTURES[0])
    torch.save(module.state_dict(), tmp_path / "char.pt")
    corpus = vocab_file(tmp_path, "corpus")
    out = tmp_path / "mine.safetensors"
    r = CliRunner().invoke(cli, ["import", str(tmp_path / "char.pt"), "--vocab", str(corpus),
                                 "--out", str(out), "--name", "My LSTM"])
    assert r.exit_code == 0, r.output
    assert "LSTM, 2 layers of 16 units (lstm, nn.LSTM)" in r.output
    assert f"encoder: {V} x 12, folded" in r.output and f"decoder     decoder: 16 -> {V}" in r.output
    params = sum(p.numel() for p in module.parameters())
    assert f"{params:,} in the file" in r.output
    lm = load_model(out)
    assert lm.history["name"] == "My LSTM" and lm.history["corpus_name"] == "input.txt"
    # The top five after the probe text are the model's own.
    probe = re.search(r"after (.*) it expects: (.*)", r.output)
    text = eval(probe.group(1))                   # noqa: S307 - a repr the CLI printed
    ids = torch.tensor([[CHARS.index(c) for c in text]])
    with torch.no_grad():
        p = torch.softmax(module(ids)[0][0, -1], -1).numpy()
    expected = [CHARS[i] for i in np.argsort(-p)[:5]]
    shown = re.findall(r"('(?:[^'\\]|\\.)*'|\"[^\"]*\") \d\.\d{3}", probe.group(2))
    assert [eval(w) for w in shown] == expected


def test_cli_import_refuses_in_one_line_and_takes_role_names(tmp_path):
    module = Custom(torch.nn.LSTM(8, H, 1), heads=("fc", "head"))
    save_file(module.state_dict(), tmp_path / "m.safetensors")
    args = ["import", str(tmp_path / "m.safetensors"), "--chars", "".join(CHARS),
            "--out", str(tmp_path / "o.safetensors")]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2 and "2 candidate decoders" in r.output
    r = CliRunner().invoke(cli, args + ["--decoder", "head"])
    assert r.exit_code == 0 and "ignored     fc.bias, fc.weight" in r.output, r.output


# ---- the upload route ------------------------------------------------------------------------------

OWNER = {"X-Rnnscope-Owner": "importer"}
OTHER = {"X-Rnnscope-Owner": "someone-else"}


def build_app(data_dir: Path, **overrides):
    return create_app(Settings(**({"data_dir": data_dir, "load_bundled": False, "allowed_hosts": TEST_HOSTS}
                                  | overrides)))


def upload(client, model_path: Path, vocab: Path | None = None, headers=OWNER, **fields):
    files = {"model": (model_path.name, model_path.read_bytes(), "application/octet-stream")}
    if vocab is not None:
        files["vocab"] = (vocab.name, vocab.read_bytes(), "text/plain")
    return client.post("/api/models/import", files=files, data=fields, headers=headers)


@pytest.fixture
def tutorial_model(tmp_path):
    """An LSTM with an embedding, saved as safetensors, and its corpus."""
    module, net = build(ARCHITECTURES[0])
    save_file(module.state_dict(), tmp_path / "char_lstm.safetensors")
    return module, tmp_path / "char_lstm.safetensors", vocab_file(tmp_path, "corpus")


def test_upload_is_served_in_every_view_and_only_its_owner_deletes_it(tmp_path, tutorial_model):
    module, model_path, corpus = tutorial_model
    data_dir = tmp_path / "data"
    with TestClient(build_app(data_dir)) as client:
        r = upload(client, model_path, corpus, name="My tutorial LSTM")
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["model_id"] == "import-1" and body["yours"] and body["name"] == "My tutorial LSTM"
        rec = body["recognised"]
        roles = (rec["cell"], rec["num_layers"], rec["embedding"], rec["decoder"])
        assert roles == ("lstm", 2, "encoder", "decoder")
        assert rec["embedding_folded"] and rec["tensors"]["embedding"] == ["encoder.weight"]
        ids = torch.tensor([[CHARS.index(c) for c in body["probe"]]])
        with torch.no_grad():
            p = torch.softmax(module(ids)[0][0, -1], -1).numpy()
        assert [g["char"] for g in body["next"]] == [CHARS[i] for i in np.argsort(-p)[:5]]
        assert abs(body["next"][0]["p"] - p.max()) < 1e-6

        listed = {m["id"]: m for m in client.get("/api/models?owner=all").json()}
        assert listed["import-1"]["name"] == "My tutorial LSTM" and listed["import-1"]["cell"] == "lstm"
        assert (data_dir / "models" / "import-1.safetensors").is_file()
        # Every view's route reads it (the trace is compared with torch's h below).
        detail = client.get("/api/models/import-1").json()
        assert detail["vocab"] == "".join(CHARS) and detail["history"]["corpus_name"] == "input.txt"
        for route, request in (("gradients", {"text": READ}), ("gates", {"text": READ}),
                               ("sample", {"prime": "First", "length": 20, "seed": 1}),
                               ("probe", {"text": READ, "concept": "vowel"}), ("saliency", {"text": READ})):
            r = client.post(f"/api/models/import-1/{route}", json=request)
            assert r.status_code == 200, (route, r.text)
        assert client.get("/api/imports").json()[0]["model_id"] == "import-1"

        r = client.delete("/api/models/import-1", headers=OTHER)
        assert r.status_code == 403 and "belongs to someone else" in r.json()["detail"]
        assert client.get("/api/imports", headers=OTHER).json()[0]["yours"] is False
        assert client.delete("/api/models/import-1", headers=OWNER).status_code == 204
        assert client.get("/api/models/import-1").status_code == 404
        assert not (data_dir / "models" / "import-1.safetensors").exists()
        assert client.get("/api/imports").json() == []
        # Ids are never reused: the next import is import-2.
        assert upload(client, model_path, corpus).json()["model_id"] == "import-2"


def test_trace_of_an_imported_model_is_torchs_hidden_state(tmp_path, tutorial_model):
    module, model_path, corpus = tutorial_model
    with TestClient(build_app(tmp_path / "data")) as client:
        assert upload(client, model_path, corpus).status_code == 201
        r = client.post("/api/models/import-1/trace", json={"text": READ, "layers": [1], "quantities": ["h"],
                                                               "encoding": "float32"})
        assert r.status_code == 200, r.text
    encoded = r.json()["layers"][0]["quantities"]["h"]
    h = np.frombuffer(base64.b64decode(encoded["data"]), "<f4").reshape(encoded["shape"])
    with torch.no_grad():                                    # batch_first: out is (1, T, H)
        out, _ = module.the_rnn(module.inputs(torch.tensor([[CHARS.index(c) for c in READ]])))
    assert h.shape == (len(READ), H) and np.abs(h - out[0].numpy()).max() < 1e-5


def test_imported_models_survive_a_restart_with_their_names(tmp_path, tutorial_model):
    _, model_path, corpus = tutorial_model
    data_dir = tmp_path / "data"
    with TestClient(build_app(data_dir)) as client:
        assert upload(client, model_path, corpus, name="Before the restart").status_code == 201
    with TestClient(build_app(data_dir)) as client:
        listed = {m["id"]: m["name"] for m in client.get("/api/models?owner=all").json()}
        assert listed == {"import-1": "Before the restart"}
        assert client.get("/api/models", headers=OWNER).json()[0]["yours"]       # its owner's, after a restart too
        assert client.delete("/api/models/import-1", headers=OTHER).status_code == 403
        assert client.delete("/api/models/import-1", headers=OWNER).status_code == 204
    # A file removed while the server was down: its row is forgotten at the next start.
    with TestClient(build_app(data_dir)) as client:
        assert upload(client, model_path, corpus).status_code == 201
    (data_dir / "models" / "import-2.safetensors").unlink()
    with TestClient(build_app(data_dir)) as client:
        assert client.get("/api/imports").json() == [] and client.get("/api/models?owner=all").json() == []


def test_only_imported_models_are_deleted(tmp_path, data_dir):
    """Bundled models, a run's model and a file the operator placed answer 409, saying why."""
    mine = tmp_path / "data"
    (mine / "models").mkdir(parents=True)
    shutil.copy(data_dir / "models" / "lstm.safetensors", mine / "models" / "placed.safetensors")
    shutil.copy(data_dir / "models" / "gru.safetensors", mine / "models" / "run-7.safetensors")
    with TestClient(build_app(mine, load_bundled=True)) as client:
        r = client.delete("/api/models/lstm")
        assert r.status_code == 409 and "bundled" in r.json()["detail"]
        r = client.delete("/api/models/run-7")
        assert r.status_code == 409 and "DELETE /api/runs/7" in r.json()["detail"]
        r = client.delete("/api/models/placed")
        assert r.status_code == 409 and "POST /api/models/import" in r.json()["detail"]
        assert client.delete("/api/models/nope").status_code == 404
        assert {"lstm", "run-7", "placed"} <= {m["id"] for m in client.get("/api/models").json()}


def test_an_rnnscope_checkpoint_brings_its_own_vocabulary(tmp_path, models, data_dir):
    """A checkpoint rnnscope wrote (by `train` or `import`) needs no vocabulary: its metadata has it."""
    with TestClient(build_app(tmp_path / "data")) as client:
        r = upload(client, data_dir / "models" / "gru.safetensors")
        assert r.status_code == 201, r.text
        assert r.json()["vocab_source"] == "the file's own metadata"
        detail = client.get(f"/api/models/{r.json()['model_id']}").json()
    assert detail["vocab"] == models["gru"].vocab.to_string() and detail["cell"] == "gru"


def test_admin_may_delete_anyones_import(tmp_path, tutorial_model):
    _, model_path, corpus = tutorial_model
    with TestClient(build_app(tmp_path / "data", token="s3cret")) as client:
        assert upload(client, model_path, corpus).status_code == 201
        assert client.delete("/api/models/import-1", headers=OTHER).status_code == 403
        r = client.delete("/api/models/import-1", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 204


def test_upload_refusals(tmp_path, tutorial_model):
    module, model_path, corpus = tutorial_model
    torch.save(module.state_dict(), tmp_path / "char_lstm.pt")
    (tmp_path / "short.txt").write_text("abc")
    with TestClient(build_app(tmp_path / "data", max_import_bytes=20_000)) as client:
        r = upload(client, model_path, corpus)                 # the model is ~25 kB
        assert r.status_code == 413 and "RNNSCOPE_MAX_IMPORT_BYTES" in r.json()["detail"]
    with TestClient(build_app(tmp_path / "data")) as client:
        r = upload(client, tmp_path / "char_lstm.pt", corpus)
        assert r.status_code == 422
        error = r.json()["detail"][0]
        assert error["loc"] == ["body", "model"] and "safetensors only" in error["msg"]
        r = upload(client, model_path, tmp_path / "short.txt")
        assert r.status_code == 422 and "has 3 characters" in r.json()["detail"][0]["msg"] \
            and f"has {V}" in r.json()["detail"][0]["msg"]
        r = upload(client, model_path, None)
        assert r.status_code == 422 and "vocabulary is needed" in r.json()["detail"][0]["msg"]
        r = upload(client, model_path, None, chars="".join(CHARS), decoder="nothing")
        assert r.status_code == 422 and "no module 'nothing'" in r.json()["detail"][0]["msg"]
        r = upload(client, model_path, None, chars="".join(CHARS), nonlinearity="sigmoid")
        assert r.status_code == 422
        r = client.post("/api/models/import", json={"model": "x"})
        assert r.status_code == 422
        # Another site's page may not import into this server.
        r = client.post("/api/models/import", files={"model": ("m.safetensors", model_path.read_bytes())},
                        headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
        assert client.get("/api/imports").json() == []


def test_an_upload_that_would_pass_the_owners_quota_is_refused(tmp_path, tutorial_model):
    _, model_path, corpus = tutorial_model
    with TestClient(build_app(tmp_path / "data", max_import_bytes_per_owner=60_000)) as client:
        assert upload(client, model_path, corpus).status_code == 201        # ~30 kB converted
        r = upload(client, model_path, corpus)
        assert r.status_code == 413 and "RNNSCOPE_MAX_IMPORT_BYTES_PER_OWNER" in r.json()["detail"]
        assert upload(client, model_path, corpus, headers=OTHER).status_code == 201
        assert [m["model_id"] for m in client.get("/api/imports").json()] == ["import-2", "import-1"]


def test_a_full_disk_refuses_the_import(tmp_path, tutorial_model):
    _, model_path, corpus = tutorial_model
    with TestClient(build_app(tmp_path / "data", min_free_bytes=10**18)) as client:
        r = upload(client, model_path, corpus)
        assert r.status_code == 507 and "the import is refused" in r.json()["detail"]


class CommitFails:
    """A connection whose write transactions fail to COMMIT, as on a full disk (a read
    transaction writes nothing, so its COMMIT still works); everything else is the real one's."""

    def __init__(self, conn):
        self.conn = conn
        self.writing = False

    def execute(self, sql, *args):
        if sql.startswith("BEGIN"):
            self.writing = sql == "BEGIN IMMEDIATE"
        if sql == "COMMIT" and self.writing:
            import sqlite3
            e = sqlite3.OperationalError("database or disk is full")
            e.sqlite_errorcode = sqlite3.SQLITE_FULL
            raise e
        return self.conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.conn, name)


def test_a_commit_that_fails_leaves_files_and_rows_as_they_were(tmp_path, tutorial_model, monkeypatch):
    """An import whose COMMIT fails leaves no file to be served at the next start; a delete
    whose COMMIT fails leaves the model served."""
    _, model_path, corpus = tutorial_model
    models_dir = tmp_path / "data" / "models"
    with TestClient(build_app(tmp_path / "data")) as client:
        store = client.app.state.training.store
        real = store._conn
        monkeypatch.setattr(store, "_conn", lambda: CommitFails(real()))
        r = upload(client, model_path, corpus)
        assert r.status_code == 507 and "disk is full" in r.json()["detail"], r.text
        assert list(models_dir.iterdir()) == []
        monkeypatch.setattr(store, "_conn", real)
        assert upload(client, model_path, corpus).status_code == 201
        monkeypatch.setattr(store, "_conn", lambda: CommitFails(real()))
        assert client.delete("/api/models/import-1", headers=OWNER).status_code == 507
        monkeypatch.setattr(store, "_conn", real)
        assert [p.name for p in models_dir.iterdir()] == ["import-1.safetensors"]
        assert client.post("/api/models/import-1/trace", json={"text": READ}).status_code == 200
        assert client.delete("/api/models/import-1", headers=OWNER).status_code == 204
        assert list(models_dir.iterdir()) == []


def test_a_server_that_lets_only_its_admin_create_asks_for_the_token(tmp_path, tutorial_model):
    _, model_path, corpus = tutorial_model
    with TestClient(build_app(tmp_path / "data", token="s3cret", create_needs_token=True)) as client:
        assert upload(client, model_path, corpus).status_code == 401
        r = upload(client, model_path, corpus, headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 201


def test_the_upload_route_is_documented(tmp_path):
    with TestClient(build_app(tmp_path / "data")) as client:
        doc = client.get("/openapi.json").json()
    op = doc["paths"]["/api/models/import"]["post"]
    fields = op["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"model", "vocab", "chars", "name", "nonlinearity", "decoder"} <= set(fields)
    assert "RNNSCOPE_MAX_IMPORT_BYTES" in op["responses"]["413"]["description"]
    assert "delete" in doc["paths"]["/api/models/{model_id}"] and "503" in op["responses"]
    # The path answers POST only: GET is not the model named "import".
    with TestClient(build_app(tmp_path / "data")) as client:
        for method in ("GET", "DELETE", "OPTIONS"):
            r = client.request(method, "/api/models/import")
            assert r.status_code == 405 and r.headers["allow"] == "POST", method


# ---- the guide's tutorial --------------------------------------------------------------------------

def guide_tutorial() -> tuple[str, list[str]]:
    """The Python script and the shell commands of docs/bring-your-own-model.md (the first of each)."""
    section = (ROOT / "docs" / "bring-your-own-model.md").read_text(encoding="utf-8")
    script = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shell = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return script, [line for line in shell.replace("\\\n", " ").splitlines() if line.strip()]


def test_the_guide_tutorial_trains_saves_and_imports(tmp_path):
    """docs/bring-your-own-model.md's torch script, run for 3 steps on the test corpus, and its
    `rnnscope import`."""
    import shlex
    import subprocess
    script, commands = guide_tutorial()
    steps = re.findall(r"range\((\d+)\)", script)
    assert steps, "the script's training loop is `for step in range(N)`"
    (tmp_path / "input.txt").write_text(shakespeare_head(20_000), encoding="utf-8")
    (tmp_path / "train.py").write_text(re.sub(r"range\(\d+\)", "range(3)", script))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "train.py"], cwd=tmp_path, check=True, env=env, capture_output=True,
                   timeout=300)
    imports = [shlex.split(c) for c in commands if "rnnscope import" in c]
    assert imports
    for words in imports:
        words = [str(Path(sys.executable).parent / "rnnscope")] + words[1:]
        r = subprocess.run(words, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "LSTM, 2 layers" in r.stdout and "folded" in r.stdout and "it expects" in r.stdout
        out = words[words.index("--out") + 1]
        assert load_model(tmp_path / out).config.cell == "lstm"


# ---- the Train page's panel ------------------------------------------------------------------------

@pytest.fixture
def import_server(tmp_path):
    """A live server on a data directory of its own: the shared one must not gain models."""
    with serving(build_app(tmp_path / "data")) as url:
        yield url


SCREENSHOTS = ROOT / "test-artifacts"           # where the other browser tests leave theirs


def test_open_your_own_model_panel(page, import_server, tutorial_model):
    """Upload a safetensors file and its corpus on /train; the panel shows what was recognised
    and the model's own guesses, and opens it in the neuron explorer; then delete it."""
    module, model_path, corpus = tutorial_model
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(import_server + "/train")
    panel = page.locator("#import-card")
    panel.scroll_into_view_if_needed()
    page.set_input_files("#import-model", str(model_path))
    page.set_input_files("#import-vocab", str(corpus))
    page.fill("#import-name", "My tutorial LSTM")
    page.click("#import-submit")
    result = page.locator("#import-result")
    result.wait_for(state="visible")
    text = result.inner_text()
    assert "LSTM" in text and "2 layers × 16" in text and "encoder" in text and "folded" in text
    assert "decoder" in text
    ids = torch.tensor([[CHARS.index(c) for c in page.locator("#import-probe").get_attribute("data-text")]])
    with torch.no_grad():
        p = torch.softmax(module(ids)[0][0, -1], -1).numpy()
    shown = page.locator("#import-next .guess").evaluate_all("els => els.map(e => e.dataset.char)")
    assert shown == [CHARS[i] for i in np.argsort(-p)[:5]]
    panel.screenshot(path=str(SCREENSHOTS / "import-panel.png"))
    links = page.locator("#import-links a")
    assert links.count() >= 5
    assert page.locator("#import-mine tr").count() == 1

    page.click("#import-links a[data-view=explore]")
    page.wait_for_url("**/explore?model=import-1**")
    page.locator(".ch").first.wait_for()
    assert page.locator("#model").input_value() == "import-1"
    page.screenshot(path=str(SCREENSHOTS / "import-explore.png"))

    page.goto(import_server + "/train")
    page.locator("#import-mine tr").first.wait_for()
    page.once("dialog", lambda d: d.accept())
    page.click("#import-mine button.delete")
    page.locator("#import-mine-empty").wait_for(state="visible")


def test_the_panel_asks_for_a_name_when_two_decoders_fit(page, import_server, tmp_path):
    """A refusal is shown with its reason, opens the place to name the parts, and naming the
    decoder opens the model."""
    module = Custom(torch.nn.LSTM(8, H, 1), heads=("fc", "head"))
    save_file(module.state_dict(), tmp_path / "two-heads.safetensors")
    page.goto(import_server + "/train")
    page.set_input_files("#import-model", str(tmp_path / "two-heads.safetensors"))
    page.fill("#import-chars", json.dumps(CHARS))             # a JSON list can hold the newline
    page.click("#import-submit")
    status = page.locator("#import-status[data-state=error]")
    status.wait_for()
    assert "2 candidate decoders" in status.inner_text()
    assert page.locator("#import-roles").get_attribute("open") is not None
    page.locator("#import-card").screenshot(path=str(SCREENSHOTS / "import-refused.png"))
    page.fill("#import-decoder", "head")
    page.click("#import-submit")
    page.locator("#import-result").wait_for(state="visible")
    assert "fc.bias" in page.locator("#import-parts").inner_text()          # listed as ignored
    assert page.locator("#import-status").is_hidden()
