"""Options and arguments that several commands share: each defined once, with its help text."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ecg_edge.spec import AMPLITUDE_NOTE, BATCH_PROFILE

RECORDINGS_HELP = ("Recordings in any mix of formats (CODE-layout HDF5, WFDB, DICOM, GE MUSE XML, HL7 aECG, "
                   "Philips Sierra XML, EDF/EDF+, .npy), or folders of them.")
TRAINING_DATA_HELP = ("CODE-layout HDF5 file(s), or recordings in any readable format and folders with a labels "
                      "CSV keyed by record (a `record` column: paths relative to the CSV, FILE.h5#i for HDF5 "
                      "exams); the labels CSV last. Or several folders each with its own labels.csv and no CSV "
                      "after them: prepared once into a cache in the model home, split by patient where the "
                      "CSVs have a patient_id.")

# Recordings to read (paths are checked by the commands, which name the file in one line: application.py).
RecordingsArgument = Annotated[list[Path], typer.Argument(help=RECORDINGS_HELP, readable=False)]
TrainingDataArgument = Annotated[list[Path], typer.Argument(help=TRAINING_DATA_HELP, readable=False)]

# Reading
ScaleOption = Annotated[float, typer.Option(help=f"Multiply amplitudes. Expected: {AMPLITUDE_NOTE}.")]
FsOption = Annotated[float | None, typer.Option(help=".npy input: sampling rate in Hz.")]
LeadsOption = Annotated[str | None, typer.Option(help=".npy input: comma-separated lead names.")]
KeepGoingOption = Annotated[bool, typer.Option("--keep-going", help="Report and skip bad files.")]
MeasureOption = Annotated[str, typer.Option(help="Heart rate, PR and QT per exam (the measure extra): off, rate, "
                                                 "intervals, or auto (intervals where sheets are drawn, else the "
                                                 "rate). The rate costs ~9 ms an exam, intervals ~13.")]
WorkersOption = Annotated[str, typer.Option(help="Processes that read, prepare, check and measure the recordings, "
                                                 "each within a time and memory budget per recording: a number, "
                                                 "or auto (from the CPUs and the backend); 0 reads in this process, "
                                                 "without the budget.")]

# Running a model
ModelOption = Annotated[Path | None, typer.Option("--model", help="Export folder (default: the model home's).",
                                                  readable=False)]
BackendOption = Annotated[str, typer.Option(help="auto, tensorrt, ort-tensorrt, ort-cuda, ort-cpu, openvino "
                                                 "or keras.")]
PrecisionOption = Annotated[str, typer.Option(help="fp32, fp16, bf16 (openvino) or int8.")]
BatchOption = Annotated[int, typer.Option(min=1, help="Exams per batch.")]
ThresholdOption = Annotated[list[str] | None, typer.Option(help="VALUE or CLASS=VALUE (repeatable).")]
ThreadsOption = Annotated[int | None, typer.Option(min=1, help="CPU threads for onnxruntime or OpenVINO.")]
CudaGraphOption = Annotated[bool, typer.Option("--cuda-graph", help="ort-cuda: capture the run as a CUDA graph "
                                               "and replay it (fixed batch).")]

# Training and scoring
SeedOption = Annotated[int, typer.Option(help="Random seed.")]
SplitOption = Annotated[str, typer.Option(help="Validation exams: tail (the last share, as the reference), "
                                               "record (by a hash of each record: never on both sides) or "
                                               "patient (whole patients where the labels have a patient_id).")]
AugmentOption = Annotated[bool, typer.Option("--augment/--no-augment", help="Scale, shift, crop, baseline "
                                             "wander, noise and a dropped lead in training batches.")]
BalanceOption = Annotated[bool, typer.Option("--balance/--no-balance", help="Weigh exams of rare classes up.")]
BootstrapOption = Annotated[int, typer.Option(min=10, help="Bootstrap resamples for the 95% intervals.")]

# TensorRT engines
MaxBatchOption = Annotated[int, typer.Option(min=1, help="Largest batch of the engines' profile.")]
DEFAULT_MAX_BATCH = BATCH_PROFILE["max"]


def split_list(values: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']: the comma-separated lists options take."""
    return [v.strip() for v in values.split(",") if v.strip()]
