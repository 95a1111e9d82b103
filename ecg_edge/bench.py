"""Benchmarks: latency percentiles and throughput per backend and precision, against the machine's peak.

Latency is host latency per batch (feed in, probabilities out: trtexec's "host latency"); TensorRT
rows add the device's compute time measured with CUDA events (trtexec's "GPU compute time").
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ecg_edge.atomic_files import atomic_target, atomic_write_bytes
from ecg_edge.backends.base import Backend
from ecg_edge.errors import InputError
from ecg_edge.spec import LEADS, N_SAMPLES, PRECISIONS

N_BUFFERS = 4  # inputs rotate among these, so no cache holds a single batch


def count_flops(onnx_path: str | Path) -> float:
    """Forward FLOPs per ECG from the ONNX graph: 2 x multiply-adds of Conv, MatMul and Gemm
    (elementwise ops are a rounding error here)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(onnx_path))
    for dim in model.graph.input[0].type.tensor_type.shape.dim[:1]:
        dim.ClearField("dim_param")
        dim.dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes = {}
    for value in [*model.graph.value_info, *model.graph.output, *model.graph.input]:
        shapes[value.name] = [d.dim_value for d in value.type.tensor_type.shape.dim]
    arrays = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    weights = {name: array.shape for name, array in arrays.items()}
    flops = 0.0
    for node in model.graph.node:
        if node.op_type == "Conv":
            kernel = list(weights.get(node.input[1]) or shapes.get(node.input[1]) or [])
            out = shapes.get(node.output[0])
            if not kernel or not out:
                raise ValueError(f"cannot size Conv {node.name}")
            if node.input[1] in arrays:  # input channels whose weights are all zero (a padded stem) are no work
                w = arrays[node.input[1]]
                kernel[1] = int(np.any(w != 0, axis=tuple(i for i in range(w.ndim) if i != 1)).sum())
            # out: (N, C_out, *spatial); kernel: (C_out, C_in/groups, *k)
            flops += 2.0 * float(np.prod(out)) * float(np.prod(kernel[1:]))
        elif node.op_type in ("MatMul", "Gemm"):
            a = shapes.get(node.input[0]) or list(weights.get(node.input[0], ()))
            b = weights.get(node.input[1]) or shapes.get(node.input[1])
            if not a or b is None:
                raise ValueError(f"cannot size {node.op_type} {node.name}")
            flops += 2.0 * float(np.prod(a)) * float(b[-1])
    return flops


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_cpu_peak(cache_dir: Path | None = None, n: int = 2048, repeats: int = 5) -> float:
    """float32 GFLOP/s of a large numpy matrix product (best of `repeats`), cached per machine."""
    key = f"{cpu_model()}|{os.cpu_count()}|numpy {np.__version__}"
    cache = cache_dir / "cpu_peak.json" if cache_dir else None
    if cache and cache.exists():
        stored = json.loads(cache.read_text())
        if stored.get("key") == key:
            return float(stored["gflops"])
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    gflops = 2 * n**3 / best / 1e9
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache, json.dumps({"key": key, "gflops": gflops}).encode())
    return gflops


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Version of each of `names` that is installed (the ones that are not are left out)."""
    found = {}
    for dist in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[dist] = metadata.version(dist)
    return found


def environment() -> dict[str, Any]:
    """The machine and software a result belongs to (read, never set)."""
    env: dict[str, Any] = {"cpu": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(),
                           "python": platform.python_version()}
    env |= package_versions(("onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorflow", "numpy"))
    from ecg_edge.gpu import jetson_facts, nvidia_facts

    nvidia = nvidia_facts()
    if nvidia.get("gpus"):
        first = nvidia["gpus"][0]
        env |= {"gpu": first["name"], "compute_capability": first["compute_capability"],
                "gpu_memory_gib": first["memory_gib"], "nvidia_driver": nvidia["driver"],
                "cuda_driver_api": nvidia["cuda_driver_api"]}
    jetson = jetson_facts()
    if jetson is not None:  # every row's power mode, clocks and L4T release
        env |= {f"jetson_{k}": v for k, v in jetson.items()}
    return env


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
        device_s = getattr(backend, "last_compute_s", None)  # TensorRT's CUDA-event time
        if device_s is not None:
            compute.append(device_s)
    mean_s = float(np.mean(latencies))
    throughput = batch / mean_s
    return BenchResult(
        backend=backend.name, precision=backend.precision, batch=batch, runs=len(latencies),
        throughput_ecg_per_s=throughput, latency_ms=percentiles(latencies),
        gflops_per_s=throughput * flops_per_ecg / 1e9, describe=backend.describe(),
        compute_ms=percentiles(compute) if compute else None, isa=backend.isa,
        samples_ms=[x * 1000 for x in latencies],
    )


def write_plot(results: list[BenchResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.backend}\n{r.precision} b{r.batch}" for r in results]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(results)), 4.5))
    axes[0].boxplot([r.samples_ms for r in results], showfliers=True)
    axes[0].set_xticks(range(1, len(results) + 1), labels, fontsize=8)
    axes[0].set(ylabel="latency per batch (ms)", title="latency distribution", yscale="log")
    axes[1].bar(range(len(results)), [r.throughput_ecg_per_s for r in results])
    axes[1].set_xticks(range(len(results)), labels, fontsize=8)
    axes[1].set(ylabel="ECG/s", title="throughput")
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    with atomic_target(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def run_matrix(
    export_dir: Path, batches: list[int], backends: list[str], precisions: list[str], warmup_s: float,
    duration_s: float, threads: int | None, cache_dir: Path | None = None, log: Any = lambda line: None,
    cuda_graph: bool = False,
) -> dict[str, Any]:
    """Every (backend, precision, batch) asked for, or every one present; with the environment.

    With `cuda_graph`, ort-cuda runs with a CUDA graph, one session per batch size (a graph
    replays the one shape it captured)."""
    from ecg_edge.backends import AUTO_ORDER, backend_present, open_backend
    from ecg_edge.manifest import find_file, load_manifest, verified_path

    manifest = load_manifest(export_dir)
    if cuda_graph:
        ok, why = backend_present("ort-cuda", manifest, precisions[0] if precisions else "fp32")
        if not ok or (backends and "ort-cuda" not in backends):
            raise InputError(None, f"--cuda-graph runs with the ort-cuda backend: {why or 'not among --backend'}")
    fp32 = find_file(manifest, "onnx", "fp32")
    if fp32 is None:
        raise InputError(export_dir, "no FP32 ONNX file to count FLOPs from")
    flops = count_flops(verified_path(export_dir, manifest, fp32))
    peak = measure_cpu_peak(cache_dir)
    asked = bool(backends and precisions)  # both named: a combination that cannot run is an error
    gated = {p for p, e in manifest.get("runtime_precisions", {}).items() if e.get("parity", {}).get("passed")}
    precisions = precisions or sorted({e["precision"] for e in manifest["files"].values()} | gated,
                                      key=PRECISIONS.index)
    results: list[BenchResult] = []
    for name in backends or AUTO_ORDER:
        for precision in precisions:
            present, why = backend_present(name, manifest, precision)
            if not present and not asked:
                if backends:
                    log(f"skip {name} {precision}: {why}")
                continue
            if name == "keras" and precision != "fp32":  # the reference runs in float32 only
                continue
            graph = cuda_graph and name == "ort-cuda"
            for group in ([b] for b in batches) if graph else [batches]:
                runner, _ = open_backend(export_dir, name, precision, threads=threads, cuda_graph=graph)
                with runner:
                    for batch in group:
                        if runner.max_batch is not None and batch > runner.max_batch:
                            log(f"skip {name} {precision} batch {batch}: engine profile ends at {runner.max_batch}")
                            continue
                        log(f"{runner.name} {precision} batch {batch} ...")
                        result = bench_backend(runner, batch, flops, warmup_s, duration_s)
                        if name in ("ort-cpu", "openvino", "keras") and precision == "fp32":  # float32 peak
                            result.share_of_cpu_peak = result.gflops_per_s / peak
                        results.append(result)
    return {"environment": environment(), "export": str(export_dir), "gflop_per_ecg": flops / 1e9,
            "cpu_peak_gflops": peak, "results": [r.as_dict() for r in results], "_results": results}


def bench_table(report: dict[str, Any]) -> Any:
    """Fits 80 columns (min, max and the mean are in the JSON): a cut number would be a wrong one."""
    from rich import box
    from rich.table import Table

    env = report["environment"]
    table = Table(title=f"{env['cpu']} ({env['cores']} cores){' + ' + env['gpu'] if 'gpu' in env else ''}",
                  caption=f"latency per batch; prec: + the CPU kernels' ISA where the runtime says; "
                          f"{report['gflop_per_ecg']:.2f} GFLOP per ECG; peak = CPU float32 "
                          f"{report['cpu_peak_gflops']:.0f} GFLOP/s (numpy matmul)",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for column in ("backend", "prec", "batch", "ECG/s", "p50 ms", "p90 ms", "p99 ms", "GFLOP/s", "peak"):
        table.add_column(column, justify="left" if column in ("backend", "prec") else "right", no_wrap=True)
    for r in report["results"]:
        lat = r["latency_ms"]
        share = r.get("share_of_cpu_peak")
        precision = r["precision"] + (f" {r['isa']}" if r.get("isa") else "")
        table.add_row(r["backend"], precision, str(r["batch"]), f"{r['throughput_ecg_per_s']:.0f}",
                      *(_ms(lat[k]) for k in ("median", "p90", "p99")),
                      f"{r['gflops_per_s']:.0f}", f"{share:.0%}" if share is not None else "-")
    return table


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"
