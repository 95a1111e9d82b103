"""Start the server (a local Ray unless told to join a cluster), wait, and stop it cleanly.

SIGTERM or Ctrl-C deletes the application: Ray Serve lets each replica finish the requests it holds
(up to its graceful-shutdown timeout), then Serve and Ray stop where this process started them.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ecg_edge.backends import GPU_ORDER, choose_backend
from ecg_edge.errors import InputError, MachineError
from ecg_edge.manifest import Manifest
from ecg_edge.serve.options import DEFAULT_REQUEST_TIMEOUT_S, ServeOptions
from ecg_edge.serve.proxy import check_proxy, proxy_environment, ray_http_host, scoped_environment

APP_NAME = "ecg-edge"
# A local Ray takes 127.0.0.1 as its node's address with this (Ray's single-machine mode, meant for macOS
# and Windows), and with it binds every one of its own listeners (GCS, raylet, workers, agents, metrics)
# on loopback: measured with `ss -ltnp` on Ray 2.60 (tests/test_hostile.py).
LOOPBACK_RAY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# Each replica holds a Python, a model and neurokit2 (~0.5 GB): a cap keeps `auto` sane on big hosts.
MAX_AUTO_REPLICAS = 8


def resolve(options: ServeOptions) -> tuple[ServeOptions, str]:
    """Options with `auto` resolved here, once (every replica then opens the same runtime), and why."""
    if options.backend == "keras":
        raise InputError(None, "serve runs exported files: choose an exported backend (keras is the reference)")
    name, why = choose_backend(Manifest.load(options.export_dir), options.backend, options.precision, options.threads)
    return replace(options, backend=name), why or ("named" if options.backend != "auto" else "auto")


def parse_replicas(requested: int | str) -> int | str:
    """`--replicas`: a whole number of at least 1, or auto."""
    if requested == "auto":
        return requested
    if not (isinstance(requested, int) or str(requested).isdecimal()) or int(requested) < 1:
        raise InputError(None, f"--replicas {requested!r}: a whole number of at least 1, or auto")
    return int(requested)


def replica_count(requested: int | str, backend: str, cpus: int) -> tuple[int, str]:
    """How many replicas, and why. `auto`: a CPU backend, one per CPU (reading a recording is Python
    that holds its process's GIL, so processes, not threads, keep the cores busy: measured on 2 cores,
    2 replicas answered about 1.4x the requests of one); a GPU backend, one (it takes a GPU)."""
    asked = parse_replicas(requested)
    if isinstance(asked, int):
        return asked, "asked"
    if backend in GPU_ORDER:
        return 1, "auto: one per GPU backend"
    n = max(1, min(cpus, MAX_AUTO_REPLICAS))
    return n, f"auto: one per CPU of {cpus}" + (f", at most {MAX_AUTO_REPLICAS}" if cpus > MAX_AUTO_REPLICAS else "")


def replica_threads(options: ServeOptions, replicas: int) -> int | None:
    """Replicas on one machine share its cores: each takes its part unless told."""
    if options.threads is not None or replicas == 1:
        return options.threads
    return max(1, (os.cpu_count() or 1) // replicas)


def replica_workers(options: ServeOptions, replicas: int, cpus: int) -> int:
    """Input worker processes in each replica (`ecg_edge.input_pool`; each request's recording read
    within the time and memory budget): as asked, or auto from the CPUs a replica has."""
    from ecg_edge.input_pool import auto_workers

    if options.workers is not None:
        return options.workers
    return auto_workers(max(1, cpus // replicas), "gpu" if options.backend in GPU_ORDER else "cpu")


def application(options: ServeOptions, replicas: int) -> Any:
    from ecg_edge.serve.app import EcgDeployment

    gpu = options.backend in GPU_ORDER
    actor = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": 0 if replicas == 1 else 1}
    # Enough requests in a replica at once to fill two batches (Ray Serve's default, 5, would cap them).
    ongoing = max(8, options.max_batch * 2)
    deployment: Any = EcgDeployment  # serve.deployment's wrapper
    return deployment.options(num_replicas=replicas, ray_actor_options=actor,
                              max_ongoing_requests=ongoing).bind(options)


def serve_until_stopped(
    options: ServeOptions, host: str, port: int, replicas: int | str, ray_address: str | None,
    log: Callable[[str], None], stop: threading.Event | None = None,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S, proxy: str = "ray",
) -> None:
    """Serve until SIGTERM/SIGINT (or `stop` is set), then drain and stop what was started here."""
    check_proxy(proxy, ray_address)
    # Ray reads its proxy mode, and where a local Ray listens, from the environment it starts in
    with (proxy_environment(proxy, host, port) as note,
          scoped_environment(LOOPBACK_RAY if ray_address is None else {})):
        if note:
            log(note)
        _serve_until_stopped(options, host, port, replicas, ray_address, log, stop, request_timeout_s, proxy)


def _serve_until_stopped(
    options: ServeOptions, host: str, port: int, replicas: int | str, ray_address: str | None,
    log: Callable[[str], None], stop: threading.Event | None, request_timeout_s: float, proxy: str,
) -> None:
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise MachineError("serve", f"Ray Serve is not installed ({exc.name}): pip install 'ecg-edge[serve]'") from None

    started_ray = not ray.is_initialized()
    if not started_ray and proxy == "haproxy":
        # Ray took its proxy mode from the environment it started in, before this was set
        raise InputError(None, "--proxy haproxy starts its own Ray: this process already runs one")
    if started_ray:
        # "local": a Ray of its own, never one another program left running on this machine
        ray.init(address=ray_address or "local", include_dashboard=False, configure_logging=False,
                 log_to_driver=False)
    # the CPUs Ray can give now: this machine's, or the cluster's free ones with --ray-address
    count, why = replica_count(replicas, options.backend,
                               int(ray.available_resources().get("CPU", os.cpu_count() or 1)))
    options = replace(options, threads=replica_threads(options, count),
                      workers=replica_workers(options, count, os.cpu_count() or 1))
    stop = stop or threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        serve.start(http_options={"host": ray_http_host(proxy, host), "port": port,
                                  "request_timeout_s": request_timeout_s})
        serve.run(application(options, count), name=APP_NAME, route_prefix="/", blocking=False)
        log(f"serving on http://{host}:{port}/ ({count} replica{'s' * (count > 1)} ({why}), {options.backend} "
            f"{options.precision}, batches of up to {options.max_batch} requests): POST /v1/ecg, "
            "POST /v2/models/ecg/infer; Ctrl-C stops")
        nodes = sorted({(n["NodeManagerAddress"], n["MetricsExportPort"]) for n in ray.nodes()
                        if n.get("Alive") and n.get("MetricsExportPort")})
        if nodes:
            log("metrics (Prometheus, Ray's and ecg_edge_*): " + ", ".join(f"http://{a}:{p}/metrics" for a, p in nodes))
        stop.wait()
        log("stopping: answering the requests in flight")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            if serve_running(serve):
                serve.delete(APP_NAME)
                if ray_address is None:
                    serve.shutdown()
        finally:
            if started_ray:
                ray.shutdown()
    log("stopped")


def serve_running(serve: Any) -> bool:
    try:
        return APP_NAME in serve.status().applications
    except Exception:  # Serve never came up: nothing to delete
        return False
