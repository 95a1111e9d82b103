"""`manifest.json`: what an export folder holds, how it was made and how well it matched.

The runtime reads it too (no TensorFlow here): backends refuse a file whose sha256 differs.
`Manifest` is the typed view the backends read through: which file serves a format and
precision, and that file's path once its hash is checked (each file hashed once per process).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
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


# (path, size, mtime_ns, inode) -> sha256: a file unchanged since it was hashed is not hashed again.
_DIGESTS: dict[tuple[str, int, int, int], str] = {}
# A file modified this close to its hashing could change again within one tick of the file system's
# clock, unseen by mtime (git's "racily clean" entries): its digest is not kept.
RACY_NS = 2_000_000_000


def file_sha256(path: str | Path) -> str:
    """`sha256_file`, computed once per process while the file's size, mtime and inode stay the same."""
    path = Path(path).absolute()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key in _DIGESTS:
        return _DIGESTS[key]
    started = time.time_ns()
    digest = sha256_file(path)
    if stat.st_mtime_ns < started - RACY_NS:
        _DIGESTS[key] = digest
    return digest


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


@dataclass(frozen=True)
class Manifest:
    """A manifest's dict (`data`, as `load_manifest` reads it) with the questions backends ask of
    it; `folder` is the export folder, where `verified` finds the files."""

    data: dict[str, Any]
    folder: Path | None = None
    _verified: dict[str, Path] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def load(cls, export_dir: str | Path) -> Manifest:
        return cls(load_manifest(export_dir), Path(export_dir))

    @property
    def classes(self) -> list[str]:
        return list(self.data["output"]["classes"])

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.data["thresholds"])

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return dict(self.data["files"])

    def entry(self, name: str) -> dict[str, Any]:
        """A file's record ({} for a name the manifest does not list)."""
        return dict(self.data["files"].get(name, {}))

    def runtime_gate(self, precision: str) -> dict[str, Any]:
        """The export's record of a precision a runtime makes of another file (BF16), or {}."""
        return dict(self.data.get("runtime_precisions", {}).get(precision, {}))

    def file_for(self, fmt: str, precision: str, variant: str = "default") -> str | None:
        """Name of the file of a format ('onnx' or 'tensorrt') and precision, preferring `variant`
        (TensorRT, through onnxruntime too, needs the 'symmetric' INT8 file)."""
        files = self.data["files"]
        matches = [name for name, entry in files.items() if entry["format"] == fmt and entry["precision"] == precision]
        matches.sort(key=lambda name: files[name].get("variant") != variant)
        return matches[0] if matches else None

    def verified(self, name: str) -> Path:
        """The path of a listed file after checking that it exists and its sha256 matches."""
        if name not in self._verified:
            if self.folder is None:
                raise ValueError("a Manifest without its folder cannot verify files")
            path = self.folder / name
            entry = self.data["files"].get(name)
            if entry is None:
                raise InputError(path, "file is not listed in the manifest")
            if not path.exists():
                raise InputError(path, "file listed in the manifest is missing")
            if file_sha256(path) != entry["sha256"]:
                raise InputError(path, "sha256 does not match the manifest: file changed or corrupt; re-export")
            self._verified[name] = path
        return self._verified[name]


def find_file(manifest: dict[str, Any], fmt: str, precision: str, variant: str = "default") -> str | None:
    """`Manifest.file_for` on a manifest's dict."""
    return Manifest(manifest).file_for(fmt, precision, variant)


def verified_path(export_dir: str | Path, manifest: dict[str, Any], name: str) -> Path:
    """`Manifest.verified` on a manifest's dict."""
    return Manifest(manifest, Path(export_dir)).verified(name)
