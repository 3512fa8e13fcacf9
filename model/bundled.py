"""The models shipped with rnnscope, trained by `rnnscope train` on the corpora of
../shared/corpora (the README gives each one's command, validation loss and training time)."""
from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"

# id -> display name; ids are file stems in WEIGHTS_DIR.
BUNDLED = {
    "lstm": "Shakespeare LSTM 2x256",
    "gru": "Shakespeare GRU 2x256",
    "rnn": "Shakespeare RNN 2x256",
    "python": "Python LSTM 2x256",
}
# id -> the corpus (in ../shared/corpora) it trained on: its first 90 % trained, the rest validates.
BUNDLED_CORPUS = {"lstm": "tinyshakespeare.txt", "gru": "tinyshakespeare.txt", "rnn": "tinyshakespeare.txt",
                  "python": "python-stdlib.txt"}


def bundled_paths() -> dict[str, Path]:
    """The bundled checkpoints present on disk, by id."""
    return {mid: WEIGHTS_DIR / f"{mid}.safetensors" for mid in BUNDLED
            if (WEIGHTS_DIR / f"{mid}.safetensors").exists()}
