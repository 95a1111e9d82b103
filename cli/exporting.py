"""Commands that turn a model into deployable files: export, engine, triton, check-trt."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ecg_edge.cli.application import command, console, log, say
from ecg_edge.cli.options import DEFAULT_MAX_BATCH, MaxBatchOption, ModelOption, split_list
from ecg_edge.errors import GateError, InputError
from ecg_edge.spec import BATCH_PROFILE


@command()
def export(
    model: Annotated[Path | None, typer.Argument(help="A .keras file or the original model.hdf5 "
                                                      "(default: the model home's model).", readable=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Export folder (default: the model home's).",
                                             readable=False)] = None,
    precision: Annotated[str | None, typer.Option(
        help="Comma-separated: fp32, fp16, bf16, int8; a named one that fails its gate fails the export "
             "(default: fp32,fp16,int8, and bf16 where the CPU offers it, refused with a warning if it fails).")]
    = None,
    calibration: Annotated[list[Path] | None, typer.Option(
        help="INT8 calibration recordings, any readable format (default: a third of --validation's, "
             "topped up with synthetic ECGs).", readable=False)] = None,
    validation: Annotated[list[Path] | None, typer.Option(
        help="Real recordings for the recipe choice and the gates, split between them (synthetic ECGs are "
             "added to each).", readable=False)] = None,
    validation_limit: Annotated[int, typer.Option(min=1, help="Read at most this many --validation exams.")]
    = 1000,
    int8_search: Annotated[str, typer.Option(help="INT8 recipes to try: quick (4) or wide (12, all calibrators, "
                                                  "per-tensor, symmetric).")] = "quick",
    for_tensorrt: Annotated[bool, typer.Option("--for-tensorrt", help="Also write and gate the symmetric INT8 "
                                               "file TensorRT builds from, with trtexec lines (no GPU needed).")]
    = False,
    engine: Annotated[bool, typer.Option("--engine", help="Also build TensorRT engines (needs a GPU).")] = False,
    max_batch: MaxBatchOption = DEFAULT_MAX_BATCH,
    dla_core: Annotated[int | None, typer.Option(help="Jetson: build for this DLA core (GPU fallback).")] = None,
    fp32_atol: Annotated[float, typer.Option(help="FP32 ONNX vs Keras tolerance (max abs).")] = 1e-4,
    triton: Annotated[Path | None, typer.Option("--triton", help="Also write a Triton model repository here "
                                                "(see `ecg-edge triton`).", readable=False)] = None,
) -> None:
    """Export to ONNX FP32/FP16/INT8 (+ TensorRT engines) with a manifest and parity checks."""
    from ecg_edge.export.pipeline import ExportGateError, ExportOptions, export_model, export_table
    from ecg_edge.home import home_export_dir, home_model_path
    from ecg_edge.training.models import load_keras_model

    if model is None and not home_model_path().exists():  # a fresh install: the shipped default model
        from ecg_edge.training.default_model import default_model, install_default

        default_model()
        say("no model in the model home: the shipped default model becomes the home model")
        model = install_default(home_model_path().parent, log=say)
    model = model or home_model_path()
    if not model.exists():
        raise InputError(model, "no such model (train one with `ecg-edge train` or run `ecg-edge demo`)")
    if triton is not None:
        from ecg_edge.export.triton import check_repository_target

        check_repository_target(triton)
    if int8_search not in ("quick", "wide"):
        raise InputError(None, f"--int8-search {int8_search!r}: quick or wide")
    named = {"precisions": split_list(precision), "if_offered": ()} if precision is not None else {}
    options = ExportOptions(**named, engine=engine, for_tensorrt=for_tensorrt,
                            max_batch=max_batch, dla_core=dla_core, fp32_atol=fp32_atol,
                            validation_limit=validation_limit, int8_search=int8_search)
    out = out or home_export_dir()
    try:
        result = export_model(load_keras_model(model), out, options, calibration=calibration or (),
                              validation=validation or (), log=say, warn=log)
    except ExportGateError as exc:  # exit 1, the file named
        raise GateError(f"{model}: {exc}") from None
    console.print(export_table(result.manifest, out))
    console.print(f"wrote {out}")
    if triton is not None:
        from ecg_edge.export.triton import write_triton_repository

        names = write_triton_repository(out, triton)
        console.print(f"wrote {triton}: {', '.join(names)}", highlight=False)


@command()
def engine(
    model: ModelOption = None,
    precision: Annotated[str, typer.Option(help="Comma-separated: fp32, fp16, int8 (INT8 needs the export's "
                                                "model.int8.sym.onnx: export --for-tensorrt).")] = "fp32,fp16,int8",
    validation: Annotated[list[Path] | None, typer.Option(help="Real recordings for the engines' gate (synthetic "
                                                               "ECGs are always used).", readable=False)] = None,
    max_batch: MaxBatchOption = DEFAULT_MAX_BATCH,
    opt_batch: Annotated[int, typer.Option(min=1, help="Batch the engines are tuned for.")] = BATCH_PROFILE["opt"],
    dla_core: Annotated[int | None, typer.Option(help="Jetson: build for this DLA core (FP16/INT8).")] = None,
) -> None:
    """Build and gate TensorRT engines here, from an export's ONNX files (no TensorFlow needed):
    engines run only on the GPU and TensorRT version that built them, so build them on the target."""
    from ecg_edge.export.pipeline import ExportGateError, ExportOptions, add_engines, export_table
    from ecg_edge.home import resolve_export_dir

    export_dir = resolve_export_dir(model)
    options = ExportOptions(precisions=split_list(precision), engine=True, max_batch=max_batch,
                            opt_batch=opt_batch, dla_core=dla_core)
    try:
        manifest = add_engines(export_dir, options, validation=validation or [], log=say)
    except ExportGateError as exc:  # exit 1, the folder named
        raise GateError(f"{export_dir}: {exc}") from None
    console.print(export_table(manifest, export_dir))


@command()
def triton(
    out: Annotated[Path, typer.Option("--out", help="The model repository folder to write (new or empty).",
                                      readable=False)],
    model: ModelOption = None,
    instances: Annotated[str, typer.Option(help="Where the ONNX models run: gpu or cpu (engines: the GPU).")]
    = "gpu",
    trt_accelerator: Annotated[bool, typer.Option("--trt-accelerator", help="ONNX models on the GPU through "
                                                  "onnxruntime's TensorRT provider inside Triton.")] = False,
) -> None:
    """A Triton Inference Server model repository from an export: one model per ONNX file and engine."""
    from ecg_edge.export.triton import write_triton_repository
    from ecg_edge.home import resolve_export_dir

    names = write_triton_repository(resolve_export_dir(model), out, instances, trt_accelerator)
    console.print(f"wrote {out}: {', '.join(names)}", highlight=False)


@command("check-trt")
def check_trt(
    files: Annotated[list[Path], typer.Argument(help="ONNX files meant for TensorRT.", readable=False)],
    tensorrt: Annotated[str, typer.Option(help="TensorRT major release to check against: 10 or 11.")] = "10",
) -> None:
    """What TensorRT's ONNX parser would refuse, checked without TensorRT: Q/DQ types and zero points,
    per-channel axes, opset and operators. Exit 1 when a file breaks a rule."""
    from ecg_edge.export.tensorrt_check import OPSETS, check_tensorrt_onnx

    if tensorrt not in OPSETS:
        raise InputError(None, f"--tensorrt {tensorrt!r}: 10 or 11")
    failed = False
    for path in files:
        if not path.is_file():
            raise InputError(path, "no such file")
        try:
            problems = check_tensorrt_onnx(path, tensorrt)
        except Exception as exc:  # onnx's own parse error: a damaged or non-ONNX file
            raise InputError(path, f"not a readable ONNX model ({type(exc).__name__}: {exc})") from None
        failed |= bool(problems)
        say(f"{path}: {'ok for' if not problems else f'{len(problems)} problems for'} TensorRT {tensorrt}")
        for problem in problems:
            say(f"  {problem}")
    if failed:
        raise typer.Exit(1)
