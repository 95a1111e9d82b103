"""The export pipeline: Keras -> ONNX FP32 -> FP16 and INT8 (-> TensorRT), each step validated.

Nothing is done until validated (as optimum's exporters): every file is compared with its
reference on held-out ECGs, and a file that fails its gate is not written. All work happens in a
staging folder; files move into place only after their gates, and the manifest comes last.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecg_edge.errors import MachineError
from ecg_edge.export import engines as _engines
from ecg_edge.export import heldout as _heldout
from ecg_edge.export import options as _options
from ecg_edge.export import publish as _publish
from ecg_edge.export.bf16 import bf16_stage
from ecg_edge.export.engines import add_engines, build_engines
from ecg_edge.export.float_stages import fp16_stage, fp32_stage
from ecg_edge.export.gate import ExportGateError
from ecg_edge.export.int8 import int8_stage
from ecg_edge.export.onnx_export import OPSET
from ecg_edge.export.options import ExportOptions
from ecg_edge.export.table import export_table
from ecg_edge.model_info import LoadedModel
from ecg_edge.parity import Parity
from ecg_edge.staging import staged

# What the commands import from here (export_table and add_engines live in their own modules).
__all__ = ["ExportGateError", "ExportOptions", "ExportResult", "add_engines", "export_model", "export_table"]

# Names that moved out of this module: importable from here for one release, with a DeprecationWarning.
_MOVED = {"ONNX_NAMES": _options, "SYMMETRIC_INT8_NAME": _options, "MIN_EXAM_AGREEMENT": _options,
          "DEFAULT_PRECISIONS": _options, "IF_OFFERED": _options, "MIN_REAL_GATE_EXAMS": _heldout,
          "read_exams": _heldout, "load_ecgs": _heldout, "HeldOut": _heldout, "exam_key": _heldout,
          "held_out_sets": _heldout, "trtexec_commands": _engines, "tool_versions": _publish}


@dataclass
class ExportResult:
    out_dir: Path
    manifest: dict[str, Any]
    rejected: dict[str, Parity] = field(default_factory=dict)  # named, failed: the export failed
    refused: dict[str, Parity] = field(default_factory=dict)  # added where offered, failed: a warning


def export_model(
    source: LoadedModel,
    out_dir: str | Path,
    options: ExportOptions | None = None,
    calibration: Sequence[str | Path] = (),
    validation: Sequence[str | Path] = (),
    log: Callable[[str], None] = lambda message: None,
    warn: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export a Keras model (`ecg_edge.training.models.load_keras_model` loads one) into `out_dir`;
    raises ExportGateError (after writing what passed) if a file failed its gate. `warn` (default:
    `log`) gets what a user must not miss."""
    warn = warn or log
    options = options or ExportOptions()
    _check_before_work(options)
    out_dir = Path(out_dir)
    sets = _heldout.held_out_sets(calibration, validation, options)
    warning = _heldout.held_out_warning(sets, options)
    if warning:
        warn(warning)
    out_dir.mkdir(parents=True, exist_ok=True)
    with staged(out_dir, "export") as staging:
        fp32_path, rewrites, gate = fp32_stage(source, staging, sets, options, log, warn)
        if "fp16" in options.precisions:
            fp16_stage(fp32_path, staging, gate, log)
        int8_summary = int8_stage(fp32_path, staging, sets, gate, log) if options.makes_int8() else {}
        if "bf16" in options.wanted():
            bf16_stage(fp32_path, gate, log)
        if options.engine:
            build_engines(staging, staging, gate, log)
        manifest = _publish.export_manifest(source, out_dir, OPSET, rewrites, gate, sets, int8_summary)
        _publish.publish(staging, out_dir, manifest)
    gate.raise_if_failed("files")
    return ExportResult(out_dir=out_dir, manifest=manifest, rejected=gate.rejected, refused=gate.refused)


def _check_before_work(options: ExportOptions) -> None:
    """Options export cannot follow (exit 2), and a machine that cannot run what is named (exit 3)."""
    options.check_precisions()
    options.check_dla()
    if "bf16" in options.precisions:
        from ecg_edge.backends.openvino import bf16_status

        usable, why = bf16_status()
        if not usable:
            raise MachineError("bf16", why)
    if options.engine:
        from ecg_edge.gpu import require_tensorrt

        require_tensorrt("--engine")


if not TYPE_CHECKING:  # hidden from mypy, which then flags the old spellings in this repository
    from ecg_edge.deprecation import moved_names

    __getattr__ = moved_names(__name__, _MOVED)
