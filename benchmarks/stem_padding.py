"""What padding the stem convolution's 12 input channels to 16 costs, and what it does to BF16.

Export's graph rewrites pad the stem (export/graph_passes.pad_stem_channels) because OpenVINO's
AMX-BF16 convolution is wrong for 12 input channels. The rewrite stays in every file only if FP32 and
INT8 pay nothing measurable for it, so this script measures both files side by side, in one run,
alternating A and B: onnxruntime and OpenVINO, FP32 and INT8 (and BF16 where the CPU offers it),
batch 64. It prints padded / unpadded throughput ratios (median and spread over rounds) and each
file's BF16 max |dp| against onnxruntime FP32.

    python benchmarks/stem_padding.py [--model MODEL.keras] [--rounds 5] [--seconds 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ecg_edge.atomic_files import atomic_write_text
from ecg_edge.backends.base import Backend, infer_all
from ecg_edge.backends.onnxruntime import OnnxRuntimeBackend
from ecg_edge.backends.openvino import OpenVinoBackend, bf16_status, openvino_version
from ecg_edge.host import cpu_model
from ecg_edge.synthetic import synthesize
from ecg_edge.timing import bench_backend

RESULTS = Path(__file__).parent / "results"
BATCH = 64


def make_files(model_path: Path | None, folder: Path) -> dict[str, dict[str, Path]]:
    """FP32 and INT8 ONNX, with and without the padded stem, from one model and one calibration."""
    import keras

    from ecg_edge.export.onnx_export import keras_to_onnx
    from ecg_edge.export.precision import Int8Recipe, preprocess_for_quantization, quantize_int8
    from ecg_edge.training.models import build_ribeiro

    keras.utils.set_random_seed(0)
    model = keras.saving.load_model(model_path) if model_path else build_ribeiro()
    calibration = synthesize(64, seed=90_002)[0]
    files: dict[str, dict[str, Path]] = {}
    for name, pad in (("unpadded", False), ("padded", True)):
        fp32, _ = keras_to_onnx(model, folder / f"{name}.onnx", "six", pad_stem=pad)
        prepared = preprocess_for_quantization(fp32, folder / f"{name}.prepared.onnx")
        int8 = quantize_int8(prepared, folder / f"{name}.int8.onnx", calibration, Int8Recipe())
        files[name] = {"fp32": fp32, "int8": int8}
    return files


def runners(files: dict[str, Path], bf16: bool) -> dict[str, Backend]:
    out: dict[str, Backend] = {
        "onnxruntime fp32": OnnxRuntimeBackend(files["fp32"]),
        "onnxruntime int8": OnnxRuntimeBackend(files["int8"], precision="int8"),
        "openvino fp32": OpenVinoBackend(files["fp32"]),
        "openvino int8": OpenVinoBackend(files["int8"], precision="int8"),
    }
    if bf16:
        out["openvino bf16"] = OpenVinoBackend(files["fp32"], precision="bf16")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a trained .keras model (default: random weights)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per file per round")
    parser.add_argument("--out", type=Path, default=None, help="markdown result (default: benchmarks/results/)")
    args = parser.parse_args(argv)
    bf16, why = bf16_status()
    x = synthesize(32, seed=5)[0]
    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(args.model, Path(tmp))
        with OnnxRuntimeBackend(files["unpadded"]["fp32"]) as ref_runner:
            reference = infer_all(ref_runner, x, batch=32)
        exact = {}
        for name in ("padded",):
            with OnnxRuntimeBackend(files[name]["fp32"]) as r:
                exact[name] = float(np.abs(infer_all(r, x, batch=32) - reference).max())
        ratios: dict[str, list[float]] = {}
        rates: dict[str, dict[str, list[float]]] = {"padded": {}, "unpadded": {}}
        bf16_dp: dict[str, float] = {}
        isa: dict[str, str] = {}
        opened = {name: runners(files[name], bf16) for name in ("unpadded", "padded")}
        for label in opened["padded"]:
            for name in ("unpadded", "padded"):
                opened[name][label].activate()
            if label == "openvino bf16":
                for name in ("unpadded", "padded"):
                    out = infer_all(opened[name][label], x, batch=32)
                    bf16_dp[name] = float(np.abs(out - reference).max())
                    isa[name] = opened[name][label].isa or "?"
            for _ in range(args.rounds):  # A, B, A, B ...: drift in the machine's speed hits both
                got = {}
                for name in ("unpadded", "padded"):
                    result = bench_backend(opened[name][label], BATCH, 0.0, warmup_s=0.3, duration_s=args.seconds,
                                           min_runs=3)
                    got[name] = result.throughput_ecg_per_s
                    rates[name].setdefault(label, []).append(got[name])
                ratios.setdefault(label, []).append(got["padded"] / got["unpadded"])
            for name in ("unpadded", "padded"):
                opened[name][label].deactivate()
            print(f"{label}: padded/unpadded {statistics.median(ratios[label]):.3f} "
                  f"({min(ratios[label]):.3f}-{max(ratios[label]):.3f})", flush=True)

    lines = [f"# Stem padding (12 -> 16 input channels): cost and BF16, {dt.date.today()}", "",
             f"{cpu_model()}, {platform.machine()}; OpenVINO {openvino_version()}; batch {BATCH}; "
             f"{args.rounds} rounds x {args.seconds:g} s per file, padded and unpadded alternating; "
             f"model: {args.model or 'random weights (seed 0)'}.", "",
             f"Padded FP32 vs unpadded FP32 (onnxruntime): max |dp| {exact['padded']:.1e} (the rewrite is exact).",
             "", "| runtime, precision | unpadded ECG/s | padded ECG/s | padded / unpadded (median, range) |",
             "|---|---:|---:|---|"]
    for label, values in ratios.items():
        lines.append(f"| {label} | {statistics.median(rates['unpadded'][label]):.1f} | "
                     f"{statistics.median(rates['padded'][label]):.1f} | {statistics.median(values):.3f} "
                     f"({min(values):.3f}-{max(values):.3f}) |")
    lines.append("")
    if bf16:
        lines += [f"OpenVINO BF16 max |dp| vs onnxruntime FP32 on 32 synthetic ECGs: "
                  f"unpadded {bf16_dp['unpadded']:.2e} "
                  f"({isa['unpadded']} kernels), padded {bf16_dp['padded']:.2e} ({isa['padded']} kernels)."]
    else:
        lines += [f"BF16 not measured: {why}."]
    text = "\n".join(lines) + "\n"
    print(text)
    stamp = time.strftime("%Y-%m-%d")
    out = args.out or RESULTS / f"stem-padding-{stamp}-{platform.node() or 'host'}.md"
    atomic_write_text(out, text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
