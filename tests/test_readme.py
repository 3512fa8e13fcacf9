"""Every command in README.md's ```bash blocks runs and does what the README says.

The commands run in README order, each split into words as bash would (shlex) and started
without a shell, from an empty temporary directory, with the RNNSCOPE_* environment cleared.
They run as written except for these rewrites, the same for every command:

- `.venv/bin/rnnscope` is the rnnscope script beside this interpreter (the checkout's venv);
- the corpus of every `rnnscope train` is tests/data/tinyshakespeare-head.txt, and
  `--max-steps 3` is appended to it (click keeps an option's last value), so the README's
  models, the 45-minute bundled one included, train in seconds with every option they name;
- port 8000 is a free port, in `serve --port 8000` and in the curl URLs alike: the README's
  own `rnnscope serve` example serves its curl examples, with the bundled models;
- every curl gets `--write-out` appended to report its status code, which must be 2xx, and
  its body must be JSON.

`make` lines are not run (they install and serve or test everything); `make -n TARGET`
checks that the target exists.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CORPUS = ROOT / "tests" / "data" / "tinyshakespeare-head.txt"
RNNSCOPE = Path(sys.executable).parent / "rnnscope"
README_PORT = "8000"
STATUS_MARK = "\n--status "


@dataclass
class Command:
    block: int
    words: list[str]

    @property
    def id(self) -> str:
        """e.g. block2-rnnscope-train, block3-curl-api/models/lstm/sample"""
        tool = Path(self.words[0]).name
        what = next(w for w in self.words if "localhost:" in w).split("/", 1)[1] if tool == "curl" else self.words[1]
        return f"block{self.block}-{tool}-{what}"


def readme_commands() -> list[Command]:
    commands = []
    blocks = re.findall(r"^```bash\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)
    for i, block in enumerate(blocks):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(Command(i, words))
    return commands


COMMANDS = readme_commands()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rewrite(words: list[str], port: int) -> list[str]:
    """The command as run here: see the module's docstring."""
    words = [w.replace(f"localhost:{README_PORT}", f"localhost:{port}") for w in words]
    if words[0] == "curl":
        return words + ["--show-error", "--max-time", "120", "--write-out", STATUS_MARK + "%{http_code}"]
    if Path(words[0]).name != "rnnscope":
        return words
    words = [str(RNNSCOPE)] + words[1:]
    if words[1] == "train":
        words = words[:2] + [str(CORPUS)] + words[3:] + ["--max-steps", "3"]
    if words[1] == "serve":
        words = [str(port) if prev == "--port" else w for prev, w in zip([""] + words, words)]
    return words


@dataclass
class Outcome:
    words: list[str]
    returncode: int | None
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The empty directory the commands run in."""
    return tmp_path_factory.mktemp("readme")


@pytest.fixture(scope="module")
def outcomes(work) -> dict[str, Outcome]:
    """Runs every README command in order, once; the `serve` example keeps running for the curls."""
    if not RNNSCOPE.exists():
        pytest.fail(f"{RNNSCOPE} is missing: `make install` installs rnnscope into the venv")
    if shutil.which("curl") is None:
        pytest.fail("the README's REST examples need curl: apt-get install curl")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNSCOPE_")}
    port = free_port()
    results: dict[str, Outcome] = {}
    server = None
    try:
        for command in COMMANDS:
            words = rewrite(command.words, port)
            if words[0] == "make":
                r = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True, env=env)
            elif words[:2] == [str(RNNSCOPE), "serve"]:
                server = subprocess.Popen(words, cwd=work, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True)
                results[command.id] = Outcome(words, None, wait_until_serving(server, port), "")
                continue
            else:
                r = subprocess.run(words, cwd=work, capture_output=True, text=True, env=env, timeout=600)
            results[command.id] = Outcome(words, r.returncode, r.stdout, r.stderr)
        yield results
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def wait_until_serving(server: subprocess.Popen, port: int) -> str:
    """'' once /healthz answers, else why not."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return f"exited with {server.returncode}:\n{server.stdout.read()}"
        try:
            if httpx.get(f"http://localhost:{port}/healthz", timeout=2).status_code == 200:
                return ""
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return "did not answer /healthz in 90 s"


def test_readme_has_the_examples():
    tools = [(Path(c.words[0]).name, c.words[1]) for c in COMMANDS]
    for expected in [("make", "serve"), ("make", "test"), ("rnnscope", "train"), ("rnnscope", "sample"),
                     ("rnnscope", "serve")]:
        assert expected in tools, f"README.md has no `{' '.join(expected)}` example"
    assert sum(t == "curl" for t, _ in tools) >= 4
    serve = next(i for i, (t, s) in enumerate(tools) if (t, s) == ("rnnscope", "serve"))
    assert all(i > serve for i, (t, _) in enumerate(tools) if t == "curl"), \
        "the curl examples come after the `rnnscope serve` example that serves them"


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_readme_command(command: Command, outcomes, work):
    outcome = outcomes[command.id]
    shown = shlex.join(outcome.words)
    if Path(command.words[0]).name == "rnnscope" and command.words[1] == "serve":
        assert outcome.stdout == "", f"{shown}: {outcome.stdout}"
        return
    assert outcome.returncode == 0, f"{shown} exited {outcome.returncode}:\n{outcome.stdout}\n{outcome.stderr}"
    if command.words[0] == "curl":
        body, _, status = outcome.stdout.rpartition(STATUS_MARK)
        assert status.startswith("2"), f"{shown} answered {status}: {body}"
        json.loads(body)
    elif command.words[1] == "train":
        out = work / outcome.words[outcome.words.index("--out") + 1]
        assert out.is_file() and f"saved {out.relative_to(work)}" in outcome.stdout, outcome.stdout
    elif command.words[1] == "sample":
        prime = command.words[command.words.index("--prime") + 1]
        assert outcome.stdout.startswith(prime) and len(outcome.stdout) > len(prime) + 100, outcome.stdout


def test_serve_on_a_taken_port_names_the_setting(tmp_path):
    """As the README says: a taken port stops `serve` with one line naming what to change."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([str(RNNSCOPE), "serve", "--port", str(port), "--data-dir", str(tmp_path)],
                           capture_output=True, text=True, timeout=60,
                           env={k: v for k, v in os.environ.items() if not k.startswith("RNNSCOPE_")})
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "RNNSCOPE_PORT" in lines[0] and "--port" in lines[0] and str(port) in lines[0], r.stderr
