"""rnnscope: look inside character-level RNN, GRU and LSTM language models.

One import package. The repository keeps its parts at its top level (app/ the web app,
model/ the NumPy model, static/ and templates/ the pages); pyproject.toml maps them inside
this package as rnnscope.app, rnnscope.model, rnnscope/static and rnnscope/templates, so an
installed rnnscope owns exactly one name in site-packages and a user's own `model/` or
`app/` folder can neither shadow it nor be shadowed by it.
"""
__version__ = "0.1.0"
