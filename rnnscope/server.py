"""rnnscope.serve: the web app for a notebook's models, in the background on loopback.

The models are written as checkpoints into a data directory of the session's own (a
temporary one unless given), where the server finds them as it finds any model an operator
places there; the server runs in a daemon thread, so it ends with the kernel.
"""
from __future__ import annotations

import re
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .views import Model


@dataclass
class Server:
    url: str
    data_dir: Path
    model_ids: list[str]
    _server: object
    _thread: threading.Thread
    _socket: socket.socket

    def link(self, model_id: str | None = None) -> str:
        model_id = model_id or (self.model_ids[0] if self.model_ids else "lstm")
        return f"{self.url}/explore?model={model_id}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()

    def _repr_html_(self) -> str:
        links = " · ".join(f'<a href="{self.link(m)}" target="_blank">{m}</a>' for m in self.model_ids)
        return f'<div>rnnscope is serving on <a href="{self.url}" target="_blank">{self.url}</a>: {links}</div>'

    def __repr__(self) -> str:
        return f"<rnnscope server at {self.url}; explore {self.link()}>"


def model_id(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-")[:48] or "notebook"
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    taken.add(candidate)
    return candidate


def serve(*models: Model, port: int = 0, data_dir: str | Path | None = None, bundled: bool = True,
          timeout: float = 60.0) -> Server:
    """Serve `models` (and the bundled ones unless bundled=False) on 127.0.0.1, in the
    background; prints and returns the server, whose .link() opens /explore on a model."""
    import uvicorn

    from rnnscope.app.main import create_app
    from rnnscope.app.settings import Settings

    data = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="rnnscope-notebook-"))
    (data / "models").mkdir(parents=True, exist_ok=True)
    taken = {"lstm", "gru", "rnn", "python"} if bundled else set()
    ids = []
    for m in models:
        mid = model_id(m.name, taken)
        m.save(data / "models" / f"{mid}.safetensors")
        ids.append(mid)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", port))
    settings = Settings(data_dir=data, host="127.0.0.1", port=sock.getsockname()[1], load_bundled=bundled)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="rnnscope-serve")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the rnnscope server did not start")
        time.sleep(0.02)
    running = Server(f"http://127.0.0.1:{settings.port}", data, ids, server, thread, sock)
    print(f"rnnscope is serving on {running.url}: open {running.link()}")
    return running
