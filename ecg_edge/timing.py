"""The timing of one backend: warm-up, then timed runs; latency percentiles and throughput.

Latency is host latency per batch (feed in, probabilities out: trtexec's "host latency"); TensorRT
adds the device's compute time measured with CUDA events (trtexec's "GPU compute time").
Just above the backend contract: `auto`'s CPU runtime choice (backends/choice.py) and the
benchmark matrix (bench.py) both time backends with it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ecg_edge.backends.base import Backend
from ecg_edge.spec import LEADS, N_SAMPLES

N_BUFFERS = 4  # inputs rotate among these, so no cache holds a single batch


@dataclass
class BenchResult:
    backend: str
    precision: str
    batch: int
    runs: int
    throughput_ecg_per_s: float
    latency_ms: dict[str, float]
    gflops_per_s: float
    describe: str
    compute_ms: dict[str, float] | None = None
    isa: str | None = None  # CPU runtimes: what their kernels ran on (AMX or not)
    share_of_cpu_peak: float | None = None
    samples_ms: list[float] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("samples_ms")
        return out


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000
    return {"min": float(ms.min()), "mean": float(ms.mean()), "median": float(np.median(ms)),
            "p90": float(np.percentile(ms, 90)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99)), "max": float(ms.max())}


def bench_backend(
    backend: Backend, batch: int, flops_per_ecg: float, warmup_s: float = 1.0, duration_s: float = 5.0,
    min_runs: int = 10, seed: int = 0,
) -> BenchResult:
    """Warm up, then time runs until both `duration_s` and `min_runs` are reached."""
    rng = np.random.default_rng(seed)
    buffers = [rng.normal(0, 0.5, (batch, N_SAMPLES, len(LEADS))).astype(np.float32) for _ in range(N_BUFFERS)]
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < warmup_s or i < 2:
        backend.infer(buffers[i % N_BUFFERS])
        i += 1
    latencies: list[float] = []
    compute: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < duration_s or len(latencies) < min_runs:
        t0 = time.perf_counter()
        backend.infer(buffers[len(latencies) % N_BUFFERS])
        latencies.append(time.perf_counter() - t0)
        if backend.last_compute_s is not None:  # TensorRT's CUDA-event time
            compute.append(backend.last_compute_s)
    mean_s = float(np.mean(latencies))
    throughput = batch / mean_s
    return BenchResult(
        backend=backend.name, precision=backend.precision, batch=batch, runs=len(latencies),
        throughput_ecg_per_s=throughput, latency_ms=percentiles(latencies),
        gflops_per_s=throughput * flops_per_ecg / 1e9, describe=backend.describe(),
        compute_ms=percentiles(compute) if compute else None, isa=backend.isa,
        samples_ms=[x * 1000 for x in latencies],
    )
