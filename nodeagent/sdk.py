"""The NF SDK: what an NF author writes once, run unchanged as an fNF inside the agent or as a VNF.

An NF is a class (``NF`` by default) deriving from :class:`NetworkFunction`::

    class NF(NetworkFunction):
        config_schema = {"type": "object", "properties": {"limit": {"type": "number"}}}

        def configure(self, config):        # validated against config_schema first
            self.limit = config.get("limit", 10)

        def process(self, msg):              # the Di interface: one message in ...
            return msg if msg["payload"]["v"] < self.limit else None   # ... 0, 1 or many out

Hosts call, in this order: ``configure`` -> ``import_state`` (on update only) -> ``start`` ->
``process``/timers ... -> ``export_state`` (on update only) -> ``stop``. All calls for one
instance happen on one thread, so NF code needs no locks. Timers (``ctx.every``) and
``ctx.emit`` let an NF produce messages on its own (windowed aggregates, token refills).

Shared instances (one NF object serving several slices' NFInstances, its *tenants*): the host runs
that sequence once per tenant, on the instance's one thread, with ``self.ctx`` set to the tenant's
context (``ctx.instance`` is the tenant's NFInstance, ``ctx.slice`` its slice, ``ctx.shared`` the
instance's name) during each call. By default the host also keeps the NF's attributes per tenant
(it swaps the object's attribute dictionary between tenants), so an NF written for one slice is
isolated per tenant unchanged. An NF that sets ``shared_state = True`` keeps one set of attributes
for all tenants and is responsible for keeping their data apart itself (key it by ``ctx.instance``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import jsonschema

from flyslice.nodeagent.message import Message, new_message

#: What ``process`` may return: nothing (consumed), one message, or several.
Output = Message | Iterable[Message] | None


class ConfigError(ValueError):
    """A configuration the NF's schema rejects; the message names the field."""


@dataclass
class Timer:
    interval_s: float
    callback: Callable[[], Output]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Context:
    """What the host gives an NF: its identity, emission and timers."""

    instance: str
    slice: str
    role: str = ""
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("flyslice.nf"))
    timers: list[Timer] = field(default_factory=list)
    outbox: list[Message] = field(default_factory=list)
    #: Called by the host when a timer is added after start, so it can be scheduled at once.
    on_timer_added: Callable[[Timer], None] | None = None
    #: The shared instance this context's tenant belongs to ("" when the NF serves one instance only).
    shared: str = ""
    #: This instance's own directory on the host's disk. It outlives restarts, updates, a switch
    #: between fNF and VNF on the same node and the instance's removal (data is never deleted
    #: behind the user's back); None when the host keeps nothing on disk. See ``data_file``.
    data_dir: Path | None = None

    def data_file(self, name: str) -> Path | None:
        """``data_dir / name`` (the directory created), or None when the host gives no directory."""
        if self.data_dir is None:
            return None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.data_dir / name

    def emit(self, msg: Message) -> None:
        """Send a message on to the instance's next hops (from a timer or from process)."""
        self.outbox.append(msg)

    def message(self, topic: str, payload: Any, parent: Message | None = None) -> Message:
        return new_message(self.slice, topic, payload, parent=parent)

    def every(self, interval_s: float, callback: Callable[[], Output]) -> Timer:
        """Call ``callback`` every ``interval_s`` seconds on the NF's thread; its output is emitted."""
        if interval_s <= 0:
            raise ValueError("timer interval must be > 0")
        timer = Timer(float(interval_s), callback)
        self.timers.append(timer)
        if self.on_timer_added is not None:
            self.on_timer_added(timer)
        return timer


class NetworkFunction:
    """Base class of every NF. Override what you need; defaults are no-ops."""

    #: JSON schema of the NF's configuration (the package's configSchema should match it).
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    #: In a shared instance: False (default) -- the host keeps this object's attributes per tenant, so
    #: tenants never see each other's state; True -- one set of attributes for every tenant, and the NF
    #: keeps the tenants' data apart itself (``self.ctx`` always names the tenant of the current call).
    shared_state: ClassVar[bool] = False

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.config: dict[str, Any] = {}

    def configure(self, config: dict[str, Any]) -> None:
        self.config = config

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def process(self, msg: Message) -> Output:
        return msg

    def export_state(self) -> Any:
        """JSON-able state handed to the next version on update."""
        return None

    def import_state(self, state: Any) -> None:
        return None


def validate_config(nf_class: type[NetworkFunction], config: Any, *, where: str = "config") -> dict[str, Any]:
    """Check ``config`` against the NF's schema; the error names the offending field path."""
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: must be an object, got {type(config).__name__}")
    validator = jsonschema.Draft202012Validator(nf_class.config_schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        path = ".".join(str(p) for p in err.absolute_path)
        raise ConfigError(f"{where}{'.' + path if path else ''}: {err.message}")
    return config


def outputs(result: Output) -> list[Message]:
    """Normalise what ``process`` or a timer returned to a list."""
    if result is None:
        return []
    if isinstance(result, dict):
        return [result]
    return list(result)
