"""The agent's heartbeat: CPU, memory and load of the host and of the agent (GNF's agent report)."""

from __future__ import annotations

import os
import time
from typing import Any

import psutil

_PROC = psutil.Process()
# cpu_percent(None) reports usage since the previous call: prime both so the first heartbeat means something.
psutil.cpu_percent(None)
_PROC.cpu_percent(None)


def heartbeat(node: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """CPU and memory of the host and of the agent process, and the load (GNF's agent report)."""
    vm = psutil.virtual_memory()
    with _PROC.oneshot():
        rss = _PROC.memory_info().rss
        cpu = _PROC.cpu_percent(None)
    load1 = os.getloadavg()[0]
    return {
        "node": node,
        "time": time.time(),
        "cpuPercent": psutil.cpu_percent(None),
        "load": min(1.0, load1 / (os.cpu_count() or 1)),
        "load1": load1,
        "memoryPercent": vm.percent,
        "memoryAvailableBytes": vm.available,
        "agentRssBytes": rss,
        "agentCpuPercent": cpu,
        **(extra or {}),
    }
