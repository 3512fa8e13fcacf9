"""Shared fixtures: tiny trained models in a temporary data directory, the app configured
to serve only them, a TestClient with start-up run, and a live server for browsers."""
from __future__ import annotations

import asyncio
import os
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from threadpoolctl import threadpool_limits

from rnnscope.app.main import create_app
from rnnscope.app.settings import Settings
from rnnscope.model.checkpoint import load_model, save_model
from rnnscope.model.lm import LanguageModel
from rnnscope.model.network import ModelConfig
from rnnscope.model.train import TrainConfig, train
from tests.corpus import shakespeare_head

# The views' caches stay cold unless a test asks for warming (tests/test_warming.py): a warmer
# filling them in the background would race what a test's first request finds.
os.environ.setdefault("RNNSCOPE_WARM_ON_START", "0")

# Suites that take minutes (the Ray cluster suite, hundreds of runs under a file ulimit) run
# where RNNSCOPE_SLOW_SUITES=1, as CI sets it (.ci/run); elsewhere they skip and say so, which
# keeps `make test` near ten minutes.
SLOW_SUITES = os.environ.get("RNNSCOPE_SLOW_SUITES") == "1"

CELLS = ("lstm", "gru", "rnn")
# TestClient sends `Host: testserver`; live servers are reached as 127.0.0.1.
TEST_HOSTS = ("testserver", "127.0.0.1", "localhost")


# ---- Ray: the cluster tests run only inside the private network namespace that
# tests/test_private_network.py makes (Ray binds the machine's other address outside one) ----

IN_PRIVATE_NETWORK = os.environ.get("RNNSCOPE_IN_PRIVATE_NETWORK") == "1"
RAY_NODE_MEMORY = 80 * 2**20                  # each node's object store: checkpoints are a few MB


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster: starts Ray; run by tests/test_private_network.py inside "
                                       "a network namespace of its own")
    config.addinivalue_line("markers", "slow_suite: takes minutes; runs where RNNSCOPE_SLOW_SUITES=1 (CI)")


def pytest_collection_modifyitems(config, items):
    """Outside the private network the cluster tests are deselected (not skipped): the one
    test in tests/test_private_network.py runs them all inside it."""
    if not SLOW_SUITES:
        skip = pytest.mark.skip(reason="a suite that takes minutes: it runs in CI, and here with RNNSCOPE_SLOW_SUITES=1")
        for item in items:
            if item.get_closest_marker("slow_suite"):
                item.add_marker(skip)
    if IN_PRIVATE_NETWORK:
        return
    cluster = [item for item in items if item.get_closest_marker("cluster")]
    if cluster:
        config.hook.pytest_deselected(items=cluster)
        items[:] = [item for item in items if not item.get_closest_marker("cluster")]


@pytest.fixture(scope="session")
def ray_cluster():
    """A three-node Ray cluster on this machine, once per session: a head without CPUs
    (where the server's driver connects, as on a real cluster's login node) and two worker
    nodes of one CPU each. This process is connected to it, so apps built with
    executor=ray use it."""
    assert IN_PRIVATE_NETWORK, "the cluster tests run inside tests/test_private_network.py's namespace"
    import logging

    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": RAY_NODE_MEMORY, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=1, object_store_memory=RAY_NODE_MEMORY)
    ray.init(address=cluster.address, logging_level=logging.WARNING)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="session")
def corpus() -> str:
    """The first 30,000 characters of tinyshakespeare: enough for a recognisable vocabulary."""
    return shakespeare_head(30_000)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, corpus) -> Path:
    """<data_dir>/models/{lstm,gru,rnn}.safetensors: 2x32 models trained for 60 steps
    (about a second in all), named like the bundled ones."""
    root = tmp_path_factory.mktemp("data")
    with threadpool_limits(1):                  # BLAS threads change float sums: keep runs identical
        for cell in CELLS:
            result = train(corpus, ModelConfig(cell, 1, 32, 2),
                           TrainConfig(batch_size=8, seq_length=32, max_steps=60, eval_every=30),
                           corpus_name="tinyshakespeare.txt")
            save_model(result.model, root / "models" / f"{cell}.safetensors")
    return root


@pytest.fixture(scope="session")
def models(data_dir) -> dict[str, LanguageModel]:
    """The same models as the server loads, by id, to compare its answers with."""
    return {cell: load_model(data_dir / "models" / f"{cell}.safetensors") for cell in CELLS}


@pytest.fixture(scope="session")
def settings(data_dir) -> Settings:
    return Settings(data_dir=data_dir, load_bundled=False, allowed_hosts=TEST_HOSTS)


@pytest.fixture
def app(settings):
    return create_app(settings)


@pytest.fixture
def client(app):
    """A TestClient inside `with`, so the lifespan loads the models."""
    with TestClient(app) as c:
        yield c


def run_coroutine(coro):
    """asyncio.run(coro) in a thread of its own: once a browser test has started playwright,
    its event loop runs in the main thread, and asyncio.run refuses to start another there."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@contextmanager
def serving(app):
    """`app` served by uvicorn on a free port in a thread of this process (so monkeypatches
    reach it); yields the base URL."""
    from rnnscope.server import Background

    server = Background(app, timeout=30)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def live_server(settings):
    """The app served by uvicorn on a free port in a background thread; yields the base URL."""
    with serving(create_app(settings)) as url:
        yield url


# ---- Browser: Debian's chromium driven by the playwright package (never `playwright install`) ----

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser():
    """One headless chromium for the session. Without it the browser tests skip, except
    where RNNSCOPE_REQUIRE_BROWSER=1 (CI), where that is a failure."""
    if not CHROMIUM.exists():
        if os.environ.get("RNNSCOPE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"RNNSCOPE_REQUIRE_BROWSER=1 but {CHROMIUM} is missing")
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield b
        b.close()


@contextmanager
def watched_page(browser, timeout_ms: int = 20_000):
    """A page in a context of its own, and the list its uncaught script errors and console
    errors land in. Refused requests log "Failed to load resource"; the error tests expect those."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: m.type == "error" and "Failed to load resource" not in m.text
          and errors.append(m.text))
    pg.set_default_timeout(timeout_ms)
    try:
        yield pg, errors
    finally:
        context.close()


@pytest.fixture
def page(browser):
    """A fresh page; an uncaught script error fails the test."""
    with watched_page(browser) as (pg, errors):
        yield pg
    assert not errors, errors
