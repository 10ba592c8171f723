"""CPU thread defaults for the `longlive-runner` commands, chosen so that a shared machine does
not make them collapse (docs/performance.md, "Threads on a shared machine").

torch runs its CPU kernels on an OpenMP pool of one thread per core by default, and OpenMP's
threads spin while they wait for work. When another process holds a core, the spinning threads
and the one that is descheduled slow every kernel: on 2 cores with other work running, the demo
model made 1 video frame/s with torch's 2 threads, against 14-16 with OpenMP's passive wait or 1
thread. So, unless the environment says otherwise:

- `OMP_WAIT_POLICY=PASSIVE`: waiting threads sleep instead of spinning;
- `OMP_NUM_THREADS` = half the CPUs this process may run on, at least 1 (1 on 2 cores): the rest
  is left to the event loop, the clients and whatever else shares the machine.

The knob is `LONGLIVE_THREADS=N` (N torch threads; 0 = torch's own default, one per core). Both
variables must be set before torch is imported, which is why the CLI applies them first of all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["THREADS_VARIABLE", "default_threads", "thread_environment"]

THREADS_VARIABLE = "LONGLIVE_THREADS"


def default_threads(cpus: int | None = None) -> int:
    """Half the CPUs this process may run on (its affinity), at least 1."""
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


def thread_environment(environ: Mapping[str, str], cpus: int | None = None) -> dict[str, str]:
    """The variables to add to `environ` (before torch is imported): `OMP_WAIT_POLICY` and
    `OMP_NUM_THREADS` where it does not set them, `LONGLIVE_THREADS` taking precedence over
    `OMP_NUM_THREADS`. Raises ValueError for a `LONGLIVE_THREADS` that is not an integer >= 0."""
    out: dict[str, str] = {}
    if "OMP_WAIT_POLICY" not in environ:
        out["OMP_WAIT_POLICY"] = "PASSIVE"
    asked = environ.get(THREADS_VARIABLE, "").strip()
    if asked:
        try:
            n = int(asked)
        except ValueError:
            n = -1
        if n < 0:
            raise ValueError(
                f"{THREADS_VARIABLE}={asked!r}: expected a number of torch threads (0 = torch's default)"
            )
        if n > 0:
            out["OMP_NUM_THREADS"] = str(n)
    elif "OMP_NUM_THREADS" not in environ:
        out["OMP_NUM_THREADS"] = str(default_threads(cpus))
    return out
