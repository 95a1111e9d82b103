"""Download the released network and the CODE test set from Zenodo, checked, resumable and atomic.

Zenodo's REST API (`/api/records/<id>`) lists each record's files with their size, MD5 checksum
and download link. A download goes to the cache (`$ECG_EDGE_CACHE`, default `~/.cache/ecg-edge`)
as `<file>.part`, resumed with an HTTP Range request after an interruption; only a file whose size
and checksum match the record is used, and only content that passes its check (done by the caller:
the weights load into the network, the tracings have the CODE layout) is moved into the model home
(staged beside it: `ecg_edge.staging`). A failure leaves the model home as it was; a killed fetch
leaves a staging folder that the next one removes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecg_edge.errors import InputError
from ecg_edge.staging import move_into, staged

DEFAULT_API = "https://zenodo.org/api"
API_ENV = "ECG_EDGE_ZENODO_API"  # a mirror, or a test server
CACHE_ENV = "ECG_EDGE_CACHE"
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60
# No member of these records is near this size: a larger one is refused (zip bombs).
MAX_MEMBER_BYTES = 4 << 30


@dataclass(frozen=True)
class ZenodoRecord:
    name: str
    record: str
    doi: str
    concept_doi: str
    what: str


RECORDS = {
    "weights": ZenodoRecord("weights", "3765717", "10.5281/zenodo.3765717", "10.5281/zenodo.3625017",
                            "the released network (model.zip: model/model.hdf5 and other seeds)"),
    "code-test": ZenodoRecord("code-test", "3765780", "10.5281/zenodo.3765780", "10.5281/zenodo.3625006",
                              "the CODE test set (ecg_tracings.hdf5, 827 exams, and its annotations)"),
}


@dataclass(frozen=True)
class RemoteFile:
    key: str
    size: int
    md5: str
    url: str


def api_base() -> str:
    return (os.environ.get(API_ENV) or DEFAULT_API).rstrip("/")


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ecg-edge"
    return Path(os.environ.get(CACHE_ENV) or default).expanduser()


def _get(url: str, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": "ecg-edge", **(headers or {})})
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)  # noqa: S310 (https, or the user's mirror)
    except urllib.error.HTTPError as exc:
        raise InputError(url, f"server answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(url, f"cannot reach the server ({reason})") from None


def list_files(record: ZenodoRecord) -> list[RemoteFile]:
    """The record's files as Zenodo lists them (key, size, md5, link)."""
    url = f"{api_base()}/records/{record.record}"
    with _get(url, {"Accept": "application/json"}) as response:
        try:
            document = json.loads(response.read(16 << 20))
        except (ValueError, UnicodeDecodeError):
            raise InputError(url, "the record is not JSON") from None
    files = []
    for entry in document.get("files") or []:
        links = entry.get("links") or {}
        link = links.get("self") or links.get("content") or links.get("download")
        checksum = str(entry.get("checksum", ""))
        if not (entry.get("key") and link and checksum.startswith("md5:")):
            continue
        key = str(entry["key"])
        if Path(key).name != key or key in {".", ".."}:
            raise InputError(url, f"the record names a file {key!r} that is not a plain file name")
        files.append(RemoteFile(key, int(entry.get("size", -1)), checksum[4:].lower(), str(link)))
    if not files:
        raise InputError(url, "the record lists no files with an MD5 checksum and a link")
    return files


def source_md5(path: Path, remote: RemoteFile | None) -> str:
    """The MD5 of a file `obtain` returned: the record's (already verified against it), else computed."""
    return remote.md5 if remote is not None else md5_file(path)


def md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, remote: RemoteFile) -> None:
    """Size and MD5 as the record states them; a mismatch is an InputError."""
    size = path.stat().st_size
    if remote.size >= 0 and size != remote.size:
        raise InputError(path, f"{size} bytes, the record says {remote.size} for {remote.key}")
    actual = md5_file(path)
    if actual != remote.md5:
        raise InputError(path, f"MD5 {actual} does not match the record's {remote.md5} for {remote.key}")


def _receive(part: Path, remote: RemoteFile, have: int, progress: Callable[[int, int], None] | None) -> int:
    """Append the rest of `remote` to `part` (from byte `have`); the bytes it then holds."""
    headers = {"Range": f"bytes={have}-"} if have else {}
    with _get(remote.url, headers) as response:
        if have and response.status != 206:  # the server ignored the range: start again
            have = 0
        received = have
        with open(part, "ab" if have else "wb") as f:
            try:
                for block in iter(lambda: response.read(CHUNK_BYTES), b""):
                    f.write(block)
                    received += len(block)
                    if progress:
                        progress(received, remote.size)
            except (OSError, ValueError) as exc:  # connection cut: IncompleteRead, reset, timeout
                raise InputError(remote.url, f"download interrupted at {received} of {remote.size} bytes ({exc}); "
                                             "run the same command again to resume") from None
    return received


def download(remote: RemoteFile, progress: Callable[[int, int], None] | None = None) -> Path:
    """The verified file in the cache; resumes a `.part` left by an interrupted download."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / remote.key
    if done.exists():
        try:
            verify(done, remote)
            return done
        except InputError:
            done.unlink()
    part = folder / f"{remote.key}.part"
    have = part.stat().st_size if part.exists() else 0
    # A part already as long as the file (cut off before its check) is checked, not asked for again.
    received = have if have and have >= remote.size >= 0 else _receive(part, remote, have, progress)
    if remote.size >= 0 and received < remote.size:
        raise InputError(remote.url, f"download ended at {received} of {remote.size} bytes; "
                                     "run the same command again to resume")
    try:
        verify(part, remote)
    except InputError:
        part.unlink()  # a corrupt file is not resumed
        raise
    os.replace(part, done)
    return done


def local_file(path: Path, remote: RemoteFile | None) -> Path:
    """A file the user downloaded by hand, checked against the record when the record could be listed."""
    if not path.is_file():
        raise InputError(path, "no such file")
    if remote is not None:
        verify(path, remote)
    return path


def zip_member(archive: Path, wanted: Callable[[str], bool], describe: str, out: Path) -> Path:
    """Extract the first member whose name `wanted` accepts into `out` (streamed, size-checked)."""
    try:
        with zipfile.ZipFile(archive) as z:
            members = [m for m in z.infolist() if not m.is_dir() and wanted(m.filename)]
            if not members:
                names = ", ".join(m.filename for m in z.infolist()[:8]) or "nothing"
                raise InputError(archive, f"the archive holds no {describe} (it holds {names})")
            member = members[0]
            if member.file_size > MAX_MEMBER_BYTES:
                raise InputError(archive, f"{member.filename} would unpack to {member.file_size} bytes")
            with z.open(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK_BYTES)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise InputError(archive, f"not a readable zip archive ({exc})") from None
    return out


@contextlib.contextmanager
def home_stage(home: Path) -> Iterator[Path]:
    """A staging folder inside the model home (same file system, so moves out of it are renames),
    removed when the block ends; one that a killed fetch left is removed first. On failure the home
    is left as it was, and removed when this run created it."""
    home_existed = home.exists()
    home.mkdir(parents=True, exist_ok=True)
    try:
        with staged(home, "fetch") as stage:
            yield stage
    except BaseException:
        if not home_existed:
            shutil.rmtree(home, ignore_errors=True)
        raise


def publish(stage: Path, home: Path, names: list[str], keep_previous: list[str]) -> list[str]:
    """Move `names` from `stage` into `home`; what `keep_previous` names is moved to home/previous/ first."""
    moved_aside = []
    previous = home / "previous"
    for name in keep_previous:
        if (home / name).exists():
            previous.mkdir(exist_ok=True)
            target = previous / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(home / name, target)
            moved_aside.append(name)
    move_into(stage, names, home)
    return moved_aside


def remote_file(record: ZenodoRecord, wanted: Callable[[str], bool], offline_ok: bool) -> RemoteFile | None:
    """The record's file that `wanted` accepts; None when offline and `offline_ok` (a file given by hand)."""
    try:
        files = list_files(record)
    except InputError:
        if offline_ok:
            return None
        raise
    for f in files:
        if wanted(f.key):
            return f
    keys = ", ".join(f.key for f in files)
    raise InputError(f"{api_base()}/records/{record.record}", f"no file for {record.what} (files: {keys})")


def obtain(record: ZenodoRecord, wanted: Callable[[str], bool], from_file: Path | None,
           progress: Callable[[int, int], None] | None, log: Callable[[str], None]) -> tuple[Path, RemoteFile | None]:
    """The record's file, downloaded and verified, or the user's own copy (verified where Zenodo answers)."""
    remote = remote_file(record, wanted, offline_ok=from_file is not None)
    if from_file is None:
        assert remote is not None  # remote_file raises when it cannot list the record
        return download(remote, progress), remote
    if remote is None:
        log(f"Zenodo not reachable: the checksum of {from_file} is not verified; its content is")
    return local_file(from_file, remote), remote


CODE_TEST_DIR = "code-test"
TRACINGS = "ecg_tracings.hdf5"
GOLD_STANDARD = "gold_standard.csv"


def _is_tracings_source(key: str) -> bool:
    return key == TRACINGS or key.lower().endswith(".zip")


def fetch_code_test(home: Path, from_file: Path | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    log: Callable[[str], None] = lambda line: None) -> Path:
    """HOME/code-test/ecg_tracings.hdf5 (and gold_standard.csv when the record has it), checked."""
    from ecg_edge.readers.hdf5 import hdf5_exam_count

    record = RECORDS["code-test"]
    source, remote = obtain(record, _is_tracings_source, from_file, progress, log)
    with home_stage(home) as stage:
        folder = stage / CODE_TEST_DIR
        folder.mkdir()
        if source.suffix.lower() == ".zip" or zipfile.is_zipfile(source):
            zip_member(source, lambda n: Path(n).name == TRACINGS, TRACINGS, folder / TRACINGS)
            try:
                zip_member(source, lambda n: Path(n).name == GOLD_STANDARD, GOLD_STANDARD, folder / GOLD_STANDARD)
            except InputError:
                log(f"{source}: no {GOLD_STANDARD} inside; `reproduce` will need --labels")
        else:
            shutil.copyfile(source, folder / TRACINGS)
        try:
            n = hdf5_exam_count(folder / TRACINGS)  # the CODE layout, or an InputError naming the problem
        except InputError as exc:
            raise InputError(source, f"{TRACINGS}: {exc.problem}") from None
        (folder / "source.json").write_text(json.dumps(
            {"record": record.record, "doi": record.doi, "concept_doi": record.concept_doi, "file": str(source),
             "md5": source_md5(source, remote), "checksum_verified": remote is not None, "exams": n}, indent=1))
        publish(stage, home, [CODE_TEST_DIR], keep_previous=[])
    return home / CODE_TEST_DIR / TRACINGS
