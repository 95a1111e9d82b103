"""Any readable recordings into one CODE-layout HDF5 file, streamed batch by batch.

The file holds `tracings` (N, 4096, 12) float32 (the model's input: 400 Hz, mV, model lead
order), `exam_id` and `source` (UTF-8 strings), so that a folder of hospital files becomes a
training or batch-inference set that every command reads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from ecg_edge.atomic_files import atomic_target
from ecg_edge.errors import InputError
from ecg_edge.exams import ReadOptions, batches_of, iter_exams
from ecg_edge.input_pool import Budget, InputPool
from ecg_edge.readers import expand_inputs
from ecg_edge.results import check_not_an_input
from ecg_edge.spec import HDF5_SUFFIXES, LEADS, N_SAMPLES, SAMPLING_RATE_HZ, UNITS

BATCH_EXAMS = 64


def check_hdf5_output(path: Path, inputs: Sequence[str | Path] = ()) -> None:
    check_not_an_input(path, inputs)
    if path.suffix.lower() not in HDF5_SUFFIXES:
        raise InputError(path, f"output must end in {' or '.join(HDF5_SUFFIXES)}")
    if not path.parent.is_dir():
        raise InputError(path.parent, "output folder does not exist")
    if path.is_dir():
        raise InputError(path, "is a folder, expected a file name")


def convert_to_hdf5(
    inputs: Sequence[str | Path], out: str | Path, options: ReadOptions | None = None,
    progress: Callable[[int], None] | None = None, on_skip: Callable[[str], None] | None = None,
    workers: int = 0, budget: Budget | None = None,
) -> int:
    """Write every exam of `inputs` into `out`; returns the number written. `out` appears only when complete.
    `workers`: input worker processes (`ecg_edge.input_pool`), or 0 to read in this process."""
    import h5py

    out = Path(out)
    check_hdf5_output(out, inputs)
    options = replace(options or ReadOptions(), assess=False, measure="off")  # the signal, not its flags or rate
    paths = expand_inputs(inputs)
    n = 0
    text = h5py.string_dtype()
    skip = on_skip or (lambda message: None)
    pool = InputPool(workers, options, budget) if workers else None
    exams = pool.exams(paths, skip) if pool else iter_exams(paths, options, skip)
    with atomic_target(out) as tmp, pool or contextlib.nullcontext():
        with h5py.File(tmp, "w") as f:
            tracings = f.create_dataset("tracings", shape=(0, N_SAMPLES, len(LEADS)), dtype="float32",
                                        maxshape=(None, N_SAMPLES, len(LEADS)), chunks=(1, N_SAMPLES, len(LEADS)))
            exam_ids = f.create_dataset("exam_id", shape=(0,), maxshape=(None,), dtype=text)
            sources = f.create_dataset("source", shape=(0,), maxshape=(None,), dtype=text)
            tracings.attrs["units"] = UNITS
            tracings.attrs["sampling_rate_hz"] = SAMPLING_RATE_HZ
            tracings.attrs["leads"] = list(LEADS)
            for batch in batches_of(exams, BATCH_EXAMS):
                k = len(batch.ids)
                for dataset in (tracings, exam_ids, sources):
                    dataset.resize(n + k, axis=0)
                tracings[n:n + k] = batch.x
                exam_ids[n:n + k] = batch.ids
                sources[n:n + k] = batch.sources
                n += k
                if progress:
                    progress(k)
        if n == 0:
            raise InputError(inputs[0] if inputs else None, "no exam could be read")
    return n
