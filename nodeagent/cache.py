"""The agent's on-disk copy of its last desired state (offline autonomy, like KubeEdge's
MetaManager or OpenYurt's YurtHub cache): written atomically before acting on it."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from flyslice.nodeagent.spec import InstanceSpec, SpecError

log = logging.getLogger("flyslice.nodeagent.cache")


class DesiredCache:
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "desired.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def save(self, node: str, desired: Sequence[InstanceSpec]) -> None:
        tmp = self.path.with_name("desired.json.tmp")
        data = {"node": node, "savedAt": time.time(), "instances": [s.to_dict() for s in desired]}
        text = json.dumps(data, sort_keys=True)  # the C encoder: json.dump to a file is pure Python
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def load(self) -> list[InstanceSpec] | None:
        """The cached list, or None when there is no usable cache (a corrupt file is reported, not fatal)."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.error("desired-state cache %s unreadable, ignoring it: %s", self.path, exc)
            return None
        out = []
        for i, d in enumerate(data.get("instances", []) if isinstance(data, dict) else []):
            try:
                out.append(InstanceSpec.from_dict(d, where=f"{self.path} instances[{i}]"))
            except SpecError as exc:
                log.error("%s", exc)
        return out
