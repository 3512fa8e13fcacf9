"""rnnscope: look inside character-level RNN, GRU and LSTM language models.

In a notebook (docs/notebook.md):

    import rnnscope
    lstm = rnnscope.load("lstm")                  # a bundled model, or a .safetensors path
    lstm.show("First Citizen:\\nBefore we proceed", layer=0, quantity="c", neuron=194)
    lstm.gradients("To be, or not to be").plot()

Models also come from PyTorch (from_torch), Karpathy's min-char-rnn (from_min_char_rnn) and
the NumPy layouts of the lecture notes (from_arrays); rnnscope.serve(model) opens them in the
web app.

One import package. The repository keeps its parts at its top level (app/ the web app,
model/ the NumPy model, static/ and templates/ the pages); pyproject.toml maps them inside
this package as rnnscope.app, rnnscope.model, rnnscope/static and rnnscope/templates, so an
installed rnnscope owns exactly one name in site-packages and a user's own `model/` or
`app/` folder can neither shadow it nor be shadowed by it.

The library's names load on first use, so the server, its workers and `import rnnscope.model`
do not pay for the notebook library.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> the module of this package that defines it
PUBLIC = {"load": "models", "from_torch": "models", "from_min_char_rnn": "models", "from_arrays": "models",
          "serve": "server", "Model": "views", "Trace": "views"}

__all__ = sorted([*PUBLIC, "concepts", "corpus"])


def __getattr__(name: str):
    if name in PUBLIC:
        value = getattr(importlib.import_module(f".{PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rnnscope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def concepts() -> dict[str, str]:
    """The concepts Model.probe knows, with what each means."""
    from rnnscope.model.probes import CONCEPTS
    return {name: c.description for name, c in CONCEPTS.items()}


def corpus(name: str) -> str:
    """A corpus that ships with the bundled models ("tinyshakespeare.txt", "python-stdlib.txt")."""
    from rnnscope.model.bundled import bundled_corpora, read_text
    shipped = bundled_corpora()
    if name not in shipped:
        raise FileNotFoundError(f"no bundled corpus {name!r}; these ship: {', '.join(shipped)}")
    return read_text(shipped[name])
