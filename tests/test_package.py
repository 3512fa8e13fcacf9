"""`pip install .` gives a working server: the wheel holds static/, templates/ and the bundled
weights, and the installed `rnnscope serve`, started outside the checkout, serves every page
and every file the pages need.

The wheel is built from a copy of what the Dockerfile copies (pyproject.toml, README.md, app,
model, static, templates), with this venv's setuptools and no build isolation, so nothing is
downloaded and no build/ folder lands in the checkout. It is installed with `pip install
--no-deps --target` into a temporary folder, and its console script runs from another one with
PYTHONPATH naming only that folder: `app` is imported from the install (the test checks), and
the dependencies come from this venv.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from app.main import create_app
from app.settings import Settings
from tests.test_offline import KNOWN_PAGES, local_references, page_candidates

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "app", "model", "static", "templates")   # as the Dockerfile


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    try:
        from setuptools.command import bdist_wheel  # noqa: F401  (setuptools >= 70.1 builds wheels itself)
    except ImportError:
        pytest.fail("this venv's setuptools cannot build wheels (setuptools>=70.1 is in the test extra): "
                    "run `make install`")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "--disable-pip-version-check", "--quiet", "--wheel-dir", str(tmp / "dist"), str(src))
    (built,) = (tmp / "dist").glob("rnnscope-*.whl")
    return built


def test_wheel_holds_the_site_and_the_weights(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"app/{p.relative_to(ROOT).as_posix()}"
                for folder in ("static", "templates") for p in (ROOT / folder).rglob("*") if p.is_file()}
    expected |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "model" / "weights").glob("*.safetensors")}
    assert len(expected) > 20 and "model/weights/lstm.safetensors" in expected
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"


@pytest.fixture(scope="module")
def installed_server(wheel, tmp_path_factory):
    """The installed console script serving on a free port from an empty working directory."""
    tmp = tmp_path_factory.mktemp("installed")
    site, work = tmp / "site", tmp / "work"
    work.mkdir()
    run(sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check",
        "--quiet", "--target", str(site), str(wheel))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNSCOPE_")}
    env |= {"PYTHONPATH": str(site), "RNNSCOPE_DATA_DIR": str(tmp / "data")}
    where = run(sys.executable, "-c", "import app; print(app.__file__)", cwd=work, env=env).stdout.strip()
    assert Path(where).is_relative_to(site), f"app imported from {where}, not from the installed wheel"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp / "serve.log").open("w+")
    proc = subprocess.Popen([str(site / "bin" / "rnnscope"), "serve", "--port", str(port)],
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            log.seek(0)
            assert proc.poll() is None, f"the installed server exited:\n{log.read()}"
            assert time.monotonic() < deadline, f"the installed server did not start in 60 s:\n{log.read()}"
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_installed_server_serves_every_page_and_asset(installed_server):
    """The pages are the checkout app's routes that answer HTML; every file they reference answers 200."""
    candidates = page_candidates(create_app(Settings(load_bundled=False)))
    failures, pages, assets = [], [], set()
    with httpx.Client(base_url=installed_server, timeout=30) as client:
        for path in candidates:
            r = client.get(path)
            if r.status_code == 405:            # a route that exists to refuse GET is not a page
                continue
            if r.status_code != 200:
                failures.append(f"{path}: {r.status_code}")
            elif r.headers["content-type"].startswith("text/html"):
                pages.append(path)
                assets.update(local_references(path, r.text))
        for path in sorted(assets):
            r = client.get(path)
            if r.status_code != 200 or not r.content:
                failures.append(f"{path}: {r.status_code}, {len(r.content)} bytes")
        models = client.get("/api/models").json()
    assert KNOWN_PAGES <= set(pages), sorted(KNOWN_PAGES - set(pages))
    assert {"/static/css/site.css", "/static/vendor/plotly.min.js", "/static/vendor/swagger-ui-bundle.js"} <= assets
    assert not failures, failures
    assert {"lstm", "gru", "rnn"} <= {m["id"] for m in models}, "the bundled models did not load"
