"""The bundled models carry their corpora (model/weights/<corpus>.gz): those texts are exactly
../shared's, and every view that reads a model's own text (match, top contexts, groups, the
/states fit and its fixed points, passages, memorised spans) works over them with no corpus
path at all, as from a fresh clone or a wheel."""
from __future__ import annotations

import gzip
import hashlib
import sys
import sysconfig
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rnnscope.app.inference import corpus_index
from rnnscope.app.inference.corpus_index import CorpusLibrary
from rnnscope.app.main import create_app
from rnnscope.app.settings import Settings
from rnnscope.model import bundled
from rnnscope.model.bundled import BUNDLED_CORPUS, bundled_corpora, bundled_paths, corpus_file, read_text
from rnnscope.model.checkpoint import load_model
from rnnscope.model.data import split
from tests.conftest import TEST_HOSTS
from tests.corpus import CORPORA, shared_only

# Small enough to read in a fraction of a second on the 2x256 models, large enough to hold
# lines of every kind.
CHARS = 1_000
# The match example of docs/analyses.md.
MATCH = {"units": [{"layer": 1, "quantity": "h", "unit": 221, "sign": -1, "threshold": -0.0055}], "length": 9}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def validation(name: str) -> str:
    return split(read_text(corpus_file(name)), 0.1)[1]


# ---- the files -----------------------------------------------------------------------------

def test_every_bundled_model_finds_its_corpus_in_the_package_by_the_sha256_it_records():
    assert set(bundled_corpora()) == set(BUNDLED_CORPUS.values())
    library = CorpusLibrary(Settings(corpus_paths=()))
    for mid, path in bundled_paths().items():
        recorded = load_model(path).history["corpus_sha256"]
        found = library.find(recorded)
        assert found is not None, f"{mid}: no corpus with its sha256 {recorded}"
        assert found.name == BUNDLED_CORPUS[mid] and found.path == corpus_file(BUNDLED_CORPUS[mid])
        assert sha(library.text(found)) == recorded


def test_the_shipped_sizes_are_the_validation_parts_of_known_length():
    """The validation text is the last 10 % (model.data.split, as the trainer splits)."""
    assert len(validation("tinyshakespeare.txt")) == 111_539
    assert len(validation("python-stdlib.txt")) == 300_731
    for path in bundled_corpora().values():
        assert path.stat().st_size < 800_000            # gzip -9: 434 and 715 KB


@pytest.mark.parametrize("name", sorted(set(BUNDLED_CORPUS.values())))
def test_the_bundled_texts_are_the_shared_corpora_and_regenerate_byte_for_byte(name, tmp_path):
    shared = shared_only(name)                           # skips without ../shared, fails in CI
    shipped = read_text(corpus_file(name))
    assert shipped == shared
    cut = len(shared) - round(len(shared) * 0.1)
    assert split(shipped, 0.1) == (shared[:cut], shared[cut:])
    [written] = [p for p in bundled.write_texts(CORPORA, tmp_path) if p.name == corpus_file(name).name]
    assert written.read_bytes() == corpus_file(name).read_bytes()


def test_the_python_corpus_rebuilds_from_cpython_3_11_7s_lib():
    lib = Path(sysconfig.get_paths()["stdlib"])
    if sys.version_info[:3] != (3, 11, 7) or not (lib / "asyncio").is_dir():
        pytest.skip(f"the python corpus is CPython 3.11.7's Lib; this is {sys.version.split()[0]} at {lib}")
    text = bundled.build_python_corpus(lib)
    assert sha(text) == bundled.recorded_sha256("python-stdlib.txt")
    assert text.count("\n# ---- Lib/") + text.startswith("# ---- Lib/") == 186


def test_the_command_line_extracts_and_refuses_a_folder_without_the_corpora(tmp_path, capsys):
    assert bundled.main(["--extract", str(tmp_path / "out")]) == 0
    for name, path in bundled_corpora().items():
        assert (tmp_path / "out" / name).read_text(encoding="utf-8") == read_text(path)
    with pytest.raises(SystemExit) as stop:
        bundled.main(["--write-texts", str(tmp_path / "empty")])
    assert stop.value.code == 2 and "tinyshakespeare.txt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bundled.main(["--build-python-corpus", str(tmp_path), str(tmp_path / "x.txt")])


def test_corpus_paths_still_add_corpora_plain_or_gzipped_relative_to_the_working_directory(tmp_path,
                                                                                           monkeypatch):
    text = "To be, or not to be, that is the question.\n" * 20
    (tmp_path / "extra.txt.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "broken.txt.gz").write_bytes(gzip.compress(b"cut short")[:12])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RNNSCOPE_CORPUS_PATHS", '["broken.txt.gz", "extra.txt.gz"]')
    library = CorpusLibrary(Settings())
    found = library.find(sha(text))
    assert found is not None and found.name == "extra.txt" and library.text(found) == text
    assert library.find(sha("not there")) is None


# ---- the views, with no corpus path ------------------------------------------------------------

@pytest.fixture(scope="module")
def bundled_client(tmp_path_factory):
    """The bundled models served with nothing beside them: no corpus path, an empty data dir."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("fresh"), load_bundled=True, allowed_hosts=TEST_HOSTS,
                        corpus_paths=(), max_match_chars=CHARS, max_context_chars=CHARS,
                        max_groups_chars=CHARS, max_state_fit_chars=CHARS)
    assert settings.corpus_paths == ()
    with TestClient(create_app(settings)) as c:
        yield c


def test_match_searches_the_bundled_validation_text(bundled_client):
    r = bundled_client.post("/api/models/python/match", json=MATCH)
    assert r.status_code == 200, r.text
    body = r.json()
    val = validation("python-stdlib.txt")[:CHARS]
    assert (body["source"], body["corpus"], body["chars"]) == ("validation", "python-stdlib.txt", CHARS)
    assert body["matches"]
    for m in body["matches"]:
        assert val[m["snippet_start"]:m["snippet_start"] + len(m["snippet"])] == m["snippet"]


def test_top_contexts_come_from_the_bundled_validation_text(bundled_client):
    r = bundled_client.post("/api/models/rnn/contexts", json={"layer": 0, "quantity": "h", "unit": 3, "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    val = validation("tinyshakespeare.txt")[:CHARS]
    assert (body["source"], body["corpus"], body["chars"]) == ("validation", "tinyshakespeare.txt", CHARS)
    for s in body["positive"] + body["negative"]:
        p = s["position"]
        assert val[p - len(s["before"]):p + 1 + len(s["after"])] == s["before"] + s["char"] + s["after"]


def test_groups_are_fitted_on_the_bundled_validation_text(bundled_client):
    r = bundled_client.post("/api/models/rnn/groups", json={"layer": 1, "quantity": "h", "components": 2,
                                                            "shown": 300})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["source"], body["corpus"], body["chars"]) == ("validation", "tinyshakespeare.txt", CHARS)
    assert body["text"] == validation("tinyshakespeare.txt")[:300]


def test_states_and_fixed_points_are_fitted_on_the_bundled_validation_text(bundled_client):
    r = bundled_client.post("/api/models/rnn/states", json={"text": "ROMEO:\nBut soft!\n", "layer": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["fitted_on"], body["corpus"], body["fit_chars"]) == ("validation", "tinyshakespeare.txt", CHARS)
    r = bundled_client.post("/api/models/rnn/fixed-points", json={"layer": 0, "char": " ", "starts": 4})
    assert r.status_code == 200, r.text
    assert r.json()["fitted_on"] == "validation"


def test_passages_come_from_the_bundled_corpus(bundled_client):
    body = bundled_client.get("/api/models/python/passages").json()
    assert body["corpus"] == "python-stdlib.txt"
    text = read_text(corpus_file("python-stdlib.txt"))
    assert [p["part"] for p in body["passages"]] == ["validation"] * 3 + ["training"]
    assert all(p["text"] in text for p in body["passages"])


def test_memorised_spans_are_found_in_the_bundled_training_text(bundled_client):
    train = split(read_text(corpus_file("tinyshakespeare.txt")), 0.1)[0]
    copied = train[500_000:500_080]
    sample = "Zq zq zq.\n" + copied + "\nZq zq zq."
    r = bundled_client.post("/api/models/rnn/memorised", json={"text": sample})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["available"] is True and body["corpus"] == "tinyshakespeare.txt"
    [span] = body["spans"]
    found = sample[span["start"]:span["end"]]
    assert copied in found
    assert train[span["corpus_position"]:span["corpus_position"] + len(found)] == found


# ---- the kept texts (issue 18: /match alternating between two models re-read the corpus) ----------

def counting_reads(monkeypatch) -> list[str]:
    reads: list[str] = []

    def counted(path: Path) -> str:
        reads.append(path.name)
        return read_text(path)

    monkeypatch.setattr(corpus_index, "read_text", counted)
    return reads


@pytest.mark.parametrize("kept", [2, 1])
def test_matching_two_models_in_turn_reads_each_corpus_once_when_both_are_kept(kept, monkeypatch, tmp_path):
    reads = counting_reads(monkeypatch)
    settings = Settings(data_dir=tmp_path, load_bundled=True, allowed_hosts=TEST_HOSTS, corpus_paths=(),
                        max_match_chars=200, corpus_cache_texts=kept)
    body = MATCH | {"units": [MATCH["units"][0] | {"unit": 7}]}
    with TestClient(create_app(settings)) as c:
        for turn, model in enumerate(("python", "rnn") * 3):
            if turn == 2:
                first_round = len(reads)       # each corpus found (hashed) and read
            r = c.post(f"/api/models/{model}/match", json=body)
            assert r.status_code == 200 and r.json()["source"] == "validation", r.text
    assert set(reads[:first_round]) == {"python-stdlib.txt.gz", "tinyshakespeare.txt.gz"}
    # Both kept: never read again. One kept: each turn reads the other model's corpus again.
    assert len(reads) - first_round == (0 if kept == 2 else 4)
