"""Every command in the ```bash blocks of README.md and of every guide in docs/*.md runs and does
what the document says.

Each document runs on its own, README.md first and then docs/*.md by name: its commands in the
document's order, each split into words as bash would (shlex) and started without a shell, from an
empty temporary directory of the document's own, with the RNNSCOPE_* environment cleared. So a
document's commands may build on one another (a `train`, then a `sample` of what it saved; a
`serve`, then the curls it answers), as a reader following that one document would run them, but
never on another document's. They run as written except for these rewrites, the same for every
command:

- `.venv/bin/rnnscope` is the rnnscope script beside this interpreter (the checkout's venv);
- the corpus of every `rnnscope train` is tests/data/tinyshakespeare-head.txt, and
  `--max-steps 3` is appended to it (click keeps an option's last value), so the documents'
  models, the 45-minute bundled ones included, train in seconds with every option they name;
- port 8000 is a free port, one per document, in `serve --port 8000` and in the curl URLs alike:
  a document's curl examples are served, with the bundled models, by the server its own serve
  example starts, which runs until the document's last command;
- every curl gets `--write-out` appended to report its status code, which must be 2xx, and
  its body must be JSON.

`make` lines are not run (they install and serve or test everything); `make -n TARGET`
checks that the target exists. `make serve` is also a serve example: `make -n serve` must end
in the recipe line `.venv/bin/rnnscope serve`, and that command is started as the document's
server (on the free port, in the document's directory), as `make serve` would start it once
installed; so the README's REST example is answered as a reader's `make serve` would answer it.
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
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
CORPUS = ROOT / "tests" / "data" / "tinyshakespeare-head.txt"
RNNSCOPE = Path(sys.executable).parent / "rnnscope"
DOCUMENTED_PORT = "8000"
STATUS_MARK = "\n--status "
MAKE_SERVE_RECIPE = ".venv/bin/rnnscope serve"      # the Makefile's `serve` recipe, once installed


@dataclass
class Command:
    document: Path
    block: int
    line: int            # the command's place in its block
    words: list[str]

    @property
    def id(self) -> str:
        """e.g. README.md-block0.0-make-serve, docs/api.md-block1.1-curl-api/models/lstm/sample"""
        tool = Path(self.words[0]).name
        what = next(w for w in self.words if "localhost:" in w).split("/", 1)[1] if tool == "curl" else self.words[1]
        return f"{self.document.relative_to(ROOT).as_posix()}-block{self.block}.{self.line}-{tool}-{what}"

    @property
    def serves(self) -> bool:
        """A serve example: the document's curls talk to the server it starts."""
        return (Path(self.words[0]).name, self.words[1]) in {("rnnscope", "serve"), ("make", "serve")}


def document_commands(document: Path) -> list[Command]:
    commands = []
    blocks = re.findall(r"^```bash\n(.*?)^```", document.read_text(encoding="utf-8"), re.S | re.M)
    for i, block in enumerate(blocks):
        lines = [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines()]
        commands += [Command(document, i, n, words) for n, words in enumerate(w for w in lines if w)]
    return commands


COMMANDS = [command for document in DOCUMENTS for command in document_commands(document)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rewrite(words: list[str], port: int) -> list[str]:
    """The command as run here: see the module's docstring."""
    words = [w.replace(f"localhost:{DOCUMENTED_PORT}", f"localhost:{port}") for w in words]
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
    returncode: int | None      # None: a server, still running
    stdout: str
    stderr: str
    cwd: Path


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    """Runs every document's commands in order, once; a serve example keeps running for its
    document's curls."""
    if not RNNSCOPE.exists():
        pytest.fail(f"{RNNSCOPE} is missing: `make install` installs rnnscope into the venv")
    if shutil.which("curl") is None:
        pytest.fail("the documents' REST examples need curl: apt-get install curl")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNSCOPE_")}
    results: dict[str, Outcome] = {}
    servers: list[subprocess.Popen] = []
    try:
        for document in DOCUMENTS:
            work = tmp_path_factory.mktemp(document.stem)
            port = free_port()
            for command in document_commands(document):
                results[command.id] = run(command, port, work, env, servers)
            stop(servers)
        yield results
    finally:
        stop(servers)


def run(command: Command, port: int, work: Path, env: dict[str, str], servers: list[subprocess.Popen]) -> Outcome:
    """One command as the module's docstring says; a server it starts joins `servers`."""
    words = rewrite(command.words, port)
    if words[0] == "make":
        # --no-print-directory: under `make test` (CI), a make run by make prints its directory too.
        r = subprocess.run(["make", "-n", "--no-print-directory", *words[1:]], cwd=ROOT, capture_output=True,
                           text=True, env=env)
        if r.returncode != 0 or words[1:] != ["serve"]:
            return Outcome(["make", "-n", *words[1:]], r.returncode, r.stdout, r.stderr, ROOT)
        recipe = r.stdout.strip().splitlines()[-1:]
        if recipe != [MAKE_SERVE_RECIPE]:
            return Outcome(["make", "-n", "serve"], 1, f"its last line is {recipe}, not {MAKE_SERVE_RECIPE!r}: "
                           "update this test's stand-in for `make serve`", r.stderr, ROOT)
        words = [str(RNNSCOPE), "serve", "--port", str(port)]
    if words[:2] == [str(RNNSCOPE), "serve"]:
        server = subprocess.Popen(words, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
        servers.append(server)
        return Outcome(words, None, wait_until_serving(server, port), "", work)
    r = subprocess.run(words, cwd=work, capture_output=True, text=True, env=env, timeout=600)
    return Outcome(words, r.returncode, r.stdout, r.stderr, work)


def stop(servers: list[subprocess.Popen]) -> None:
    while servers:
        server = servers.pop()
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


def tools(commands: list[Command]) -> list[tuple[str, str]]:
    return [(Path(c.words[0]).name, c.words[1]) for c in commands]


def test_the_documents_have_the_examples():
    readme = tools(document_commands(README))
    for expected in [("make", "serve"), ("make", "test")]:
        assert expected in readme, f"README.md has no `{' '.join(expected)}` example"
    assert any(tool == "curl" for tool, _ in readme), "README.md has no REST example"
    everywhere = tools(COMMANDS)
    for expected in [("rnnscope", "train"), ("rnnscope", "sample"), ("rnnscope", "serve")]:
        assert expected in everywhere, f"neither README.md nor docs/*.md has a `{' '.join(expected)}` example"
    assert sum(t == "curl" for t, _ in everywhere) >= 4
    for document in DOCUMENTS:
        commands = document_commands(document)
        serves = [i for i, c in enumerate(commands) if c.serves]
        assert len(serves) <= 1, f"{document.name} starts {len(serves)} servers on one port"
        curls = [i for i, c in enumerate(commands) if c.words[0] == "curl"]
        assert not curls or (serves and serves[0] < curls[0]), \
            f"{document.name}: the curl examples come after the `rnnscope serve` or `make serve` example that serves them"


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_documented_command(command: Command, outcomes):
    outcome = outcomes[command.id]
    shown = shlex.join(outcome.words)
    if command.serves:
        assert outcome.returncode is None and outcome.stdout == "", \
            f"{shown} (for `{shlex.join(command.words)}`): {outcome.stdout}"
        return
    assert outcome.returncode == 0, f"{shown} exited {outcome.returncode}:\n{outcome.stdout}\n{outcome.stderr}"
    if command.words[0] == "curl":
        body, _, status = outcome.stdout.rpartition(STATUS_MARK)
        assert status.startswith("2"), f"{shown} answered {status}: {body}"
        json.loads(body)
    elif command.words[1] == "train":
        out = outcome.cwd / outcome.words[outcome.words.index("--out") + 1]
        assert out.is_file() and f"saved {out.relative_to(outcome.cwd)}" in outcome.stdout, outcome.stdout
    elif command.words[1] == "sample":
        prime = command.words[command.words.index("--prime") + 1]
        assert outcome.stdout.startswith(prime) and len(outcome.stdout) > len(prime) + 100, outcome.stdout


def test_serve_on_a_taken_port_names_the_setting(tmp_path):
    """As docs/training.md says: a taken port stops `serve` with one line naming what to change."""
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
