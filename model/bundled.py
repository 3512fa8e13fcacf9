"""The models shipped with rnnscope, trained by `rnnscope train` (docs/training.md gives each one's
command, validation loss and training time), and the corpora they trained on, shipped beside
them gzipped so every view that reads a model's own text works from a clone or a wheel.

    python -m rnnscope.model.bundled --write-texts ../shared/corpora   # regenerate weights/*.txt.gz
    python -m rnnscope.model.bundled --extract corpora                 # the plain texts, to train on
    python -m rnnscope.model.bundled --build-python-corpus LIB python-stdlib.txt
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"

# id -> display name; ids are file stems in WEIGHTS_DIR.
BUNDLED = {
    "lstm": "Shakespeare LSTM 2x256",
    "gru": "Shakespeare GRU 2x256",
    "rnn": "Shakespeare RNN 2x256",
    "python": "Python LSTM 2x256",
}
# id -> the corpus it trained on: its first 90 % trained, the last 10 % validates
# (model.data.split with the checkpoint's val_fraction, 0.1).
BUNDLED_CORPUS = {"lstm": "tinyshakespeare.txt", "gru": "tinyshakespeare.txt", "rnn": "tinyshakespeare.txt",
                  "python": "python-stdlib.txt"}

# The whole corpus ships, not only its validation 10 %: "copied from the corpus" looks a sample
# up in the text the model trained on, and the whole of both is 1.15 MB gzipped beside 10.7 MB
# of weights. One file per corpus, so the three Shakespeare models share theirs.
GZIP_LEVEL = 9


def bundled_paths() -> dict[str, Path]:
    """The bundled checkpoints present on disk, by id."""
    return {mid: WEIGHTS_DIR / f"{mid}.safetensors" for mid in BUNDLED
            if (WEIGHTS_DIR / f"{mid}.safetensors").exists()}


def corpus_file(name: str) -> Path:
    """Where the bundled corpus `name` (e.g. tinyshakespeare.txt) ships: weights/<name>.gz."""
    return WEIGHTS_DIR / f"{name}.gz"


def bundled_corpora() -> dict[str, Path]:
    """The bundled corpora present on disk, by name (a file name as the checkpoints record it)."""
    return {name: corpus_file(name) for name in sorted(set(BUNDLED_CORPUS.values())) if corpus_file(name).exists()}


def read_text(path: Path) -> str:
    """A corpus as text: gunzipped when its name ends in .gz, UTF-8 either way."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
            return f.read()
    return path.read_text(encoding="utf-8")


def write_texts(corpora: Path, out_dir: Path = WEIGHTS_DIR) -> list[Path]:
    """Write <out_dir>/<corpus>.gz (weights/ by default) from the plain corpora in `corpora`; the
    same text gives the same bytes (no name or time in the gzip header): an unchanged corpus is no diff."""
    written = []
    for name in sorted(set(BUNDLED_CORPUS.values())):
        data = (corpora / name).read_text(encoding="utf-8").encode("utf-8")
        out = out_dir / corpus_file(name).name
        out.write_bytes(gzip.compress(data, GZIP_LEVEL, mtime=0))
        written.append(out)
    return written


def extract(out_dir: Path) -> list[Path]:
    """Write the bundled corpora as plain text into `out_dir`, e.g. to train on them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, path in bundled_corpora().items():
        (out_dir / name).write_text(read_text(path), encoding="utf-8", newline="")
        written.append(out_dir / name)
    return written


# python-stdlib.txt: these packages of CPython 3.11.7's Lib/ (every .py file, test folders left
# out, in path order) and then these three modules; see docs/training.md for the why.
PYTHON_PACKAGES = ("asyncio", "email", "http", "logging", "collections", "concurrent", "importlib", "urllib",
                   "xml", "multiprocessing", "unittest", "sqlite3", "wsgiref", "zoneinfo", "tomllib")
PYTHON_MODULES = ("inspect.py", "typing.py", "pathlib.py")
# A file with more non-ASCII characters than this would add symbols the code hardly uses.
MAX_NON_ASCII = 20


def build_python_corpus(lib: Path) -> str:
    """python-stdlib.txt from a CPython Lib/ folder: each file under a `# ---- Lib/<path> ----`
    line, CRLF made LF, tabs expanded to 8 columns, trailing newlines made one blank line."""
    files = []
    for package in PYTHON_PACKAGES:
        found = [f for f in (lib / package).rglob("*.py")
                 if not {"test", "tests"} & set(f.relative_to(lib).parts)]
        files += sorted(found, key=lambda f: f.relative_to(lib).as_posix())
    files += [lib / m for m in PYTHON_MODULES]
    parts = []
    for f in files:
        text = f.read_text(encoding="utf-8").replace("\r\n", "\n").expandtabs()
        if sum(ord(c) > 127 for c in text) > MAX_NON_ASCII:
            continue
        parts.append(f"# ---- Lib/{f.relative_to(lib).as_posix()} ----\n{text.rstrip(chr(10))}\n\n")
    return "".join(parts)


def recorded_sha256(corpus: str) -> str | None:
    """The SHA-256 the bundled checkpoints trained on `corpus` record, read from their header."""
    from .checkpoint import load_model         # NumPy and safetensors: only when asked

    for mid, name in BUNDLED_CORPUS.items():
        if name == corpus and mid in bundled_paths():
            return load_model(bundled_paths()[mid]).history.get("corpus_sha256")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnscope.model.bundled",
                                     description="The bundled models' corpora: regenerate, extract, rebuild.")
    do = parser.add_mutually_exclusive_group(required=True)
    do.add_argument("--write-texts", metavar="CORPORA", type=Path,
                    help="gzip CORPORA/<corpus> into model/weights/<corpus>.gz for every bundled corpus")
    do.add_argument("--extract", metavar="DIR", type=Path, help="write the bundled corpora as plain text into DIR")
    do.add_argument("--build-python-corpus", nargs=2, metavar=("LIB", "OUT"), type=Path,
                    help="build python-stdlib.txt from CPython 3.11.7's Lib folder LIB into OUT")
    args = parser.parse_args(argv)
    if args.write_texts:
        missing = [n for n in sorted(set(BUNDLED_CORPUS.values())) if not (args.write_texts / n).is_file()]
        if missing:
            parser.error(f"{args.write_texts} has no {', '.join(missing)}")
        for path in write_texts(args.write_texts):
            print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    elif args.extract:
        for path in extract(args.extract):
            print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    else:
        lib, out = args.build_python_corpus
        if not (lib / "asyncio").is_dir():
            parser.error(f"{lib} is not a CPython Lib folder (it has no asyncio/)")
        text = build_python_corpus(lib)
        out.write_text(text, encoding="utf-8", newline="")
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        same = digest == recorded_sha256("python-stdlib.txt")
        print(f"wrote {out} ({len(text):,} characters, sha256 {digest}): "
              + ("the text the bundled python model trained on" if same else
                 "not the text the bundled python model trained on (was LIB CPython 3.11.7's?)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
