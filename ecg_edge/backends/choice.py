"""Which CPU runtime `auto` takes: the one measured fastest on this machine, for this file and precision.

Measured once (a short timing of each runtime present, batch 8) and cached in the model home with
what decides it: the CPU's name and core count, the thread setting, the runtimes' versions and the
model file's sha256. A new CPU, a new runtime version or a new export is measured again.

`choose_backend` calls it and hands it the opener of its registry entries (`open_candidate`): the
choice times the very backends `auto` would open, and never imports the backends package back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Callable
from typing import Any

from ecg_edge.backends.base import Backend
from ecg_edge.host import cpu_model, package_versions
from ecg_edge.manifest import Manifest, write_json_atomic
from ecg_edge.timing import bench_backend

CACHE_NAME = "cpu-runtime-choice.json"
TIMING_BATCH = 8
TIMING_S = 0.5  # per runtime, after two warm-up runs: enough to tell them apart, short at first use


def choice_key(manifest: Manifest, precision: str, threads: int | None, model_file: str) -> str:
    """What decides the choice, as the cache's key: `model_file` is the export file the candidates run."""
    digest = manifest.entry(model_file).get("sha256", "")
    runtimes = package_versions(("onnxruntime", "onnxruntime-gpu", "openvino"))
    versions = ", ".join(f"{k} {v}" for k, v in runtimes.items())
    return f"{cpu_model()}|{os.cpu_count()} cores|threads {threads or 'all'}|{versions}|{digest}|{precision}"


def fastest_cpu_runtime(
    manifest: Manifest, precision: str, candidates: list[str], threads: int | None, model_file: str,
    open_candidate: Callable[[str], Backend],
) -> tuple[str, str]:
    """(backend, why) for `auto` among the CPU runtimes present (`candidates`, all running
    `model_file`); where the cache has no answer, each is opened by `open_candidate` and timed."""
    from ecg_edge.home import model_home

    cache = model_home() / CACHE_NAME
    key = choice_key(manifest, precision, threads, model_file)
    stored: dict[str, Any] = {}
    with contextlib.suppress(OSError, json.JSONDecodeError, UnicodeDecodeError):
        stored = json.loads(cache.read_text())
    entry = stored.get(key)
    if entry is None or set(entry["ecg_per_s"]) != set(candidates):
        entry = {"ecg_per_s": {name: _time(open_candidate(name)) for name in candidates},
                 "measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "batch": TIMING_BATCH}
        stored[key] = entry
        with contextlib.suppress(OSError):  # a read-only home measures again next time
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(cache, stored)
        how = "measured now"
    else:
        how = f"measured {entry['measured'][:10]}"
    rates = entry["ecg_per_s"]
    best = max(rates, key=rates.get)
    others = ", ".join(f"{name} {rate:.0f}" for name, rate in rates.items() if name != best)
    return best, (f"fastest CPU runtime here for {precision}: {rates[best]:.0f} ECG/s vs {others} "
                  f"({how}, batch {entry.get('batch', '?')})")


def _time(runner: Backend) -> float:
    with runner:
        result = bench_backend(runner, TIMING_BATCH, 0.0, warmup_s=0.0, duration_s=TIMING_S, min_runs=3)
    return result.throughput_ecg_per_s
