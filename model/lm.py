"""LanguageModel: a network's config, weights and vocabulary, and what one does with them."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from . import network
from .cells import get_cell
from .layers import Clamp, softmax_cross_entropy
from .network import Cache, ModelConfig, State
from .vocab import Vocab


@dataclass
class LanguageModel:
    config: ModelConfig
    vocab: Vocab
    params: dict[str, np.ndarray]
    train_config: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)       # summary: steps, losses, corpus...

    def __post_init__(self):
        if self.config.vocab_size != len(self.vocab):
            raise ValueError(f"config says {self.config.vocab_size} characters, vocabulary has {len(self.vocab)}")
        expected = network.param_shapes(self.config)
        if set(expected) != set(self.params):
            raise ValueError(f"parameters {sorted(self.params)} do not match {sorted(expected)}")
        for name, shape in expected.items():
            if self.params[name].shape != shape:
                raise ValueError(f"{name} has shape {self.params[name].shape}, expected {shape}")

    @property
    def cell(self):
        return get_cell(self.config.cell)

    @property
    def num_parameters(self) -> int:
        return network.count_parameters(self.params)

    @property
    def dtype(self) -> np.dtype:
        return self.params["decoder.weight"].dtype

    def astype(self, dtype) -> LanguageModel:
        params = {k: v.astype(dtype) for k, v in self.params.items()}
        return LanguageModel(self.config, self.vocab, params, self.train_config, self.history)

    def encode(self, text: str) -> np.ndarray:
        if not text:
            raise ValueError("the text is empty")
        return self.vocab.encode(text)

    def forward(self, ids: np.ndarray, state: State | None = None,
                clamp: dict[int, Clamp] | None = None) -> tuple[np.ndarray, State, Cache]:
        """ids (N, T) -> logits (N, T, V), final state, cache with every internal value."""
        return network.forward(self.config, self.params, ids, state, clamp=clamp)

    def read(self, ids: np.ndarray, chunk: int = 1024,
             clamp: dict[int, Clamp] | None = None) -> Iterator[tuple[int, np.ndarray, Cache]]:
        """Read ids (T,) from a zero state in pieces of `chunk` characters, the state carried
        across: the same values as one pass (stepping equals the whole sequence), while the
        cache of every internal value stays bounded however long the text.
        Yields (start, logits (C, V), cache of that piece)."""
        state = None
        for start in range(0, len(ids), chunk):
            logits, state, cache = self.forward(ids[None, start:start + chunk], state, clamp)
            yield start, logits[0], cache

    def run(self, text: str) -> tuple[np.ndarray, np.ndarray, Cache]:
        """Read `text` from a zero state. Returns logits (T, V), per-position losses (T-1,)
        with loss[t] = -ln p(text[t+1] | text[..t]), and the cache."""
        ids = self.encode(text)[None, :]                                  # (1, T)
        logits, _, cache = self.forward(ids)
        if ids.shape[1] > 1:
            _, _, losses = softmax_cross_entropy(logits[:, :-1], ids[:, 1:], need_grad=False)
            losses = losses[0]
        else:
            losses = np.zeros(0, logits.dtype)
        return logits[0], losses, cache

    def internals(self, cache: Cache, layer: int, quantity: str) -> np.ndarray:
        """One recorded quantity of one layer for sequence 0 of a cache: (T, H)."""
        cell, H = self.cell, self.config.hidden_size
        if not 0 <= layer < self.config.num_layers:
            raise ValueError(f"layer {layer} does not exist; the model has {self.config.num_layers}")
        lc = cache.layers[layer]
        if quantity == "h":
            return lc.hs[1:, 0]
        if quantity == "c" and cell.has_cell_state:
            return lc.cs[1:, 0]
        if quantity in cell.gate_names:
            k = cell.gate_names.index(quantity)
            return lc.acts[:, 0, k * H:(k + 1) * H]
        raise ValueError(f"a {cell.name} has no quantity {quantity!r}; choose from {', '.join(cell.quantities)}")
