"""Corpus uploads: what is accepted and how it is normalised, every refusal and its message,
the preflight, and the token."""
from __future__ import annotations

import codecs
import io
import pickle
import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rnnscope.app.training.corpora import CHUNK, CorpusRefused, ingest, parameters
from rnnscope.model.train import corpus_sha256
from tests.training_app import OWNER, FAST, TINY, Server, build_app, excerpt, upload, wait_for


@pytest.fixture
def client(tmp_path):
    with TestClient(build_app(tmp_path, **FAST), headers=OWNER) as c:
        yield c


def detail(response) -> str:
    d = response.json()["detail"]
    return d if isinstance(d, str) else " ".join(e["msg"] for e in d)


# ---- accepted uploads ----------------------------------------------------------------------

def test_upload_answers_with_the_preflight(client, tmp_path):
    text = excerpt(20_000)
    r = upload(client, text, "shakespeare.txt")
    assert r.status_code == 201, r.text
    c = r.json()
    assert c["name"] == "shakespeare" and c["filename"] == "shakespeare.txt"
    assert c["bytes"] == len(text.encode()) and c["chars"] == len(text)
    assert c["sha256"] == corpus_sha256(text)        # what a model trained on it records
    p = c["preflight"]
    assert p["chars"] == len(text) and p["lines"] == text.count("\n") + 1
    assert p["train_chars"] + p["val_chars"] == len(text) and p["val_chars"] == round(0.1 * len(text))
    counts = {v["char"]: v["count"] for v in p["vocab"]}
    assert counts == {ch: text.count(ch) for ch in set(text)}
    assert [v["count"] for v in p["vocab"]] == sorted(counts.values(), reverse=True)
    assert p["vocab_size"] == len(set(text))
    rec = p["recommended"]
    # char-rnn's rule of thumb: parameters of the order of the training characters.
    assert rec["parameters"] == parameters("lstm", p["vocab_size"], rec["hidden_size"], rec["num_layers"])
    assert 0.3 < rec["parameters"] / p["train_chars"] < 3
    assert 100 <= rec["max_steps"]
    est = p["estimate"]
    assert est["seconds_per_step"] > 0 and est["steps_per_epoch"] >= 20
    per_epoch = est["seconds_per_step"] * est["steps_per_epoch"]
    assert est["seconds_per_epoch"] == pytest.approx(per_epoch, rel=0.01, abs=0.01)
    stored = tmp_path / "corpora" / f"{c['sha256']}.txt"
    assert stored.read_text(encoding="utf-8") == text

    assert client.get(f"/api/corpora/{c['id']}").json() == c
    listed = client.get("/api/corpora").json()
    assert [x["id"] for x in listed] == [c["id"]] and listed[0]["vocab_size"] == p["vocab_size"]


def test_bom_and_every_line_ending_are_normalised(client, tmp_path):
    text = "First line\r\nsecond line\rthird line\nfourth line " * 20
    r = upload(client, codecs.BOM_UTF8 + text.encode("utf-8"), "windows.txt")
    assert r.status_code == 201, r.text
    want = text.replace("\r\n", "\n").replace("\r", "\n")
    assert r.json()["chars"] == len(want)
    assert "\r" not in {v["char"] for v in r.json()["preflight"]["vocab"]}
    assert (tmp_path / "corpora" / f"{r.json()['sha256']}.txt").read_text(encoding="utf-8") == want


def test_chunk_boundaries_split_neither_crlf_nor_characters(tmp_path):
    """The reader decodes 1 MiB at a time: a \\r\\n or a multi-byte character across two
    chunks must come out whole."""
    crlf = b"a" * (CHUNK - 1) + b"\r\n" + b"b" * 100
    ing = ingest(io.BytesIO(crlf), tmp_path, 10 * CHUNK, 1000, 10)
    assert ing.path.read_text(encoding="utf-8") == "a" * (CHUNK - 1) + "\n" + "b" * 100
    wide = b"a" * (CHUNK - 1) + "é€".encode() + b"z" * 10
    ing = ingest(io.BytesIO(wide), tmp_path, 10 * CHUNK, 1000, 10)
    assert ing.counts == {"a": CHUNK - 1, "é": 1, "€": 1, "z": 10}
    assert ing.chars == CHUNK + 11


def test_the_name_field_and_hostile_file_names(client, tmp_path):
    r = client.post("/api/corpora", files={"file": ("../../etc/passwd", excerpt(1000).encode())},
                    data={"name": "  my corpus  "})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "my corpus" and r.json()["filename"] == "passwd"
    first = r.json()
    r = upload(client, excerpt(1100), "../../../evil.txt")
    assert r.status_code == 201 and r.json()["name"] == "evil"
    # Stored under their sha256 only, inside the data directory.
    assert sorted(p.name for p in (tmp_path / "corpora").iterdir()) == sorted(
        f"{c['sha256']}.txt" for c in (first, r.json()))
    assert not (tmp_path.parent / "evil.txt").exists()
    r = client.post("/api/corpora", files={"file": ("a.txt", excerpt(1000).encode())},
                    data={"name": "x" * 101})
    assert r.status_code == 422


def test_an_upload_is_text_never_unpickled(client, tmp_path):
    """Protocol-0 pickles are ASCII, so this one is a valid corpus; had anything unpickled
    it, it would have created the marker file."""
    marker = tmp_path / "unpickled"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    payload = pickle.dumps(Exploit(), protocol=0) * 10
    r = upload(client, payload, "model.pkl")
    assert r.status_code == 201, r.text
    assert not marker.exists()
    binary = pickle.dumps(Exploit(), protocol=4)
    r = upload(client, binary, "model.pkl")
    assert r.status_code == 422 and "pickle" in detail(r)
    assert not marker.exists()


# ---- refusals ---------------------------------------------------------------------------------

@pytest.mark.parametrize("data, expected", [
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "PNG image"),
    (b"%PDF-1.7\n" + b"x" * 500, "PDF document"),
    (b"PK\x03\x04" + b"\x00" * 500, "ZIP archive"),
    (codecs.BOM_UTF16_LE + "hello world, ".encode("utf-16-le") * 40, "UTF-16"),
    ("hello world, ".encode("utf-16-le") * 40, "UTF-16 text without a byte-order mark"),
    (b"plain text then a NUL \x00 and more text" * 20, "NUL byte at offset 22"),
    ("Café crème brûlée, naïve façade. ".encode("latin-1") * 20, "byte 0xE9 at offset 3"),
    (b"", "empty"),
    (b"\xef\xbb\xbf", "no characters"),
])
def test_what_is_not_utf8_text_is_refused_saying_what_it_is(client, data, expected):
    r = upload(client, data, "upload.txt")
    assert r.status_code == 422, r.text
    assert expected in detail(r)
    assert r.json()["detail"][0]["loc"] == ["body", "file"]
    assert client.get("/api/corpora").json() == []


def test_too_short_to_split_is_refused(client):
    r = upload(client, "To be, or not to be.")
    assert r.status_code == 422
    assert "too few to split into training and validation" in detail(r)
    assert "RNNSCOPE_MIN_CORPUS_CHARS" in detail(r)


def test_size_limit_413_before_reading_it_all(tmp_path):
    with TestClient(build_app(tmp_path, max_upload_bytes=1000), headers=OWNER) as client:
        r = upload(client, "x" * 1001)
        assert r.status_code == 413 and "RNNSCOPE_MAX_UPLOAD_BYTES" in r.json()["detail"]
        r = upload(client, excerpt(1000))
        assert r.status_code == 201
        # No temporary file left.
        assert [p.name for p in (tmp_path / "corpora").iterdir()] == [f"{r.json()['sha256']}.txt"]


def test_an_endless_upload_is_refused_while_it_streams(tmp_path):
    """Over a real socket, without a Content-Length: the server answers 413 once the limit
    is passed, while the client is still sending."""
    server = Server(tmp_path, {"RNNSCOPE_MAX_UPLOAD_BYTES": "1000"}).start()
    try:
        boundary = "b0undary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.txt\"\r\n"
                "Content-Type: text/plain\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
            s.sendall((f"POST /api/corpora HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                       f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode())
            for piece in [head] + [b"y" * 4096] * 8:          # 32 kB of an upload that never ends
                s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
                more = s.recv(65536)
                if not more:
                    break
                answer += more
            answer = answer.decode("latin-1")
        assert answer.startswith("HTTP/1.1 413"), answer
        assert "RNNSCOPE_MAX_UPLOAD_BYTES" in answer
    finally:
        server.stop()
    assert list((tmp_path / "corpora").iterdir()) == []


def test_distinct_character_limit(tmp_path):
    with TestClient(build_app(tmp_path, max_vocab=50), headers=OWNER) as client:
        text = "".join(chr(0x4E00 + i) for i in range(60)) * 10
        r = upload(client, text)
        assert r.status_code == 422
        assert "more than 50 distinct characters" in detail(r) and "RNNSCOPE_MAX_VOCAB" in detail(r)


@pytest.mark.parametrize("kwargs", [
    {"json": {"file": "some text"}},
    {"data": {"name": "no file"}},
    {"data": {"file": "a text field, not a file"}},
    {"content": b"--x\r\nbroken", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
])
def test_a_request_that_is_not_a_file_upload_is_refused(client, kwargs):
    r = client.post("/api/corpora", **kwargs)
    assert r.status_code == 422, r.text


def test_two_files_are_refused(client):
    r = client.post("/api/corpora", files=[("file", ("a.txt", b"a" * 300)), ("file", ("b.txt", b"b" * 300))])
    assert r.status_code == 422


def test_ingest_refusals_carry_their_status(tmp_path):
    with pytest.raises(CorpusRefused) as e:
        ingest(io.BytesIO(b"a" * 2000), tmp_path, 1000, 1000, 10)
    assert e.value.status == 413
    assert list(tmp_path.iterdir()) == []        # the temporary file is gone


# ---- reading, estimating, deleting -------------------------------------------------------------

@pytest.mark.parametrize("bad", ["abc", "0", "-1", "1.5", str(2**64), "%2e%2e", "1;drop"])
def test_bad_corpus_ids(client, bad):
    assert client.get(f"/api/corpora/{bad}").status_code == 422
    assert client.delete(f"/api/corpora/{bad}").status_code == 422


def test_unknown_corpus_is_404(client):
    for r in (client.get("/api/corpora/7"), client.delete("/api/corpora/7"),
              client.get("/api/corpora/7/estimate")):
        assert r.status_code == 404 and "no corpus 7" in r.json()["detail"]


def test_estimate_times_a_model_size(client):
    c = upload(client, excerpt(20_000)).json()
    r = client.get(f"/api/corpora/{c['id']}/estimate",
                   params={"cell": "gru", "hidden_size": 24, "num_layers": 2, "batch_size": 8,
                           "seq_length": 32, "max_steps": 500})
    assert r.status_code == 200, r.text
    e = r.json()
    assert e["parameters"] == parameters("gru", c["preflight"]["vocab_size"], 24, 2)
    assert e["steps_per_epoch"] == (c["preflight"]["train_chars"] - 1) // (8 * 32)
    assert e["seconds_total"] == pytest.approx(500 * e["seconds_per_step"], rel=0.01, abs=0.1)
    assert client.get(f"/api/corpora/{c['id']}/estimate", params={"cell": "cnn"}).status_code == 422
    # Exactly what a run refuses (issue 8: the estimate once timed sizes no run may have).
    for params, setting in [({"hidden_size": 2048}, "RNNSCOPE_MAX_HIDDEN_SIZE"),
                            ({"hidden_size": 1024, "num_layers": 8}, "RNNSCOPE_MAX_PARAMETERS"),
                            ({"batch_size": 1024, "seq_length": 2000}, "RNNSCOPE_MAX_STEP_CHARS")]:
        r = client.get(f"/api/corpora/{c['id']}/estimate", params=params)
        assert r.status_code == 422 and setting in detail(r), r.text
        run = client.post("/api/runs", json={"corpus_id": c["id"], **params})
        assert run.status_code == 422 and setting in run.json()["detail"][0]["msg"], run.text


def test_delete_a_corpus(client, tmp_path):
    c = upload(client, excerpt(2000)).json()
    assert client.delete(f"/api/corpora/{c['id']}").status_code == 204
    assert client.get(f"/api/corpora/{c['id']}").status_code == 404
    assert not (tmp_path / "corpora" / f"{c['sha256']}.txt").exists()


def test_a_corpus_in_training_can_be_deleted_and_the_run_goes_on(client):
    """Issue 18: the delete no longer waits for the runs (tests/test_fair_share.py has the rest)."""
    c = upload(client, excerpt(5000)).json()
    run = client.post("/api/runs", json={"corpus_id": c["id"], **TINY, "max_steps": 1_000_000}).json()
    wait_for(client, run["id"], ("running",))
    assert client.delete(f"/api/corpora/{c['id']}").status_code == 204
    assert client.get(f"/api/runs/{run['id']}").json()["status"] == "running"
    assert client.post(f"/api/runs/{run['id']}/cancel").status_code == 200
    wait_for(client, run["id"], ("cancelled",))
    # The run and its model stay; resuming it cannot, without the text.
    r = client.post(f"/api/runs/{run['id']}/resume")
    assert r.status_code == 409 and "deleted" in r.json()["detail"]
    assert client.get(f"/api/runs/{run['id']}").json()["corpus_name"] is None


# ---- the token ------------------------------------------------------------------------------------

def test_creating_needs_the_token_when_the_server_says_so(tmp_path):
    with TestClient(build_app(tmp_path, token="s3cret", create_needs_token=True)) as client:
        r = upload(client, excerpt(1000))
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "RNNSCOPE_TOKEN" in r.json()["detail"]
        assert upload(client, excerpt(1000), headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert upload(client, excerpt(1000), headers={"Authorization": "Basic s3cret"}).status_code == 401
        ok = upload(client, excerpt(1000), headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 201
        cid = ok.json()["id"]
        # Reading stays open.
        assert client.get("/api/corpora").status_code == 200
        assert client.get(f"/api/corpora/{cid}").status_code == 200
        assert client.get(f"/api/corpora/{cid}/estimate", params={"batch_size": 2, "seq_length": 25}).status_code == 200


def test_the_token_is_checked_before_the_upload_is_read(tmp_path):
    with TestClient(build_app(tmp_path, token="s3cret", create_needs_token=True, max_upload_bytes=1000)) as client:
        assert upload(client, "x" * 5000).status_code == 401


def test_openapi_documents_the_upload(client):
    doc = client.get("/openapi.json").json()
    op = doc["paths"]["/api/corpora"]["post"]
    schema = op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["file"] and schema["properties"]["file"]["format"] == "binary"
    assert {"401", "413", "422"} <= set(op["responses"])


def test_the_preflight_and_the_estimate_agree_on_a_shape(client):
    """Issue 9, defect 8: the Train page showed 43 ms/step in the preflight and 55 ms/step in
    the estimate for the same configuration. A shape is timed once and remembered."""
    c = upload(client, excerpt(20_000)).json()
    r = c["preflight"]["recommended"]
    shape = {k: r[k] for k in ("cell", "hidden_size", "num_layers", "batch_size", "seq_length")}
    e = client.get(f"/api/corpora/{c['id']}/estimate", params=shape | {"max_steps": r["max_steps"]}).json()
    assert e["seconds_per_step"] == c["preflight"]["estimate"]["seconds_per_step"]
    assert e["seconds_total"] == c["preflight"]["estimate"]["seconds_total"]


def test_the_same_text_twice_is_one_corpus(client):
    """Issue 9, defect 7: uploading the same file twice made two identical corpora."""
    first = upload(client, excerpt(3000), "a.txt")
    again = upload(client, excerpt(3000), "b.txt")
    assert first.status_code == 201 and not first.json()["duplicate"]
    assert again.status_code == 200 and again.json()["duplicate"] and again.json()["id"] == first.json()["id"]
    assert [x["id"] for x in client.get("/api/corpora").json()].count(first.json()["id"]) == 1
