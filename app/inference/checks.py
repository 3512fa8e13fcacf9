"""The checks every model view makes of its request, one place each: the text (characters
outside the vocabulary, length), the position to differentiate, the layers, quantities and
units it names. Each refuses with a 422 or 413 that says what to change."""
from __future__ import annotations

from rnnscope.model.lm import LanguageModel
from rnnscope.model.vocab import Vocab

from ..settings import Settings
from ..web.errors import invalid, too_large, vet_text
from .schemas import TextRequest


def check_unit(model: LanguageModel, layer: int, quantity: str | None = None, unit: int | None = None,
               at: tuple = ("body",)) -> None:
    """Refuse (422, at loc `at` + the field) a layer, quantity or unit this model does not have:
    the one check for every route that names a neuron, or a layer and quantity."""
    cfg, cell = model.config, model.cell
    if layer >= cfg.num_layers:
        raise invalid((*at, "layer"), f"layer {layer} does not exist; the model has {cfg.num_layers}",
                      "less_than", lt=cfg.num_layers)
    if quantity is not None and quantity not in cell.quantities:
        raise invalid((*at, "quantity"), f"a {cell.name} has no quantity {quantity!r}; choose from "
                      f"{', '.join(cell.quantities)}", "not_available", available=list(cell.quantities))
    if unit is not None and unit >= cfg.hidden_size:
        raise invalid((*at, "unit"), f"unit {unit} does not exist; layers have {cfg.hidden_size}",
                      "less_than", lt=cfg.hidden_size)


def readable_text(req: TextRequest, vocab: Vocab, settings: Settings,
                  min_chars: int = 1) -> tuple[str, list[str]]:
    """vet_text, then 422 unless at least `min_chars` characters are left to read."""
    text, dropped = vet_text(vocab, req.text, req.drop_unknown, settings.max_text_chars, "max_text_chars")
    if len(text) < min_chars:
        need = {1: "one character", 2: "two characters: one to read and one to predict"}.get(
            min_chars, f"{min_chars} characters")
        left = " once characters outside the vocabulary are dropped" if dropped else ""
        raise invalid(("body", "text"), f"the text needs at least {need}; it has {len(text)}{left}",
                      "too_short", min_length=min_chars)
    return text, dropped


def prediction(req: TextRequest, vocab: Vocab, settings: Settings) -> tuple[str, list[str], int]:
    """The text, the dropped characters and the position whose loss L = -ln p(text[position+1]
    | text[..position]) a backward pass differentiates (default the last); 422 past the text,
    413 when BPTT would read more than max_gradient_chars."""
    text, dropped = readable_text(req, vocab, settings, min_chars=2)
    last = len(text) - 2
    position = last if req.position is None else req.position
    if position > last:
        raise invalid(("body", "position"), f"position must be at most {last} (len(text) - 2) for a text of "
                      f"{len(text)} characters", "less_than_equal", le=last)
    if position + 1 > settings.max_gradient_chars:
        raise too_large("the span BPTT reads (position + 1)", position + 1, settings.max_gradient_chars,
                        "max_gradient_chars")
    return text, dropped, position


def chosen(requested: list | None, available: list, field: str, owner: str) -> list:
    """The requested items in order without repeats (all when None); 422 for one the model lacks."""
    if requested is None:
        return list(available)
    for i, item in enumerate(requested):
        if item not in available:
            raise invalid(("body", field, i), f"{owner} has no {item!r}; choose from "
                          f"{', '.join(map(str, available))}", "not_available", available=available)
    return list(dict.fromkeys(requested))
