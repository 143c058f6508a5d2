"""Connecting to Ray: the cluster named by --address / RAY_ADDRESS (as under `ray job submit`), or a local one."""

import logging
import os
from contextlib import contextmanager

import ray


def connect(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> dict:
    """Join (or start) a Ray cluster; returns its total resources."""
    if not ray.is_initialized():
        if address or os.environ.get("RAY_ADDRESS"):
            ray.init(address=address or os.environ["RAY_ADDRESS"], log_to_driver=False, logging_level=logging.WARNING)
        else:  # a private local cluster; num_gpus may be logical (tests on CPU machines)
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)  # the job's own summary is what a user reads
    return ray.cluster_resources()


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None):
    """connect() for the length of a run: a Ray this call started is shut down at the end (a job run in-process
    twice, or by a test, must not find the first run's private cluster); one already connected is left as is."""
    started = not ray.is_initialized()
    try:
        yield connect(address, num_cpus, num_gpus)
    finally:
        if started and ray.is_initialized():
            ray.shutdown()


def actor_resources(resources: dict, actors: int | None, threads: int = 1) -> tuple[int, dict]:
    """(number of actors, each actor's Ray resource request): one actor per GPU when the cluster has GPUs,
    otherwise one per `threads` CPUs. Each actor runs torch on a fixed number of threads whatever the pool
    size: CPU kernels round differently with different thread counts, and results must not depend on how
    many actors ran them."""
    gpus = int(resources.get("GPU", 0))
    cpus = max(float(resources.get("CPU", 1)), 1.0)
    # More GPU actors than GPUs would wait forever for a device; CPU shares are fractional and always fit.
    n = min(actors or gpus, gpus) if gpus else (actors or max(1, int(cpus // threads)))
    request = {"num_cpus": min(float(threads), cpus / n)}
    if gpus:
        request["num_gpus"] = 1
    return n, request
