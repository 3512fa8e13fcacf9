"""`rnnscope serve` on a shared machine (issue 8): a data directory it cannot use ends
start-up with one line naming it; a network address without a token gets one, printed as
an admin URL that works."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.training_app import ROOT, free_port

RNNSCOPE = [sys.executable, "-c", "from rnnscope.app.cli import main; main()"]


def env(**extra) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "RNNSCOPE_LOAD_BUNDLED": "false", **extra}


def test_an_unusable_data_dir_ends_start_up_with_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for data_dir in (blocker / "data", Path("/proc/rnnscope-data")):
        r = subprocess.run([*RNNSCOPE, "serve", "--data-dir", str(data_dir), "--port", str(free_port())],
                           capture_output=True, text=True, env=env(), timeout=60)
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and str(data_dir) in lines[0] and "RNNSCOPE_DATA_DIR" in lines[0], r.stderr
        assert "Traceback" not in r.stderr


def test_a_network_address_gets_an_admin_token_and_url(tmp_path):
    port = free_port()
    process = subprocess.Popen([*RNNSCOPE, "serve", "--host", "0.0.0.0", "--port", str(port),
                                "--data-dir", str(tmp_path)], stderr=subprocess.PIPE, text=True,
                               env=env(RNNSCOPE_ALLOWED_HOSTS="127.0.0.1"))
    try:
        first = process.stderr.readline() + process.stderr.readline()
        url = re.search(r"http://\S+/\?token=(\S+)", first)
        assert url, first
        token = url.group(1)
        deadline = time.monotonic() + 30
        base = f"http://127.0.0.1:{port}"
        while True:
            try:
                httpx.get(f"{base}/healthz")
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.2)
        with httpx.Client(base_url=base) as browser:
            r = browser.get(f"/?token={token}")
            assert r.status_code == 303 and r.headers["location"] == "/"
            assert "rnnscope_admin" in browser.cookies
        r = httpx.get(f"{base}/?token=wrong")
        assert r.status_code == 401
    finally:
        process.terminate()
        process.wait(20)


def test_no_token_keeps_a_network_server_without_one(tmp_path):
    port = free_port()
    process = subprocess.Popen([*RNNSCOPE, "serve", "--host", "0.0.0.0", "--port", str(port), "--no-token",
                                "--data-dir", str(tmp_path)], stderr=subprocess.PIPE, text=True, env=env())
    try:
        line = process.stderr.readline()
        assert "token" not in line.lower()
    finally:
        process.terminate()
        process.wait(20)
