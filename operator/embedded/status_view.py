"""Render the status document (``/status``) as the terminal tables of ``flyslice up`` and ``status``."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}{suffix}"
    return f"{value}{suffix}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]
    ]


def render_status(doc: dict[str, Any]) -> str:
    src = doc["source"]
    lines = [
        f"source {src['url']}  applied {src['lastAppliedRevision'] or '-'}  fetched {src['lastFetchedRevision'] or '-'}"
    ]
    if src.get("lastError"):
        lines.append(f"  fetch error: {src['lastError']}")
    errors = [e for e in src.get("errors", []) if e["severity"] == "error"]
    for e in errors[:10]:
        lines.append(f"  invalid: {e['file']}:{e['line']}: {e['object']}: {e['path']}: {e['message']}")
    if len(errors) > 10:
        lines.append(f"  ... and {len(errors) - 10} more invalid object(s)")
    # Above the tables: a Ready slice whose devices cannot reach its agent is not the whole story.
    for w in doc.get("warnings", []):
        lines.append(f"WARNING {w}")
    lines.append("")
    lines += _table(
        ["SLICE", "PHASE", "PREDICTED", "OBSERVED", "BUDGET", "INSTANCES"],
        [
            [
                f"{s['namespace']}/{s['name']}",
                s["phase"],
                _fmt(s["predictedLatencyMs"], "ms"),
                _fmt(s["observedLatencyMs"], "ms"),
                _fmt(s["budgetMs"], "ms"),
                f"{sum(i['state'] == 'Running' for i in s['instances'])}/{len(s['instances'])} running",
            ]
            for s in doc["slices"]
        ],
    )
    for s in doc["slices"]:
        for reason in s.get("reasons", []):
            lines.append(f"  {s['name']}: {reason}")
        for warning in s.get("warnings", []):
            lines.append(f"  {s['name']}: warning: {warning}")
    lines.append("")
    instances = [(s, i) for s in doc["slices"] for i in s["instances"]]
    if instances:
        lines += _table(
            ["INSTANCE", "ROLE", "ATTACHMENT", "NODE", "FLAVOR", "STATE", "RESTARTS"],
            [
                [
                    *(i["instance"], i["role"], i.get("attachment", "-"), i["node"], i["flavor"]),
                    *(i["state"], str(i.get("restarts", 0))),
                ]
                for _, i in instances
            ],
        )
        lines.append("")
    lines += _table(
        ["NODE", "TIER", "HEARTBEAT", "LOAD"],
        [[n["name"], n["tier"], _fmt(n["heartbeatAgeS"], "s ago"), _fmt(n["load"])] for n in doc["nodes"]],
    )
    events = doc.get("events", [])[-5:]
    if events:  # restarts and failures are facts a user watching the table must not miss
        lines += ["", "RECENT EVENTS", *(f"  {e}" for e in events)]
    return "\n".join(lines)
