"""Owner-only secret files: made once, whoever asks first, and read by everyone after."""

from __future__ import annotations

import threading
from pathlib import Path

from agora.secrets import secret_file
from agora_tools.testing import at_once


def test_replicas_in_one_process_asking_at_once_for_a_new_secret_all_get_the_same_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "secrets" / "shared.key"
    start = threading.Barrier(8)
    found: list[str] = []

    def ask() -> None:
        start.wait()
        found.append(secret_file(path))

    failures = at_once(*[ask] * 8)

    assert failures == []
    assert len(found) == 8
    assert set(found) == {path.read_text().strip()}
    assert [p.name for p in path.parent.iterdir()] == ["shared.key"], "no temporary file is left"
