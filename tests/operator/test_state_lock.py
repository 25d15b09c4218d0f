"""The state-dir lock of `flyslice up` (the refusal end to end is in tests/e2e/test_up_runtime_faults.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flyslice.operator.embedded.state_lock import StateDirError, lock_state_dir


def test_a_held_lock_is_refused_in_one_line_naming_the_holder_and_free_again_once_released(
    tmp_path: Path,
) -> None:
    state = tmp_path / "new" / "state"  # created on the way
    held = lock_state_dir(state)
    # flock conflicts between two open files even in one process, as between two `up` processes.
    with pytest.raises(StateDirError) as refused:
        lock_state_dir(state)
    assert str(refused.value) == (
        f"state directory {state} is in use by another `flyslice up` (pid {os.getpid()}); "
        "stop it, or pass another --state-dir"
    )
    held.release()
    held.release()  # idempotent
    lock_state_dir(state).release()


def test_a_state_dir_that_cannot_be_created_is_one_line_too(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateDirError, match=f"^cannot use state directory {blocker / 'state'}: "):
        lock_state_dir(blocker / "state")
