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
import math
import os
import re
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .cells import get_cell
from .layers import log_softmax
from .lm import LanguageModel
from .network import ModelConfig, count_parameters, param_shapes
from .vocab import Vocab

# Gate blocks per cell: W_hh is (G*H, H) and gives the cell away; a relu RNN does not.
CELL_BY_GATES = {1: "rnn", 3: "gru", 4: "lstm"}
KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
TORCH_NAMES = {"rnn": "nn.RNN", "gru": "nn.GRU", "lstm": "nn.LSTM"}
RECURRENT = re.compile(r"^(?:(?P<module>.*)\.)?(?P<kind>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)"
                       r"_l(?P<layer>[0-9]{1,4})(?P<reverse>_reverse)?$")
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


# ---- limits ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImportLimits:
    """What an import may make the process hold. The file's header is checked against these
    before any tensor is read, and the model's size is checked from the shapes before it is
    converted, so a file that would be refused never costs more than its header.

    max_vocab, max_parameters and max_hidden_size are the server's settings (the defaults are
    theirs); the rest are facts of the format and of the models rnnscope opens, not knobs."""

    max_vocab: int = 1000               # RNNSCOPE_MAX_VOCAB
    max_parameters: int = 20_000_000    # RNNSCOPE_MAX_PARAMETERS, as rnnscope keeps them (after folding)
    max_hidden_size: int = 1024         # RNNSCOPE_MAX_HIDDEN_SIZE: every view's cost a character is ~H^2
    # As a run's num_layers (app/training/schemas.py): a view's cost grows with the layers, and
    # 2,400 layers of one unit fit in the tensor count (5.6 s to import, hours to trace).
    max_layers: int = 8
    # A character model's header is a few kB (~150 bytes a tensor): 1 MB holds thousands of
    # tensors and parses into tens of MB of Python objects at most. The format allows 100 MB,
    # which json.loads turns into gigabytes.
    max_header_bytes: int = 1_000_000
    max_tensors: int = 10_000
    # torch allows 64 dimensions; rnnscope reads 1- and 2-D tensors, and modules it ignores
    # (a conv, a layer norm) have a few.
    max_rank: int = 8
    max_name_chars: int = 1_000         # a state dict's keys are dotted module paths


# A well-formed header nests three deep ({name: {"shape": [...]}}), a vocabulary two; refusing
# deeper text before json.loads keeps "[[[[..." from exhausting the parser's recursion.
HEADER_DEPTH = 3
VOCAB_DEPTH = 2
# A JSON vocabulary of max_vocab characters, indented and \u-escaped, is under this a character.
VOCAB_JSON_BYTES_PER_CHAR = 256


# Reading costs a multiple of what is read: json.loads makes up to ~25 bytes of Python objects
# a byte of header ("[{},{},..."), the depth count a few more; a corpus decoded to text is up to
# 4 bytes a character, with the bytes it came from beside it.
HEADER_BYTES_PER_BYTE = 32
VOCAB_BYTES_PER_BYTE = 6


def reading_peak_bytes(limits: ImportLimits, vocab_bytes: int = 0) -> int:
    """About the most memory reading a header within the limits and a vocabulary file take."""
    return HEADER_BYTES_PER_BYTE * limits.max_header_bytes + VOCAB_BYTES_PER_BYTE * vocab_bytes


def limit(setting: str) -> str:
    return f" (setting RNNSCOPE_{setting})" if setting else ""


# ---- JSON read defensively -----------------------------------------------------------------------

# Escapes go first, then strings have no backslash left: both patterns scan once (a string
# pattern that also matched escapes went quadratic on '"\\"\\"\\...', retrying at every quote).
JSON_ESCAPE = re.compile(rb"\\.", re.S)
JSON_STRING = re.compile(rb'"[^"]*"')
NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(data: bytes) -> int | None:
    """How deep brackets nest in JSON text outside its strings, counted without parsing it
    (so without recursion); None when a string is not closed."""
    outside = JSON_STRING.sub(b"", JSON_ESCAPE.sub(b"", data))
    if b'"' in outside:
        return None
    brackets = np.frombuffer(outside.translate(None, NOT_BRACKETS), np.uint8)
    if not brackets.size:
        return 0
    opening = (brackets == ord("[")) | (brackets == ord("{"))
    return int(np.cumsum(opening.astype(np.int32) * 2 - 1).max())


def lone_surrogate(text: str) -> str | None:
    """The first lone UTF-16 surrogate in text, as \\uXXXX: JSON's \\ud800 escape makes one,
    and it is no character (it cannot even be written out as UTF-8)."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as e:
        return f"\\u{ord(text[e.start]):04x}"


def check_unicode(obj, what: str) -> None:
    """Every string in a parsed JSON value, keys too, must be text (no lone surrogates)."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            bad = lone_surrogate(item)
            if bad:
                raise ImportRefused(f"{what} holds the escape {bad}, a lone UTF-16 surrogate, which is not a "
                                    "character: write the text as UTF-8, or escape characters outside the "
                                    "Basic Multilingual Plane as a surrogate pair")


def no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def load_json(data: bytes, what: str, max_depth: int):
    """json.loads for text from a stranger: UTF-8 only, its nesting counted before it is
    parsed, no NaN/Infinity, no lone surrogates; ImportRefused saying what is wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ImportRefused(f"{what} is not UTF-8 (byte {e.start}: {e.reason})") from None
    depth = json_depth(data)
    if depth is None:
        raise ImportRefused(f"{what} is not valid JSON: a string is not closed; the file may be truncated")
    if depth > max_depth:
        raise ImportRefused(f"{what} nests brackets {depth:,} levels deep; it should nest at most {max_depth}")
    try:
        obj = json.loads(text, parse_constant=no_constants)
    except (ValueError, RecursionError) as e:
        raise ImportRefused(f"{what} is not valid JSON ({str(e)[:200]}); the file may be truncated") from None
    check_unicode(obj, what)
    return obj


def short(value, chars: int = 60) -> str:
    """A value from the file, shown in a message at a bounded length."""
    text = repr(value)
    return text if len(text) <= chars else text[:chars] + "..."


# ---- reading files -------------------------------------------------------------------------

SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
                      "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
MAX_HEADER_BYTES = 100_000_000       # the format's own bound on its JSON header
TENSOR_KEYS = {"dtype", "shape", "data_offsets"}


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


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as its header entry describes it: enough to recognise its role and check the
    limits without reading its data. Offsets count from the end of the header."""

    name: str
    stored: str                       # the safetensors dtype: F32, BF16, ...
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def dtype(self) -> np.dtype:
        """As it is read: bfloat16 is widened to float32."""
        return np.dtype(np.float32) if self.stored == "BF16" else np.dtype(SAFETENSORS_DTYPES[self.stored])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


def tensor_info(name: str, spec, what: str, limits: ImportLimits) -> TensorInfo:
    """One header entry checked: a known dtype, a shape of bounded rank, and offsets whose
    span is exactly the shape's bytes (Python ints: a product cannot overflow)."""
    shown = short(name)
    if len(name) > limits.max_name_chars:
        raise ImportRefused(f"{what}: a tensor name is {len(name):,} characters long ({shown}); a state "
                            f"dict's names are module paths of at most {limits.max_name_chars:,}")
    if not isinstance(spec, dict) or not TENSOR_KEYS <= set(spec):
        raise ImportRefused(f"{what}: the entry for {shown} is not a safetensors tensor (an object with "
                            "dtype, shape and data_offsets)")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPES:
        raise ImportRefused(f"{what}: {shown} has dtype {short(dtype)}, which rnnscope does not read "
                            f"(it reads {', '.join(SAFETENSORS_DTYPES)})")
    if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
        raise ImportRefused(f"{what}: the shape of {shown} is {short(shape)}, not a list of sizes (whole "
                            "numbers, 0 or more)")
    if len(shape) > limits.max_rank:
        raise ImportRefused(f"{what}: {shown} has {len(shape)} dimensions; rnnscope reads tensors of at most "
                            f"{limits.max_rank} (a character model's have 1 or 2)")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise ImportRefused(f"{what}: the data_offsets of {shown} are {short(offsets)}, not [begin, end] "
                            "with 0 <= begin <= end")
    info = TensorInfo(name, dtype, tuple(shape), offsets[0], offsets[1])
    stored_bytes = info.size * np.dtype(SAFETENSORS_DTYPES[dtype]).itemsize
    if info.end - info.begin != stored_bytes:
        raise ImportRefused(f"{what}: {shown} is {dtype} {shape_str(shape) or 'scalar'}, {stored_bytes:,} bytes, "
                            f"but its data_offsets span {info.end - info.begin:,}")
    return info


class SafetensorsReader:
    """A safetensors file opened from a binary file object: its header read and checked
    against the limits (no tensor data read yet); tensors then read one at a time.

    The format: an 8-byte little-endian header length N, N bytes of JSON
    {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
    then the data, which the tensors' offsets must cover exactly, in order, without gaps or
    overlaps."""

    def __init__(self, f: BinaryIO, what: str = "the file", limits: ImportLimits = ImportLimits()):
        self.f, self.what = f, what
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(0)
        head = f.read(9)
        if not is_safetensors(head):
            raise ImportRefused(f"{what} is {sniff(head)}, not safetensors")
        n = int.from_bytes(head[:8], "little")
        if n > limits.max_header_bytes:
            raise ImportRefused(f"{what} has a safetensors header of {n:,} bytes; a character model's is a few "
                                f"kB, and rnnscope reads headers of at most {limits.max_header_bytes:,}")
        if 8 + n > size:
            raise ImportRefused(f"{what} is {size:,} bytes, shorter than its own {n:,}-byte header: it is "
                                "truncated")
        f.seek(8)
        header = load_json(f.read(n), f"{what}'s safetensors header", HEADER_DEPTH)
        if not isinstance(header, dict):
            raise ImportRefused(f"{what} has a safetensors header that is not a JSON object")
        meta = header.pop("__metadata__", {})
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ImportRefused(f"{what}: __metadata__ must map names to strings, as safetensors writes it")
        if len(header) > limits.max_tensors:
            raise ImportRefused(f"{what} lists {len(header):,} tensors; rnnscope reads files of at most "
                                f"{limits.max_tensors:,}")
        self.metadata: dict[str, str] = meta
        self.tensors: dict[str, TensorInfo] = {k: tensor_info(k, v, what, limits) for k, v in header.items()}
        self.data_start, self.data_bytes = 8 + n, size - 8 - n
        self.check_layout()

    def check_layout(self) -> None:
        """The offsets tile the data: sorted, each tensor starts where the previous ended,
        the last ends at the end of the file."""
        end, previous = 0, None
        for t in sorted(self.tensors.values(), key=lambda t: (t.begin, t.end)):
            if t.begin < end:
                raise ImportRefused(f"{self.what}: {short(t.name)} (bytes {t.begin:,}..{t.end:,}) overlaps "
                                    f"{short(previous.name)} (bytes {previous.begin:,}..{previous.end:,}); "
                                    "each tensor must have bytes of its own")
            if t.begin > end:
                raise ImportRefused(f"{self.what}: bytes {end:,}..{t.begin:,} of the data belong to no tensor; "
                                    "safetensors leaves no gaps")
            end, previous = t.end, t
        if end != self.data_bytes:
            how = "it is truncated" if end > self.data_bytes else "bytes follow the last tensor"
            raise ImportRefused(f"{self.what}: the tensors' data is {end:,} bytes but the file holds "
                                f"{self.data_bytes:,} after the header: {how}")

    def read(self, name: str) -> np.ndarray:
        """One tensor's array, bfloat16 widened to float32."""
        t = self.tensors[name]
        buffer = bytearray(t.end - t.begin)
        self.f.seek(self.data_start + t.begin)
        if self.f.readinto(buffer) != len(buffer):
            raise ImportRefused(f"{self.what} ended while reading {short(name)}: it is truncated")
        array = np.frombuffer(buffer, SAFETENSORS_DTYPES[t.stored]).reshape(t.shape)
        if t.stored == "BF16":               # the top half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def read_safetensors(data: bytes, what: str = "the file",
                     limits: ImportLimits = ImportLimits()) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every tensor and the metadata of a safetensors file held in memory."""
    reader = SafetensorsReader(io.BytesIO(data), what, limits)
    return {name: reader.read(name) for name in reader.tensors}, reader.metadata


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
        with open(path, "rb") as f:
            reader = SafetensorsReader(f, path.name)
            return {name: reader.read(name) for name in reader.tensors}, reader.metadata
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


def vocab_from_corpus(data: bytes, name: str, limits: ImportLimits = ImportLimits()) -> VocabSpec:
    """The sorted set of a training text's characters, read as Python's open(path).read()
    reads it (UTF-8, universal newlines): the convention of most char-RNN tutorials."""
    try:
        text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline=None).read()
    except UnicodeDecodeError as e:
        raise ImportRefused(f"{name} is not UTF-8 text ({e}); pass the corpus the model was trained on, "
                            "or its characters as a JSON list or mapping") from None
    if not text:
        raise ImportRefused(f"{name} is empty")
    chars = sorted(set(text))
    check_vocab_size(len(chars), f"{name} has", limits)
    hints = []
    if text.startswith("\ufeff"):
        hints.append("the text starts with a byte-order mark (U+FEFF), counted as a character")
    if b"\r" in data:
        hints.append("its \\r\\n line ends are read as \\n, as Python's open() does; a script that read the "
                     "file in binary mode or with newline='' had \\r too")
    return VocabSpec(chars, f"the characters of {name}", name,
                     hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(), len(text), hints)


def check_vocab_size(count: int, what: str, limits: ImportLimits) -> None:
    if count > limits.max_vocab:
        raise ImportRefused(f"{what} {count:,} characters; the limit is {limits.max_vocab:,}"
                            f"{limit('MAX_VOCAB')}")


ID_KEY = re.compile(r"-?[0-9]{1,9}")


def vocab_from_json(obj, name: str, limits: ImportLimits = ImportLimits()) -> VocabSpec:
    """A list of characters in id order, a mapping {char: id} (stoi), or {id: char} (itos)."""
    if isinstance(obj, (list, dict)):
        check_vocab_size(len(obj), f"{name} lists", limits)
    if isinstance(obj, list):
        return VocabSpec(check_chars(obj, name, limits), f"the list in {name}")
    if isinstance(obj, dict) and obj:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in obj.values()):
            pairs = [(v, k) for k, v in obj.items()]
        elif all(isinstance(v, str) for v in obj.values()) and all(ID_KEY.fullmatch(k) for k in obj):
            pairs = [(int(k), v) for k, v in obj.items()]
        else:
            raise ImportRefused(f"{name} is a JSON object but neither {{character: id}} nor "
                                "{id: character}")
        ids = sorted(i for i, _ in pairs)
        if ids != list(range(len(pairs))):
            missing = sorted(set(range(len(pairs))) - set(ids))[:5]
            raise ImportRefused(f"the ids in {name} must be 0..{len(pairs) - 1}, each once"
                                + (f"; missing {missing}" if missing else "; some appear twice"))
        return VocabSpec(check_chars([c for _, c in sorted(pairs)], name, limits), f"the mapping in {name}")
    raise ImportRefused(f"{name} must hold a JSON list of characters or a mapping {{character: id}}")


def vocab_from_string(chars: str, limits: ImportLimits = ImportLimits()) -> VocabSpec:
    """The characters in id order, typed out ("abc...") or as a JSON list."""
    bad = lone_surrogate(chars)
    if bad:
        raise ImportRefused(f"the characters given hold {bad}, a lone UTF-16 surrogate, which is not a character")
    if chars.lstrip().startswith("[") and (json_depth(chars.encode("utf-8")) or 0) <= VOCAB_DEPTH:
        try:
            obj = json.loads(chars, parse_constant=no_constants)
        except ValueError:
            obj = None                # not JSON: the characters typed out, "[" among them
        if isinstance(obj, list):
            check_unicode(obj, "the list given")
            return vocab_from_json(obj, "the list given", limits)
    return VocabSpec(check_chars(list(chars), "the characters given", limits), "the characters given")


def vocab_from_file(data: bytes, name: str, limits: ImportLimits = ImportLimits()) -> VocabSpec:
    """A .json file is a list or mapping; any other file is the training text."""
    if name.lower().endswith(".json"):
        most = limits.max_vocab * VOCAB_JSON_BYTES_PER_CHAR + 4096
        if len(data) > most:
            raise ImportRefused(f"{name} is {len(data):,} bytes; a JSON vocabulary of at most "
                                f"{limits.max_vocab:,} characters{limit('MAX_VOCAB')} is under {most:,}")
        return vocab_from_json(load_json(data.removeprefix(b"\xef\xbb\xbf"), name, VOCAB_DEPTH), name, limits)
    return vocab_from_corpus(data, name, limits)


def check_chars(chars: list, name: str, limits: ImportLimits = ImportLimits()) -> list[str]:
    if not chars:
        raise ImportRefused(f"{name} holds no characters")
    check_vocab_size(len(chars), f"{name} has", limits)
    bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
    if bad:
        raise ImportRefused(f"{name} has entries that are not single characters: "
                            f"{', '.join(short(c, 20) for c in bad[:5])}; rnnscope opens character-level models")
    surrogates = [lone_surrogate(c) for c in chars if lone_surrogate(c)]
    if surrogates:
        raise ImportRefused(f"{name} has {', '.join(surrogates[:5])}: lone UTF-16 surrogates, which are not "
                            "characters")
    seen, twice = set(), []
    for c in chars:
        if c in seen:
            twice.append(c)
        seen.add(c)
    if twice:
        raise ImportRefused(f"{name} lists {', '.join(map(repr, list(dict.fromkeys(twice))[:5]))} more than once")
    return list(chars)


def vocab_from_metadata(meta: Mapping[str, str], limits: ImportLimits = ImportLimits()) -> VocabSpec | None:
    """An rnnscope checkpoint carries its own vocabulary, in sorted order."""
    if not isinstance(meta.get("vocab"), str):
        return None
    chars = load_json(meta["vocab"].encode("utf-8", "surrogatepass"), "the file's metadata vocab", VOCAB_DEPTH)
    return VocabSpec(check_chars(chars, "the file's metadata", limits), "the file's own metadata") \
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


# Ways to pair a decoder with an embedding worth weighing: a real model has one or two; a file
# with thousands of look-alike modules would make recognising alone take hours.
MAX_ROLE_PAIRS = 10_000


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

    pairs = len(decoders) * len(embeddings)
    if pairs > MAX_ROLE_PAIRS:
        tables = sum(e is not None for e in embeddings)
        raise ImportRefused(f"{len(decoders):,} modules could be the decoder and {tables:,} the "
                            f"embedding ({pairs:,} ways to read the file); name them (--decoder and --embedding, "
                            "or the `decoder` and `embedding` fields)")
    outside = len(tensors) - len(rnn_names)

    def unused(d, e) -> list[str]:
        used = set(others[d].values()) | (set(others[e].values()) if e is not None else set())
        return [n for n in tensors if n not in rnn_names and n not in used]

    options = []                      # (decoder, embedding, how many tensors neither uses)
    for d in decoders:
        K = weight(d).shape[0]
        for e in embeddings:
            if e == d or (e is None and D != K) or (e is not None and weight(e).shape[0] != K):
                continue
            options.append((d, e, outside - len(others[d]) - (len(others[e]) if e is not None else 0)))
    complete = [o for o in options if not o[2]]
    chosen = complete or (options if roles.named else [])
    if len(chosen) == 1:
        d, e, _ = chosen[0]
        return Plan(cell, rnn, layers, H, D, d, e, sorted(unused(d, e)))
    if len(chosen) > 1 or len({d for d, _, _ in options}) > 1 or len({e for _, e, _ in options}) > 1:
        pool = chosen or options
        ds = sorted({d for d, _, _ in pool})
        es = sorted({e for _, e, _ in pool if e is not None})
        more = lambda names: f" and {len(names) - 12} more" if len(names) > 12 else ""   # noqa: E731
        if len(ds) > 1:
            shown = ", ".join(f"{module(d)} ({shape_str(weight(d).shape)})" for d in ds[:12]) + more(ds)
            raise ImportRefused(f"{len(ds)} candidate decoders: {shown}; name the one the model's forward "
                                "applies last (--decoder NAME, or the `decoder` field)")
        shown = ", ".join(f"{module(e)} ({shape_str(weight(e).shape)})" for e in es[:12]) + more(es)
        raise ImportRefused(f"the embedding is ambiguous ({shown}); name it (--embedding NAME, or `none` for "
                            "one-hot input)")
    if options:
        d, e, _ = options[0]
        raise ImportRefused(f"tensors that an embedding -> {TORCH_NAMES[cell]} -> Linear model does not use: "
                            f"{listing(tensors, unused(d, e))}. If they take part in the forward pass (a layer "
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


def convert(tensors: Mapping[str, np.ndarray], plan: Plan, vocab: VocabSpec,
            roles: Roles = Roles(), source_name: str = "model") -> tuple[LanguageModel, Recognised]:
    """The rnnscope model that computes what the recognised PyTorch model computes.
    `tensors` needs only those the plan uses."""
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
        with np.errstate(over="ignore"):          # a fold too large for float32: check_finite refuses it
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


def used_names(plan: Plan, tensors: Mapping) -> list[str]:
    """The tensors the plan reads: the recurrent stack's, the decoder's and the embedding's."""
    names = [n for layer in plan.layers for n in layer.values()] + [param(plan.decoder, "weight")]
    names += [n for n in (param(plan.decoder, "bias"),) if n in tensors]
    if plan.embedding is not None:
        names.append(param(plan.embedding, "weight"))
    return names


def check_limits(tensors: Mapping, plan: Plan, limits: ImportLimits) -> None:
    """Vocabulary, embedding rows and parameters as rnnscope would keep them, from the shapes
    alone: a model over the limits is refused before anything is read or converted."""
    V = tensors[param(plan.decoder, "weight")].shape[0]
    if V == 0:
        raise ImportRefused(f"the model's decoder {module(plan.decoder)} writes no characters (it is 0 x "
                            f"{plan.hidden_size})")
    check_vocab_size(V, f"the model's decoder {module(plan.decoder)} writes", limits)
    if plan.embedding is not None:
        rows = tensors[param(plan.embedding, "weight")].shape[0]
        check_vocab_size(rows, f"the model's embedding {module(plan.embedding)} has rows for", limits)
    if plan.hidden_size > limits.max_hidden_size:
        raise ImportRefused(f"{module(plan.rnn)} has {plan.hidden_size:,} units a layer; the limit is "
                            f"{limits.max_hidden_size:,}{limit('MAX_HIDDEN_SIZE')}")
    if len(plan.layers) > limits.max_layers:
        raise ImportRefused(f"{module(plan.rnn)} has {len(plan.layers):,} layers; rnnscope opens models of at "
                            f"most {limits.max_layers}, as it trains them")
    bad = [n for n in used_names(plan, tensors) if tensors[n].dtype.kind != "f"]
    if bad:
        raise ImportRefused(f"{', '.join(map(short, bad))} are not floating-point tensors")
    cfg = ModelConfig(plan.cell, V, plan.hidden_size, len(plan.layers))
    kept = sum(math.prod(shape) for shape in param_shapes(cfg).values())
    if kept > limits.max_parameters:
        raise ImportRefused(f"the model has {kept:,} parameters as rnnscope keeps them; the limit is "
                            f"{limits.max_parameters:,}{limit('MAX_PARAMETERS')}")


def conversion_peak_bytes(tensors: Mapping, plan: Plan) -> int:
    """About the most memory converting and checking the model holds at once, from the
    shapes (within ~15 % of tracemalloc's peak for LSTMs and GRUs; over for RNNs). Converting:
    the tensors read, beside layer 0's fold (W_ih and the embedding in float64, their product
    W_ih E^T and its columns permuted to the sorted vocabulary) or beside the kept parameters
    and a deeper layer's W_ih widened to float64. The probe: the parameters, the copies the
    forward pass makes of them, every character's gates, and logits in float64 with
    log_softmax's temporaries. The checkpoint written afterwards is the parameters again."""
    used = [tensors[n] for n in used_names(plan, tensors)]
    read = sum(math.prod(t.shape) * t.dtype.itemsize for t in used)
    G, H, L, E = get_cell(plan.cell).num_gates, plan.hidden_size, len(plan.layers), plan.input_size
    V = tensors[param(plan.decoder, "weight")].shape[0]
    if plan.embedding is not None:
        fold = 8 * max(G * H * E + V * E + G * H * V, 2 * G * H * V)
    else:
        fold = 8 * 2 * G * H * V
    dsize = model_dtype(used).itemsize
    kept = sum(math.prod(shape) for shape in param_shapes(ModelConfig(plan.cell, V, H, L)).values()) * dsize
    converting = read + max(fold, kept + 8 * G * H * H * (L > 1))
    rows = V + PROBE_LENGTH
    probe = 2 * kept + rows * L * H * (G + 4) * dsize + 4 * 8 * V * rows
    return max(converting, probe)


@dataclass
class StagedImport:
    """A model file recognised and checked from its shapes, nothing converted yet: the caller
    may admit `peak_bytes` (a memory budget) before finish() spends them."""

    plan: Plan
    vocab: VocabSpec
    roles: Roles
    source_name: str
    peak_bytes: int
    tensors: Mapping                  # name -> TensorInfo or array: shapes and dtypes
    load: Callable[[str], np.ndarray]

    def finish(self) -> tuple[LanguageModel, Recognised]:
        """Read the tensors used, convert them, and check the model computes finite losses."""
        loaded = {name: self.load(name) for name in used_names(self.plan, self.tensors)}
        lm, rec = convert(loaded, self.plan, self.vocab, self.roles, self.source_name)
        del loaded
        check_finite(lm)
        return lm, rec


def stage_import(tensors: Mapping, load: Callable[[str], np.ndarray], vocab: VocabSpec | None,
                 roles: Roles = Roles(), source_name: str = "model", metadata: Mapping[str, str] | None = None,
                 limits: ImportLimits = ImportLimits()) -> StagedImport:
    """Recognise the roles from names and shapes, find the vocabulary (the file's own metadata
    when none is given) and check the limits; nothing is read or converted."""
    if roles.cell is not None:
        get_cell(roles.cell)
    if roles.nonlinearity not in (None, "tanh", "relu"):
        raise ImportRefused(f"nonlinearity must be tanh or relu, not {roles.nonlinearity!r}")
    plan = recognise(tensors, roles)
    check_limits(tensors, plan, limits)
    if vocab is None:
        vocab = vocab_from_metadata(metadata or {}, limits)
        if vocab is None:
            raise ImportRefused("the model's vocabulary is needed: the training text (its sorted "
                                "characters), a JSON list of the characters in id order, or a JSON mapping "
                                "{character: id}")
    return StagedImport(plan, vocab, roles, source_name, conversion_peak_bytes(tensors, plan), tensors, load)


def stage_safetensors(reader: SafetensorsReader, vocab: VocabSpec | None, roles: Roles = Roles(),
                      limits: ImportLimits = ImportLimits()) -> StagedImport:
    return stage_import(reader.tensors, reader.read, vocab, roles, reader.what, reader.metadata, limits)


def import_tensors(tensors: Mapping[str, np.ndarray], vocab: VocabSpec | None, roles: Roles = Roles(),
                   source_name: str = "model", metadata: Mapping[str, str] | None = None,
                   limits: ImportLimits = ImportLimits()) -> tuple[LanguageModel, Recognised]:
    """Recognise and convert arrays already in memory (a .pt file's)."""
    return stage_import(tensors, tensors.__getitem__, vocab, roles, source_name, metadata, limits).finish()


def import_file(path: str | Path, vocab: VocabSpec | None, roles: Roles = Roles(),
                allow_torch: bool = True, limits: ImportLimits = ImportLimits(),
                admit: Callable[[int], AbstractContextManager] = lambda peak_bytes: nullcontext()
                ) -> tuple[LanguageModel, Recognised]:
    """A model file by its content: safetensors read tensor by tensor after its header is
    checked, or a .pt file through torch. `admit(peak_bytes)` is entered around the conversion."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            if is_safetensors(head):
                staged = stage_safetensors(SafetensorsReader(f, path.name, limits), vocab, roles, limits)
                with admit(staged.peak_bytes):
                    return staged.finish()
    except OSError as e:
        raise ImportRefused(f"cannot read {path}: {e.strerror}") from None
    if not allow_torch:
        raise ImportRefused(f"{path.name} is {sniff(head)}; only safetensors is taken here: "
                            f"{SAVE_AS_SAFETENSORS}")
    tensors = read_torch(path)
    staged = stage_import(tensors, tensors.__getitem__, vocab, roles, path.name, None, limits)
    with admit(staged.peak_bytes):
        return staged.finish()


# ---- the weights must compute ------------------------------------------------------------------

PROBE_LENGTH = 64


def check_finite(lm: LanguageModel) -> None:
    """Refuse weights that are not finite, or that are but overflow as the model reads: every
    character read first, and a fixed text (the vocabulary in order, repeated) read through,
    must give finite log-probabilities for every next character, or every loss the views
    report would be NaN."""
    bad = [k for k, v in lm.params.items() if not np.isfinite(v).all()]
    if bad:
        raise ImportRefused(f"non-finite values (NaN or infinity) in {', '.join(bad)} as rnnscope keeps them "
                            f"({lm.dtype}): the file's are not finite (the model diverged before it was saved), "
                            "or too large for it once the embedding is folded in")
    V = len(lm.vocab)
    each = np.arange(V)[:, None]                                       # (V, 1): every character first
    text = np.resize(np.arange(V), PROBE_LENGTH)[None]                  # (1, T)
    with np.errstate(all="ignore"):
        for ids in (each, text):
            logits, _, _ = lm.forward(ids)                              # (N, T, V)
            logp = log_softmax(logits.astype(np.float64))
            if not np.isfinite(logp).all():
                peak = float(np.nanmax(np.abs(np.where(np.isfinite(logits), logits, np.nan)), initial=0.0))
                raise ImportRefused(
                    "the weights are finite but too large: reading a probe text the model's "
                    f"{lm.dtype} arithmetic overflows (logits reach {peak:.3g} or infinity), so every loss "
                    "would be NaN; the model diverged before it was saved, or its tensors are not "
                    "the weights they are named for")


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
