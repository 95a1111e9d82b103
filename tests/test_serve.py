"""`ecg-edge serve`: request bodies read as `infer` reads files, the KServe v2 protocol, and a real
server on 127.0.0.1 (Ray Serve, started by the CLI in its own process) answering good and hostile
requests, Triton's own client, and a SIGTERM that lets the request in flight finish."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_WFDB, needs_shared, write_code_hdf5
from hostile import BILLION_LAUGHS, EXTERNAL_ENTITY
from test_infer import tiny_export

from ecg_edge.exams import ReadOptions
from ecg_edge.serve import kserve
from ecg_edge.serve.bodies import BodyError, Upload, read_uploads
from ecg_edge.serve.proxy import free_port
from ecg_edge.serve.server import MAX_AUTO_REPLICAS, replica_count
from ecg_edge.spec import LEADS, N_SAMPLES

FORMATS_DIR = SHARED_WFDB.parent / "formats"
MUSE = FORMATS_DIR / "ge-muse" / "muse-sinus.xml"
needs_formats = pytest.mark.skipif(not FORMATS_DIR.exists(), reason="../shared/data/formats not present")


def _record(name: str) -> list[Upload]:
    return [Upload(p.name, p.read_bytes()) for p in sorted(SHARED_WFDB.glob(f"{name}.*"))]


# --- bodies: what a request carries, read as infer reads a file ------------------------------------

@needs_formats
def test_upload_named_by_the_client_never_by_the_server():
    (exam, x), = read_uploads([Upload("muse-sinus.xml", MUSE.read_bytes())], ReadOptions())
    assert exam.id == "muse-sinus" and exam.source == "muse-sinus.xml"
    assert exam.provenance["source"] == "muse-sinus.xml" and exam.provenance["format"] == "ge-muse"
    assert x.shape == (N_SAMPLES, len(LEADS)) and np.isfinite(x).all()


@needs_shared
def test_wfdb_record_as_its_files():
    (exam, _), = read_uploads(_record("HR06000"), ReadOptions())
    assert exam.id == "HR06000" and exam.source == "HR06000.hea"
    with pytest.raises(BodyError, match="HR06000.hea"):  # the header without its signal file
        read_uploads(_record("HR06000")[:1], ReadOptions())


def test_hdf5_gives_one_exam_each(tmp_path):
    x = np.random.default_rng(1).normal(size=(3, N_SAMPLES, len(LEADS))).astype(np.float32)
    path = write_code_hdf5(tmp_path / "three.h5", x, exam_ids=[7, 8, 9])
    exams = read_uploads([Upload("three.h5", path.read_bytes())], ReadOptions())
    assert [e.id for e, _ in exams] == ["7", "8", "9"] and {e.source for e, _ in exams} == {"three.h5"}
    np.testing.assert_array_equal(np.stack([v for _, v in exams]), x)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def hostile_bodies(tmp_path: Path) -> dict[str, tuple[list[Upload], int]]:
    """name -> (the uploads, the status they must get)."""
    x = np.random.default_rng(2).normal(size=(2, N_SAMPLES, len(LEADS))).astype(np.float32)
    h5 = write_code_hdf5(tmp_path / "h.h5", x).read_bytes()
    nan = np.zeros((4000, 12))
    nan[10, 3] = np.nan
    bodies = {
        "empty": ([Upload("", b"")], 400),
        "unknown format": ([Upload("x.bin", b"\x00\x01garbage" * 50)], 415),
        "text": ([Upload("", b"hello, not an ECG")], 415),
        "billion laughs": ([Upload("bomb.xml", BILLION_LAUGHS.encode())], 400),
        "external entity": ([Upload("ext.xml", EXTERNAL_ENTITY.encode())], 400),
        "hdf5 cut short": ([Upload("cut.h5", h5[:len(h5) // 3])], 400),
        "npy without rate": ([Upload("a.npy", _npy(np.zeros((4000, 12))))], 400),
        "path in the name": ([Upload("../../etc/passwd", b"x")], 415),
        "hidden name": ([Upload(".hea", b"x")], 400),
        "two files, no header": ([Upload("a.dat", b"1"), Upload("b.dat", b"2")], 400),
    }
    if FORMATS_DIR.exists():
        xml = MUSE.read_bytes()
        bodies["xml cut short"] = ([Upload("cut.xml", xml[:len(xml) // 2])], 400)
    return bodies


def test_hostile_bodies_are_refused_with_one_line(tmp_path):
    for name, (uploads, status) in hostile_bodies(tmp_path).items():
        with pytest.raises(BodyError) as info:
            read_uploads(uploads, ReadOptions())
        assert info.value.status == status, (name, str(info.value))
        message = str(info.value)
        assert "\n" not in message and "/tmp" not in message and "ecg-edge-serve-" not in message, (name, message)


@pytest.mark.parametrize(("requested", "backend", "cpus", "want"), [
    ("auto", "ort-cpu", 2, 2), ("auto", "openvino", 1, 1), ("auto", "ort-cpu", 64, MAX_AUTO_REPLICAS),
    ("auto", "tensorrt", 16, 1), ("auto", "ort-cuda", 16, 1), (3, "ort-cpu", 2, 3), (1, "tensorrt", 16, 1)])
def test_replicas_auto_follows_the_cpus_a_machine_reports(requested, backend, cpus, want):
    count, why = replica_count(requested, backend, cpus)
    assert count == want
    assert why.startswith("asked" if requested != "auto" else "auto")
    assert (f"at most {MAX_AUTO_REPLICAS}" in why) == (want == MAX_AUTO_REPLICAS < cpus)


@pytest.mark.parametrize("bad", ["0", "two", "-1", "1.5", "\u00b2"])
def test_replicas_must_be_a_count_or_auto(bad, tmp_path):
    done = subprocess.run([sys.executable, "-m", "ecg_edge.cli", "serve", "--replicas", bad, "--model", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "--replicas" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_npy_with_nan_is_refused():
    body = np.zeros((4000, 12))
    body[5, 1] = np.nan
    with pytest.raises(BodyError, match="NaN|not finite|finite"):
        read_uploads([Upload("n.npy", _npy(body))], ReadOptions(fs=400, leads=list(LEADS)))


def test_a_body_streamed_past_the_limit_is_refused_as_it_comes():
    import asyncio

    from starlette.requests import Request

    from ecg_edge.serve.app import read_body

    sent = []

    async def receive():
        sent.append(1)
        return {"type": "http.request", "body": b"x" * 2**20, "more_body": True}

    scope = {"type": "http", "method": "POST", "path": "/v1/ecg", "headers": [], "query_string": b""}
    with pytest.raises(BodyError, match="over 3145728 bytes") as info:
        asyncio.run(read_body(Request(scope, receive), 3 * 2**20))
    assert info.value.status == 413 and len(sent) == 4  # stopped at the first chunk past the limit


# --- KServe v2 -------------------------------------------------------------------------------------

def _v2(x: np.ndarray, binary: bool, **extra) -> tuple[bytes, str | None]:
    tensor = {"name": "signal", "datatype": "FP32", "shape": list(x.shape)}
    if binary:
        tensor["parameters"] = {"binary_data_size": x.nbytes}
    else:
        tensor["data"] = x.ravel().tolist()
    head = json.dumps({"inputs": [tensor], **extra}).encode()
    return (head + x.tobytes(), str(len(head))) if binary else (head, None)


def test_v2_json_and_binary_inputs_read_the_same():
    x = np.random.default_rng(3).normal(size=(2, N_SAMPLES, len(LEADS))).astype(np.float32)
    as_json = kserve.parse_infer(*_v2(x, False), "out")
    as_binary = kserve.parse_infer(*_v2(x, True, outputs=[{"name": "out", "parameters": {"binary_data": True}}]),
                                   "out")
    np.testing.assert_array_equal(as_json.signal, x)
    np.testing.assert_array_equal(as_binary.signal, x)
    assert not as_json.binary_output and as_binary.binary_output
    p = np.array([[0.25, 0.5], [0.125, 1.0]], np.float32)
    body, headers = kserve.infer_response(as_binary, p, "out")
    length = int(headers[kserve.HEADER_LENGTH])
    assert json.loads(body[:length])["outputs"][0]["parameters"]["binary_data_size"] == p.nbytes
    np.testing.assert_array_equal(np.frombuffer(body[length:], "<f4").reshape(2, 2), p)


@pytest.mark.parametrize("change, match", [
    (lambda t: t.update(datatype="FP64"), "FP32"),
    (lambda t: t.update(shape=[1, 100, 12], data=[0.0] * 1200), "shape"),
    (lambda t: t.update(name="x"), "named"),
    (lambda t: t.update(data=[0.0] * 5), "numbers"),
    (lambda t: t.update(data=[float("nan")] * (N_SAMPLES * 12)), "NaN"),
])
def test_v2_malformed_tensors_are_refused(change, match):
    tensor = {"name": "signal", "datatype": "FP32", "shape": [1, N_SAMPLES, 12], "data": [0.0] * (N_SAMPLES * 12)}
    change(tensor)
    with pytest.raises(BodyError, match=match) as info:
        kserve.parse_infer(json.dumps({"inputs": [tensor]}).encode(), None, "out")
    assert info.value.status == 400


def test_v2_header_length_beyond_the_body_is_refused():
    with pytest.raises(BodyError, match="Inference-Header-Content-Length"):
        kserve.parse_infer(b"{}", "999", "out")
    with pytest.raises(BodyError, match="not JSON"):
        kserve.parse_infer(b"\xff\xfe{", None, "out")


# --- a real server ----------------------------------------------------------------------------------

def _post(url: str, data: bytes, headers: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _multipart(uploads: list[Upload]) -> tuple[bytes, dict[str, str]]:
    boundary = "ecgedgeboundary"
    parts = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"; filename="{u.name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode() + u.data + b"\r\n"
        for i, u in enumerate(uploads))
    return parts + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


class Server:
    def __init__(self, export: Path, tmp: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "serve.log"
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        # Its own session: a SIGTERM meant for it reaches it alone, never this test process's group.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ecg_edge.cli", "serve", "--model", str(export), "--backend", "ort-cpu",
             "--port", str(self.port), "--batch-wait-ms", "300", "--max-body-mb", "4", "--replicas", "1", *extra],
            stdout=subprocess.DEVNULL, stderr=self.log.open("w"), env=env, start_new_session=True)  # noqa: SIM115
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited {self.process.returncode}: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        self.stop()
        raise AssertionError(f"serve not ready in 180 s: {self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return tiny_export(tmp_path_factory.mktemp("serve") / "export")


@pytest.fixture(scope="module")
def server(export, tmp_path_factory):
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'ecg-edge[serve]')")
    running = Server(export, tmp_path_factory.mktemp("serve-log"))
    yield running
    running.stop()


def _infer_json(export: Path, recording: Path, tmp_path: Path) -> dict:
    out = tmp_path / f"{recording.stem}.json"
    done = subprocess.run([sys.executable, "-m", "ecg_edge.cli", "infer", str(recording), "--model", str(export),
                           "--backend", "ort-cpu", "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())


def _same_exams(served: list[dict], offline: list[dict], classes: list[str]) -> None:
    assert [e["exam_id"] for e in served] == [e["exam_id"] for e in offline]
    for a, b in zip(served, offline, strict=True):
        np.testing.assert_allclose([a[c] for c in classes], [b[c] for c in classes], atol=1e-6)
        assert a["findings"] == b["findings"]
        assert [q["flag"] for q in a["quality"]] == [q["flag"] for q in b["quality"]]
        assert a["heart_rate_bpm"] == b["heart_rate_bpm"]


@pytest.mark.slow  # a Ray Serve server of its own process
@needs_formats
@needs_shared
def test_served_results_equal_infer(server, export, tmp_path):
    status, body = _post(f"{server.url}/v1/ecg?name={MUSE.name}", MUSE.read_bytes())
    assert status == 200, body
    served = json.loads(body)
    classes = [c["abbreviation"] for c in served["classes"]]
    _same_exams(served["exams"], _infer_json(export, MUSE, tmp_path)["exams"], classes)
    assert served["backend"].startswith("onnxruntime") and len(served["model_sha256"]) == 64

    data, headers = _multipart(_record("HR06000"))
    status, body = _post(f"{server.url}/v1/ecg", data, headers)
    assert status == 200, body
    _same_exams(json.loads(body)["exams"], _infer_json(export, SHARED_WFDB / "HR06000.hea", tmp_path)["exams"], classes)

    x = np.random.default_rng(5).normal(scale=0.2, size=(3, N_SAMPLES, len(LEADS))).astype(np.float32)
    h5 = write_code_hdf5(tmp_path / "three.h5", x, exam_ids=[1, 2, 3])
    status, body = _post(f"{server.url}/v1/ecg?name=three.h5", h5.read_bytes())
    assert status == 200, body
    _same_exams(json.loads(body)["exams"], _infer_json(export, h5, tmp_path)["exams"], classes)


@pytest.mark.slow  # a Ray Serve server of its own process
def test_triton_client_works_unchanged(server, export):
    http = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed")
    import onnxruntime as ort

    client = http.InferenceServerClient(f"127.0.0.1:{server.port}")
    assert client.is_server_ready() and client.is_model_ready("ecg")
    output = client.get_model_metadata("ecg")["outputs"][0]["name"]
    x = np.random.default_rng(6).normal(scale=0.2, size=(4, N_SAMPLES, len(LEADS))).astype(np.float32)
    expected = ort.InferenceSession(str(export / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"signal": x})[0]
    for binary in (True, False):
        tensor = http.InferInput("signal", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        result = client.infer("ecg", [tensor], outputs=[http.InferRequestedOutput(output, binary_data=binary)])
        np.testing.assert_allclose(result.as_numpy(output), expected, atol=1e-6)
    bad = http.InferInput("signal", [1, 100, 12], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 100, 12), np.float32))
    with pytest.raises(Exception, match="400.*shape"):
        client.infer("ecg", [bad])


@pytest.mark.slow  # a Ray Serve server of its own process
def test_hostile_requests_between_good_ones_all_answered(server, tmp_path):
    good = write_code_hdf5(tmp_path / "good.h5", np.random.default_rng(7).normal(
        scale=0.2, size=(1, N_SAMPLES, len(LEADS))).astype(np.float32), exam_ids=[42]).read_bytes()
    requests: list[tuple[str, bytes, dict[str, str], int]] = []
    for uploads, status in hostile_bodies(tmp_path).values():
        if len(uploads) == 1:
            query = f"?name={uploads[0].name.rsplit('/', 1)[-1]}" if uploads[0].name else ""
            requests.append((f"/v1/ecg{query}", uploads[0].data, {}, status))
        else:
            data, headers = _multipart(uploads)
            requests.append(("/v1/ecg", data, headers, status))
    requests += [
        ("/v1/ecg", b"\x1f\x8b\x08\x00", {"Content-Encoding": "gzip"}, 415),
        ("/v2/models/ecg/infer", b'{"inputs": []}', {}, 400),
        ("/v2/models/ecg/infer", b"not json", {}, 400),
        ("/v1/ecg", b"--x\r\nbroken", {"Content-Type": "multipart/form-data; boundary=x"}, 400),
    ]
    results: list[tuple[int, int, bytes]] = []

    def send(path: str, data: bytes, headers: dict[str, str], want: int) -> None:
        results.append((want, *_post(f"{server.url}{path}", data, headers)))

    def send_good() -> None:
        status, body = _post(f"{server.url}/v1/ecg?name=good.h5", good)
        results.append((200, status, body))
        assert json.loads(body)["exams"][0]["exam_id"] == "42"

    threads = []
    for request in requests:
        threads += [threading.Thread(target=send, args=request), threading.Thread(target=send_good)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 2 * len(requests)
    for want, status, body in results:
        assert status == want, (want, status, body[:300])
        if status != 200:
            message = json.loads(body)["error"]
            assert "\n" not in message and "Traceback" not in message and "/tmp" not in message


@pytest.mark.slow  # a Ray Serve server of its own process
def test_a_claimed_huge_body_is_refused_before_it_is_sent(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST /v1/ecg HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\nabc")
        reply = s.recv(4096).decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413"), reply[:200]


@pytest.mark.slow  # a Ray Serve server of its own process
def test_haproxy_in_front_answers_as_infer_and_stops_clean(export, tmp_path):
    """Ray's HAProxy mode in front of 2 replicas: the same answers, every HAProxy file removed at exit."""
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'ecg-edge[serve]')")
    from ecg_edge.serve.proxy import haproxy_program

    if haproxy_program() is None:
        pytest.skip("no HAProxy program (ray[serve] brings one on Linux)")
    before = set(Path("/tmp").glob("ecg-haproxy-*"))
    own = Server(export, tmp_path, "--proxy", "haproxy", "--replicas", "2")
    try:
        x = np.random.default_rng(9).normal(scale=0.2, size=(2, N_SAMPLES, len(LEADS))).astype(np.float32)
        h5 = write_code_hdf5(tmp_path / "two.h5", x, exam_ids=[1, 2])
        for _ in range(4):
            status, body = _post(f"{own.url}/v1/ecg?name=two.h5", h5.read_bytes())
            assert status == 200, body
            served = json.loads(body)
            classes = [c["abbreviation"] for c in served["classes"]]
            _same_exams(served["exams"], _infer_json(export, h5, tmp_path)["exams"], classes)
        status, body = _post(f"{own.url}/v1/ecg?name=x.xml", b"<not-an-ecg/>")
        assert 400 <= status < 500 and b"Traceback" not in body
        assert "HAProxy routes requests" in own.log.read_text()
    finally:
        assert own.stop() == 0, own.log.read_text()[-2000:]
    assert set(Path("/tmp").glob("ecg-haproxy-*")) == before


def test_proxy_choices_are_checked_before_anything_starts(monkeypatch, tmp_path):
    from ecg_edge.errors import InputError, MachineError
    from ecg_edge.serve.proxy import check_proxy, proxy_environment

    with pytest.raises(InputError, match="--proxy 'nginx'"):
        check_proxy("nginx", None)
    with pytest.raises(InputError, match="to join a cluster"):
        check_proxy("haproxy", "auto")
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(tmp_path / "absent"))
    with pytest.raises(MachineError, match="no HAProxy program"):
        check_proxy("haproxy", None)
    monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", "1234")
    with proxy_environment("haproxy") as note:
        assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and note and "listen on 127.0.0.1" in note
        folder = Path(os.environ["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"]).parent
        assert folder.is_dir() and os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] != "1234"
        assert os.environ["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"] != "8500"
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in os.environ and not folder.exists()
    assert os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] == "1234"  # what was there before comes back
    with proxy_environment("ray") as note:
        assert note is None and "RAY_SERVE_ENABLE_HA_PROXY" not in os.environ


def test_serve_without_haproxy_is_exit_3(tmp_path):
    env = {**os.environ, "RAY_SERVE_HAPROXY_BINARY_PATH": str(tmp_path / "absent")}
    done = subprocess.run([sys.executable, "-m", "ecg_edge.cli", "serve", "--proxy", "haproxy",
                           "--model", str(tiny_export(tmp_path / "export")), "--backend", "ort-cpu"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "haproxy" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow  # a Ray Serve server of its own process
def test_sigterm_lets_the_request_in_flight_finish(export, tmp_path):
    """A server of its own: a request waits 300 ms for its batch; SIGTERM arrives meanwhile."""
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'ecg-edge[serve]')")
    own = Server(export, tmp_path)
    try:
        x = np.random.default_rng(8).normal(scale=0.2, size=(1, N_SAMPLES, len(LEADS))).astype(np.float32)
        h5 = write_code_hdf5(tmp_path / "one.h5", x, exam_ids=[5]).read_bytes()
        answer: list[tuple[int, bytes]] = []
        sender = threading.Thread(target=lambda: answer.append(_post(f"{own.url}/v1/ecg?name=one.h5", h5)))
        sender.start()
        time.sleep(0.1)
        own.process.send_signal(signal.SIGTERM)
        sender.join(timeout=60)
        assert answer and answer[0][0] == 200, answer
        assert own.process.wait(timeout=90) == 0, own.log.read_text()[-2000:]
        assert "stopped" in own.log.read_text()
    finally:
        own.stop()


def test_query_parameters_set_how_a_body_is_read():
    from starlette.requests import Request

    from ecg_edge.serve.app import read_options

    def request(query: bytes) -> Request:
        return Request({"type": "http", "method": "POST", "path": "/v1/ecg", "headers": [], "query_string": query})

    options = read_options(request(b"fs=500&leads=I,II&scale=0.5&measure=off"))
    assert (options.fs, list(options.leads or []), options.scale, options.measure) == (500.0, ["I", "II"], 0.5, "off")
    for bad in (b"measure=fast", b"fs=abc"):
        with pytest.raises(BodyError) as info:
            read_options(request(bad))
        assert info.value.status == 400


@pytest.mark.slow  # a Ray Serve server of its own process
def test_metrics_on_rays_prometheus_endpoint(server):
    """Requests by endpoint and status, and batch sizes, reach the Prometheus endpoint the server names."""
    import re

    named = re.search(r"http://(127\.0\.0\.1):(\d+)/metrics", server.log.read_text())  # a local Ray: loopback
    assert named, server.log.read_text()[-2000:]
    _post(f"{server.url}/v1/ecg", b"")  # a 400 to count
    deadline, text = time.monotonic() + 60, ""
    while time.monotonic() < deadline:  # Ray exports metrics every few seconds
        with urllib.request.urlopen(f"http://{named[1]}:{named[2]}/metrics", timeout=10) as response:
            text = response.read().decode()
        if 'ray_ecg_edge_requests_total' in text and 'status="400"' in text and "ray_ecg_edge_batch_requests" in text:
            break
        time.sleep(2)
    assert re.search(r'ray_ecg_edge_requests_total\{[^}]*status="400"', text), text[-1500:]
    assert "ray_ecg_edge_batch_exams_bucket" in text
