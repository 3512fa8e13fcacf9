"""rnnscope: look inside character-level RNN, GRU and LSTM language models.

In a notebook (docs: README "In a notebook"):

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
"""
__version__ = "0.1.0"

from .models import from_arrays, from_min_char_rnn, from_torch, load  # noqa: E402
from .server import serve  # noqa: E402
from .views import Model, Trace  # noqa: E402

__all__ = ["Model", "Trace", "concepts", "corpus", "from_arrays", "from_min_char_rnn", "from_torch", "load", "serve"]


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
