"""Long readings in memory-mapped files (app/inference/reading_files.py): computed a piece at a
time where compute runs, equal bit for bit to the reading in one go, owned by the process
that wrote them, and never the reason for a 500 when the disk fills."""
from __future__ import annotations

import errno
import os

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rnnscope.app.inference import readings
from rnnscope.app.inference.reading_files import DiskFull, ReadingFiles
from rnnscope.app.main import create_app
from rnnscope.model.match import read_all
from rnnscope.model.probes import read_units

UNIT = {"layer": 0, "quantity": "c", "unit": 3, "sign": 1, "threshold": 0.0}


def test_a_reading_in_pieces_is_the_reading_in_one_go(models, corpus):
    m = models["lstm"]
    ids = m.encode(corpus[:2500])
    whole = read_all(m, ids, chunk=256).values
    state, pieces = None, []
    for s in range(0, len(ids), 512):                 # multiples of the chunk: the same forward calls
        values, state = read_units(m, ids[s:s + 512], state, chunk=256)
        pieces.append(values)
    assert np.array_equal(np.concatenate(pieces, axis=1), whole)


def test_a_reading_file_holds_the_pieces_in_place_and_goes_with_its_owner(tmp_path):
    files = ReadingFiles(tmp_path, min_free_bytes=0)
    full = np.random.default_rng(0).standard_normal((5, 23)).astype(np.float16)
    mapped = files.write((5, 23), ((s, full[:, s:s + 10]) for s in range(0, 23, 10)))
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    assert np.array_equal(mapped, full)
    by_time = files.write((23, 5), ((s, full.T[s:s + 10]) for s in range(0, 23, 10)), axis=0)
    assert np.array_equal(by_time, full.T)
    assert sorted(p.name for p in files.directory.iterdir()) == [".owner", "0.npy", "1.npy"]

    class Holder:
        pass
    holder = Holder()
    files.owned_by(holder, mapped)
    assert (files.directory / "0.npy").exists()
    del holder                                       # the reading made of the file is gone: so is it
    assert not (files.directory / "0.npy").exists()
    files.close()
    assert not files.directory.exists()


def test_a_directory_left_by_a_dead_server_is_removed_and_a_live_ones_kept(tmp_path):
    live = ReadingFiles(tmp_path, 0)
    live.write((1, 1), [(0, np.zeros((1, 1), np.float16))])
    dead = tmp_path / "readings-999999-deadbeef"           # its owner lock is free: nobody holds it
    dead.mkdir()
    (dead / ".owner").touch()
    (dead / "0.npy").write_bytes(b"left over")
    newcomer = ReadingFiles(tmp_path, 0)
    newcomer.write((1, 1), [(0, np.zeros((1, 1), np.float16))])
    assert not dead.exists() and live.directory.exists() and newcomer.directory.exists()
    live.close()
    newcomer.close()


def test_a_disk_that_fills_while_writing_leaves_nothing_behind(tmp_path, monkeypatch):
    files = ReadingFiles(tmp_path, 0)

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(DiskFull, match="No space left"):
        files.write((2, 4), [(0, np.zeros((2, 4), np.float16))])
    assert [p.name for p in files.directory.iterdir()] == [".owner"]
    files.close()


@pytest.fixture
def corpus_app(tmp_path, settings, corpus):
    path = tmp_path / "tiny.txt"
    path.write_text(corpus, encoding="utf-8")
    return create_app(settings.model_copy(update={"corpus_paths": (path,)}))


def test_the_validation_reading_is_a_file_shared_by_matches_and_removed_with_the_app(corpus_app, settings,
                                                                                       monkeypatch):
    with TestClient(corpus_app) as c:
        pool, sent = c.app.state.compute_pool, []
        run = pool.run
        monkeypatch.setattr(pool, "run", lambda function, *a, **kw: sent.append(function) or run(function, *a, **kw))
        r = c.post("/api/models/lstm/match", json={"units": [UNIT], "length": 6})
        assert r.status_code == 200, r.text
        assert sent and set(sent) == {read_units}                       # its pieces were read in the workers
        acts, = c.app.state.match_readings._items.values()
        assert isinstance(acts.values, np.memmap)
        mine = c.app.state.match_readings.files.directory
        files = list(mine.glob("*.npy"))
        assert len(files) == 1 and files[0].stat().st_size >= acts.values.nbytes
        # In a file or in memory, in pieces in workers or in one go here: the same answer.
        in_threads = create_app(settings.model_copy(update={
            "corpus_paths": corpus_app.state.settings.corpus_paths, "compute_workers": 0,
            "min_free_bytes": 10**18}))                     # no room: the reading stays in memory
        with TestClient(in_threads) as t:
            assert t.post("/api/models/lstm/match", json={"units": [UNIT], "length": 6}).json() == r.json()
            here, = t.app.state.match_readings._items.values()
            assert not isinstance(here.values, np.memmap)
            # So does a state-space fit's reading, put together in memory a piece at a time.
            states = {"text": "a state-space fit in memory or in a file", "layer": 1}
            assert t.post("/api/models/lstm/states", json=states).json() == \
                c.post("/api/models/lstm/states", json=states).json()
            (fitted, _), = t.app.state.state_readings._items.values()
            assert not isinstance(fitted.values, np.memmap)
        # The next model's reading takes the cache's one place: the first file goes once nothing
        # holds its reading (here, this test; in a server, a request still sending it to a worker).
        gru = c.post("/api/models/gru/match", json={"units": [{**UNIT, "quantity": "h"}], "length": 6})
        assert gru.status_code == 200
        assert files[0].exists() and np.array_equal(np.load(files[0], mmap_mode="r")[:, :50], acts.values[:, :50])
        del acts
        assert not files[0].exists()
    assert not mine.exists()


def test_a_match_whose_reading_fills_the_disk_answers_507(corpus_app, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    with TestClient(corpus_app) as c:
        r = c.post("/api/models/lstm/match", json={"units": [UNIT], "length": 6})
        assert r.status_code == 507 and "free space" in r.json()["detail"], r.text
        assert len(c.app.state.match_readings) == 0
        text = {"units": [UNIT], "length": 6, "text": "a text sent is read in memory, whatever the disk"}
        assert c.post("/api/models/lstm/match", json=text).status_code == 200


def test_a_probe_and_a_selection_rank_in_a_worker_on_the_file_as_this_process_would(settings, monkeypatch, corpus):
    text = corpus[:1500]
    asks = [("/api/models/lstm/probe", {"text": text, "concept": "vowel", "top": 5}),
            ("/api/models/gru/select", {"text": text, "spans": [[10, 30], [200, 230]], "top": 5})]
    with TestClient(create_app(settings)) as c, \
            TestClient(create_app(settings.model_copy(update={"compute_workers": 0}))) as here:
        pool, sent = c.app.state.compute_pool, []
        run = pool.run
        monkeypatch.setattr(pool, "run", lambda function, *a, **kw: sent.append(function) or run(function, *a, **kw))
        for path, body in asks:
            there = c.post(path, json=body)
            assert there.status_code == 200, there.text
            assert there.json() == here.post(path, json=body).json(), path
        assert set(sent) == {read_units, readings._mapped}
        kept = list(c.app.state.activation_cache._items.values())
        assert len(kept) == 2 and all(isinstance(a.values, np.memmap) for a in kept)
        assert here.app.state.compute_pool is None
