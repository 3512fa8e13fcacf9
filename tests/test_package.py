"""`pip install .` gives a working server: the wheel holds static/, templates/ and the bundled
weights, and the installed `rnnscope serve`, started outside the checkout, serves every page
and every file the pages need.

The wheel is built from a copy of what the Dockerfile copies (pyproject.toml, README.md,
rnnscope, app, model, static, templates), with this venv's setuptools and no build isolation,
so nothing is downloaded and no build/ folder lands in the checkout. It is installed with
`pip install --no-deps` into a fresh venv that sees this venv's dependencies (a .pth file, which
does not run this venv's own .pth files, so the editable checkout stays out), and served from a
user's folder that has packages of its own named `model` and `app`: the wheel owns exactly one
top-level name, `rnnscope`, and neither side shadows the other.
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

from rnnscope.app.main import create_app
from rnnscope.app.settings import Settings
from tests.test_offline import KNOWN_PAGES, local_references, page_candidates

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "rnnscope", "app", "model", "static", "templates")   # as the Dockerfile


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
    expected = {f"rnnscope/{p.relative_to(ROOT).as_posix()}" for folder in ("static", "templates", "model/weights")
                for p in (ROOT / folder).rglob("*") if p.is_file()}
    assert len(expected) > 20 and "rnnscope/model/weights/lstm.safetensors" in expected
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"
    # Every module, in every folder (pyproject.toml lists the packages one by one).
    modules = {f"rnnscope/{p.relative_to(ROOT).as_posix()}" for folder in ("app", "model")
               for p in (ROOT / folder).rglob("*.py")}
    modules |= {f"rnnscope/{p.name}" for p in (ROOT / "rnnscope").glob("*.py")}
    assert "rnnscope/app/web/security.py" in modules
    assert not modules - names, f"modules missing from the wheel (pyproject.toml packages): {sorted(modules - names)}"
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"rnnscope"}, f"the wheel installs more than one top-level name: {sorted(top_level)}"


@pytest.fixture(scope="module")
def installed_server(wheel, tmp_path_factory):
    """The installed console script of a fresh venv serving on a free port from a user's folder
    that holds packages of its own named `model` and `app`."""
    tmp = tmp_path_factory.mktemp("installed")
    venv, work = tmp / "venv", tmp / "work"
    run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    python = venv / "bin" / "python"
    (site,) = (venv / "lib").glob("python3*/site-packages")
    dependencies = [p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_dir()]
    (site / "dependencies.pth").write_text("".join(f"{p}\n" for p in dependencies))
    run(sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "--ignore-installed",
        "--disable-pip-version-check", "--quiet", str(wheel))
    for name in ("model", "app"):                  # a notebook's or a FastAPI project's own packages
        (work / name).mkdir(parents=True)
        (work / name / "__init__.py").write_text(f"OWNER = 'user {name}'\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNSCOPE_") and k != "PYTHONPATH"}
    env |= {"RNNSCOPE_DATA_DIR": str(tmp / "data")}
    shown = run(str(python), "-c", "import model, app, rnnscope.app.main as m, rnnscope.model.lm as lm; "
                "print(model.OWNER, app.OWNER, m.__file__, lm.__file__, sep='\\n')", cwd=work, env=env)
    user_model, user_app, app_file, model_file = shown.stdout.split("\n")[:4]
    assert (user_model, user_app) == ("user model", "user app"), shown.stdout
    for where in (app_file, model_file):
        assert Path(where).is_relative_to(site), f"rnnscope imported from {where}, not from the installed wheel"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp / "serve.log").open("w+")
    proc = subprocess.Popen([str(venv / "bin" / "rnnscope"), "serve", "--port", str(port)],
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
    assert {"/static/css/site.css", "/static/vendor/plotly-pages.min.js",
            "/static/vendor/swagger-ui-bundle.js"} <= assets
    assert not failures, failures
    assert {"lstm", "gru", "rnn"} <= {m["id"] for m in models}, "the bundled models did not load"


def test_installed_server_reads_its_models_own_corpora(installed_server):
    """Nothing beside the wheel: the bundled models' passages and top contexts come from the
    corpora the wheel ships (model/weights/*.txt.gz), not from text the model writes itself."""
    with httpx.Client(base_url=installed_server, timeout=120) as client:
        passages = client.get("/api/models/python/passages").json()
        contexts = client.post("/api/models/rnn/contexts", json={"layer": 0, "quantity": "h", "unit": 0, "k": 2})
    assert passages["corpus"] == "python-stdlib.txt" and passages["passages"][0]["part"] == "validation"
    assert contexts.status_code == 200, contexts.text
    assert (contexts.json()["source"], contexts.json()["corpus"]) == ("validation", "tinyshakespeare.txt")
