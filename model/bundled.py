"""The models shipped with rnnscope, trained on tinyshakespeare by `rnnscope train`
(the README gives each one's command, validation loss and training time)."""
from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"

# id -> display name; ids are file stems in WEIGHTS_DIR.
BUNDLED = {
    "lstm": "Shakespeare LSTM 2x256",
    "gru": "Shakespeare GRU 2x256",
    "rnn": "Shakespeare RNN 2x256",
}


def bundled_paths() -> dict[str, Path]:
    """The bundled checkpoints present on disk, by id."""
    return {mid: WEIGHTS_DIR / f"{mid}.safetensors" for mid in BUNDLED
            if (WEIGHTS_DIR / f"{mid}.safetensors").exists()}
