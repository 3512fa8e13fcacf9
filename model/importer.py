"""Open a character model trained in PyTorch: read its state dict, recognise what each
tensor is from names and shapes alone, and rewrite it as an rnnscope model that computes
the same function.

Accepted: an optional embedding (V, E), a stacked unidirectional nn.RNN (tanh), nn.GRU or
nn.LSTM with biases, and a final Linear (V, H) to the vocabulary, whatever the attribute
names. The embedding is folded into layer 0: a one-hot row e_v times (W_ih E^T)^T is
E[v] W_ih^T, so the one-hot model reads exactly what the embedded one did.

Files are read as safetensors (parsed here, so bfloat16 and float16 are fine), or, when
torch is installed, with `torch.load(weights_only=True)`, which never runs code from the
file. Nothing here calls pickle.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .cells import get_cell
from .layers import log_softmax
from .lm import LanguageModel
from .network import ModelConfig, count_parameters
from .vocab import Vocab

# Gate blocks per cell: W_hh is (G*H, H) and gives the cell away; a relu RNN does not.
CELL_BY_GATES = {1: "rnn", 3: "gru", 4: "lstm"}
KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
TORCH_NAMES = {"rnn": "nn.RNN", "gru": "nn.GRU", "lstm": "nn.LSTM"}
RECURRENT = re.compile(r"^(?:(?P<module>.*)\.)?(?P<kind>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)"
                       r"_l(?P<layer>\d+)(?P<reverse>_reverse)?$")
SAVE_AS_SAFETENSORS = ("from PyTorch, save the state dict as safetensors: "
                       "`safetensors.torch.save_file(model.state_dict(), \"model.safetensors\")`")


class ImportRefused(ValueError):
    """The file cannot become an rnnscope model; the message says why and what to do."""


@dataclass(frozen=True)
class Roles:
    """What the person says about their model where the tensors cannot tell."""

    embedding: str | None = None      # a module name, or "none" for one-hot input
    rnn: str | None = None
    decoder: str | None = None
    cell: str | None = None           # rnn, gru or lstm: checked against the shapes
    nonlinearity: str | None = None   # tanh or relu: an nn.RNN's weights do not show which

    @property
    def named(self) -> bool:
        return any(v is not None for v in (self.embedding, self.rnn, self.decoder))


@dataclass
class Recognised:
    """What the tensors were taken to be, for the person to check against their code."""

    cell: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    input_size: int                   # what layer 0 read: the embedding width, or V for one-hot
    rnn: str                          # module names as in the state dict ("" for the root)
    decoder: str
    embedding: str | None
    embedding_folded: bool
    decoder_bias: bool                # False: a Linear(bias=False), imported with a zero bias
    nonlinearity: str | None          # for an RNN: tanh, PyTorch's default (assumed unless told)
    source_dtype: str
    dtype: str
    source_parameters: int
    parameters: int                   # after folding: the one-hot W_ih may be larger or smaller
    tensors: dict[str, list[str]] = field(default_factory=dict)   # role -> tensor names
    ignored: list[str] = field(default_factory=list)              # tensors of modules not used

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> list[str]:
        """The report as lines of text (the CLI prints them)."""
        cell = self.cell.upper() + (f", {self.nonlinearity}" if self.nonlinearity else "")
        lines = [f"cell        {cell}, {self.num_layers} layer{'s' * (self.num_layers > 1)} of "
                 f"{self.hidden_size} units ({module(self.rnn)}, {TORCH_NAMES[self.cell]})"]
        if self.embedding is not None:
            lines.append(f"embedding   {module(self.embedding)}: {self.vocab_size} x {self.input_size}, "
                         "folded into layer 0's W_ih (W_ih E^T: one column per character)")
        else:
            lines.append(f"input       one-hot, {self.vocab_size} characters")
        bias = "" if self.decoder_bias else " (no bias: imported with a zero bias)"
        lines.append(f"decoder     {module(self.decoder)}: {self.hidden_size} -> {self.vocab_size}{bias}")
        widened = "" if self.dtype == self.source_dtype else f" from {self.source_dtype}"
        lines.append(f"parameters  {self.source_parameters:,} in the file, {self.parameters:,} as rnnscope "
                     f"keeps them ({self.dtype}{widened})")
        if self.ignored:
            lines.append(f"ignored     {', '.join(self.ignored)}")
        return lines


def module(name: str) -> str:
    return name or "(the root module)"


# ---- reading files -------------------------------------------------------------------------

SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
                      "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
MAX_HEADER_BYTES = 100_000_000       # the format's own bound on its JSON header


def is_safetensors(head: bytes) -> bool:
    """Whether a file starts as safetensors does: a little-endian header length, then '{'."""
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= MAX_HEADER_BYTES


def sniff(head: bytes) -> str:
    """What a model file looks like from its first bytes."""
    if is_safetensors(head):
        return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return "a PyTorch .pt/.pth file (torch.save's ZIP archive)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a pickle (an old-style torch.save file)"
    return "neither safetensors nor a PyTorch file"


def read_safetensors(data: bytes, what: str = "the file") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors and metadata of a safetensors file, bfloat16 widened to float32."""
    if not is_safetensors(data[:9]):
        raise ImportRefused(f"{what} is {sniff(data[:9])}, not safetensors")
    n = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8:8 + n])
    except (ValueError, UnicodeDecodeError) as e:
        raise ImportRefused(f"{what} has an unreadable safetensors header ({e}); it may be "
                            "truncated") from None
    if not isinstance(header, dict):
        raise ImportRefused(f"{what} has a safetensors header that is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    body = memoryview(data)[8 + n:]
    tensors = {}
    for name, spec in header.items():
        try:
            dtype, shape, (begin, end) = spec["dtype"], [int(s) for s in spec["shape"]], spec["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ImportRefused(f"{what}: the entry for {name!r} is not a safetensors tensor") from None
        if dtype not in SAFETENSORS_DTYPES:
            raise ImportRefused(f"{what}: {name} has dtype {dtype}, which rnnscope does not read")
        np_dtype = np.dtype(SAFETENSORS_DTYPES[dtype])
        count = int(np.prod(shape, dtype=np.int64))
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= len(body)) \
                or end - begin != count * np_dtype.itemsize or min(shape, default=0) < 0:
            raise ImportRefused(f"{what}: {name} does not fit the file ({dtype} {shape} at {begin}..{end} of "
                                f"{len(body):,} bytes); it may be truncated")
        array = np.frombuffer(body[begin:end], np_dtype).reshape(shape)
        if dtype == "BF16":                  # the top half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = array.copy()
    return tensors, {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


# Where training scripts keep the model's weights inside a larger torch.save dict.
STATE_DICT_KEYS = ("model_state_dict", "state_dict", "model", "net", "module")


def read_torch(path: Path) -> dict[str, np.ndarray]:
    """A .pt/.pth state dict through torch.load(weights_only=True): tensors and plain
    containers only, so no code in the file can run. torch is imported here, on demand."""
    try:
        import torch
    except ImportError:
        raise ImportRefused(f"{path.name} is a PyTorch file, and reading one needs PyTorch (pip install "
                            f"torch); or, {SAVE_AS_SAFETENSORS}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:             # torch raises UnpicklingError, RuntimeError, ... with the reason
        raise ImportRefused(f"{path.name} cannot be read safely: torch.load(weights_only=True) refused it "
                            f"({weights_only_reason(str(e))}). rnnscope never unpickles arbitrary objects; "
                            "load the model in your own code and save model.state_dict(), or "
                            f"{SAVE_AS_SAFETENSORS}") from None
    state = find_state_dict(obj, torch.Tensor)
    if state is None:
        keys = ", ".join(map(str, list(obj)[:8])) if isinstance(obj, dict) else type(obj).__name__
        raise ImportRefused(f"{path.name} holds no state dict (found {keys}); save model.state_dict()")
    return {k: (v.float() if v.dtype in (torch.bfloat16, torch.float16) else v).detach().cpu().numpy().copy()
            for k, v in state.items()}


def weights_only_reason(message: str) -> str:
    """The one line of torch's refusal that says what the file needed."""
    m = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if m:
        return f"it needs the Python object {m.group(1)}, e.g. a whole nn.Module saved with torch.save(model)"
    for line in message.splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip()
    return message.strip().splitlines()[0][:300] if message.strip() else "no reason given"


def find_state_dict(obj, tensor_type) -> dict | None:
    """The dict of tensors in what torch.load returned: the object itself, or the entry a
    training checkpoint keeps it under ({"model_state_dict": ..., "optimizer_state_dict": ...})."""
    if isinstance(obj, dict) and obj and all(isinstance(v, tensor_type) for v in obj.values()):
        return {str(k): v for k, v in obj.items()}
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            if key in obj:
                found = find_state_dict(obj[key], tensor_type)
                if found is not None:
                    return found
    return None


def read_model_file(path: str | Path,
                    allow_torch: bool = True) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors (and safetensors metadata) of a model file, by its content, not its name."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as e:
        raise ImportRefused(f"cannot read {path}: {e.strerror}") from None
    if is_safetensors(head):
        return read_safetensors(path.read_bytes(), path.name)
    if not allow_torch:
        raise ImportRefused(f"{path.name} is {sniff(head)}; only safetensors is taken here: "
                            f"{SAVE_AS_SAFETENSORS}")
    return read_torch(path), {}


# ---- the vocabulary ------------------------------------------------------------------------

@dataclass
class VocabSpec:
    """The characters in the order of the model's ids, and where they came from."""

    chars: list[str]                  # chars[i] is id i
    source: str
    corpus_name: str | None = None    # when read off a training text: lets views find it again
    corpus_sha256: str | None = None
    corpus_chars: int | None = None
    hints: list[str] = field(default_factory=list)   # why a size might not match


def vocab_from_corpus(data: bytes, name: str) -> VocabSpec:
    """The sorted set of a training text's characters, read as Python's open(path).read()
    reads it (UTF-8, universal newlines): the convention of most char-RNN tutorials."""
    try:
        text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline=None).read()
    except UnicodeDecodeError as e:
        raise ImportRefused(f"{name} is not UTF-8 text ({e}); pass the corpus the model was trained on, "
                            "or its characters as a JSON list or mapping") from None
    if not text:
        raise ImportRefused(f"{name} is empty")
    hints = []
    if text.startswith("\ufeff"):
        hints.append("the text starts with a byte-order mark (U+FEFF), counted as a character")
    if b"\r" in data:
        hints.append("its \\r\\n line ends are read as \\n, as Python's open() does; a script that read the "
                     "file in binary mode or with newline='' had \\r too")
    return VocabSpec(sorted(set(text)), f"the characters of {name}", name,
                     hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(), len(text), hints)


def vocab_from_json(obj, name: str) -> VocabSpec:
    """A list of characters in id order, a mapping {char: id} (stoi), or {id: char} (itos)."""
    if isinstance(obj, list):
        return VocabSpec(check_chars(obj, name), f"the list in {name}")
    if isinstance(obj, dict) and obj:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in obj.values()):
            pairs = [(v, k) for k, v in obj.items()]
        elif all(isinstance(v, str) for v in obj.values()) and all(str(k).lstrip("-").isdigit() for k in obj):
            pairs = [(int(k), v) for k, v in obj.items()]
        else:
            raise ImportRefused(f"{name} is a JSON object but neither {{character: id}} nor "
                                "{id: character}")
        ids = sorted(i for i, _ in pairs)
        if ids != list(range(len(pairs))):
            missing = sorted(set(range(len(pairs))) - set(ids))[:5]
            raise ImportRefused(f"the ids in {name} must be 0..{len(pairs) - 1}, each once"
                                + (f"; missing {missing}" if missing else "; some appear twice"))
        return VocabSpec(check_chars([c for _, c in sorted(pairs)], name), f"the mapping in {name}")
    raise ImportRefused(f"{name} must hold a JSON list of characters or a mapping {{character: id}}")


def vocab_from_string(chars: str) -> VocabSpec:
    """The characters in id order, typed out ("abc...") or as a JSON list."""
    if chars.lstrip().startswith("["):
        try:
            obj = json.loads(chars)
        except ValueError:
            obj = None
        if isinstance(obj, list):
            return vocab_from_json(obj, "the list given")
    return VocabSpec(check_chars(list(chars), "the characters given"), "the characters given")


def vocab_from_file(data: bytes, name: str) -> VocabSpec:
    """A .json file is a list or mapping; any other file is the training text."""
    if name.lower().endswith(".json"):
        try:
            obj = json.loads(data.decode("utf-8-sig"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ImportRefused(f"{name} is not valid JSON ({e})") from None
        return vocab_from_json(obj, name)
    return vocab_from_corpus(data, name)


def check_chars(chars: list, name: str) -> list[str]:
    if not chars:
        raise ImportRefused(f"{name} holds no characters")
    bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
    if bad:
        raise ImportRefused(f"{name} has entries that are not single characters: "
                            f"{', '.join(map(repr, bad[:5]))}; rnnscope opens character-level models")
    seen, twice = set(), []
    for c in chars:
        if c in seen:
            twice.append(c)
        seen.add(c)
    if twice:
        raise ImportRefused(f"{name} lists {', '.join(map(repr, twice[:5]))} more than once")
    return list(chars)


def vocab_from_metadata(meta: dict[str, str]) -> VocabSpec | None:
    """An rnnscope checkpoint carries its own vocabulary, in sorted order."""
    try:
        chars = json.loads(meta["vocab"])
    except (KeyError, ValueError):
        return None
    return VocabSpec(check_chars(chars, "the file's metadata"), "the file's own metadata") \
        if isinstance(chars, list) else None


# ---- recognising the roles -------------------------------------------------------------------

@dataclass
class Plan:
    cell: str
    rnn: str
    layers: list[dict[str, str]]      # per layer: weight_ih, weight_hh, bias_ih, bias_hh -> tensor name
    hidden_size: int
    input_size: int
    decoder: str
    embedding: str | None
    ignored: list[str]


def split_name(name: str) -> tuple[str, str]:
    """'a.b.weight' -> ('a.b', 'weight'); 'weight' -> ('', 'weight')."""
    head, _, tail = name.rpartition(".")
    return head, tail


def shape_str(shape) -> str:
    return " x ".join(map(str, shape))


def listing(tensors: dict[str, np.ndarray], names=None, limit: int = 12) -> str:
    names = list(tensors if names is None else names)
    shown = ", ".join(f"{n} ({shape_str(tensors[n].shape)})" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def module_name(given: str, known) -> str:
    """A role named by the person: 'head', 'head.weight' or 'model.head' -> a module in `known`."""
    for candidate in (given, given.removesuffix(".weight").removesuffix(".bias")):
        if candidate in known:
            return candidate
    ends = [k for k in known if k.endswith("." + given)]
    if len(ends) == 1:
        return ends[0]
    raise ImportRefused(f"there is no module {given!r} in the file; its modules are: "
                        f"{', '.join(module(k) for k in known)}")


def recurrent_plan(tensors: dict[str, np.ndarray], roles: Roles):
    found: dict[str, dict[tuple[str, int, bool], str]] = {}
    for name in tensors:
        m = RECURRENT.match(name)
        if m:
            key = (m["kind"], int(m["layer"]), bool(m["reverse"]))
            found.setdefault(m["module"] or "", {})[key] = name
    if not found:
        raise ImportRefused("found no recurrent layer: nn.RNN, nn.GRU and nn.LSTM name their tensors "
                            "<module>.weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0; the file has "
                            + listing(tensors))
    if roles.rnn is not None:
        rnn = module_name(roles.rnn, found)
    elif len(found) > 1:
        raise ImportRefused(f"found {len(found)} recurrent modules ({', '.join(map(module, found))}); "
                            "rnnscope reads one stacked module: name it (--rnn / the `rnn` field) if the "
                            "others are unused")
    else:
        rnn = next(iter(found))
    parts = found[rnn]
    if any(reverse for _, _, reverse in parts):
        raise ImportRefused(f"{module(rnn)} is bidirectional (it has *_reverse tensors): a bidirectional RNN "
                            "reads the text backwards too, so it cannot predict the next character; rnnscope "
                            "opens models built with bidirectional=False")
    if any(kind == "weight_hr" for kind, _, _ in parts):
        raise ImportRefused(f"{module(rnn)} has weight_hr_l* tensors: an LSTM with proj_size > 0, whose "
                            "hidden state is projected; rnnscope's LSTM has proj_size=0")
    num_layers = max(layer for _, layer, _ in parts) + 1
    layers = []
    for l in range(num_layers):
        names = {kind: parts.get((kind, l, False)) for kind in KINDS}
        missing = [f"{kind}_l{l}" for kind, n in names.items() if n is None]
        if any(k.startswith("bias") for k in missing) and not any(k.startswith("weight") for k in missing):
            raise ImportRefused(f"{module(rnn)} has no {' or '.join(missing)}: it was built with bias=False; "
                                "rnnscope's cells always add b_ih and b_hh (build it with bias=True, or save "
                                "zero biases under those names)")
        if missing:
            raise ImportRefused(f"{module(rnn)} lacks {', '.join(missing)}: layers must run "
                                f"0..{num_layers - 1}, each with weight_ih, weight_hh, bias_ih and bias_hh")
        layers.append(names)
    W_hh = tensors[layers[0]["weight_hh"]]
    if W_hh.ndim != 2 or W_hh.shape[1] == 0 or W_hh.shape[0] % W_hh.shape[1]:
        raise ImportRefused(f"{layers[0]['weight_hh']} is {shape_str(W_hh.shape)}; a recurrent weight is "
                            "(G*H) x H")
    H = W_hh.shape[1]
    G = W_hh.shape[0] // H
    if G not in CELL_BY_GATES:
        raise ImportRefused(f"{layers[0]['weight_hh']} is {shape_str(W_hh.shape)}: {G} gate blocks of {H}, "
                            "which is none of RNN (1), GRU (3) or LSTM (4)")
    cell = CELL_BY_GATES[G]
    if roles.cell is not None and roles.cell != cell:
        raise ImportRefused(f"you said {roles.cell}, but {layers[0]['weight_hh']} is "
                            f"{shape_str(W_hh.shape)}: {G} gate block{'s' * (G > 1)} of {H}, "
                            f"a {cell.upper()}")
    if cell == "rnn" and roles.nonlinearity == "relu":
        raise ImportRefused("an nn.RNN with nonlinearity='relu': rnnscope's RNN cell is tanh (PyTorch's "
                            "default) and its views (saturation, gradients through time) assume it; the "
                            "weights of a relu RNN would compute something else here, so it is not imported")
    D = tensors[layers[0]["weight_ih"]].shape[1] if tensors[layers[0]["weight_ih"]].ndim == 2 else -1
    for l, names in enumerate(layers):
        expect = {"weight_ih": (G * H, D if l == 0 else H), "weight_hh": (G * H, H), "bias_ih": (G * H,),
                  "bias_hh": (G * H,)}
        for kind, shape in expect.items():
            if tensors[names[kind]].shape != shape:
                raise ImportRefused(f"{names[kind]} is {shape_str(tensors[names[kind]].shape)}, expected "
                                    f"{shape_str(shape)} for a {cell.upper()} of {H} units")
    return cell, rnn, layers, H, D, found


def recognise(tensors: dict[str, np.ndarray], roles: Roles = Roles()) -> Plan:
    """Find the embedding, the recurrent stack and the decoder among the tensors."""
    cell, rnn, layers, H, D, recurrent = recurrent_plan(tensors, roles)
    rnn_names = {n for names in layers for n in names.values()}
    others: dict[str, dict[str, str]] = {}
    for name in tensors:
        if name not in rnn_names:
            head, tail = split_name(name)
            others.setdefault(head, {})[tail] = name

    def weight(m):                    # the module's 2-D weight, or None
        w = others[m].get("weight")
        return None if w is None or tensors[w].ndim != 2 else tensors[w]

    def linear(m):                    # a Linear(H, K): weight (K, H), maybe a bias (K,)
        w = weight(m)
        if w is None or w.shape[1] != H or set(others[m]) - {"weight", "bias"}:
            return False
        return "bias" not in others[m] or tensors[others[m]["bias"]].shape == (w.shape[0],)

    def table(m):                     # an Embedding: weight (V, E) and nothing else
        return set(others[m]) == {"weight"} and weight(m) is not None

    if roles.decoder is not None:
        decoders = [module_name(roles.decoder, others)]
        if not linear(decoders[0]):
            has = listing(tensors, others[decoders[0]].values())
            raise ImportRefused(f"{module(decoders[0])} cannot be the decoder: a decoder is a Linear from "
                                f"the {H} hidden units to the characters; it has {has}")
    else:
        decoders = [m for m in others if linear(m)]
    if roles.embedding is not None and roles.embedding.lower() == "none":
        embeddings = [None]
    elif roles.embedding is not None:
        e = module_name(roles.embedding, others)
        if not table(e) or weight(e).shape[1] != D:
            raise ImportRefused(f"{module(e)} cannot be the embedding: layer 0 reads {D} inputs, so an "
                                f"embedding is (characters x {D}); it has "
                                f"{listing(tensors, others[e].values())}")
        embeddings = [e]
    else:
        embeddings = [None] + [m for m in others if table(m) and weight(m).shape[1] == D]

    options = []                      # (decoder, embedding, names left unused)
    for d in decoders:
        K = weight(d).shape[0]
        for e in embeddings:
            if e == d or (e is None and D != K) or (e is not None and weight(e).shape[0] != K):
                continue
            used = set(others[d].values()) | (set(others[e].values()) if e is not None else set())
            unused = [n for n in tensors if n not in rnn_names and n not in used]
            options.append((d, e, unused))
    complete = [o for o in options if not o[2]]
    chosen = complete or (options if roles.named else [])
    if len(chosen) == 1:
        d, e, unused = chosen[0]
        return Plan(cell, rnn, layers, H, D, d, e, sorted(unused))
    if len(chosen) > 1 or len({d for d, _, _ in options}) > 1 or len({e for _, e, _ in options}) > 1:
        pool = chosen or options
        ds = sorted({d for d, _, _ in pool})
        es = sorted({e for _, e, _ in pool if e is not None})
        if len(ds) > 1:
            shown = ", ".join(f"{module(d)} ({shape_str(weight(d).shape)})" for d in ds)
            raise ImportRefused(f"{len(ds)} candidate decoders: {shown}; name the one the model's forward "
                                "applies last (--decoder NAME, or the `decoder` field)")
        shown = ", ".join(f"{module(e)} ({shape_str(weight(e).shape)})" for e in es)
        raise ImportRefused(f"the embedding is ambiguous ({shown}); name it (--embedding NAME, or `none` for "
                            "one-hot input)")
    if options:
        _, _, unused = options[0]
        raise ImportRefused(f"tensors that an embedding -> {TORCH_NAMES[cell]} -> Linear model does not use: "
                            f"{listing(tensors, unused)}. If they take part in the forward pass (a layer "
                            "norm, a second Linear...), rnnscope cannot open this model; if they do not, "
                            "name the roles (--rnn, --embedding, --decoder) and they are ignored")
    if not decoders:
        rest = listing(tensors, sorted(set(tensors) - rnn_names)) or "none"
        raise ImportRefused(f"found no decoder: a Linear from the {H} hidden units to the characters, "
                            f"(characters x {H}); the other tensors are {rest}")
    K = {weight(d).shape[0] for d in decoders}
    raise ImportRefused(f"layer 0 reads {D} inputs but the decoder writes {', '.join(map(str, sorted(K)))} "
                        f"characters, and no embedding (characters x {D}) was found to map one to the other")


# ---- converting --------------------------------------------------------------------------------

def model_dtype(arrays) -> np.dtype:
    """float64 when the file has it (parity tests), else float32: half precision is widened."""
    return np.dtype(np.float64) if any(a.dtype == np.float64 for a in arrays) else np.dtype(np.float32)


def convert(tensors: dict[str, np.ndarray], plan: Plan, vocab: VocabSpec,
            roles: Roles = Roles(), source_name: str = "model") -> tuple[LanguageModel, Recognised]:
    """The rnnscope model that computes what the recognised PyTorch model computes."""
    dec_w = tensors[param(plan.decoder, "weight")]
    bias_name = param(plan.decoder, "bias")
    V = dec_w.shape[0]
    if len(vocab.chars) != V:
        hint = "".join(f"; {h}" for h in vocab.hints)
        raise ImportRefused(f"the vocabulary has {len(vocab.chars)} characters ({vocab.source}) but the "
                            f"model has {V} (its decoder {module(plan.decoder)} is "
                            f"{shape_str(dec_w.shape)}): pass the vocabulary it was trained with{hint}")
    used = [tensors[n] for names in plan.layers for n in names.values()] + [dec_w]
    emb = None
    if plan.embedding is not None:
        emb = tensors[param(plan.embedding, "weight")]
        used.append(emb)
    if bias_name in tensors:
        used.append(tensors[bias_name])
    bad = [n for n, a in tensors.items() if n not in plan.ignored and a.dtype.kind != "f"]
    if bad:
        raise ImportRefused(f"{', '.join(bad)} are not floating-point tensors")
    dtype = model_dtype(used)
    # Vocab sorts its characters: permute the one-hot columns and decoder rows to that order.
    order = np.argsort(np.array([ord(c) for c in vocab.chars]), kind="stable")   # new id j = old id order[j]
    params = {}
    for l, names in enumerate(plan.layers):
        W_ih = tensors[names["weight_ih"]].astype(np.float64)
        if l == 0:
            if emb is not None:
                W_ih = W_ih @ emb.astype(np.float64).T        # (G*H, E) @ (E, V) = (G*H, V)
            W_ih = W_ih[:, order]
        params[f"rnn.weight_ih_l{l}"] = W_ih.astype(dtype)
        for kind in ("weight_hh", "bias_ih", "bias_hh"):
            params[f"rnn.{kind}_l{l}"] = tensors[names[kind]].astype(dtype)
    params["decoder.weight"] = dec_w[order].astype(dtype)
    bias = tensors.get(bias_name)
    params["decoder.bias"] = (np.zeros(V, dtype) if bias is None else bias[order]).astype(dtype)
    params = {k: np.ascontiguousarray(v) for k, v in params.items()}

    cfg = ModelConfig(plan.cell, V, plan.hidden_size, len(plan.layers))
    nonlinearity = None
    if plan.cell == "rnn":
        nonlinearity = "tanh" if roles.nonlinearity == "tanh" else "tanh (assumed: PyTorch's default)"
    source_dtype = ", ".join(sorted({str(a.dtype) for a in used}))
    rec = Recognised(
        cell=plan.cell, num_layers=len(plan.layers), hidden_size=plan.hidden_size, vocab_size=V,
        input_size=plan.input_size, rnn=plan.rnn, decoder=plan.decoder, embedding=plan.embedding,
        embedding_folded=emb is not None, decoder_bias=bias is not None, nonlinearity=nonlinearity,
        source_dtype=source_dtype, dtype=str(dtype), source_parameters=int(sum(a.size for a in used)),
        parameters=count_parameters(params),
        tensors={"embedding": [] if plan.embedding is None else [param(plan.embedding, "weight")],
                 "rnn": [n for names in plan.layers for n in names.values()],
                 "decoder": [n for n in (param(plan.decoder, "weight"), bias_name) if n in tensors]},
        ignored=list(plan.ignored))
    history = {"imported_from": source_name, "vocab_source": vocab.source, "recognised": rec.to_dict()}
    if vocab.corpus_sha256:
        history |= {"corpus_name": vocab.corpus_name, "corpus_sha256": vocab.corpus_sha256,
                    "corpus_chars": vocab.corpus_chars}
    return LanguageModel(cfg, Vocab(vocab.chars), params, {}, history), rec


def param(module_name: str, kind: str) -> str:
    """A module's tensor name in the state dict: 'fc' + 'weight' -> 'fc.weight'; the root's is 'weight'."""
    return f"{module_name}.{kind}" if module_name else kind


def import_tensors(tensors: dict[str, np.ndarray], vocab: VocabSpec | None, roles: Roles = Roles(),
                   source_name: str = "model", metadata: dict[str, str] | None = None
                   ) -> tuple[LanguageModel, Recognised]:
    """Recognise and convert; the vocabulary may come from an rnnscope checkpoint's own metadata."""
    if roles.cell is not None:
        get_cell(roles.cell)
    if roles.nonlinearity not in (None, "tanh", "relu"):
        raise ImportRefused(f"nonlinearity must be tanh or relu, not {roles.nonlinearity!r}")
    plan = recognise(tensors, roles)
    if vocab is None:
        vocab = vocab_from_metadata(metadata or {})
        if vocab is None:
            raise ImportRefused("the model's vocabulary is needed: the training text (its sorted "
                                "characters), a JSON list of the characters in id order, or a JSON mapping "
                                "{character: id}")
    return convert(tensors, plan, vocab, roles, source_name)


def import_file(path: str | Path, vocab: VocabSpec | None, roles: Roles = Roles(),
                allow_torch: bool = True) -> tuple[LanguageModel, Recognised]:
    path = Path(path)
    tensors, meta = read_model_file(path, allow_torch)
    return import_tensors(tensors, vocab, roles, path.name, meta)


# ---- what the person sees first ------------------------------------------------------------

def next_chars(model: LanguageModel, text: str, k: int = 5) -> list[tuple[str, float]]:
    """The k likeliest characters after `text`, with their probabilities."""
    logits, _, _ = model.forward(model.encode(text)[None])
    p = np.exp(log_softmax(logits[0, -1].astype(np.float64)))
    top = np.argsort(-p, kind="stable")[:k]
    return [(model.vocab.chars[i], float(p[i])) for i in top]


def probe_text(model: LanguageModel, corpus_head: str | None = None) -> str:
    """A short text to show predictions on: the corpus's opening, else a word the vocabulary spells."""
    if corpus_head:
        known = "".join(c for c in corpus_head[:40] if c in model.vocab)
        if known:
            return known
    for word in ("The ", "the ", "def ", "and ", "e"):
        if all(c in model.vocab for c in word):
            return word
    return model.vocab.chars[0]
