"""A password check's memory goes back to the system when it ends (ADR 65): identity's processes
start with the variables ``topology.toml`` gives them, which stop glibc from keeping each
check's 19 MiB in every worker thread that ever hashed.

Each case hashes in fresh processes, as identity does: in worker threads, a few of them."""

from __future__ import annotations

import os
import subprocess
import sys

from agora.topology import load_topology

HASH_IN_THREADS = """
import threading
from identity.adapters import Argon2Passwords

def resident_mib():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024

passwords = Argon2Passwords()
before = resident_mib()
for _ in range(3):
    worker = threading.Thread(target=passwords.hash, args=("correct horse battery",))
    worker.start()
    worker.join()
passwords.verify(passwords.hash("staple"), "staple")
print(resident_mib() - before)
"""


def kept_after_checks(environment: dict[str, str]) -> float:
    """How many MiB more a process holds after a few checks than before them."""
    base = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    done = subprocess.run(
        [sys.executable, "-c", HASH_IN_THREADS],
        env={**base, **environment},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return float(done.stdout)


def test_identity_s_processes_give_each_check_s_memory_back_where_glibc_s_default_keeps_it() -> (
    None
):
    environment = load_topology().services["identity"].environment

    # One check holds 19 MiB: the default keeps at least that much, in every thread that hashed.
    assert kept_after_checks({}) >= 19
    assert kept_after_checks(environment) < 4
