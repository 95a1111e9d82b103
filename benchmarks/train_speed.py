"""Training speed on this CPU: float32 against bfloat16 mixed precision, side by side in one run.

    python benchmarks/train_speed.py [--steps 8] [--batch 32] [--repeats 2]

Per policy: exams a second of a training step (Adam, binary cross-entropy, the six-class network),
its GFLOP/s (a step counted as 3x the forward FLOPs) against the CPU's measured float32 peak (numpy
matmul), and the input side: the time to read and augment a batch from a cached CODE-layout HDF5 file
as training does, against the step it feeds (Keras runs a PyDataset with one worker in the training
loop, so that share is time the step waits). Policies alternate `--repeats` times so that other load on
the machine falls on both alike. Writes benchmarks/results/train-speed-DATE.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def forward_flops(model) -> float:
    """Multiply-adds x 2 of the Conv1D and Dense layers for one ECG."""
    import keras

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv1D):
            out_len = layer.output.shape[1]
            kernel, in_ch, filters = layer.kernel.shape
            total += 2.0 * out_len * kernel * in_ch * filters
        elif isinstance(layer, keras.layers.Dense):
            total += 2.0 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return total


def step_rate(policy: str, batch: int, steps: int) -> float:
    """Exams a second of `steps` timed training steps after two untimed ones."""
    import keras

    from ecg_edge.training.models import build_ribeiro, compile_for_training

    keras.mixed_precision.set_global_policy(policy)
    try:
        model = compile_for_training(build_ribeiro())
        rng = np.random.default_rng(0)
        x = rng.normal(0, 0.3, (batch, 4096, 12)).astype(np.float32)
        y = (rng.random((batch, 6)) < 0.2).astype(np.float32)
        for _ in range(2):
            model.train_on_batch(x, y)
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        return batch * steps / (time.perf_counter() - start)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def input_seconds(batch: int, batches: int) -> float:
    """Seconds to read and augment one training batch from a CODE-layout HDF5 file (as HDF5Sequence does)."""
    import h5py

    from ecg_edge.synthetic import synthesize
    from ecg_edge.training.augment import Augment
    from ecg_edge.training.data import HDF5Sequence

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.h5"
        x, _ = synthesize(batch * batches, seed=3)
        with h5py.File(path, "w") as f:
            f.create_dataset("tracings", data=x, chunks=(1, 4096, 12))
        labels = {str(i): np.zeros(6, np.float32) for i in range(len(x))}
        seq = HDF5Sequence([path], labels, [(0, i) for i in range(len(x))], batch, shuffle=True, augment=Augment())
        start = time.perf_counter()
        for i in range(len(seq)):
            seq[i]
        seq.close()
        return (time.perf_counter() - start) / len(seq)


def main() -> None:
    from ecg_edge.bench import measure_cpu_peak
    from ecg_edge.host import cpu_model
    from ecg_edge.training.models import build_ribeiro

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    flops = forward_flops(build_ribeiro())
    rates: dict[str, list[float]] = {"float32": [], "mixed_bfloat16": []}
    for _ in range(args.repeats):
        for policy in rates:
            rates[policy].append(step_rate(policy, args.batch, args.steps))
            print(f"{policy}: {rates[policy][-1]:.2f} ECG/s", flush=True)
    feed = input_seconds(args.batch, 4)
    peak = measure_cpu_peak(repeats=10)  # measured last, not cached: the same load as the steps
    lines = [f"# Training speed, {date.today().isoformat()}", "",
             f"CPU: {cpu_model()}, {len(__import__('os').sched_getaffinity(0))} cores; float32 peak "
             f"{peak:.0f} GFLOP/s (numpy matmul); forward {flops / 1e9:.2f} GFLOP per ECG, a step 3x that; "
             f"batch {args.batch}, {args.steps} timed steps, policies alternated {args.repeats} times.", "",
             "| policy | ECG/s (best) | ECG/s (each run) | GFLOP/s | share of fp32 peak | input side / step |",
             "|---|---|---|---|---|---|"]
    for policy, values in rates.items():
        best = max(values)
        step_s = args.batch / best
        lines.append(f"| {policy} | {best:.2f} | {', '.join(f'{v:.2f}' for v in values)} | "
                     f"{3 * flops * best / 1e9:.0f} | {3 * flops * best / 1e9 / peak:.0%} | "
                     f"{feed * 1e3:.0f} ms / {step_s * 1e3:.0f} ms = {feed / (step_s + feed):.1%} |")
    ratio = max(rates["mixed_bfloat16"]) / max(rates["float32"])
    lines += ["", f"bfloat16 / float32: {ratio:.2f}x."]
    text = "\n".join(lines) + "\n"
    out = RESULTS / f"train-speed-{date.today().isoformat()}.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
