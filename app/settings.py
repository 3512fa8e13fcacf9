"""Server settings: the data directory and every limit, each overridable as RNNSCOPE_<NAME>."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RNNSCOPE_", frozen=True)

    data_dir: Path = Path("data")       # user checkpoints live in <data_dir>/models/*.safetensors
    host: str = "127.0.0.1"             # local only; serving the network is an explicit choice
    port: int = Field(8000, ge=1, le=65535)
    load_bundled: bool = True           # tests turn the bundled models off: fast and deterministic

    # Reading costs ~0.1 ms a character per 2x256 layer, so 20,000 take a few seconds;
    # the pages send passages far shorter.
    max_text_chars: int = Field(20_000, ge=1)
    # Sampling costs ~0.15 ms a character on a 2x256 LSTM: 5,000 take about a second.
    max_sample_length: int = Field(5_000, ge=1)
    # The sampler reads its prime in one pass that keeps every step, ~28 kB a character
    # for a 2x256 LSTM; a prime is a prompt, not a corpus.
    max_prime_chars: int = Field(2_000, ge=1)
    # Top-k predictions per position in a trace; more is unreadable and multiplies the payload.
    max_top_k: int = Field(20, ge=1)
    # A trace's arrays, estimated as sent (int8 is 4/3 bytes a value in base64): 10,000
    # characters of every quantity of a 2x256 LSTM are 41 MB; the server holds them as
    # float32 first, three times that.
    max_trace_bytes: int = Field(64_000_000, ge=1_000)
    # BPTT keeps every step's activations and their gradients, ~60 kB a character for a
    # 2x256 LSTM; gradients through this many steps have long vanished (or exploded).
    max_gradient_chars: int = Field(2_000, ge=2)
    # NumPy jobs running at once. The time loop holds the GIL, so more than the core count
    # only queues inside the interpreter while multiplying memory.
    max_concurrent_jobs: int = Field(2, ge=1)
    # BLAS threads per process. A step's (1, H) x (H, 4H) product is too small to split:
    # a second thread made BPTT of 1,000 characters 1.5x slower on two cores.
    blas_threads: int = Field(1, ge=1)
    # Request bodies beyond this are refused before parsing: max_text_chars of \uXXXX escapes fit.
    max_body_bytes: int = Field(1_000_000, ge=1_000)
    # Characters per server-sent event while streaming a sample: smooth on screen, few events.
    stream_chunk_chars: int = Field(16, ge=1)


@lru_cache
def get_settings() -> Settings:
    """The settings from the environment, read once."""
    return Settings()
