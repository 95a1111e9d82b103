"""The input side in worker processes (`ecg_edge.input_pool`): the same exams in the same order as one
process, a bad file or a dead or over-budget worker named, bounded work in flight, nothing left
behind on SIGTERM or Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_WFDB, needs_shared, write_code_hdf5
from test_infer import run_cli, tiny_export

from ecg_edge.errors import InputError
from ecg_edge.exams import ReadOptions, iter_exams
from ecg_edge.input_pool import (
    IN_FLIGHT_PER_WORKER,
    Budget,
    InputPool,
    Unit,
    auto_workers,
    parse_workers,
    units_of,
)
from ecg_edge.readers import expand_inputs

SHARED = SHARED_WFDB.parent
REAL_HDF5 = SHARED / "real" / "code-test-80.h5"
# A generous bound that only a hang reaches.
HANG_S = 120


def assert_same_exams(expected, got) -> None:
    assert [e.id for e, _ in got] == [e.id for e, _ in expected]
    for (a, xa), (b, xb) in zip(expected, got, strict=True):
        assert (a.source, a.statements, a.fs) == (b.source, b.statements, b.fs)
        assert (a.quality, a.provenance, a.measurements) == (b.quality, b.provenance, b.measurements), a.id
        assert xa.tobytes() == xb.tobytes(), a.id


def long_npy(path: Path, seconds: float, fs: float = 500.0) -> Path:
    """A 12-lead recording of `seconds` (sines): slow enough to read that a test can act while a worker holds it."""
    t = np.arange(int(seconds * fs)) / fs
    np.save(path, np.stack([np.sin(2 * np.pi * (1 + k / 12) * t) for k in range(12)], axis=1))
    return path


NPY = ["--fs", "500", "--leads", "I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6"]
NPY_OPTIONS = dict(fs=500.0, leads=("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"))


@pytest.mark.parametrize(("cpus", "kind", "expected"), [
    (1, "cpu", 1), (2, "cpu", 2), (16, "cpu", 15), (2, "gpu", 1), (16, "gpu", 15), (12, "gpu", 11),
    (1, "gpu", 1), (4, "none", 4), (2, "reference", 2),
])
def test_auto_workers_from_the_machines_facts(cpus, kind, expected):
    assert auto_workers(cpus, kind) == expected


@pytest.mark.parametrize(("backend", "replicas", "cpus", "asked", "expected"), [
    ("ort-cpu", 2, 2, None, 1), ("ort-cpu", 8, 16, None, 2), ("ort-cpu", 1, 2, None, 2),
    ("tensorrt", 1, 16, None, 15), ("ort-cpu", 2, 2, 3, 3), ("ort-cpu", 2, 2, 0, 0),
])
def test_serve_replica_workers_from_the_replicas_share_of_the_cpus(backend, replicas, cpus, asked, expected):
    pytest.importorskip("ray")
    from ecg_edge.serve.options import ServeOptions
    from ecg_edge.serve.server import replica_workers

    assert replica_workers(ServeOptions("export", backend, workers=asked), replicas, cpus) == expected


def test_parse_workers():
    assert parse_workers("auto") is None and parse_workers("3") == 3 and parse_workers("0") == 0
    with pytest.raises(InputError, match="--workers"):
        parse_workers("-1")


def test_units_split_hdf5_files_and_keep_input_order(tmp_path):
    h5 = write_code_hdf5(tmp_path / "a.h5", np.zeros((70, 4096, 12), np.float32))
    other = tmp_path / "b.npy"
    np.save(other, np.zeros((10, 12)))
    units = list(units_of([other, h5, other], size=32))
    assert units == [Unit(other), Unit(h5, (0, 32)), Unit(h5, (32, 64)), Unit(h5, (64, 70)), Unit(other)]


@needs_shared
@pytest.mark.parametrize("workers", [1, 2])
def test_same_exams_in_the_same_order_as_one_process(workers):
    """Real WFDB records of three rates and formats and the CODE-test HDF5 (80 real exams, in units of
    32): every exam, its flags, provenance, measurements and model input equal to reading in-process."""
    paths = expand_inputs([SHARED_WFDB, REAL_HDF5, SHARED_WFDB / "HR06003.hea"])
    options = ReadOptions(measure="rate")
    expected = list(iter_exams(paths, options, on_skip=pytest.fail))
    with InputPool(workers, options) as pool:
        got = list(pool.exams(paths, on_skip=pytest.fail))
        assert pool.stats.exams == len(got) and pool.stats.seconds > 0
    assert len(got) == len(expected) > 80
    assert_same_exams(expected, got)


def test_work_in_flight_is_bounded(tmp_path):
    """A slow consumer: the workers hold at most IN_FLIGHT_PER_WORKER units each beyond what it took."""
    path = tmp_path / "many.h5"
    import h5py

    with h5py.File(path, "w") as f:  # written, not a fill value: a file must store what it declares
        tracings = f.create_dataset("tracings", shape=(320, 4096, 12), dtype="float32", chunks=(16, 4096, 12))
        tracings[:] = np.zeros((320, 4096, 12), np.float32)
    handed: list[int] = []
    units = list(units_of([path], size=8))

    def counted():
        for k, unit in enumerate(units):
            handed.append(k)
            yield unit

    options = ReadOptions(measure="off")
    with InputPool(2, options) as pool:
        for taken, _ in enumerate(pool.map(counted(), on_skip=pytest.fail), start=1):
            assert len(handed) - taken // 8 <= IN_FLIGHT_PER_WORKER * 2 + 1
            if taken == 200:
                break


def test_bad_file_among_good_exit_2_naming_it_and_nothing_written(tmp_path):
    export = tiny_export(tmp_path / "tiny")
    folder = tmp_path / "in"
    folder.mkdir()
    write_code_hdf5(folder / "a.h5", np.random.default_rng(0).normal(size=(40, 4096, 12)).astype(np.float32) * 0.3)
    bad = np.random.default_rng(2).normal(size=(3, 4096, 12)).astype(np.float32) * 0.3
    bad[1, 100, 3] = np.nan
    write_code_hdf5(folder / "b.h5", bad, exam_ids=[7, 8, 9])
    write_code_hdf5(folder / "c.h5", np.random.default_rng(1).normal(size=(5, 4096, 12)).astype(np.float32) * 0.3)
    out = tmp_path / "out.csv"
    r = run_cli("infer", str(folder), "--model", str(export), "--workers", "2", "-o", str(out))
    assert r.exit_code == 2 and f"{folder / 'b.h5'} (exam 8)" in r.output and "NaN" in r.output, r.output
    assert not out.exists() and not list(tmp_path.glob(".out.csv*"))
    r = run_cli("infer", str(folder), "--model", str(export), "--workers", "2", "--keep-going", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert "skipped" in r.output and f"{folder / 'b.h5'} (exam 8)" in r.output
    assert len(out.read_text().splitlines()) == 1 + 47
    converted = tmp_path / "all.h5"
    r = run_cli("convert", str(folder), str(converted), "--workers", "2")
    assert r.exit_code == 2 and str(folder / "b.h5") in r.output and not converted.exists(), r.output
    assert not list(tmp_path.glob(".all.h5*"))


@needs_shared
def test_cli_outputs_equal_to_one_process(tmp_path):
    """infer (CSV byte for byte, JSON but its timing), convert (the HDF5's arrays) and their text:
    with two workers as read in this process, on real WFDB records, real HDF5 exams and .npy."""
    import h5py

    export = tiny_export(tmp_path / "tiny")
    inputs = [str(SHARED_WFDB), str(REAL_HDF5)]
    outputs = {}
    for workers in ("0", "2"):
        csv_out, json_out = tmp_path / f"w{workers}.csv", tmp_path / f"w{workers}.json"
        for out in (csv_out, json_out):
            r = run_cli("infer", *inputs, "--model", str(export), "--workers", workers, "-o", str(out))
            assert r.exit_code == 0, r.output
        doc = json.loads(json_out.read_text())
        timing = doc.pop("timing")
        assert timing["input_workers"] == int(workers) and timing["input_exams_per_s"] > 0
        assert ("2 input workers" if workers == "2" else "input read in this process") in r.output
        h5 = tmp_path / f"w{workers}.h5"
        assert run_cli("convert", *inputs, str(h5), "--workers", workers).exit_code == 0
        with h5py.File(h5) as f:
            arrays = {k: f[k][()] for k in ("tracings", "exam_id", "source")}
        outputs[workers] = (csv_out.read_bytes(), doc, arrays)
    (csv0, doc0, h50), (csv2, doc2, h52) = outputs["0"], outputs["2"]
    assert csv0 == csv2 and doc0 == doc2
    assert all(np.array_equal(h50[k], h52[k]) for k in h50) and len(h50["exam_id"]) > 80


@needs_shared
def test_report_files_equal_to_one_process(tmp_path):
    """`report` with two workers: every sheet (SVG, PNG, thumbnail) and index.html byte for byte as read
    in this process (traces cross the pipe at the recordings' own rates)."""
    export = tiny_export(tmp_path / "tiny")
    records = [str(SHARED_WFDB / name) for name in ("00001_lr.hea", "HR06002.hea", "s0010_re.hea")]
    files = {}
    for workers in ("0", "2"):
        out = tmp_path / f"report-{workers}"
        r = run_cli("report", *records, "--model", str(export), "--out", str(out), "--workers", workers)
        assert r.exit_code == 0, r.output
        files[workers] = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert files["0"] == files["2"] and len(files["0"]) == 1 + 3 * len(records)


def _kill_when_busy(pool: InputPool, killed: threading.Event, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to the pool's first worker as soon as it holds a unit of work."""
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline:
        worker = pool._workers[0]
        if worker.unit is not None:
            os.kill(worker.process.pid, sig)
            killed.set()
            return
        time.sleep(0.001)


@pytest.mark.parametrize("keep_going", [False, True])
def test_a_killed_worker_names_the_file_it_was_reading(tmp_path, keep_going):
    slow = long_npy(tmp_path / "slow.npy", 600)
    good = long_npy(tmp_path / "good.npy", 10)
    options = ReadOptions(measure="intervals", keep_going=keep_going, **NPY_OPTIONS)
    skipped: list[str] = []
    killed = threading.Event()
    with InputPool(1, options) as pool:
        threading.Thread(target=_kill_when_busy, args=(pool, killed), daemon=True).start()
        if not keep_going:
            with pytest.raises(InputError, match="worker reading it stopped") as caught:
                list(pool.exams([slow, good], on_skip=pytest.fail))
            assert killed.is_set() and caught.value.path == str(slow) and "signal 9" in str(caught.value)
            return
        got = list(pool.exams([slow, good], on_skip=skipped.append))
    assert killed.is_set() and [e.source for e, _ in got] == [str(good)]
    assert len(skipped) == 1 and skipped[0].startswith(f"{slow}: the worker reading it stopped"), skipped


@pytest.mark.parametrize("keep_going", [False, True])
def test_a_recording_over_the_time_budget_is_stopped_and_refused(tmp_path, keep_going):
    """The first recording never ends (its worker is stopped with SIGSTOP as soon as it holds it):
    refused when its time is up, its worker replaced, the others read."""
    slow = long_npy(tmp_path / "slow.npy", 600)
    good = long_npy(tmp_path / "good.npy", 10)
    options = ReadOptions(measure="intervals", keep_going=keep_going, **NPY_OPTIONS)
    skipped: list[str] = []
    stopped = threading.Event()
    with InputPool(1, options, Budget(time_s=2.0)) as pool:
        first = pool._workers[0].process.pid
        threading.Thread(target=_kill_when_busy, args=(pool, stopped, signal.SIGSTOP), daemon=True).start()
        if not keep_going:
            with pytest.raises(InputError, match="time budget") as caught:
                list(pool.exams([slow, good], on_skip=pytest.fail))
            assert caught.value.path == str(slow)
            return
        got = list(pool.exams([slow, good, good], on_skip=skipped.append))
        assert stopped.is_set() and pool._workers[0].process.pid != first  # the stopped worker was replaced
    assert [e.source for e, _ in got] == [str(good)] * 2, skipped
    assert len(skipped) == 1 and skipped[0].startswith(f"{slow}: took longer than the time budget"), skipped


def test_a_recording_over_the_memory_budget_is_refused(tmp_path):
    big = long_npy(tmp_path / "big.npy", 600)  # 29 MB of float64, several copies on the way to 400 Hz
    options = ReadOptions(measure="off", keep_going=True, **NPY_OPTIONS)
    skipped: list[str] = []
    with InputPool(1, options, Budget(memory_mb=16)) as pool:
        got = list(pool.exams([big], on_skip=skipped.append))
    assert not got and len(skipped) == 1 and skipped[0].startswith(str(big)), skipped


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads the process tree from /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_stop_the_workers_and_leave_nothing(tmp_path, sig):
    folder = tmp_path / "in"
    folder.mkdir()
    recording = long_npy(tmp_path / "r.npy", 600)
    for k in range(40):  # 40 names of one file: the work of 40 recordings, the disk of one
        os.link(recording, folder / f"r{k:02d}.npy")
    out = tmp_path / "out.h5"
    proc = subprocess.Popen([sys.executable, "-m", "ecg_edge.cli", "convert", str(folder), str(out), *NPY,
                             "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + HANG_S
    workers: set[int] = set()
    while time.monotonic() < deadline and proc.poll() is None:  # converting, both workers at work
        workers |= _descendants(proc.pid)
        if len(workers) >= 3 and list(tmp_path.glob(".out.h5*")):  # the fork server and two workers
            break
        time.sleep(0.05)
    assert proc.poll() is None and len(workers) >= 3
    proc.send_signal(sig)
    proc.communicate(timeout=HANG_S)
    assert proc.returncode != 0
    deadline = time.monotonic() + 10
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if _alive(pid)]
    assert not out.exists() and not list(tmp_path.glob(".out.h5*"))


def test_a_stop_swallowed_on_the_way_still_stops_and_publishes_nothing(tmp_path):
    """A KeyboardInterrupt can land where Python swallows it (a finaliser, a C callback): the stop it
    was asked is remembered, so the reading ends at its next unit and the output never appears."""
    from ecg_edge import stop
    from ecg_edge.convert import convert_to_hdf5

    h5 = write_code_hdf5(tmp_path / "in.h5", np.random.default_rng(0).normal(size=(80, 4096, 12)) * 0.1)
    out = tmp_path / "out.h5"
    seen = 0

    def swallowed(n: int) -> None:  # what a swallowed interrupt leaves behind: the stop asked, no exception
        nonlocal seen
        seen += n
        stop.ask()

    try:
        with pytest.raises(KeyboardInterrupt):
            convert_to_hdf5([h5], out, progress=swallowed, workers=2)
    finally:
        stop.clear()
    assert 0 < seen < 80
    assert not out.exists() and not list(tmp_path.glob(".out.h5*"))
    assert convert_to_hdf5([h5], out, workers=0) == 80  # a stop is forgotten once cleared


@needs_shared
def test_read_serves_several_threads_and_survives_a_stopped_worker(tmp_path):
    """`InputPool.read` (a server replica's requests): threads at once, each recording read whole with its
    own options and equal to reading it here; a recording over its time (its worker held with SIGSTOP)
    refused, naming it, and the pool still answering."""
    from concurrent.futures import ThreadPoolExecutor

    records = expand_inputs([SHARED_WFDB])[:6] + [REAL_HDF5]
    rate, off = ReadOptions(measure="rate"), ReadOptions(measure="off")
    asked = [(path, rate if k % 2 else off) for k, path in enumerate(records)]
    with InputPool(2, ReadOptions(), Budget(time_s=HANG_S)) as pool, ThreadPoolExecutor(4) as threads:
        got = list(threads.map(lambda job: pool.read([job[0]], job[1]), asked))
        for (path, options), exams in zip(asked, got, strict=True):
            assert_same_exams(list(iter_exams([path], options, on_skip=pytest.fail)), exams)
        slow = long_npy(tmp_path / "slow.npy", 600)
        pool.budget = Budget(time_s=1.0)  # the parent keeps the time: shorter from here on
        os.kill(pool._idle.queue[0].process.pid, signal.SIGSTOP)
        npy = ReadOptions(measure="off", **NPY_OPTIONS)
        refused = [threads.submit(pool.read, [slow], npy) for _ in range(2)]
        errors = [f.exception(timeout=HANG_S) for f in refused]
        assert any(isinstance(e, InputError) and "time budget" in str(e) and e.path == str(slow) for e in errors)
        again = pool.read([SHARED_WFDB / "HR06003.hea"], rate)
        assert_same_exams(list(iter_exams([SHARED_WFDB / "HR06003.hea"], rate, on_skip=pytest.fail)), again)
