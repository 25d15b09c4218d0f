"""Storage NF: an SQLite time series of the messages it receives.

config:
  path: database file; a relative path is inside the instance's data directory. Default
        ``storage.sqlite`` there (``<agent state>/data/<namespace>/<instance>/``), so readings survive
        a restart of the NF, its runner or the agent; ":memory:" only when asked for, or when the
        host gives no data directory (then a warning says the data is not kept)
  field: payload field stored in the numeric ``value`` column (the whole payload is kept as JSON)
  retentionSeconds: rows older than this are deleted by a timer
  forward: also pass messages on to next hops (default false: storage is a sink)
Writes are committed by a timer every ``commitMs`` (default 200) and on stop/update, which
keeps per-message cost low, so a crash (SIGKILL) loses at most the last ``commitMs`` of readings.
On update an in-memory database's rows are handed to the new version.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from flyslice.nodeagent.message import Message
from flyslice.nodeagent.nfkit import get_field, number
from flyslice.nodeagent.sdk import NetworkFunction, Output

#: The database file in the instance's data directory when config.path is not given.
DEFAULT_FILE = "storage.sqlite"
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS series (ts INTEGER NOT NULL, topic TEXT NOT NULL, value REAL, payload TEXT)"
)


class NF(NetworkFunction):
    config_schema = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "minLength": 1},
            "field": {"type": "string"},
            "retentionSeconds": {"type": "number", "exclusiveMinimum": 0},
            "forward": {"type": "boolean"},
            "commitMs": {"type": "number", "exclusiveMinimum": 0},
        },
        "additionalProperties": False,
    }

    def configure(self, config: dict[str, Any]) -> None:
        self.config = config
        path = self._resolve(config.get("path", DEFAULT_FILE))
        if getattr(self, "path", None) != path:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
            if path != ":memory:":
                # WAL: readers (a user's sqlite3, a test counting rows) never block the writer, and
                # a commit is on disk for any later process even if this one is killed right after.
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(SCHEMA)
            self.db.execute("CREATE INDEX IF NOT EXISTS series_topic_ts ON series (topic, ts)")
            self.path = path
        self.field = config.get("field")
        self.retention = config.get("retentionSeconds")
        self.forward = config.get("forward", False)
        self.commit_s = config.get("commitMs", 200) / 1000
        self.dirty = False

    def _resolve(self, path: str) -> str:
        if path == ":memory:" or Path(path).is_absolute():
            return path
        file = self.ctx.data_file(path)
        if file is None:
            self.ctx.log.warning(
                "instance %s: the host gives no data directory; readings are kept in memory only "
                "and are lost when the NF stops (set config.path to an absolute file to keep them)",
                self.ctx.instance,
            )
            return ":memory:"
        return str(file)

    def start(self) -> None:
        self.ctx.every(self.commit_s, self.commit)
        if self.retention:
            self.ctx.every(min(self.retention, 10.0), self.expire)

    def process(self, msg: Message) -> Output:
        value = number(get_field(msg, self.field)) if self.field else None
        self.db.execute(
            "INSERT INTO series VALUES (?, ?, ?, ?)",
            (msg["trace"]["t0"], msg["topic"], value, json.dumps(msg["payload"], default=str)),
        )
        self.dirty = True
        return msg if self.forward else None

    def commit(self) -> None:
        if self.dirty:
            self.db.commit()
            self.dirty = False

    def expire(self) -> None:
        if self.retention:
            cutoff = time.time_ns() - int(self.retention * 1e9)
            self.db.execute("DELETE FROM series WHERE ts < ?", (cutoff,))
            self.dirty = True

    def query(self, topic: str | None = None, since_ns: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        sql = "SELECT ts, topic, value, payload FROM series WHERE ts >= ?"
        args: list[Any] = [since_ns]
        if topic is not None:
            sql += " AND topic = ?"
            args.append(topic)
        rows = self.db.execute(sql + " ORDER BY ts, rowid LIMIT ?", [*args, limit]).fetchall()
        return [{"ts": r[0], "topic": r[1], "value": r[2], "payload": json.loads(r[3])} for r in rows]

    def stop(self) -> None:
        self.commit()

    def export_state(self) -> Any:
        self.commit()
        if self.path != ":memory:":
            return {"path": self.path}  # the file itself carries the data
        rows = self.db.execute("SELECT ts, topic, value, payload FROM series ORDER BY rowid").fetchall()
        return {"path": self.path, "rows": rows}

    def import_state(self, state: Any) -> None:
        if isinstance(state, dict) and state.get("rows") and self.path == ":memory:":
            self.db.executemany("INSERT INTO series VALUES (?, ?, ?, ?)", [tuple(r) for r in state["rows"]])
            self.db.commit()
