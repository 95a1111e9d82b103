"""`fetch` and `reproduce` against a real HTTP server on 127.0.0.1 that serves a Zenodo-shaped API."""

from __future__ import annotations

import csv
import hashlib
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_WFDB, write_code_hdf5
from typer.testing import CliRunner

from ecg_edge.cli import app

CODE_TEST = SHARED_WFDB.parent / "code-test"
runner = CliRunner()


class ZenodoLike:
    """Records and files as Zenodo's `/api/records/<id>` lists them, with HTTP Range and planned faults."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}  # key -> content
        self.records: dict[str, list[str]] = {}  # record id -> keys
        self.md5_override: dict[str, str] = {}
        self.cut_once: dict[str, int] = {}  # key -> bytes sent before the connection drops (once)
        self.record_status = 200
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append((self.path, self.headers.get("Range")))
                parts = self.path.strip("/").split("/")
                if parts[:2] == ["api", "records"] and len(parts) == 3:
                    return self._record(parts[2])
                if parts[0] == "files" and len(parts) == 2 and parts[1] in server.files:
                    return self._file(parts[1])
                self.send_error(404)

            def _record(self, record):
                if server.record_status != 200:
                    return self.send_error(server.record_status)
                base = f"http://127.0.0.1:{self.server.server_address[1]}"
                files = [{"key": key, "size": len(server.files[key]),
                          "checksum": "md5:" + server.md5_override.get(key, hashlib.md5(server.files[key]).hexdigest()),
                          "links": {"self": f"{base}/files/{key}"}} for key in server.records.get(record, [])]
                body = json.dumps({"id": int(record), "files": files}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _file(self, key):
                data = server.files[key]
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                cut = server.cut_once.pop(key, None)
                self.wfile.write(data[start:cut] if cut is not None else data[start:])
                if cut is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/api"


@pytest.fixture
def zenodo(monkeypatch, tmp_path, home):
    server = ZenodoLike()
    server.thread.start()
    monkeypatch.setenv("ECG_EDGE_ZENODO_API", server.api)
    monkeypatch.setenv("ECG_EDGE_CACHE", str(tmp_path / "cache"))
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture(scope="module")
def released_zip(tmp_path_factory) -> bytes:
    """A model.zip shaped as the released one: model/model.hdf5 and model/other_seeds/model_1.hdf5 (tf-keras)."""
    pytest.importorskip("tf_keras")
    from keras2_reference import write_keras2_hdf5

    root = tmp_path_factory.mktemp("released")
    write_keras2_hdf5(root / "model.hdf5", seed=0)
    write_keras2_hdf5(root / "model_1.hdf5", seed=1)
    out = root / "model.zip"
    with zipfile.ZipFile(out, "w") as z:
        z.write(root / "model.hdf5", "model/model.hdf5")
        z.write(root / "model_1.hdf5", "model/other_seeds/model_1.hdf5")
    return out.read_bytes()


def _zip_of(members: dict[str, bytes]) -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def _home_is_clean(home: Path) -> bool:
    return not home.exists() or not any(home.iterdir())


@pytest.mark.slow
def test_fetch_weights_installs_the_released_network(zenodo, released_zip, home):
    zenodo.files["model.zip"] = released_zip
    zenodo.records["3765717"] = ["model.zip"]
    result = runner.invoke(app, ["fetch", "weights"])
    assert result.exit_code == 0, result.output
    model = home / "model.keras"
    info = json.loads((home / "model.json").read_text())
    assert info["thresholds"]["AF"] == 0.39 and info["source"]["member"] == "model.hdf5"
    assert info["source"]["checksum_verified"] is True
    # The installed model is the released one: same outputs as the Keras-2 file it came from.
    import keras
    import tf_keras as k2

    x = np.random.default_rng(0).normal(size=(2, 4096, 12)).astype("float32")
    (home.parent / "ref.zip").write_bytes(released_zip)
    with zipfile.ZipFile(home.parent / "ref.zip") as z:
        (home.parent / "ref.hdf5").write_bytes(z.read("model/model.hdf5"))
    reference = k2.models.load_model(home.parent / "ref.hdf5", compile=False)
    ours = keras.saving.load_model(model, compile=False)
    assert np.abs(ours.predict(x, verbose=0) - reference.predict(x, verbose=0)).max() < 1e-5
    # Another seed; the first model and its export move aside, nothing is lost.
    (home / "export").mkdir()
    (home / "export" / "manifest.json").write_text("{}")
    result = runner.invoke(app, ["fetch", "weights", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads((home / "model.json").read_text())["source"]["member"] == "model_1.hdf5"
    assert (home / "previous" / "model.keras").exists() and (home / "previous" / "export" / "manifest.json").exists()
    assert not (home / "export").exists()
    # The zip came once: the second fetch used the verified copy in the cache.
    assert sum(path.startswith("/files/") for path, _ in zenodo.requests) == 1


@pytest.mark.slow
def test_fetch_weights_from_a_file_offline(zenodo, released_zip, home, tmp_path):
    by_hand = tmp_path / "model.zip"
    by_hand.write_bytes(released_zip)
    zenodo.record_status = 503  # Zenodo unreachable
    result = runner.invoke(app, ["fetch", "weights", "--from", str(by_hand)])
    assert result.exit_code == 0, result.output
    assert "checksum of" in result.output and "not verified" in result.output
    assert json.loads((home / "model.json").read_text())["source"]["checksum_verified"] is False


def test_interrupted_download_resumes_with_a_range_request(zenodo, home, tmp_path):
    tracings = write_code_hdf5(tmp_path / "t.h5", np.random.default_rng(1).normal(size=(6, 4096, 12)))
    data = tracings.read_bytes()
    zenodo.files["ecg_tracings.hdf5"] = data
    zenodo.records["3765780"] = ["ecg_tracings.hdf5"]
    zenodo.cut_once["ecg_tracings.hdf5"] = 300_000
    first = runner.invoke(app, ["fetch", "code-test"])
    assert first.exit_code == 2 and "run the same command again to resume" in first.output
    assert _home_is_clean(home)
    assert (tmp_path / "cache" / "ecg_tracings.hdf5.part").stat().st_size == 300_000
    second = runner.invoke(app, ["fetch", "code-test"])
    assert second.exit_code == 0, second.output
    assert zenodo.requests[-1] == ("/files/ecg_tracings.hdf5", "bytes=300000-")
    assert (home / "code-test" / "ecg_tracings.hdf5").read_bytes() == data


def test_complete_part_is_checked_not_requested_again(zenodo, home, tmp_path):
    """A download cut off after its last byte but before its check: the next run checks it, asks nothing."""
    tracings = write_code_hdf5(tmp_path / "t.h5", np.zeros((2, 4096, 12)))
    zenodo.files["ecg_tracings.hdf5"] = tracings.read_bytes()
    zenodo.records["3765780"] = ["ecg_tracings.hdf5"]
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "ecg_tracings.hdf5.part").write_bytes(tracings.read_bytes())
    result = runner.invoke(app, ["fetch", "code-test"])
    assert result.exit_code == 0, result.output
    assert not any(path.startswith("/files/") for path, _ in zenodo.requests)
    assert (home / "code-test" / "ecg_tracings.hdf5").read_bytes() == tracings.read_bytes()


def test_a_killed_fetchs_staging_folder_is_removed_by_the_next(zenodo, home, tmp_path):
    from stale_staging import plant_stale

    tracings = write_code_hdf5(tmp_path / "t.h5", np.zeros((2, 4096, 12)))
    zenodo.files["ecg_tracings.hdf5"] = tracings.read_bytes()
    zenodo.records["3765780"] = ["ecg_tracings.hdf5"]
    killed = plant_stale(home, "fetch")
    result = runner.invoke(app, ["fetch", "code-test"])
    assert result.exit_code == 0, result.output
    assert not killed.exists() and sorted(p.name for p in home.iterdir()) == ["code-test"]


def test_file_names_from_the_server_stay_in_the_cache(zenodo, home, tmp_path):
    zenodo.files["../escape.hdf5"] = b"data"
    zenodo.records["3765780"] = ["../escape.hdf5"]
    result = runner.invoke(app, ["fetch", "code-test"])
    assert result.exit_code == 2 and "not a plain file name" in result.output
    assert not (tmp_path / "escape.hdf5").exists() and _home_is_clean(home)


def _truncated_zip(server, tmp_path):
    server.files["data.zip"] = _zip_of({"ecg_tracings.hdf5": b"\x89HDF\r\n\x1a\n" + b"\0" * 100})[:-40]
    server.records["3765780"] = ["data.zip"]
    server.md5_override["data.zip"] = hashlib.md5(server.files["data.zip"]).hexdigest()


@pytest.mark.parametrize(("what", "arrange", "message"), [
    ("code-test", lambda s, t: (s.files.update({"ecg_tracings.hdf5": b"x" * 1000}),
                                s.records.update({"3765780": ["ecg_tracings.hdf5"]}),
                                s.md5_override.update({"ecg_tracings.hdf5": "0" * 32})), "does not match the record"),
    ("code-test", lambda s, t: (s.files.update({"data.zip": _zip_of({"readme.txt": b"hi"})}),
                                s.records.update({"3765780": ["data.zip"]})), "the archive holds no ecg_tracings"),
    ("code-test", _truncated_zip, "not a readable zip archive"),
    ("code-test", lambda s, t: (s.files.update({"ecg_tracings.hdf5": b"not hdf5"}),
                                s.records.update({"3765780": ["ecg_tracings.hdf5"]})), "not a readable HDF5"),
    ("weights", lambda s, t: (s.files.update({"model.zip": _zip_of({"model/readme.txt": b"hi"})}),
                              s.records.update({"3765717": ["model.zip"]})), "the archive holds no model.hdf5"),
    ("weights", lambda s, t: setattr(s, "record_status", 500), "server answered 500"),
], ids=["checksum", "zip-without-tracings", "truncated-zip", "not-code-layout", "zip-without-model",
        "server-error"])
def test_fetch_failures_exit_2_and_leave_the_home_alone(zenodo, home, tmp_path, what, arrange, message):
    arrange(zenodo, tmp_path)
    result = runner.invoke(app, ["fetch", what])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert _home_is_clean(home)
    assert not list((tmp_path / "cache").glob("*.part")) if (tmp_path / "cache").exists() else True


@pytest.mark.skipif(not CODE_TEST.exists(), reason="../shared/data/code-test not present")
def test_evaluate_scores_reproduces_table_2_exactly(tmp_path):
    """The ten seeds' published outputs, the seed chosen as the paper did: Table 2 to the third decimal."""
    from ecg_edge.training.data import read_label_matrix
    from ecg_edge.training.reproduce import paper_seed

    _, y = read_label_matrix(CODE_TEST / "gold_standard.csv")
    outputs = [np.load(CODE_TEST / "dnn_other_seeds" / f"model_{i}.npy") for i in range(1, 11)]
    chosen = CODE_TEST / "dnn_other_seeds" / f"model_{paper_seed(outputs, y) + 1}.npy"
    result = runner.invoke(app, ["evaluate", str(CODE_TEST / "gold_standard.csv"), "--scores", str(chosen),
                                 "--report", str(tmp_path / "r"), "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    ours = json.loads((tmp_path / "r" / "report.json").read_text())["scores"]
    with open(CODE_TEST / "published_scores.csv") as f:
        rows = list(csv.reader(f))
    columns = {name: rows[0].index(title) for name, title in
               (("precision", "Precision"), ("recall", "Recall"), ("specificity", "Specificity"), ("f1", "F1 score"))}
    assert [r[columns["precision"]] for r in rows[:2]] == ["Precision", "DNN"]
    for row in rows[2:]:
        for metric, col in columns.items():
            assert round(ours[row[0]][metric], 3) == float(row[col]), (row[0], metric)


@pytest.mark.slow
def test_fetch_then_reproduce(zenodo, released_zip, home, tmp_path):
    """Both commands against the local server: the released network on a CODE-layout test set."""
    from ecg_edge.synthetic import synthesize

    x, params = synthesize(24, seed=5)
    tracings = write_code_hdf5(tmp_path / "ecg_tracings.hdf5", x)
    with open(tmp_path / "gold_standard.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["1dAVb", "RBBB", "LBBB", "SB", "AF", "ST"])
        writer.writerows([list(p.labels().values())[:6] for p in params])
    zenodo.files["model.zip"] = released_zip
    zenodo.files["data.zip"] = _zip_of({"data/ecg_tracings.hdf5": tracings.read_bytes(),
                                        "data/annotations/gold_standard.csv": (tmp_path / "gold_standard.csv")
                                        .read_bytes()})
    zenodo.records.update({"3765717": ["model.zip"], "3765780": ["data.zip"]})
    assert runner.invoke(app, ["fetch", "weights"]).exit_code == 0
    fetched = runner.invoke(app, ["fetch", "code-test"])
    assert fetched.exit_code == 0, fetched.output
    assert json.loads((home / "code-test" / "source.json").read_text())["exams"] == 24
    result = runner.invoke(app, ["reproduce", "--bootstrap", "10"])
    assert result.exit_code == 0, result.output
    table = json.loads((home / "reproduce" / "table2.json").read_text())
    assert table[0]["precision"] == "fp32" and len(table[0]["rows"]) == 24
    assert {r["paper"] for r in table[0]["rows"] if r["class"] == "LBBB"} == {1.0}
    assert "Table 2" in (home / "reproduce" / "report.md").read_text()
