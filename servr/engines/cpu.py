"""How many threads a CPU engine should use: one per physical core this process may run on.

llama.cpp's own rule is one thread per physical core, and half of ``os.cpu_count()`` is only that
where every core carries two hardware threads. On a VM with two single-threaded cores it gave one
thread and left half the machine idle. So the cores are counted from the CPU topology the kernel
publishes: CPUs with the same (package, core) pair are hardware threads of one core.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

SYSFS_CPU = Path("/sys/devices/system/cpu")


def _allowed_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def physical_cores(root: Path = SYSFS_CPU, cpus: Iterable[int] | None = None) -> int:
    """Physical cores among ``cpus`` (default: the CPUs this process may use), at least 1.

    Reads ``root/cpuN/topology/{physical_package_id,core_id}``. A CPU whose topology cannot be
    read counts as a core of its own (containers sometimes hide sysfs; overcounting there is what
    ``os.cpu_count()`` would do anyway), so the answer is never more than the CPUs allowed.
    """
    allowed = list(cpus) if cpus is not None else _allowed_cpus()
    cores: set[tuple[str, str] | tuple[str, int]] = set()
    for cpu in allowed:
        topo = root / f"cpu{cpu}" / "topology"
        try:
            package = (topo / "physical_package_id").read_text().strip()
            core = (topo / "core_id").read_text().strip()
        except OSError:
            cores.add(("cpu", cpu))
            continue
        cores.add((package, core))
    return max(1, len(cores))
