"""Several labelled folders as one training set.

Each folder (recordings and a `labels.csv` keyed by record) is read once through the one `prepare`
path into a cached CODE-layout HDF5 file in the model home, keyed by the folder's files (path, size,
modification time), its labels and `PREPARE_VERSION`: a changed file or a changed preprocessing makes
a new cache. Training streams from those files. Exam ids are `FOLDER/record`; the corpus CSV beside
them says each exam's source family (PTB-XL, LUDB, CinC, CODE-test), its patient group and PTB-XL's
patient-wise `strat_fold` where the folder has one.

Splits are by group, never by record: a group is the patient where the labels give a `patient_id`
(PTB-XL), else the record. A CinC record `HRnnnnn` is PTB-XL's `ecg_id` nnnnn: where that record is
also in a PTB-XL folder here it joins that patient's group.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ecg_edge import __version__
from ecg_edge.errors import InputError
from ecg_edge.preprocess import PREPARE_VERSION
from ecg_edge.spec import CLASSES, LEADS, N_SAMPLES, NORMAL_COLUMN
from ecg_edge.staging import staged

LABELS_NAME = "labels.csv"
CORPUS_COLUMNS = ("exam_id", *CLASSES, NORMAL_COLUMN, "source", "group", "fold")
_TRACE_SHAPE = (N_SAMPLES, len(LEADS))
_PTBXL_ECG_ID = re.compile(r"(?:^|/)(\d{5})_(?:hr|lr)$")
_CINC_PTBXL = re.compile(r"(?:^|/)HR(\d{5})$")


@dataclass(frozen=True)
class Corpus:
    files: list[Path]  # one cached CODE-layout HDF5 per folder
    labels_csv: Path  # CORPUS_COLUMNS, one row per exam of `files`
    rows: list[dict[str, str]]


def source_family(source: str) -> str:
    """The collection a labels row comes from, as results are reported per source."""
    text = source.strip()
    for family, marker in (("PTB-XL", "PTB-XL"), ("LUDB", "LUDB"), ("CinC", "CinC"), ("CODE-test", "CODE")):
        if marker.lower() in text.lower():
            return family
    return text.split(" ")[0] if text else "unknown"


def is_labelled_folder(path: Path) -> bool:
    return path.is_dir() and (path / LABELS_NAME).is_file()


def folder_key(folder: Path) -> str:
    """What a folder's cache depends on: every file's relative path, size and modification time, the
    preprocessing version and the package's (its readers). Hashing names and stat, not contents,
    keeps a check of 2,000 records to milliseconds."""
    digest = hashlib.sha256(f"prepare {PREPARE_VERSION} ecg-edge {__version__}\n".encode())
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            st = path.stat()
            digest.update(f"{path.relative_to(folder).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _read_rows(labels_csv: Path) -> list[dict[str, str]]:
    with open(labels_csv, newline="") as f:
        return [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in csv.DictReader(f)]


def _cache_folder(folder: Path, cache: Path, log: Callable[[str], None]) -> Path:
    """The folder's cached HDF5 (exam ids `FOLDER/record`), made where missing."""
    import h5py

    from ecg_edge.training.labels import labelled_hdf5

    name = folder_name(folder)
    target = cache / f"{name}-{folder_key(folder)}.h5"
    if target.exists():
        return target
    log(f"preparing {folder} once into {target} (cached until a file or the preprocessing changes)")
    cache.mkdir(parents=True, exist_ok=True)
    with staged(cache, "corpus") as stage:  # a killed run's stage is removed by the next
        h5, _ = labelled_hdf5([folder], folder / LABELS_NAME, stage)
        with h5py.File(h5, "r+") as f:
            ids = [v.decode() if isinstance(v, bytes) else str(v) for v in f["exam_id"][:]]
            f["exam_id"][:] = [f"{name}/{i}" for i in ids]
        os.replace(h5, target)
    own = re.compile(rf"{re.escape(name)}-[0-9a-f]{{16}}\.h5")  # this folder's, not `NAME-more`'s
    for stale in cache.iterdir():
        if own.fullmatch(stale.name) and stale != target:  # one version a folder
            stale.unlink(missing_ok=True)
    return target


def folder_name(folder: Path) -> str:
    """A folder's name as given (a link keeps its own name): its exams' id prefix."""
    return folder.absolute().name


def _label(row: dict[str, str], column: str, labels_csv: Path) -> str:
    value = row.get(column, "")
    if value not in ("0", "1"):
        raise InputError(labels_csv, f"record {row.get('record', '?')}: {column} must be 0 or 1, not {value!r}")
    return value


def corpus_rows(folders: Sequence[Path]) -> list[dict[str, str]]:
    """Every labelled exam of `folders` as a row of CORPUS_COLUMNS."""
    per_folder = [(folder_name(folder), folder / LABELS_NAME, _read_rows(folder / LABELS_NAME)) for folder in folders]
    names = [name for name, _, _ in per_folder]
    if len(set(names)) != len(names):
        raise InputError(folders[0], "two folders of the same name: their exam ids would collide")
    ptbxl_patient: dict[str, str] = {}  # ecg_id -> group, for CinC's copies of PTB-XL records
    for _, _, rows in per_folder:
        for row in rows:
            match = _PTBXL_ECG_ID.search(row.get("record", ""))
            if match and row.get("patient_id"):
                ptbxl_patient[str(int(match.group(1)))] = f"ptbxl-patient/{row['patient_id']}"
    out = []
    for name, labels_csv, rows in per_folder:
        for row in rows:
            record = row.get("record", "")
            if not record:
                raise InputError(labels_csv, "a row without a record")
            group = f"ptbxl-patient/{row['patient_id']}" if row.get("patient_id") else f"{name}/{record}"
            cinc = _CINC_PTBXL.search(record)
            if cinc and str(int(cinc.group(1))) in ptbxl_patient:
                group = ptbxl_patient[str(int(cinc.group(1)))]
            normal = row.get("normal", row.get(NORMAL_COLUMN, ""))
            out.append({"exam_id": f"{name}/{record}", **{c: _label(row, c, labels_csv) for c in CLASSES},
                        NORMAL_COLUMN: normal if normal in ("0", "1") else "",
                        "source": source_family(row.get("source", "")), "group": group,
                        "fold": row.get("strat_fold", "")})
    return out


def write_rows(rows: Sequence[dict[str, str]], path: Path, columns: Sequence[str] = CORPUS_COLUMNS) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def build_corpus(folders: Sequence[str | Path], cache: Path, log: Callable[[str], None] = lambda line: None) -> Corpus:
    """The folders' cached HDF5 files and one corpus CSV (in `cache`) describing their exams."""
    paths = [Path(f) for f in folders]
    for folder in paths:
        if not is_labelled_folder(folder):
            raise InputError(folder, f"not a folder with a {LABELS_NAME}")
    rows = corpus_rows(paths)
    files = [_cache_folder(folder, cache, log) for folder in paths]
    digest = hashlib.sha256("\n".join(f.name for f in files).encode()).hexdigest()[:16]
    labels_csv = write_rows(rows, cache / f"corpus-{digest}.csv")
    return Corpus(files, labels_csv, rows)


def group_rank(group: str, seed: str) -> float:
    """A group's place in [0, 1): the same on every machine, whatever the order of the folders."""
    return int(hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()[:15], 16) / 16**15


def assign_parts(
    rows: Sequence[dict[str, str]], validation: float, test: float = 0.0,
    fold_parts: dict[str, str] | None = None, seed: str = "corpus",
) -> dict[str, str]:
    """exam id -> 'train', 'validation' or 'test', by group: every exam of a patient on one side.
    With `fold_parts`, rows that have a `fold` go where it says (PTB-XL's patient-wise folds; folds it
    does not name train); the others by a hash of their group (shares `validation` and `test`)."""
    fold_parts = fold_parts or {}
    fold_of: dict[str, str] = {}  # first pass: a group with a fold anywhere goes by it, whatever the order
    for row in rows:
        if row.get("fold") and fold_of.setdefault(row["group"], row["fold"]) != row["fold"]:
            raise InputError(None, f"patient {row['group']} is in folds {fold_of[row['group']]} and {row['fold']}")
    by_group: dict[str, str] = {}
    for group in dict.fromkeys(row["group"] for row in rows):
        if fold_parts and group in fold_of:
            by_group[group] = fold_parts.get(fold_of[group], "train")
        else:
            rank = group_rank(group, seed)
            by_group[group] = "validation" if rank < validation else "test" if rank < validation + test else "train"
    return {row["exam_id"]: by_group[row["group"]] for row in rows}


def part_rows(rows: Sequence[dict[str, str]], parts: dict[str, str], *wanted: str) -> list[dict[str, str]]:
    return [{**row, "part": parts[row["exam_id"]]} for row in rows if parts[row["exam_id"]] in wanted]


def write_part(
    corpus: Corpus, parts: dict[str, str], wanted: Sequence[str], out_h5: Path, share: float = 1.0,
) -> tuple[Path, Path]:
    """The exams of the `wanted` parts (a `share` of their patients, by hash) as one CODE-layout HDF5 file
    and a labels CSV of CORPUS_COLUMNS beside it; copied in blocks, memory bounded."""
    import h5py

    chosen = {r["exam_id"] for r in corpus.rows
              if parts[r["exam_id"]] in wanted and (share >= 1.0 or group_rank(r["group"], "share") < share)}
    rows = [r for r in corpus.rows if r["exam_id"] in chosen]
    text = h5py.string_dtype()
    with h5py.File(out_h5, "w") as dst:
        tracings = dst.create_dataset("tracings", shape=(0, *_TRACE_SHAPE), maxshape=(None, *_TRACE_SHAPE),
                                      dtype="float32", chunks=(1, *_TRACE_SHAPE))
        exam_ids = dst.create_dataset("exam_id", shape=(0,), maxshape=(None,), dtype=text)
        n = 0
        for path in corpus.files:
            with h5py.File(path, "r") as src:
                ids = [v.decode() if isinstance(v, bytes) else str(v) for v in src["exam_id"][:]]
                keep = [i for i, e in enumerate(ids) if e in chosen]
                for start in range(0, len(keep), 256):
                    block = keep[start:start + 256]
                    tracings.resize(n + len(block), axis=0)
                    exam_ids.resize(n + len(block), axis=0)
                    tracings[n:n + len(block)] = src["tracings"][block]
                    exam_ids[n:n + len(block)] = [ids[i] for i in block]
                    n += len(block)
    return out_h5, write_rows(rows, out_h5.with_suffix(".csv"))
