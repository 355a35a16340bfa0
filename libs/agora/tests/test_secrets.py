"""Owner-only secret files: made once, whoever asks first, and read by everyone after."""

from __future__ import annotations

import threading
from pathlib import Path

from agora.secrets import secret_file


def test_replicas_in_one_process_asking_at_once_for_a_new_secret_all_get_the_same_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "secrets" / "shared.key"
    start = threading.Barrier(8)
    found: list[str] = []
    failures: list[BaseException] = []

    def ask() -> None:
        try:
            start.wait()
            found.append(secret_file(path))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert len(found) == 8
    assert set(found) == {path.read_text().strip()}
    assert [p.name for p in path.parent.iterdir()] == ["shared.key"], "no temporary file is left"
