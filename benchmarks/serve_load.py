"""`ecg-edge serve` under load, beside offline `infer` on the same backend, in one run (loopback only).

    python benchmarks/serve_load.py [--model EXPORT_DIR] [--records ../shared/data/real] [--count 240]

1. Offline: `run_inference` on the recordings (the engine of `ecg-edge infer`): ECG/s and its results.
2. A server (`ecg-edge serve`, its own process, local Ray): 1, 8 and 32 concurrent clients send real
   recordings (WFDB records as multipart, single-exam CODE HDF5 files) for a fixed count each:
   throughput, p50/p99 latency, batch sizes seen (the response headers), errors; every answer checked
   against the offline results (probabilities to 1e-6, findings, quality flags).
3. Faults: hostile requests (truncated files, an XML bomb, wrong tensor shapes, a 1 GB body claim,
   empty bodies, NaN) interleaved with good ones: every hostile one must get a 4xx, every good one
   the right answer.
4. A replica killed under load (2 replicas, SIGKILL to one replica's process): clients that retry
   (up to 5 tries) lose nothing; no request may hang past its timeout.

Every loop is bounded by a count and every request by a timeout. Writes
benchmarks/results/serve-<date>-<host>.md and .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ecg_edge.atomic_files import atomic_write_text
from ecg_edge.backends import open_backend
from ecg_edge.exams import ReadOptions
from ecg_edge.infer import run_inference
from ecg_edge.manifest import load_manifest
from ecg_edge.serve.proxy import free_port

RESULTS = Path(__file__).parent / "results"
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
TIMEOUT_S = 60.0
BILLION_LAUGHS = ('<?xml version="1.0"?>\n<!DOCTYPE RestingECG [\n <!ENTITY a "aaaaaaaaaa">\n'
                  + "".join(f' <!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">\n' for i in range(9))
                  + "]>\n<RestingECG>&j;</RestingECG>\n")


@dataclass
class Request:
    name: str  # the recording, for the result check
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    want: int = 200  # hostile requests: the 4xx they must get (0: any 4xx)
    raw: bytes | None = None  # sent on a bare socket (a body that is claimed, never sent)


@dataclass
class Answer:
    status: int
    latency_s: float
    body: bytes
    batch_requests: int = 0
    tries: int = 1


def multipart(files: list[Path]) -> tuple[bytes, dict[str, str]]:
    boundary = "ecgedgeload"
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"; filename="{p.name}"\r\n'
                    f"Content-Type: application/octet-stream\r\n\r\n".encode() + p.read_bytes() + b"\r\n"
                    for i, p in enumerate(files))
    return body + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def recordings(real: Path, per_source: int, tmp: Path) -> tuple[list[Path], list[Request]]:
    """Files for offline `infer` and the same recordings as requests."""
    files, requests = [], []
    for folder in ("ludb", "cinc2021"):
        for header in sorted((real / folder).glob("*.hea"))[:per_source]:
            signals = [p for p in header.parent.glob(f"{header.stem}.*") if p.suffix in (".dat", ".mat")]
            body, headers = multipart([header, *signals])
            files.append(header)
            requests.append(Request(header.stem, "/v1/ecg", body, headers))  # named as offline results are
    with h5py.File(real / "code-test-80.h5") as f:
        ids = f["exam_id"][:per_source]
        tracings = f["tracings"][:per_source]
    for exam_id, x in zip(ids, tracings, strict=True):
        path = tmp / f"code-{int(exam_id)}.h5"
        with h5py.File(path, "w") as out:
            out.create_dataset("tracings", data=x[None].astype(np.float32))
            out.create_dataset("exam_id", data=np.array([exam_id]))
        files.append(path)
        requests.append(Request(path.stem, f"/v1/ecg?name={path.name}", path.read_bytes()))
    return files, requests


def hostile(requests: list[Request], n: int) -> list[Request]:
    """n hostile requests, cycling through the kinds a server meets."""
    good = requests[0].body
    nan = io.BytesIO()
    bad = np.zeros((4000, 12))
    bad[7, 2] = np.nan
    np.save(nan, bad)
    v2 = "/v2/models/ecg/infer"
    wrong_shape = json.dumps({"inputs": [{"name": "signal", "datatype": "FP32", "shape": [1, 100, 12],
                                          "data": [0.0] * 1200}]}).encode()
    kinds = [
        Request("truncated multipart", "/v1/ecg", good[:len(good) // 2], requests[0].headers, 400),
        Request("truncated hdf5", "/v1/ecg?name=cut.h5", requests[-1].body[:4000], {}, 400),
        Request("xml bomb", "/v1/ecg?name=bomb.xml", BILLION_LAUGHS.encode(), {}, 400),
        Request("wrong shape", v2, wrong_shape, {}, 400),
        Request("not json", v2, b"{inputs", {}, 400),
        Request("1 GB claim", "/v1/ecg", b"", {}, 413,
                raw=b"POST /v1/ecg HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\nabc"),
        Request("empty body", "/v1/ecg", b"", {}, 400),
        Request("unknown bytes", "/v1/ecg", os.urandom(2048), {}, 415),
        Request("nan npy", "/v1/ecg?name=n.npy&fs=400&leads=I,II,III,AVR,AVL,AVF,V1,V2,V3,V4,V5,V6",
                nan.getvalue(), {}, 400),
    ]
    return [kinds[i % len(kinds)] for i in range(n)]


def send(url: str, request: Request, retries: int = 0) -> Answer:
    start = time.perf_counter()
    for attempt in range(retries + 1):
        try:
            if request.raw is not None:
                host, port = url.removeprefix("http://").split(":")
                with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as s:
                    s.sendall(request.raw)
                    reply = s.recv(4096)
                status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0
                return Answer(status, time.perf_counter() - start, reply, tries=attempt + 1)
            http = urllib.request.Request(url + request.path, data=request.body, headers=request.headers,
                                          method="POST")
            with urllib.request.urlopen(http, timeout=TIMEOUT_S) as response:
                return Answer(response.status, time.perf_counter() - start, response.read(),
                              int(response.headers.get("x-ecg-edge-batch-requests", 0)), attempt + 1)
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == retries:
                return Answer(exc.code, time.perf_counter() - start, exc.read(), tries=attempt + 1)
        except (OSError, TimeoutError) as exc:  # refused, reset, timed out
            if attempt == retries:
                return Answer(0, time.perf_counter() - start, repr(exc).encode(), tries=attempt + 1)
        time.sleep(1.0)
    raise AssertionError("unreachable")


def load(url: str, requests: list[Request], clients: int, count: int, retries: int = 0,
         during: Callable[[int], None] | None = None) -> tuple[list[tuple[Request, Answer]], float]:
    """`count` requests (cycling through `requests`) from `clients` threads; `during(i)` runs before the i-th."""
    order = [requests[i % len(requests)] for i in range(count)]
    start = time.perf_counter()

    def one(i: int) -> tuple[Request, Answer]:
        if during:
            during(i)
        return order[i], send(url, order[i], retries)

    with ThreadPoolExecutor(clients) as pool:
        done = list(pool.map(one, range(count)))
    return done, time.perf_counter() - start


def check(done: list[tuple[Request, Answer]], offline: dict[str, dict[str, Any]], classes: list[str]) -> list[str]:
    """Problems: a good request not answered 200 with the offline result; a hostile one not its 4xx."""
    problems = []
    for request, answer in done:
        if request.want != 200:
            if not 400 <= answer.status < 500 or (request.want and answer.status != request.want):
                problems.append(f"{request.name}: {answer.status} (want {request.want}) {answer.body[:120]!r}")
            continue
        if answer.status != 200:
            problems.append(f"{request.name}: {answer.status} {answer.body[:160]!r}")
            continue
        exam = json.loads(answer.body)["exams"][0]
        want = offline[request.name]
        delta = max(abs(exam[c] - want[c]) for c in classes)
        if delta > 1e-6 or exam["findings"] != want["findings"] or exam["quality"] != want["quality"]:
            problems.append(f"{request.name}: differs from infer (max |dp| {delta:.1e})")
    return problems


def stats(done: list[tuple[Request, Answer]], wall: float) -> dict[str, Any]:
    latencies = np.array([a.latency_s for _, a in done])
    batches = np.array([a.batch_requests for _, a in done if a.batch_requests])
    return {"requests": len(done), "wall_s": round(wall, 3), "per_s": round(len(done) / wall, 2),
            "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
            "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1),
            "max_ms": round(float(latencies.max()) * 1000, 1),
            "batch_mean": round(float(batches.mean()), 2) if len(batches) else 0,
            "batch_max": int(batches.max()) if len(batches) else 0,
            "errors": sum(a.status != 200 for _, a in done)}


class Server:
    def __init__(self, export: Path, backend: str, precision: str, replicas: int | str, log: Path,
                 proxy: str = "ray"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ecg_edge.cli", "serve", "--model", str(export), "--backend", backend,
             "--precision", precision, "--port", str(self.port), "--replicas", str(replicas), "--proxy", proxy],
            stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True)
        self.log = log
        self.started_s = self.wait_ready(180)

    def wait_ready(self, limit_s: float) -> float:
        start = time.perf_counter()
        while time.perf_counter() - start < limit_s:
            if self.process.poll() is not None:
                raise SystemExit(f"serve exited {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2):
                    return time.perf_counter() - start
            except (OSError, urllib.error.URLError):
                time.sleep(0.5)
        self.stop()
        raise SystemExit(f"serve not ready in {limit_s:.0f} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> float:
        start = time.perf_counter()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        return time.perf_counter() - start


def cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of this machine's processes, by role: replicas, the HTTP proxy (Serve's, or
    HAProxy and its manager), the rest of Ray, this load generator (utime + stime from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    roles: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        program = Path(command.split(" ", 1)[0]).name
        role = ("load generator" if int(pid) == os.getpid()
                else "replicas" if command.startswith("ray::ServeReplica")
                else "proxy" if command.startswith(("ray::ProxyActor", "ray::HAProxyManager")) or program == "haproxy"
                else "ray, other" if command.startswith("ray::") or "/ray/" in command
                or "ecg_edge.cli serve" in command else None)
        if role:
            roles[role] = roles.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return roles


def replica_pids() -> list[int]:
    found = subprocess.run(["pgrep", "-f", "ray::ServeReplica:ecg-edge"], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, help="export folder (default: the model home's)")
    parser.add_argument("--records", type=Path, default=REAL)
    parser.add_argument("--per-source", type=int, default=40, help="recordings of LUDB, CinC and CODE-test each")
    parser.add_argument("--backend", default="ort-cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--count", type=int, default=240, help="requests at each concurrency")
    parser.add_argument("--hostile", type=int, default=200)
    parser.add_argument("--servers", default="1,auto,auto:haproxy",
                        help="servers to load side by side: `serve --replicas` settings, each with :PROXY for "
                             "`--proxy` (default ray)")
    args = parser.parse_args()
    from ecg_edge.home import home_export_dir

    export = args.model or home_export_dir()
    manifest = load_manifest(export)
    classes = list(manifest["output"]["classes"])
    report: dict[str, Any] = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, "
                              f"{os.cpu_count()} cores, Python {platform.python_version()}",
                              "backend": args.backend, "precision": args.precision, "export": str(export)}
    with tempfile.TemporaryDirectory() as tmp:
        files, requests = recordings(args.records, args.per_source, Path(tmp))
        runner, _ = open_backend(export, args.backend, args.precision)
        with runner:
            run_inference(files, runner, manifest, options=ReadOptions())  # warm
            best = None
            for _ in range(2):
                run = run_inference(files, runner, manifest, options=ReadOptions())
                best = run if best is None or run.throughput > best.throughput else best
        assert best is not None
        findings = best.findings()
        offline = {Path(e.source).stem: {**{c: float(p) for c, p in zip(classes, probs, strict=True)}, "findings": f,
                          "quality": e.quality} for e, probs, f in zip(best.exams, best.probabilities, findings,
                                                                        strict=True)}
        report["recordings"] = len(files)
        report["offline_ecg_per_s"] = round(best.throughput, 2)
        with runner:
            bare = max(run_inference(files, runner, manifest, options=ReadOptions(measure="off")).throughput
                       for _ in range(2))
        report["offline_measure_off_ecg_per_s"] = round(bare, 2)
        print(f"offline infer: {len(files)} recordings, {best.throughput:.1f} ECG/s ({bare:.1f} measure off)",
              flush=True)

        report["levels"], report["start_s"] = {}, {}
        settings = args.servers.split(",")
        for k, setting in enumerate(settings):
            replicas, _, proxy = setting.partition(":")
            server = Server(export, args.backend, args.precision, replicas, Path(tmp) / f"serve-{k}.log",
                            proxy or "ray")
            report["start_s"][setting] = round(server.started_s, 1)
            try:
                load(server.url, requests, 4, len(requests))  # warm: every recording once
                label = (f"{replicas} ({len(replica_pids())})" if replicas == "auto" else replicas) + \
                    (f", {proxy}" if proxy else "")
                levels = report["levels"][label] = {}
                off = [replace(r, path=r.path + ("&" if "?" in r.path else "?") + "measure=off") for r in requests]
                for clients, sent, name in ((1, requests, "1"), (8, requests, "8"), (32, requests, "32"),
                                            (1, off, "1, measure off"), (8, off, "8, measure off")):
                    before = cpu_seconds()
                    done, wall = load(server.url, sent, clients, args.count)
                    after = cpu_seconds()
                    cpu_ms = {role: round((after[role] - before.get(role, 0.0)) * 1000 / len(done), 1)
                              for role in after}
                    levels[name] = stats(done, wall) | {"wrong": check(done, offline, classes), "cpu_ms": cpu_ms}
                    print(f"replicas {label}, {name} clients: {levels[name]}", flush=True)
            except BaseException:
                server.stop()
                raise
            if k != len(settings) - 1:
                server.stop()
        try:  # the faults, on the last server
            mixed = [x for pair in zip(requests * (args.hostile // len(requests) + 1), hostile(requests, args.hostile),
                                       strict=False) for x in pair][:2 * args.hostile]
            done, wall = load(server.url, mixed, 8, len(mixed))
            wrong = check(done, offline, classes)
            statuses: dict[str, dict[int, int]] = {}
            for request, answer in done:
                if request.want != 200:
                    statuses.setdefault(request.name, {}).setdefault(answer.status, 0)
                    statuses[request.name][answer.status] += 1
            report["faults"] = {"requests": len(done), "hostile": args.hostile, "wrong": wrong,
                                "statuses": statuses, "max_ms": stats(done, wall)["max_ms"]}
            with urllib.request.urlopen(f"{server.url}/v2/health/ready", timeout=10) as response:
                report["faults"]["ready_after"] = response.status == 200
            print(f"faults: {len(wrong)} wrong of {len(done)}; {statuses}", flush=True)
        finally:
            report["stop_s"] = round(server.stop(), 1)

        server = Server(export, args.backend, args.precision, 2, Path(tmp) / "serve2.log")
        try:
            start = time.perf_counter()
            while len(replica_pids()) < 2 and time.perf_counter() - start < 120:  # ready means one is up
                time.sleep(1)
            pids = replica_pids()
            killed: list[int] = []

            def kill_one(i: int) -> None:
                if i == args.count // 4 and pids and not killed:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])

            done, wall = load(server.url, requests, 8, args.count, retries=4, during=kill_one)
            lost = [f"{r.name}: {a.status} {a.body[:120]!r}" for r, a in done if a.status != 200]
            start = time.perf_counter()
            while len(replica_pids()) < 2 and time.perf_counter() - start < 120:
                time.sleep(1)
            report["replica_kill"] = stats(done, wall) | {
                "replicas_before": len(pids), "killed": killed, "lost": lost,
                "retried": sum(a.tries > 1 for _, a in done), "max_tries": max(a.tries for _, a in done),
                "wrong": check(done, offline, classes), "replicas_after": len(replica_pids()),
                "replaced_within_s": round(time.perf_counter() - start, 1)}
            print(f"replica kill: {report['replica_kill']}", flush=True)
        finally:
            server.stop()
    write(report)


def write(report: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    stem = f"serve-{report['date']}-{platform.node() or 'host'}"
    atomic_write_text(RESULTS / f"{stem}.json", json.dumps(report, indent=1) + "\n")
    offline, bare = report["offline_ecg_per_s"], report["offline_measure_off_ecg_per_s"]
    lines = [f"# ecg-edge serve under load, {report['date']}", "",
             f"{report['machine']}; backend {report['backend']} {report['precision']}; {report['recordings']} real "
             f"recordings (LUDB and CinC 2021 WFDB records as multipart, CODE-test exams as single-exam HDF5); "
             f"loopback. Server start {', '.join(f'{v} s ({k} replicas)' for k, v in report['start_s'].items())}, "
             f"stop (SIGTERM) {report['stop_s']} s.", "",
             f"Offline `infer` (same backend, same recordings, best of 2): **{offline} ECG/s** ({bare} with "
             "`--measure off`; the server's `?measure=off` rows are compared with that).", "",
             "| replicas | clients | requests | ECG/s | vs offline | p50 ms | p99 ms | max ms | batch mean / max | "
             "errors | wrong |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for replicas, levels in report["levels"].items():
        for clients, s in levels.items():
            base = bare if "off" in clients else offline
            lines.append(f"| {replicas} | {clients} | {s['requests']} | {s['per_s']} | {s['per_s'] / base:.2f}x | "
                         f"{s['p50_ms']} | {s['p99_ms']} | {s['max_ms']} | {s['batch_mean']} / {s['batch_max']} | "
                         f"{s['errors']} | {len(s['wrong'])} |")
    lines += ["", "CPU milliseconds a request, by process (32 clients; offline `infer` spends at most "
              f"{1000 * (os.cpu_count() or 1) / offline:.0f} ms an exam: all cores for 1 / its ECG/s):", "",
              "| replicas | replicas' processes | HTTP proxy | Ray, other | load generator | all |",
              "|---|---|---|---|---|---|"]
    for replicas, levels in report["levels"].items():
        cpu = levels["32"]["cpu_ms"]
        lines.append(f"| {replicas} | " + " | ".join(str(cpu.get(role, 0)) for role in
                                                    ("replicas", "proxy", "ray, other", "load generator"))
                     + f" | {sum(cpu.values()):.0f} |")
    lines.append("")
    for replicas, levels in report["levels"].items():
        for suffix in ("", ", measure off"):
            single, eight = levels["1" + suffix]["p50_ms"], levels["8" + suffix]["p99_ms"]
            lines.append(f"- replicas {replicas}{suffix}: p99 at 8 clients / single-request latency (p50 at 1 "
                         f"client) **{eight / single:.2f}x**; 8 clients / throughput at 8 = "
                         f"{8000 / levels['8' + suffix]['per_s']:.0f} ms mean latency by Little's law.")
    lines.append("")
    f = report["faults"]
    lines += [f"Faults: {f['hostile']} hostile requests interleaved with {f['requests'] - f['hostile']} good ones "
              f"(8 clients): {len(f['wrong'])} answered wrongly; server ready after: {f['ready_after']}; slowest "
              f"answer {f['max_ms']} ms.", "", "| hostile kind | statuses |", "|---|---|"]
    lines += [f"| {k} | {', '.join(f'{s}: {n}' for s, n in v.items())} |" for k, v in f["statuses"].items()]
    k = report["replica_kill"]
    lines += ["", f"Replica killed (SIGKILL to one of {k['replicas_before']} replica processes after "
              f"{k['requests'] // 4} of {k['requests']} requests, 8 clients retrying up to 4 times): "
              f"{len(k['lost'])} lost, {k['retried']} retried (most tries {k['max_tries']}), {len(k['wrong'])} "
              f"wrong, slowest {k['max_ms']} ms; replicas back to {k['replicas_after']}.", ""]
    wrong = [p for levels in report["levels"].values() for s in levels.values() for p in s["wrong"]]
    for problem in [*wrong, *f["wrong"], *k["lost"]][:20]:
        lines.append(f"- {problem}")
    atomic_write_text(RESULTS / f"{stem}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
