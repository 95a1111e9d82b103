"""The KServe v2 / Triton tensor protocol for one model, `ecg`: JSON and binary tensor data.

What `tritonclient.http` sends: a JSON header, and with the binary-data extension the raw tensors after
it (`Inference-Header-Content-Length` gives the JSON's length). Input `signal` [N, 4096, 12] FP32; output
the export's probabilities [N, classes] FP32, binary where the request asks for it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecg_edge.serve.bodies import BodyError
from ecg_edge.spec import INPUT_NAME, LEADS, N_SAMPLES

MODEL_NAME = "ecg"
MODEL_VERSION = "1"
HEADER_LENGTH = "inference-header-content-length"
_DIGITS = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class TensorRequest:
    id: str | None
    signal: np.ndarray
    binary_output: bool


def byte_count(text: str | None) -> int | None:
    """A header's byte count: ASCII digits only (`str.isdigit` takes '²', which `int` refuses); None if absent."""
    if text is None:
        return None
    if not _DIGITS.fullmatch(text):
        raise BodyError(400, f"{text[:20]!r} is not a byte count")
    return int(text)


def _parameters(owner: dict[str, Any], where: str) -> dict[str, Any]:
    value = owner.get("parameters")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BodyError(400, f"{where} 'parameters' must be an object")
    return value


def parse_infer(body: bytes, header_length: str | None, output_name: str) -> TensorRequest:
    """The signal tensor of a v2 infer request; a malformed one is a BodyError (400)."""
    length = byte_count(header_length)
    if length is not None:
        if length > len(body):
            raise BodyError(400, f"Inference-Header-Content-Length {length}: the body has {len(body)} bytes")
        head, binary = body[:length], body[length:]
    else:
        head, binary = body, b""
    try:
        request = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BodyError(400, f"infer request is not JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None
    except RecursionError:
        raise BodyError(400, "infer request is JSON nested too deep") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or len(request["inputs"]) != 1:
        raise BodyError(400, f"infer request needs 'inputs' with one tensor, {INPUT_NAME!r}")
    tensor = request["inputs"][0]
    if not isinstance(tensor, dict) or tensor.get("name") != INPUT_NAME:
        raise BodyError(400, f"input must be named {INPUT_NAME!r}")
    if tensor.get("datatype") != "FP32":
        raise BodyError(400, f"input {INPUT_NAME!r} is {tensor.get('datatype')!r}, expected FP32")
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or len(shape) != 3 or not all(isinstance(d, int) for d in shape)
            or shape[1:] != [N_SAMPLES, len(LEADS)] or shape[0] < 1):
        raise BodyError(400, f"input shape {shape}, expected [N, {N_SAMPLES}, {len(LEADS)}] with N >= 1")
    count = shape[0] * N_SAMPLES * len(LEADS)
    size = _parameters(tensor, "input").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size != count * 4 or len(binary) != size:
            raise BodyError(400, f"binary input of {len(binary)} bytes (declared {size}): shape {shape} "
                                 f"needs {count * 4}")
        signal = np.frombuffer(binary, dtype="<f4").reshape(shape)
    else:
        data = tensor.get("data")
        try:
            signal = np.asarray(data, dtype=np.float32).reshape(shape)
        except (TypeError, ValueError, RecursionError):
            raise BodyError(400, f"input data does not hold {count} numbers for shape {shape}") from None
    if not np.isfinite(signal).all():
        raise BodyError(400, "input holds NaN or infinite values")
    outputs = request.get("outputs") or []
    if not isinstance(outputs, list):
        raise BodyError(400, "'outputs' must be a list")
    for out in outputs:
        if not isinstance(out, dict) or out.get("name") != output_name:
            named = out.get("name") if isinstance(out, dict) else out
            raise BodyError(400, f"unknown output {str(named)[:40]!r}: the model has {output_name!r}")
    asked = [bool(_parameters(o, "output").get("binary_data")) for o in outputs]
    binary_output = any(asked) or bool(_parameters(request, "request").get("binary_data_output"))
    request_id = request.get("id")
    return TensorRequest(None if request_id is None else str(request_id), signal, binary_output)


def infer_response(request: TensorRequest, probabilities: np.ndarray, output_name: str) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers."""
    out: dict[str, Any] = {"name": output_name, "datatype": "FP32", "shape": list(probabilities.shape)}
    raw = np.ascontiguousarray(probabilities, dtype="<f4").tobytes()
    if request.binary_output:
        out["parameters"] = {"binary_data_size": len(raw)}
    else:
        out["data"] = probabilities.astype(np.float32).ravel().tolist()
    document: dict[str, Any] = {"model_name": MODEL_NAME, "model_version": MODEL_VERSION, "outputs": [out]}
    if request.id is not None:
        document["id"] = request.id
    head = json.dumps(document).encode()
    if not request.binary_output:
        return head, {"content-type": "application/json"}
    return head + raw, {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}


def model_metadata(manifest: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    """`GET /v2/models/ecg`: the protocol's fields, and the export's model facts under `ecg_edge`."""
    classes = list(manifest["output"]["classes"])
    return {
        "name": MODEL_NAME, "versions": [MODEL_VERSION], "platform": "ecg-edge",
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, N_SAMPLES, len(LEADS)]}],
        "outputs": [{"name": manifest["output"]["name"], "datatype": "FP32", "shape": [-1, len(classes)]}],
        "ecg_edge": {"classes": classes, "thresholds": manifest["thresholds"], "model": manifest["model"], **facts},
    }
