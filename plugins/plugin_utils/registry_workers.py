# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a registry's customer files with several worker processes.

:func:`read_all` runs a function that loads and checks one file (``registry.py`` passes it) over
every customer file, in forked worker processes when the files are large enough, else here; the
results come back in file order either way, so the report does not depend on the number of processes.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

# Registries whose customer files add up to this much are read by several processes at once: parsing
# YAML is most of the load time (about 10 s per 100,000 terminals on one core).
PARALLEL_MIN_BYTES = 4 * 1024 * 1024
MAX_WORKERS = 8

_WORKER_FLEET = None
_WORKER_READ = None


def worker_count(paths, workers: int = 0) -> int:
    """How many processes read ``paths``: ``workers`` if above 1, else one per CPU for large registries.

    ``0`` picks one per CPU (at most :data:`MAX_WORKERS`) when the files add up to
    :data:`PARALLEL_MIN_BYTES` or more, ``1`` reads them all in this process.
    """
    if workers == 1 or len(paths) < 2:
        return 1
    if workers > 1:
        return min(workers, len(paths))
    try:
        size = sum(os.path.getsize(p) for p in paths)
    except OSError:
        return 1
    if size < PARALLEL_MIN_BYTES:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, MAX_WORKERS, len(paths)))


def read_all(fleet, paths, workers, read_one) -> list:
    """``[read_one(fleet, path) for path in paths]``, computed by :func:`worker_count` processes.

    The workers are forked (``fleet`` and ``read_one`` are inherited, not pickled); if they cannot be
    started or one dies, every file is read in this process instead.
    """
    count = worker_count(paths, workers)
    if count > 1:
        try:
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(
                count, mp_context=context, initializer=_worker_init, initargs=(fleet, read_one)
            ) as pool:
                return list(pool.map(_worker_read, paths, chunksize=max(1, len(paths) // (count * 8))))
        except (OSError, ValueError, BrokenProcessPool):
            pass  # no fork on this system, or a worker was killed: read them here instead
    return [read_one(fleet, path) for path in paths]


def _worker_init(fleet, read_one):
    global _WORKER_FLEET, _WORKER_READ  # pylint: disable=global-statement
    _WORKER_FLEET = fleet
    _WORKER_READ = read_one


def _worker_read(path):
    return _WORKER_READ(_WORKER_FLEET, path)
