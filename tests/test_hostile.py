"""Issue 34's attacks. A hostile corpus (tests/hostile.py), written by the tests, through `infer`, `convert` and
`evaluate`: every file is exit 2 with one line naming it, at once, reading nothing outside the input, and
--keep-going skips them all in bounded memory; errors and exam ids reach the terminal as one escaped line; an
output is never an input. The server: the corpus as request bodies and malformed KServe requests are 4xx naming
no server path; a running server (slow) listens on loopback only and answers good requests between hostile
ones. The readers' header parsers are fuzzed (slow)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile import AECG as AECG_FILE
from hostile import MARKER, escape_id_file, write_corpus
from hostile import MUSE as MUSE_FILE
from test_infer import tiny_export
from typer.testing import CliRunner

from ecg_edge.cli import app
from ecg_edge.errors import MAX_LINE_CHARS

# Generous: every case takes well under a second; a case past this hangs (a FIFO opened, a bomb decoded).
HANG_S = 60


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail, rather than wait for ever, when the body blocks (a FIFO's open waits in the kernel: SIGALRM
    interrupts it)."""

    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run(*args: str | Path):
    with deadline(HANG_S):
        return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return tiny_export(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, tuple[Path, list[str]]]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def refusal(result, path: Path) -> str | None:
    """What is wrong with how `result` refused `path` (None: exit 2, one error line naming the file, no
    traceback, nothing of the marker)."""
    errors = [line for line in result.output.splitlines() if line.startswith("error")]
    if result.exit_code != 2 or len(errors) != 1:
        return f"exit {result.exit_code}: {result.output[-300:]!r} {result.exception!r}"
    if path.name not in errors[0] or len(errors[0]) > len("error: ") + MAX_LINE_CHARS:
        return f"line {errors[0]!r}"
    if "Traceback" in result.output or MARKER.decode() in result.output:
        return f"output {result.output[-300:]!r}"
    return None


def test_infer_refuses_every_case(corpus, export):
    problems = {name: refusal(run("infer", path, "--model", export, *options), path)
                for name, (path, options) in corpus.items()}
    assert {name: p for name, p in problems.items() if p} == {}


def test_convert_refuses_every_case_and_writes_nothing(corpus, tmp_path):
    out = tmp_path / "out.h5"
    problems = {name: refusal(run("convert", path, *options, out), path) for name, (path, options) in corpus.items()}
    assert {name: p for name, p in problems.items() if p} == {}
    assert list(tmp_path.iterdir()) == []


def test_hdf5_refusals_say_why(corpus):
    from ecg_edge import InputError, iter_recordings

    why = {"external": "external files", "virtual": "virtual dataset", "soft-self": "soft link",
           "soft-other": "soft link", "plugin": "filter 32004", "fill": "declares", "many": "declares",
           "big-chunk": "chunks of", "external-link": "external link", "long-id": "exam_id of",
           "record-id": "'exam_id' has dtype", "external-ids": "'exam_id' keeps its data in external files"}
    for case, words in why.items():
        with pytest.raises(InputError, match=words):
            list(iter_recordings(corpus[f"hdf5 {case}"][0]))


def test_evaluate_refuses_every_file(corpus, export, tmp_path):
    pytest.importorskip("keras")
    labels = tmp_path / "labels.csv"
    labels.write_text("exam_id,1dAVb,RBBB,LBBB,SB,AF,ST\nx,0,0,0,0,0,0\n")
    problems = {name: refusal(run("evaluate", export, path, labels), path)
                for name, (path, options) in corpus.items() if not options}
    assert {name: p for name, p in problems.items() if p} == {}


def test_keep_going_skips_every_case_and_reads_the_good_one(corpus, export, tmp_path):
    good = escape_id_file(tmp_path / "good.h5")
    out = tmp_path / "out.json"
    files = [path for path, options in corpus.values() if not options]
    result = run("infer", *files, good, "--model", export, "--keep-going", "-o", out)
    assert result.exit_code == 0, result.output
    assert MARKER not in out.read_bytes() and '"exam_id"' in out.read_text()
    skipped = [line for line in result.output.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == len(files), result.output
    assert all(any(path.name in line for line in skipped) for path in files)


def test_a_fifo_in_a_folder_is_skipped_never_opened(tmp_path, export):
    folder = tmp_path / "in"
    folder.mkdir()
    os.mkfifo(folder / "a.h5")
    os.mkfifo(folder / "b.hea")
    assert refusal(run("infer", folder, "--model", export), folder) is None  # nothing readable in it
    escape_id_file(folder / "good.h5")
    result = run("infer", folder, "--model", export)
    assert result.exit_code == 0 and "1 exams" in result.output, result.output


def test_exam_ids_and_file_names_never_reach_the_terminal_raw(tmp_path, export):
    good = escape_id_file(tmp_path / "good.h5")
    result = run("infer", good, "--model", export)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output and "\\x1b]0;pwned" in result.output
    # the table folds a long id, but a raw newline would start a line with the id's second line
    assert not any(line.lstrip().startswith("second line") for line in result.output.splitlines())
    bad = tmp_path / "two\nlines\x1b[31m.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n not really")
    result = run("infer", bad, "--model", export)
    errors = [line for line in result.output.splitlines() if line.startswith("error")]
    assert result.exit_code == 2 and len(errors) == 1 and "two\\nlines\\x1b[31m.h5" in errors[0], result.output
    assert "\x1b" not in result.output


def test_an_output_is_never_an_input(tmp_path, export):
    good = escape_id_file(tmp_path / "good.h5")
    table = tmp_path / "x.csv"
    table.write_text("exam_id\n1\n")
    result = run("infer", table, good, "--model", export, "--keep-going", "-o", table)
    assert refusal(result, table) is None and "is one of the inputs" in result.output
    assert table.read_text() == "exam_id\n1\n"
    result = run("convert", good, tmp_path / "." / "good.h5")
    assert refusal(result, good) is None and "is one of the inputs" in result.output


def test_a_failed_report_leaves_no_sheets(corpus, tmp_path, export):
    good = escape_id_file(tmp_path / "good.h5")
    bad, _ = corpus["wfdb rate 1e9"]  # found bad only when read, after the good exam's sheet is drawn
    report = tmp_path / "report"
    result = run("infer", good, bad, "--model", export, "--batch", "1", "--report", report)
    assert refusal(result, bad) is None
    assert not report.exists()
    report.mkdir()
    (report / "mine.txt").write_text("kept")
    result = run("report", good, bad, "--model", export, "--batch", "1", "--out", report)
    assert refusal(result, bad) is None
    assert [p.name for p in report.rglob("*")] == ["mine.txt"]


# --- the server's side: request bodies and tensors ------------------------------------------------------

def _uploads(path: Path) -> list:
    """A corpus case as a client would post it: one file, or a WFDB header with the files beside it."""
    from ecg_edge.serve.bodies import Upload

    files = [path]
    if path.suffix == ".hea" and path.is_file():
        files += [p for p in path.parent.glob(f"{path.stem}.*") if p != path]
    if any(p.is_symlink() or not p.is_file() for p in files):
        return []  # a client sends bytes, never a FIFO or a link
    return [Upload(p.name, p.read_bytes()) for p in files]


def test_served_bodies_refuse_every_case_without_naming_a_server_path(corpus):
    from ecg_edge.exams import ReadOptions
    from ecg_edge.serve.bodies import BodyError, read_uploads

    problems = {}
    for name, (path, options) in corpus.items():
        uploads = _uploads(path)
        if not uploads:
            continue
        fs = float(options[1]) if options else None
        try:
            with deadline(HANG_S):
                read_uploads(uploads, ReadOptions(fs=fs, leads=options[3].split(",") if options else None))
            problems[name] = "accepted"
        except BodyError as exc:
            message = str(exc)
            if not 400 <= exc.status < 500 or "/tmp" in message or str(path.parent) in message or "\n" in message:
                problems[name] = f"{exc.status} {message}"
        except Exception as exc:  # noqa: BLE001 - anything else would be a 500
            problems[name] = repr(exc)
    assert problems == {}


def test_a_header_without_its_signal_file_names_no_server_folder(tmp_path):
    from ecg_edge.exams import ReadOptions
    from ecg_edge.serve.bodies import BodyError, Upload, read_uploads

    for named in ("HR06000.mat", ".", "~"):
        header = "HR06000 12 500 5000\n" + "".join(f"{named} 16 1000/mV 16 0 0 0 0 L{k}\n" for k in range(12))
        with pytest.raises(BodyError) as info:
            read_uploads([Upload("HR06000.hea", header.encode())], ReadOptions())
        assert info.value.status == 400 and "/tmp" not in str(info.value) and "ecg-edge-serve" not in str(info.value)


@pytest.mark.parametrize(("body", "length"), [
    (b'{"inputs": []}', "\u00b2"), (b'{"inputs": []}', "\u0663"), (b'{"inputs": []}', "-1"),
    (b'{"parameters": [1], "inputs": [{"name": "signal", "datatype": "FP32", "shape": [1, 4096, 12], '
     b'"data": []}]}', None),
    (b'{"inputs": [{"name": "signal", "datatype": "FP32", "shape": [1, 4096, 12], "parameters": [1], '
     b'"data": []}]}', None),
    (b'{"inputs": [{"name": "signal", "datatype": "FP32", "shape": [1, 4096, 12], "parameters": '
     b'{"binary_data_size": "x"}}]}', None),
    (b"[" * 100_000, None), (b'{"inputs": [{"name": "signal", "datatype": "FP32", "shape": [1, 4096, 12], "data": '
                            + b"[" * 100_000 + b"]}]}", None),
    (b'{"outputs": 7, "inputs": [{"name": "signal", "datatype": "FP32", "shape": [1, 4096, 12], "data": '
     + b"[" + b",".join([b"0"] * 4096 * 12) + b"]}]}", None),
], ids=["superscript-two", "arabic-three", "negative", "request-parameters", "tensor-parameters", "size-type",
        "nested", "nested-data", "outputs-type"])
def test_v2_requests_clients_can_send_are_400_never_500(body, length):
    from ecg_edge.serve import kserve
    from ecg_edge.serve.bodies import BodyError

    with pytest.raises(BodyError) as info:
        kserve.parse_infer(body, length, "abnormalities")
    assert info.value.status == 400


# --- a real server (slow: Ray Serve in its own process) -----------------------------------------------

def _listeners(session: int) -> list[tuple[str, str]]:
    """(local address, process name) of every TCP socket listening in processes of the `session`."""
    import re
    import subprocess

    listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in listening.splitlines():
        for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == session:  # the session id
                found.append((line.split()[3], name))
    return found


def _loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0]
    return host in ("127.0.0.1", "[::1]", "[::ffff:127.0.0.1]")


# Ray 2.60 binds one listener of each replica to every interface with no setting to change it: the
# inter-deployment gRPC server (`add_port_to_grpc_server(self._server, "[::]:0")` in
# ray/serve/_private/replica.py), behind Ray's token authentication. README, "serve", says so.
RAY_WILDCARD = "ray::ServeRepli"


@pytest.mark.slow
@pytest.mark.parametrize(("proxy", "host"), [("ray", "127.0.0.1"), ("haproxy", "127.0.0.1"), ("haproxy", "0.0.0.0")])
def test_a_local_server_listens_on_loopback_only(proxy, host, tmp_path):
    """Everything on loopback but the API where it is exposed on purpose (and Ray's one, RAY_WILDCARD)."""
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'ecg-edge[serve]')")
    from test_serve import Server

    from ecg_edge.serve.proxy import haproxy_program

    if proxy == "haproxy" and haproxy_program() is None:
        pytest.skip("no HAProxy program (ray[serve] brings one on Linux)")
    server = Server(tiny_export(tmp_path / "export"), tmp_path, "--proxy", proxy, "--host", host)
    try:
        listeners = _listeners(server.process.pid)
    finally:
        server.stop()
    names = {name for _, name in listeners}
    assert {"gcs_server", "raylet"} <= names and (proxy != "haproxy" or "haproxy" in names), listeners
    exposed = [(a, n) for a, n in listeners if not _loopback(a) and n != RAY_WILDCARD]
    assert exposed == ([] if host == "127.0.0.1" else [(f"{host}:{server.port}", "haproxy")])
    assert sum(1 for a, n in listeners if n == RAY_WILDCARD and not _loopback(a)) <= 1  # one gRPC server a replica


@pytest.mark.slow
def test_hostile_posts_between_good_ones_are_4xx_and_the_server_still_answers(corpus, tmp_path):
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'ecg-edge[serve]')")
    import json

    from test_serve import Server, _multipart, _post

    good = escape_id_file(tmp_path / "good.h5").read_bytes()
    server = Server(tiny_export(tmp_path / "export"), tmp_path)
    try:
        answers = []
        for name, (path, options) in corpus.items():
            uploads = _uploads(path)
            if not uploads:
                continue
            query = f"&fs={options[1]}&leads={options[3]}" if options else ""
            if len(uploads) == 1:
                status, body = _post(f"{server.url}/v1/ecg?name={uploads[0].name}{query}", uploads[0].data)
            else:
                data, headers = _multipart(uploads)
                status, body = _post(f"{server.url}/v1/ecg?{query[1:]}", data, headers)
            answers.append((name, status, body))
            answers.append(("good", *_post(f"{server.url}/v1/ecg?name=good.h5", good)))
        v2 = f"{server.url}/v2/models/ecg/infer"
        for name, data, headers in [
                ("header length", b'{"inputs": []}', {"Inference-Header-Content-Length": "\u00b2".encode().decode(
                    "latin-1")}),
                ("parameters", b'{"parameters": [1], "inputs": []}', {}),
                ("nested", b"[" * 100_000, {})]:
            answers.append((name, *_post(v2, data, headers)))
            answers.append(("good", *_post(f"{server.url}/v1/ecg?name=good.h5", good)))
    finally:
        assert server.stop() == 0
    wrong = []
    for name, status, body in answers:
        if name == "good":
            if status != 200 or json.loads(body)["exams"][0]["exam_id"] != "\x1b]0;pwned\x07\x1b[2Jid\nsecond line":
                wrong.append((name, status, body[:200]))
            continue
        text = body.decode(errors="replace")
        if not 400 <= status < 500 or "/tmp" in text or "Traceback" in text or MARKER.decode() in text:
            wrong.append((name, status, text[:200]))
    assert wrong == []


def test_haproxy_binds_its_stats_and_metrics_on_loopback_and_the_api_where_asked(tmp_path):
    """The program Ray starts as HAProxy rewrites the bind lines of Ray's template it was given, and nothing else."""
    import subprocess
    import sys

    from ecg_edge.serve.proxy import haproxy_binds, haproxy_wrapper

    template = ("frontend prometheus\n    bind :9101\n    mode http\nfrontend http_frontend\n    bind 127.0.0.1:8000\n"
                "listen stats\n  bind *:8404\n  stats enable\n")
    echo = tmp_path / "echo.py"
    echo.write_text(f"#!{sys.executable}\nimport sys\nprint(' '.join(sys.argv[1:]))\n")
    echo.chmod(0o700)
    for host, api in [("127.0.0.1", ["127.0.0.1:8000"]), ("0.0.0.0", ["0.0.0.0:8000"]),
                      ("192.0.2.7", ["127.0.0.1:8000", "192.0.2.7:8000"])]:
        config = tmp_path / host / "node" / "haproxy.cfg"
        config.parent.mkdir(parents=True)
        config.write_text(template)
        wrapper = haproxy_wrapper(config.parent.parent, str(echo), haproxy_binds(host, 8000, 8404, 9101))
        done = subprocess.run([wrapper, "-db", "-f", str(config)], capture_output=True, text=True, check=True)
        assert done.stdout.strip() == f"-db -f {config}"
        binds = "".join(f"    bind {a}\n" for a in api)
        assert config.read_text() == ("frontend prometheus\n    bind 127.0.0.1:9101\n    mode http\n"
                                      f"frontend http_frontend\n{binds}listen stats\n  bind 127.0.0.1:8404\n"
                                      "  stats enable\n")


# --- fuzzing the header parsers (slow) ------------------------------------------------------------------

def _fuzz_numbers():
    from hypothesis import strategies as st

    return st.one_of(st.integers(-(10**20), 10**20).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
                     st.sampled_from(["0", "-0", "1e-320", "1e308", "abc", "", "²", "٣", "0x10", "1_000"]),
                     st.text(max_size=12))


def _read_or_refuse(path: Path, **options) -> None:
    """Reading `path` gives a recording or an InputError, at once; anything else fails the fuzzing."""
    from ecg_edge import InputError, read_recording

    with deadline(HANG_S):
        try:
            read_recording(path, **options)
        except InputError as exc:
            assert "\n" not in str(exc) and len(str(exc)) <= MAX_LINE_CHARS


@pytest.mark.slow
def test_fuzz_wfdb_headers(tmp_path_factory):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    numbers = _fuzz_numbers()
    fmt = st.one_of(st.sampled_from(["16", "212", "80", "516", "16x4", "16x40000000", "16x0", "24:8", "8x-1"]),
                    numbers)
    tokens = st.lists(st.one_of(numbers, fmt), min_size=0, max_size=9)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(first=st.lists(numbers, max_size=3), lines=st.lists(st.tuples(fmt, tokens), max_size=14),
           signal=st.binary(max_size=512))
    def check(first, lines, signal):
        folder = tmp_path_factory.mktemp("wfdb")
        text = " ".join(["r", *first]) + "\n" + "".join(f"r.dat {f} {' '.join(rest)}\n" for f, rest in lines)
        (folder / "r.hea").write_text(text)
        (folder / "r.dat").write_bytes(signal)
        _read_or_refuse(folder / "r.hea")

    check()


@pytest.mark.slow
def test_fuzz_npy_headers(tmp_path_factory):
    import numpy as np
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    descr = st.sampled_from(["<f8", "<f4", "<i2", ">i4", "|u1", "<c16", "<M8[s]", "<U3", "|O", "|V8", "|b1", "<f2"])
    shape = st.lists(st.integers(-5, 10**13), max_size=4).map(tuple)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(descr=descr, shape=shape, fortran=st.booleans(), payload=st.integers(0, 4096),
           fs=st.floats(allow_nan=True, allow_infinity=True), leads=st.sampled_from([["I", "II"], ["I"], ["x"] * 3]))
    def check(descr, shape, fortran, payload, fs, leads):
        path = tmp_path_factory.mktemp("npy") / "a.npy"
        with open(path, "wb") as f:
            header = {"descr": descr, "fortran_order": fortran, "shape": shape}
            np.lib.format.write_array_header_1_0(f, header)
            f.write(b"\1" * payload)
        _read_or_refuse(path, fs=fs, leads=leads)

    check()


@pytest.mark.slow
@pytest.mark.skipif(not MUSE_FILE.exists(), reason="../shared/data/formats not present")
def test_fuzz_xml_numbers(tmp_path_factory):
    import re

    from hypothesis import HealthCheck, given, settings

    numbers = _fuzz_numbers()
    muse, aecg = MUSE_FILE.read_text(encoding="latin-1"), AECG_FILE.read_text()

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(base=numbers, exponent=numbers, upb=numbers, increment=numbers)
    def check(base, exponent, upb, increment):
        from xml.sax.saxutils import escape

        folder = tmp_path_factory.mktemp("xml")
        text = re.sub(r"(<WaveformType>Rhythm</WaveformType>.*?<SampleBase>)500(</SampleBase>)",
                      lambda m: f"{m[1]}{escape(base)}{m[2]}<SampleExponent>{escape(exponent)}</SampleExponent>",
                      muse, count=1, flags=re.S)
        text = text.replace("<LeadAmplitudeUnitsPerBit>4.88</LeadAmplitudeUnitsPerBit>",
                            f"<LeadAmplitudeUnitsPerBit>{escape(upb)}</LeadAmplitudeUnitsPerBit>", 1)
        (folder / "m.xml").write_text(text, encoding="latin-1", errors="replace")
        _read_or_refuse(folder / "m.xml")
        value = escape(increment, {'"': "&quot;"})
        (folder / "a.xml").write_text(aecg.replace('<increment value="0.002"', f'<increment value="{value}"', 1))
        _read_or_refuse(folder / "a.xml")

    check()


# What a process reading the whole corpus may hold at its peak: the libraries and one recording (0.3 GB
# alone, 1.25 GB once inside the full parallel suite, not yet explained); the files as main read them
# took 2.3-6 GB each (issue 34).
MAX_RSS_BYTES = 3 << 29


def test_the_whole_corpus_is_read_in_bounded_memory(corpus, tmp_path):
    import subprocess
    import sys

    good = escape_id_file(tmp_path / "good.h5")
    files = [str(path) for path, options in corpus.values() if not options]
    child = ("import resource, sys\nfrom ecg_edge.cli import app\n"
             "try:\n    app(sys.argv[1:])\nexcept SystemExit as exc:\n    code = exc.code\n"
             "print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, file=sys.stderr)\n"
             "sys.exit(code)\n")
    # read in the command's own process: its peak is the policy's bound, not the input workers' (they
    # have their own memory budget, tests/test_workers.py)
    # a clean environment: what other tests of this process set (thread pools, Ray) must not count here
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "ECG_EDGE_HOME") if k in os.environ}
    done = subprocess.run([sys.executable, "-c", child, "convert", *files, str(good), "--keep-going",
                           "--workers", "0", str(tmp_path / "out.h5")], capture_output=True, text=True, timeout=600,
                          env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("skipped: ") == len(files)
    peak = int(done.stderr.rsplit("maxrss ", 1)[1].split()[0])
    assert peak < MAX_RSS_BYTES, f"peak {peak / 2**20:.0f} MiB"


def test_one_line_escapes_and_cuts_the_middle():
    from ecg_edge.errors import InputError, one_line

    assert one_line("a\nb\x1b[2J\u202ec\x07") == "a\\nb\\x1b[2J\\u202ec\\x07"
    long = one_line("/" + "d" * 1000 + "/name.h5", 100)
    assert len(long) == 100 and long.endswith("/name.h5") and "..." in long
    error = InputError("x" * 5000 + "/f.h5", "bad\n" * 5000)
    assert len(str(error)) <= MAX_LINE_CHARS and "\n" not in str(error) and "f.h5: bad" in str(error)
