"""`manifest.json`: what an export folder holds, how it was made and how well it matched.

The runtime reads it too (no TensorFlow here): backends refuse a file whose sha256 differs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import IO, Any

from ecg_edge.atomic_files import atomic_write
from ecg_edge.errors import InputError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON all at once (see `atomic_write`)."""

    def dump(f: IO[str]) -> None:
        json.dump(data, f, indent=2)
        f.write("\n")

    atomic_write(path, dump)


def load_manifest(export_dir: str | Path) -> dict[str, Any]:
    """Read and sanity-check an export folder's manifest."""
    path = Path(export_dir) / MANIFEST_NAME
    if not path.exists():
        raise InputError(export_dir, f"no {MANIFEST_NAME}: not an ecg-edge export folder (run `ecg-edge export`)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"manifest is not valid JSON ({exc})") from None
    for key in ("format", "model", "input", "output", "thresholds", "files"):
        if key not in manifest:
            raise InputError(path, f"manifest lacks '{key}'")
    if manifest["format"] != FORMAT_VERSION:
        raise InputError(path, f"manifest format {manifest['format']}, this ecg-edge reads {FORMAT_VERSION}")
    return manifest


def find_file(manifest: dict[str, Any], fmt: str, precision: str, variant: str = "default") -> str | None:
    """Name of the file of a format ('onnx' or 'tensorrt') and precision, preferring `variant`
    (TensorRT, through onnxruntime too, needs the 'symmetric' INT8 file)."""
    matches = [
        name for name, entry in manifest["files"].items()
        if entry["format"] == fmt and entry["precision"] == precision
    ]
    matches.sort(key=lambda name: manifest["files"][name].get("variant") != variant)
    return matches[0] if matches else None


def verified_path(export_dir: str | Path, manifest: dict[str, Any], name: str) -> Path:
    """The path of a manifest file after checking that it exists and its sha256 matches."""
    path = Path(export_dir) / name
    entry = manifest["files"].get(name)
    if entry is None:
        raise InputError(path, "file is not listed in the manifest")
    if not path.exists():
        raise InputError(path, "file listed in the manifest is missing")
    if sha256_file(path) != entry["sha256"]:
        raise InputError(path, "sha256 does not match the manifest: file changed or corrupt; re-export")
    return path
