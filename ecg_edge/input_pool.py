"""The input side in worker processes: reading, `prepare`, quality flags and measurements
(`exams.iter_exams`, the function a single process reads with) spread over the machine's cores, the
exams handed back in input order, each recording within a time and memory budget.

Processes, not threads: that work is Python holding the GIL. A small pool of its own rather than
`ProcessPoolExecutor`, because the parent must know which file each worker is reading, to name it
when the worker dies or runs past its budget, and to replace that one worker without losing the
others' work. Workers fork from a fork server (the parent runs threads, onnxruntime's, Ray's and the
one gathering batches: no plain fork); each holds one unit of work at a time (a recording, or up to
`UNIT_EXAMS` exams of an HDF5 file), and at most `IN_FLIGHT_PER_WORKER` units per worker are read
ahead of the consumer: memory is bounded whatever the input size.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecg_edge import stop
from ecg_edge.errors import InputError

if TYPE_CHECKING:
    import numpy as np

    from ecg_edge.exams import Exam, ReadOptions

# Exams of an HDF5 file in one unit of work: 6 MB of model input, a few hundred ms of work.
UNIT_EXAMS = 32
IN_FLIGHT_PER_WORKER = 2
# Per unit of work (issue 34, bounded work per recording): a real recording takes tens of ms
# (benchmarks/results/input-workers-*.md), a unit of HDF5 exams about a second on a busy core.
RECORDING_TIME_S = 30.0
# Address space a worker may add to what it holds once started (numpy, scipy, the readers).
RECORDING_MEMORY_MB = 2048


@dataclass(frozen=True)
class Budget:
    """What one unit of work may cost a worker before it is stopped and the recording refused."""

    time_s: float = RECORDING_TIME_S
    memory_mb: int = RECORDING_MEMORY_MB


def auto_workers(cpus: int, backend_kind: str) -> int:
    """Worker processes for the input side, from the facts a machine reports: its CPUs and the kind
    of backend (`gpu`, `cpu`, `reference`, or `none` where nothing but the input side runs, as in
    `convert`). A GPU wants more exams than the host's cores can feed (an H100 at tens of thousands
    of ECG/s, a Jetson Orin at thousands, against 40-400 a worker: benchmarks/results/input-workers-
    2026-12-07-vm.md), so every core but the one that runs the parent; a CPU backend shares the cores
    with the workers: on two cores both work for the workers (the backend takes the smaller part of
    an exam's CPU time, 9 of 30 ms with INT8 and the rate), from three on one core is left to it."""
    cpus = max(1, cpus)
    if backend_kind == "none" or (backend_kind != "gpu" and cpus <= 2):
        return cpus
    return max(1, cpus - 1)


def parse_workers(text: str) -> int | None:
    """`--workers N|auto`: a count (0: read in this process, no budget), or None for auto."""
    if text.strip().lower() == "auto":
        return None
    if not text.strip().isdigit():
        raise InputError(None, f"--workers {text!r}: expected a number of processes or auto")
    return int(text)


@dataclass(frozen=True)
class Unit:
    """One piece of work: a recording, or a [start, stop) range of an HDF5 file's exams."""

    path: Path
    rows: tuple[int, int] | None = None


def units_of(paths: Sequence[Path], size: int = UNIT_EXAMS) -> Iterator[Unit]:
    """The inputs as units of work, in input order. Only regular files are looked into here (a FIFO
    or a damaged file goes whole to a worker, whose error or budget then names it, in its turn)."""
    from ecg_edge.readers import hdf5_exam_count, is_hdf5

    for path in paths:
        count = None
        if path.is_file():
            with contextlib.suppress(InputError):
                count = hdf5_exam_count(path) if is_hdf5(path) else None
        if count is None:
            yield Unit(path)
        else:
            yield from (Unit(path, (start, min(count, start + size))) for start in range(0, count, size))


@dataclass
class InputStats:
    """How the input side did: exams read, the seconds its workers (or this process) spent on them."""

    workers: int = 0
    exams: int = 0
    seconds: float = 0.0

    @property
    def exams_per_s(self) -> float:
        """What the input side delivers when nothing waits on it: exams per worker-second, times the workers."""
        return self.exams * max(1, self.workers) / self.seconds if self.seconds else 0.0


def timed_exams(source: Iterator[tuple[Exam, np.ndarray]], stats: InputStats) -> Iterator[tuple[Exam, np.ndarray]]:
    """`source` (read in this process), its time counted in `stats`."""
    while True:
        start = time.perf_counter()
        try:
            item = next(source)
        except StopIteration:
            return
        finally:
            stats.seconds += time.perf_counter() - start
        stats.exams += 1
        yield item


# In the worker process.

# What every worker imports: loaded once by the fork server (workers fork from it in milliseconds,
# where each spawned one took seconds on a busy core) and not counted in a recording's memory budget.
# WFDB's reader (a second to import, with pandas) is the common one; the readers of other formats
# import their libraries when they first meet one.
_PRELOAD = ("ecg_edge.input_pool", "ecg_edge.exams", "scipy.signal", "scipy.ndimage", "h5py", "wfdb")
# A worker is one core's worth of work: numpy's BLAS threads in each would only crowd the others.
_ONE_THREAD = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
MEASURING = "neurokit2"  # seconds to import: a recording's time budget must not pay it


def _preload(options: ReadOptions) -> list[str]:
    from ecg_edge.measure import available

    return [*_PRELOAD, *([MEASURING] if options.measure != "off" and available() else [])]

def _die_with_parent(owner: int) -> None:
    """Linux: the kernel kills this worker when its parent (the fork server, which leaves when the
    pool's owner does) dies, however it dies (SIGKILL included)."""
    import ctypes

    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    try:
        os.kill(owner, 0)
    except ProcessLookupError:
        os._exit(1)
    if os.getppid() != parent:  # the parent went before the request took hold
        os._exit(1)


def _limit_memory(megabytes: int) -> None:
    import resource

    with open("/proc/self/status") as status:  # the address space already mapped: libraries, heap
        held = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    limit = held + megabytes * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


def _work(conn: Connection, options: ReadOptions, budget: Budget, owner: int) -> None:
    """A worker's life: units in, (kind, payload, skipped, seconds) out, until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _die_with_parent(owner)
    from ecg_edge.exams import iter_exams

    for module in _preload(options):  # where the workers were spawned rather than forked
        with contextlib.suppress(ImportError):  # as the fork server does
            importlib.import_module(module)
    if os.path.exists("/proc/self/status"):
        _limit_memory(budget.memory_mb)
    conn.send("ready")  # a unit's time counts from here on: starting takes seconds on a busy machine
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        unit, options = task
        start = time.perf_counter()
        skipped: list[str] = []
        reply: tuple[str, Any]
        try:
            reply = ("exams", list(iter_exams([unit.path], options, skipped.append, rows=unit.rows)))
        except InputError as exc:
            reply = ("input", (exc.path, exc.problem))
        except MemoryError:
            reply = ("input", (str(unit.path), f"needs more than the memory budget of a recording "
                                               f"({budget.memory_mb} MB); refused"))
        except Exception:  # a fault of ours, not of the input: the parent raises it with this traceback
            reply = ("fault", traceback.format_exc())
        conn.send((*reply, skipped, time.perf_counter() - start))


# In the parent.

def _context(preload: list[str]) -> Any:
    """Fork server where there is one (the parent may run onnxruntime's, Ray's or the reader's threads:
    no plain fork), else spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(preload)  # taken by the first pool of a process, which starts the server
    return context


class WorkerFault(RuntimeError):
    """A worker failed for a reason other than its input (a bug): the worker's traceback, the file named."""


@dataclass
class _Worker:
    process: Any
    conn: Connection
    unit: tuple[int, Unit] | None = None
    started: float = 0.0
    ready: bool = False


class InputPool:
    """`workers` processes reading exams: for one consumer at a time, in input order (`with
    InputPool(...) as pool: for exam, x in pool.exams(paths, on_skip)`), or a recording at a time
    for any number of threads (`pool.read(paths, options)`: a server's requests); a pool serves one
    way or the other. Closing it (also on Ctrl-C, SIGTERM turned into KeyboardInterrupt by
    `sigterm_as_interrupt`, or an error) stops every worker."""

    def __init__(self, workers: int, options: ReadOptions, budget: Budget | None = None) -> None:
        if workers < 1:
            raise ValueError("an InputPool has at least one worker; read in this process with exams.iter_exams")
        self.size = workers
        self.options = options
        self.budget = budget or Budget()
        self.stats = InputStats(workers=workers)
        self._workers: list[_Worker] = []
        self._closed = threading.Event()
        self._lock = threading.Lock()  # close() (the main thread) against _replace (the reading thread)
        self._failed_starts = 0
        self._idle: queue.Queue[_Worker] = queue.Queue()  # for `read`; `map` hands out work itself

    def __enter__(self) -> InputPool:
        self._workers = [self._start() for _ in range(self.size)]
        for worker in self._workers:
            self._idle.put(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> _Worker:
        context = _context(_preload(self.options))
        ours, theirs = context.Pipe()
        process = context.Process(target=_work, args=(theirs, self.options, self.budget, os.getpid()),
                                  name="ecg-edge-input", daemon=True)
        # Ctrl-C reaches the whole process group; the parent alone handles it and stops the workers.
        # A fork server started with SIGINT ignored keeps it ignored (through exec, in Python, and in
        # the workers it forks); only its launch, not the seconds of its imports, runs with SIGINT
        # ignored here. A spawned worker ignores it once started (`_work`).
        if context.get_start_method() == "forkserver" and threading.current_thread() is threading.main_thread():
            from multiprocessing import forkserver

            # Blocked as well: Linux keeps a blocked signal pending even while it is ignored, so a Ctrl-C
            # that reaches this thread meanwhile is delivered to the restored handler, not lost.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            saved = {name: os.environ.get(name) for name in _ONE_THREAD}
            os.environ.update({name: "1" for name in _ONE_THREAD})
            try:
                forkserver.ensure_running()
            finally:
                signal.signal(signal.SIGINT, previous)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name)
                    else:
                        os.environ[name] = value
        process.start()
        theirs.close()
        return _Worker(process, ours)

    def close(self) -> None:
        """Stop every worker now (work in hand is dropped) and wait for them to go."""
        with self._lock:
            self._closed.set()
            for worker in self._workers:
                if worker.process.is_alive():
                    worker.process.kill()
            for worker in self._workers:
                worker.process.join(timeout=5)
                worker.conn.close()

    def _replace(self, worker: _Worker) -> _Worker:
        """Stop `worker` (if it still runs) and start another in its place."""
        with self._lock:
            if self._closed.is_set():
                raise InputError(None, "input workers stopped")
            worker.process.kill()
            worker.process.join(timeout=5)
            worker.conn.close()
            new = self._start()
            self._workers[self._workers.index(worker)] = new
            return new

    def exams(self, paths: Sequence[Path], on_skip: Callable[[str], None]) -> Iterator[tuple[Exam, np.ndarray]]:
        """(exam, model input) of every input, in input order, as `exams.iter_exams` yields them."""
        return self.map(units_of(paths), on_skip)

    def map(self, units: Iterable[Unit], on_skip: Callable[[str], None]) -> Iterator[tuple[Exam, np.ndarray]]:
        pending = iter(units)
        more = True
        given = 0  # units handed out so far; their index is their order
        next_out = 0
        done: dict[int, tuple[Unit, tuple[Any, ...]]] = {}
        window = IN_FLIGHT_PER_WORKER * self.size
        while True:
            stop.check()  # a Ctrl-C swallowed on the way (see ecg_edge.stop) still stops the reading
            for worker in self._workers:  # hand out work, at most `window` units ahead of the consumer
                if worker.ready and worker.unit is None and more and given - next_out < window:
                    unit = next(pending, None)
                    if unit is None:
                        more = False
                        break
                    worker.unit, worker.started = (given, unit), time.monotonic()
                    with contextlib.suppress(OSError):  # a worker already gone: _collect finds it so
                        worker.conn.send((unit, self.options))
                    given += 1
            while next_out in done:  # in input order
                stop.check()
                unit, reply = done.pop(next_out)
                next_out += 1
                yield from self._delivered(unit, reply, self.options, on_skip)
            if all(w.unit is None for w in self._workers):
                if not more:
                    return
                if all(w.ready for w in self._workers):
                    continue  # delivering made room: hand out again
            self._collect(done)

    def _collect(self, done: dict[int, tuple[Unit, tuple[Any, ...]]]) -> None:
        """Wait for a reply, a worker ready or gone, or a deadline; file what happened under the unit's index."""
        busy = [w for w in self._workers if w.unit is not None]
        starting = [w for w in self._workers if not w.ready]
        deadline = min(w.started for w in busy) + self.budget.time_s if busy else None
        watched = busy + starting
        ready = set(wait([w.conn for w in watched] + [w.process.sentinel for w in watched],
                         timeout=None if deadline is None else max(0.0, deadline - time.monotonic())))
        if self._closed.is_set():
            raise InputError(None, "input workers stopped")
        for worker in starting:
            if worker.conn in ready or worker.process.sentinel in ready:
                self._started(worker)
        now = time.monotonic()
        for worker in busy:
            assert worker.unit is not None
            index, unit = worker.unit
            if worker.conn in ready or worker.process.sentinel in ready:
                reply = self._reply(worker, unit)
                if worker.process.exitcode is not None:
                    self._replace(worker)
            elif now - worker.started > self.budget.time_s:
                self._replace(worker)
                reply = self._over_time(unit, now - worker.started)
            else:
                continue
            worker.unit = None
            done[index] = (unit, reply)

    def read(self, paths: Sequence[Path], options: ReadOptions) -> list[tuple[Exam, np.ndarray]]:
        """Every exam of `paths` (a server request's recording) read by one worker, within the budget,
        with these options; several threads may call it at once, each waiting for an idle worker.
        Errors raise as in `exams` (and skips are dropped: a request is read whole or refused)."""
        worker = self._idle.get()
        try:
            found: list[tuple[Exam, np.ndarray]] = []
            for unit in units_of(paths):
                while not worker.ready:
                    wait([worker.conn, worker.process.sentinel])
                    worker = self._started(worker)
                worker.started = time.monotonic()
                with contextlib.suppress(OSError):  # a worker already gone: its sentinel says so
                    worker.conn.send((unit, options))
                ready = wait([worker.conn, worker.process.sentinel], timeout=self.budget.time_s)
                reply = self._reply(worker, unit) if ready else self._over_time(unit, self.budget.time_s)
                if not ready or worker.process.exitcode is not None:
                    worker = self._replace(worker)
                found += self._delivered(unit, reply, options, lambda message: None)
            return found
        finally:
            self._idle.put(worker)

    def _reply(self, worker: _Worker, unit: Unit) -> tuple[Any, ...]:
        """What a worker whose pipe or sentinel is ready has to say: its reply, or that it died."""
        if worker.conn.poll():
            try:
                return worker.conn.recv()
            except (EOFError, OSError):
                pass
        return self._gone(worker, unit)

    def _over_time(self, unit: Unit, seconds: float) -> tuple[Any, ...]:
        return ("input", (str(unit.path), f"took longer than the time budget of a recording "
                                          f"({self.budget.time_s:g} s); stopped"), [], seconds)

    def _started(self, worker: _Worker) -> _Worker:
        """A starting worker is ready, or died before it was (then another, a few times at most)."""
        try:
            worker.ready = worker.conn.recv() == "ready"
            return worker
        except (EOFError, OSError):
            worker.process.join(timeout=5)
            self._failed_starts += 1
            if self._failed_starts > 3 * self.size:
                raise WorkerFault(f"input workers fail to start (the last: exit status {worker.process.exitcode})"
                                  ) from None
            return self._replace(worker)

    def _gone(self, worker: _Worker, unit: Unit) -> tuple[Any, ...]:
        worker.process.join(timeout=5)
        code = worker.process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        return ("input", (str(unit.path), f"the worker reading it stopped ({how})"), [], 0.0)

    def _delivered(self, unit: Unit, reply: tuple[Any, ...], options: ReadOptions, on_skip: Callable[[str], None]
                   ) -> Iterator[tuple[Exam, np.ndarray]]:
        kind, payload, skipped, seconds = reply
        self.stats.seconds += seconds
        for message in skipped:
            on_skip(message)
        if kind == "fault":
            raise WorkerFault(f"{unit.path}: reading it failed in a worker:\n{payload}")
        if kind == "input":
            error = InputError(*payload)
            if not options.keep_going:
                raise error
            on_skip(str(error))
            return
        self.stats.exams += len(payload)
        yield from payload
