"""Which CPU runtime `auto` takes: the one measured fastest on this machine, for this file and precision.

Measured once (a short timing of each runtime present, batch 8) and cached in the model home with
what decides it: the CPU's name and core count, the thread setting, the runtimes' versions and the
model file's sha256. A new CPU, a new runtime version or a new export is measured again.

`open_backend` calls it and hands it the constructor it builds backends with (`construct`): the
choice times the very runners `auto` would open, and never imports the backends package back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ecg_edge.backends.base import Backend
from ecg_edge.host import cpu_model, package_versions
from ecg_edge.timing import bench_backend

CACHE_NAME = "cpu-runtime-choice.json"
TIMING_BATCH = 8
TIMING_S = 0.5  # per runtime, after two warm-up runs: enough to tell them apart, short at first use


def choice_key(manifest: dict[str, Any], precision: str, threads: int | None) -> str:
    from ecg_edge.manifest import find_file

    name = find_file(manifest, "onnx", "fp32" if precision == "bf16" else precision) or ""
    digest = manifest["files"].get(name, {}).get("sha256", "")
    runtimes = package_versions(("onnxruntime", "onnxruntime-gpu", "openvino"))
    versions = ", ".join(f"{k} {v}" for k, v in runtimes.items())
    return f"{cpu_model()}|{os.cpu_count()} cores|threads {threads or 'all'}|{versions}|{digest}|{precision}"


# open_backend's constructor: (export_dir, manifest, backend, precision, threads, cuda_graph) -> a backend
Construct = Callable[[Path, dict[str, Any], str, str, int | None, bool], Backend]


def fastest_cpu_runtime(
    export_dir: Path, manifest: dict[str, Any], precision: str, candidates: list[str], threads: int | None,
    construct: Construct,
) -> tuple[str, str]:
    """(backend, why) for `auto` among the CPU runtimes present, each built by `construct` and timed."""
    from ecg_edge.home import model_home
    from ecg_edge.manifest import write_json_atomic

    cache = model_home() / CACHE_NAME
    key = choice_key(manifest, precision, threads)
    stored: dict[str, Any] = {}
    with contextlib.suppress(OSError, json.JSONDecodeError, UnicodeDecodeError):
        stored = json.loads(cache.read_text())
    entry = stored.get(key)
    if entry is None or set(entry["ecg_per_s"]) != set(candidates):
        entry = {"ecg_per_s": {name: _time(construct(export_dir, manifest, name, precision, threads, False))
                                  for name in candidates},
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
