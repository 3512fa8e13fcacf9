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
from pathlib import Path

from .views import Model


class Background:
    """An ASGI app served by uvicorn in a daemon thread of this process, on a loopback port
    (0: any free one); it ends with the process or at stop()."""

    def __init__(self, app, port: int = 0, timeout: float = 60.0):
        import uvicorn

        # IPPROTO_TCP named: asyncio sets TCP_NODELAY on accepted connections only for a socket
        # whose protocol says TCP; with a plain socket() each response waited ~40 ms on Nagle.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.bind(("127.0.0.1", port))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True,
                                        name="rnnscope-serve")
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the rnnscope server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()


class Server(Background):
    """The web app for a notebook's models: .link() opens /explore on one of them."""

    def __init__(self, app, data_dir: Path, model_ids: list[str], port: int = 0, timeout: float = 60.0):
        self.data_dir, self.model_ids = data_dir, model_ids
        super().__init__(app, port, timeout)

    def link(self, model_id: str | None = None) -> str:
        model_id = model_id or (self.model_ids[0] if self.model_ids else "lstm")
        return f"{self.url}/explore?model={model_id}"

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
    settings = Settings(data_dir=data, host="127.0.0.1", load_bundled=bundled)
    running = Server(create_app(settings), data, ids, port, timeout)
    print(f"rnnscope is serving on {running.url}: open {running.link()}")
    return running
