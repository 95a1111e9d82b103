"""`ecg-edge serve`: online inference over HTTP on Ray Serve."""

from __future__ import annotations

from typing import Annotated

import typer

from ecg_edge.cli.application import command, log
from ecg_edge.cli.options import (
    BackendOption,
    ModelOption,
    PrecisionOption,
    ThreadsOption,
    ThresholdOption,
    WorkersOption,
)


@command()
def serve(
    model: ModelOption = None,
    backend: BackendOption = "auto",
    precision: PrecisionOption = "fp32",
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface; mind who can reach "
                                           "it).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    replicas: Annotated[str, typer.Option(help="Replicas, each with its own backend: a number, or auto (CPU "
                                               "backends: one per CPU, at most 8; GPU backends: one, with a "
                                               "GPU).")] = "auto",
    max_batch: Annotated[int, typer.Option(min=1, help="Requests merged into one backend call.")] = 64,
    batch_wait_ms: Annotated[float, typer.Option(min=0, help="How long a batch waits for more requests.")] = 5.0,
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="Largest request body (413 above).")] = 32,
    threshold: ThresholdOption = None,
    threads: ThreadsOption = None,
    proxy: Annotated[str, typer.Option(help="What routes requests to the replicas: ray (Ray Serve's Python proxy) "
                                            "or haproxy (Ray's HAProxy mode, brought by ray[serve] on Linux: "
                                            "less CPU a request; its stats and metrics on 127.0.0.1).")] = "ray",
    ray_address: Annotated[str | None, typer.Option(help="Join an existing Ray cluster (e.g. auto); default: start "
                                                         "a local one.")] = None,
    workers: WorkersOption = "auto",
) -> None:
    """Serve the export over HTTP: POST a recording to /v1/ecg, tensors to /v2/models/ecg/infer (KServe v2)."""
    from ecg_edge.home import resolve_export_dir
    from ecg_edge.input_pool import parse_workers
    from ecg_edge.manifest import load_manifest
    from ecg_edge.request import parse_thresholds
    from ecg_edge.serve.options import ServeOptions
    from ecg_edge.serve.proxy import check_proxy
    from ecg_edge.serve.server import parse_replicas, resolve, serve_until_stopped

    asked = parse_replicas(replicas)  # both checked before anything starts
    check_proxy(proxy, ray_address)
    export_dir = resolve_export_dir(model)
    classes = list(load_manifest(export_dir)["output"]["classes"])
    options = ServeOptions(export_dir=str(export_dir.resolve()), backend=backend, precision=precision,
                           threads=threads, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                           max_body_bytes=int(max_body_mb * 2**20),
                           thresholds=parse_thresholds(threshold or [], classes), workers=parse_workers(workers))
    options, why = resolve(options)
    log(f"backend: {options.backend} {options.precision} ({why})")
    serve_until_stopped(options, host, port, asked, ray_address, log, proxy=proxy)
