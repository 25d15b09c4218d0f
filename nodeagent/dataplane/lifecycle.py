"""The explicit lifecycle state machine of an instance (the Modular Platform's component model).

States are the NFInstance status states. Every change goes through :meth:`Lifecycle.to`, which
refuses transitions the table does not allow, so a bug in the agent shows up as a clear error
instead of an instance in an impossible state.
"""

from __future__ import annotations

import time
from enum import StrEnum


class State(StrEnum):
    PENDING = "Pending"
    INSTALLING = "Installing"
    RUNNING = "Running"
    UPDATING = "Updating"
    FAILED = "Failed"
    STOPPED = "Stopped"
    UNINSTALLED = "Uninstalled"  # terminal; never reported (the instance is gone)


ALLOWED: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.INSTALLING, State.FAILED, State.UNINSTALLED}),
    State.INSTALLING: frozenset({State.STOPPED, State.RUNNING, State.FAILED, State.UNINSTALLED}),
    State.STOPPED: frozenset({State.RUNNING, State.INSTALLING, State.UNINSTALLED, State.FAILED}),
    State.RUNNING: frozenset({State.STOPPED, State.UPDATING, State.FAILED, State.UNINSTALLED}),
    State.UPDATING: frozenset({State.RUNNING, State.FAILED, State.UNINSTALLED}),
    State.FAILED: frozenset({State.INSTALLING, State.STOPPED, State.UNINSTALLED}),
    State.UNINSTALLED: frozenset(),
}


class InvalidTransition(RuntimeError):
    pass


class Lifecycle:
    __slots__ = ("changed_at", "message", "name", "started_at", "state")

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = State.PENDING
        self.message = ""
        self.changed_at = time.time()
        self.started_at: float | None = None

    def to(self, new: State, message: str = "") -> None:
        if new not in ALLOWED[self.state]:
            raise InvalidTransition(f"instance {self.name}: cannot go from {self.state} to {new}")
        self.state = new
        self.message = message
        self.changed_at = time.time()
        if new is State.RUNNING:
            self.started_at = self.changed_at

    def fail(self, message: str) -> bool:
        """Move to Failed from any live state; False if already terminal or failed."""
        if self.state in (State.FAILED, State.UNINSTALLED):
            return False
        self.to(State.FAILED, message)
        return True
