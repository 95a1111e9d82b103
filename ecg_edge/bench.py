"""Benchmarks: the matrix of backends, precisions and batch sizes, against the machine's peak.

Each row is one backend timed by `ecg_edge.timing.bench_backend` (host latency per batch; TensorRT
rows add the device's compute time); the report carries the machine's facts (`ecg_edge.host`), the
FLOPs per ECG counted from the ONNX graph and the CPU's float32 peak.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecg_edge import host, timing
from ecg_edge.atomic_files import atomic_target, atomic_write_bytes
from ecg_edge.errors import InputError
from ecg_edge.manifest import Manifest
from ecg_edge.spec import PRECISIONS

# Names that moved out of this module: importable from here for one release, with a DeprecationWarning.
_MOVED = {"cpu_model": host, "package_versions": host, "environment": host,
          "bench_backend": timing, "BenchResult": timing, "percentiles": timing, "N_BUFFERS": timing}


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


def measure_cpu_peak(cache_dir: Path | None = None, n: int = 2048, repeats: int = 5) -> float:
    """float32 GFLOP/s of a large numpy matrix product (best of `repeats`), cached per machine."""
    key = f"{host.cpu_model()}|{os.cpu_count()}|numpy {np.__version__}"
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


def write_plot(results: list[timing.BenchResult], path: Path) -> None:
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


@dataclass
class BenchMatrix:
    """What `bench_matrix` measured: the machine, the export, the work per ECG, the CPU's peak and
    one `BenchResult` per (backend, precision, batch), each with its latency samples."""

    environment: dict[str, Any]
    export: str
    gflop_per_ecg: float
    cpu_peak_gflops: float
    results: list[timing.BenchResult]

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON holds it (no samples)."""
        return {"environment": self.environment, "export": self.export, "gflop_per_ecg": self.gflop_per_ecg,
                "cpu_peak_gflops": self.cpu_peak_gflops, "results": [r.as_dict() for r in self.results]}


def bench_matrix(
    export_dir: Path, batches: list[int], backends: list[str], precisions: list[str], warmup_s: float,
    duration_s: float, threads: int | None, cache_dir: Path | None = None, log: Any = lambda line: None,
    cuda_graph: bool = False,
) -> BenchMatrix:
    """Every (backend, precision, batch) asked for, or every one present; with the environment.

    With `cuda_graph`, ort-cuda runs with a CUDA graph, one session per batch size (a graph
    replays the one shape it captured)."""
    from ecg_edge.backends import AUTO_ORDER, backend_present, open_backend
    from ecg_edge.backends.registry import spec_of

    manifest = Manifest.load(export_dir)
    if cuda_graph:
        ok, why = backend_present("ort-cuda", manifest, precisions[0] if precisions else "fp32")
        if not ok or (backends and "ort-cuda" not in backends):
            raise InputError(None, f"--cuda-graph runs with the ort-cuda backend: {why or 'not among --backend'}")
    fp32 = manifest.file_for("onnx", "fp32")
    if fp32 is None:
        raise InputError(export_dir, "no FP32 ONNX file to count FLOPs from")
    flops = count_flops(manifest.verified(fp32))
    peak = measure_cpu_peak(cache_dir)
    asked = bool(backends and precisions)  # both named: a combination that cannot run is an error
    gated = {p for p, e in manifest.data.get("runtime_precisions", {}).items() if e.get("parity", {}).get("passed")}
    precisions = precisions or sorted({e["precision"] for e in manifest.files.values()} | gated,
                                      key=PRECISIONS.index)
    results: list[timing.BenchResult] = []
    for name in backends or AUTO_ORDER:
        spec = spec_of(name)
        for precision in precisions:
            present, why = backend_present(name, manifest, precision)
            if not present and not asked:
                if backends:
                    log(f"skip {name} {precision}: {why}")
                continue
            kind = spec.kind if spec else None
            if kind == "reference" and precision != "fp32":  # the reference runs in float32 only
                continue
            graph = cuda_graph and spec is not None and spec.cuda_graph
            for group in ([b] for b in batches) if graph else [batches]:
                runner, _ = open_backend(export_dir, name, precision, threads=threads, cuda_graph=graph)
                with runner:
                    for batch in group:
                        if runner.max_batch is not None and batch > runner.max_batch:
                            log(f"skip {name} {precision} batch {batch}: engine profile ends at {runner.max_batch}")
                            continue
                        log(f"{runner.name} {precision} batch {batch} ...")
                        result = timing.bench_backend(runner, batch, flops, warmup_s, duration_s)
                        if kind in ("cpu", "reference") and precision == "fp32":  # float32 peak
                            result.share_of_cpu_peak = result.gflops_per_s / peak
                        results.append(result)
    return BenchMatrix(host.environment(), str(export_dir), flops / 1e9, peak, results)


class MatrixReport(dict[str, Any]):
    """`run_matrix`'s report: `BenchMatrix.as_dict()`. `report["_results"]`, the BenchResults
    themselves, still answers for one release, with a DeprecationWarning (use `bench_matrix`)."""

    def __init__(self, matrix: BenchMatrix) -> None:
        super().__init__(matrix.as_dict())
        self._results = matrix.results

    def __missing__(self, key: str) -> Any:
        if key != "_results":
            raise KeyError(key)
        warnings.warn('run_matrix(...)["_results"] goes in the next release: bench_matrix(...).results has them',
                      DeprecationWarning, stacklevel=2)
        return self._results


def run_matrix(
    export_dir: Path, batches: list[int], backends: list[str], precisions: list[str], warmup_s: float,
    duration_s: float, threads: int | None, cache_dir: Path | None = None, log: Any = lambda line: None,
    cuda_graph: bool = False,
) -> dict[str, Any]:
    """`bench_matrix`, as the dict its JSON holds."""
    return MatrixReport(bench_matrix(export_dir, batches, backends, precisions, warmup_s, duration_s, threads,
                                     cache_dir, log, cuda_graph))


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


if not TYPE_CHECKING:  # hidden from mypy, which then flags the old spellings in this repository
    from ecg_edge.deprecation import moved_names

    __getattr__ = moved_names(__name__, _MOVED)
