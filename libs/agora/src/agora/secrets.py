"""Secrets kept in files only their owner can read.

The embedded profile makes the secrets it needs (the key that encrypts identity's signing keys,
the operator's token, the services' own credentials) on first use, under ``.agora/secrets/``, each
file mode 0600 in a folder mode 0700. A deployment provides them instead, from its own secret
store, through the environment or mounted files; the production profile never makes one up.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from pathlib import Path

OWNER_ONLY_DIR = 0o700
OWNER_ONLY_FILE = 0o600
# The operator's token in `.agora/secrets/`, where the embedded profile makes it.
OPERATOR_TOKEN_FILE = "operator.token"  # noqa: S105 (a file name, not a secret)


def token_digest(secret: str) -> str:
    """What a callee is told of a caller's secret: its SHA-256, in hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) if missing and make it readable by its owner only."""
    path.mkdir(parents=True, exist_ok=True, mode=OWNER_ONLY_DIR)
    path.chmod(OWNER_ONLY_DIR)
    return path


def read_secret(path: Path) -> str | None:
    """The secret in ``path`` with surrounding whitespace removed, or None when there is none."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def secret_file(path: Path, *, nbytes: int = 32) -> str:
    """The secret in ``path``, made (random, URL-safe) if the file does not exist yet.

    Safe when several processes ask at once: the file is created with ``O_EXCL`` in one step, so
    exactly one process writes it and every other reads that one.
    """
    found = read_secret(path)
    if found is not None:
        return found
    private_dir(path.parent)
    value = secrets.token_urlsafe(nbytes)
    # Unique per caller, not per process: replicas run together in one process (and tests) share
    # a pid, and the second O_EXCL open of one name would fail instead of reading the winner's.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY_FILE)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(value + "\n")
        # link() fails when another process got there first; its secret then wins.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    found = read_secret(path)
    if found is None:
        raise RuntimeError(f"the secret file {path} is empty")
    return found
