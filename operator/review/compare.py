"""Compare two normalised plan views: admissions, NF moves, latency, node headroom. Pure, no I/O.

A view is ``{"label", "slices": {key: SliceView}, "nodes": {name: NodeView}}`` where a SliceView is
``{"admitted", "service", "latencyMs", "budgetMs", "reasons", "instances": {nf: {"node", "flavor"}}}``
(``nf`` is ``role`` or ``role@attachment``) and a NodeView ``{"tier", "cpuUsedMillis",
"cpuCapacityMillis", "memoryUsedBytes", "memoryCapacityBytes"}`` (capacity may be None when unknown).
"""

from __future__ import annotations

from typing import Any

from flyslice.operator.intake.quantities import format_cpu, format_memory

DIFF_FORMAT = "flyslice.io/diff/v1"


def diff_views(base: dict[str, Any], head: dict[str, Any]) -> dict[str, Any]:
    """The diff document (``flyslice diff -o json``, docs/diff.md); ``changed`` drives the exit code."""
    slices = []
    for key in sorted(set(base["slices"]) | set(head["slices"])):
        before, after = base["slices"].get(key), head["slices"].get(key)
        entry = _slice_diff(key, before, after)
        if entry is not None:
            slices.append(entry)
    nodes = []
    for name in sorted(set(base["nodes"]) | set(head["nodes"])):
        before, after = base["nodes"].get(name), head["nodes"].get(name)
        if before == after:
            continue
        nodes.append(
            {
                "name": name,
                "change": "added" if before is None else "removed" if after is None else "changed",
                "cpuFreeMillis": [_free(before, "cpu"), _free(after, "cpu")],
                "memoryFreeBytes": [_free(before, "memory"), _free(after, "memory")],
            }
        )
    return {
        "format": DIFF_FORMAT,
        "base": base["label"],
        "head": head["label"],
        "changed": bool(slices or nodes),
        "slices": slices,
        "nodes": nodes,
    }


def _free(node: dict[str, Any] | None, what: str) -> int | None:
    if node is None:
        return None
    cap = node["cpuCapacityMillis" if what == "cpu" else "memoryCapacityBytes"]
    used = node["cpuUsedMillis" if what == "cpu" else "memoryUsedBytes"]
    return None if cap is None else int(cap - used)


def _slice_diff(
    key: str, before: dict[str, Any] | None, after: dict[str, Any] | None
) -> dict[str, Any] | None:
    if before is None and after is not None:
        change = "admitted" if after["admitted"] else "rejected"
    elif after is None:
        change = "removed"
    elif before is not None and before["admitted"] != after["admitted"]:
        change = "admitted" if after["admitted"] else "rejected"
    else:
        change = "changed"
    b_inst = before["instances"] if before else {}
    a_inst = after["instances"] if after else {}
    instances = []
    for nf in sorted(set(b_inst) | set(a_inst)):
        old, new = b_inst.get(nf), a_inst.get(nf)
        if old == new:
            continue
        instances.append(
            {
                "nf": nf,
                "change": "added" if old is None else "removed" if new is None else "moved",
                "node": [old["node"] if old else None, new["node"] if new else None],
                "flavor": [old["flavor"] if old else None, new["flavor"] if new else None],
            }
        )
    latency = [before["latencyMs"] if before else None, after["latencyMs"] if after else None]
    budget = [before["budgetMs"] if before else None, after["budgetMs"] if after else None]
    service = [before["service"] if before else None, after["service"] if after else None]
    same = latency[0] == latency[1] and budget[0] == budget[1] and service[0] == service[1]
    if change == "changed" and not instances and same:
        return None
    return {
        "slice": key,
        "change": change,
        "service": service,
        "latencyMs": latency,
        "budgetMs": budget,
        "instances": instances,
        "reasons": list(after["reasons"]) if after and not after["admitted"] else [],
    }


# -- rendering -------------------------------------------------------------------------------------


def _arrow(pair: list[Any], fmt: Any = str) -> str:
    old, new = (("-" if v is None else fmt(v)) for v in pair)
    return old if old == new else f"{old} → {new}"


def _ms(v: float) -> str:
    return f"{v:g}"


def _summary(doc: dict[str, Any]) -> str:
    if not doc["changed"]:
        return "no change to placement"
    n_moves = sum(len(s["instances"]) for s in doc["slices"])
    counts: dict[str, int] = {}
    for s in doc["slices"]:
        counts[s["change"]] = counts.get(s["change"], 0) + 1
    parts = [f"{n} slice(s) {what}" for what, n in sorted(counts.items())]
    parts.append(f"{n_moves} NF instance change(s)")
    if doc["nodes"]:
        parts.append(f"{len(doc['nodes'])} node(s) with different headroom")
    return ", ".join(parts)


def render_markdown(doc: dict[str, Any]) -> str:
    """A pull-request comment: a summary line, one table per slice, then node headroom."""
    lines = [f"### flyslice diff `{doc['base']}` → `{doc['head']}`", "", f"**{_summary(doc)}**"]
    for s in doc["slices"]:
        lines += ["", f"#### Slice `{s['slice']}`: {s['change']}", ""]
        lines.append(
            f"service {_arrow(s['service'])}; worst predicted latency {_arrow(s['latencyMs'], _ms)} ms "
            f"(budget {_arrow(s['budgetMs'], _ms)} ms)"
        )
        for reason in s["reasons"]:
            lines.append(f"- not admitted: {reason}")
        if s["instances"]:
            lines += ["", "| NF | change | node | flavour |", "| --- | --- | --- | --- |"]
            for i in s["instances"]:
                lines.append(f"| `{i['nf']}` | {i['change']} | {_arrow(i['node'])} | {_arrow(i['flavor'])} |")
    if doc["nodes"]:
        lines += ["", "#### Node headroom", "", "| node | free CPU | free memory |", "| --- | --- | --- |"]
        for n in doc["nodes"]:
            lines.append(
                f"| `{n['name']}` | {_arrow(n['cpuFreeMillis'], format_cpu)} | "
                f"{_arrow(n['memoryFreeBytes'], format_memory)} |"
            )
    return "\n".join(lines) + "\n"


def render_text(doc: dict[str, Any]) -> str:
    lines = [f"{doc['base']} -> {doc['head']}: {_summary(doc)}"]
    for s in doc["slices"]:
        lines.append(
            f"slice {s['slice']}: {s['change']}, latency {_arrow(s['latencyMs'], _ms)} ms, "
            f"budget {_arrow(s['budgetMs'], _ms)} ms"
        )
        lines += [f"  not admitted: {r}" for r in s["reasons"]]
        for i in s["instances"]:
            lines.append(f"  {i['nf']}: {i['change']} node {_arrow(i['node'])} flavor {_arrow(i['flavor'])}")
    for n in doc["nodes"]:
        lines.append(
            f"node {n['name']}: free cpu {_arrow(n['cpuFreeMillis'], format_cpu)}, "
            f"free memory {_arrow(n['memoryFreeBytes'], format_memory)}"
        )
    return "\n".join(lines)
