"""CPU time and resident memory read from Linux's /proc, for the benchmarks that report CPU per
request or per event, or a process's memory.

Each bench runs as a script, with this folder first on ``sys.path``: ``from procstat import ...``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a process has used so far, with that of the children it has
    waited for (a group's process forks one for its migrations, ADR 64); None where /proc is not
    there or the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    # utime, stime, then cutime, cstime: the children's
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float | None:
    """CPU time all processes of the machine have used so far (None where /proc is not there)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int | str = "self") -> float | None:
    """A process's resident memory (VmRSS) in MB; None where /proc is not there or the process is
    gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
