"""The two sides of ``flyslice diff``: a git revision, a directory, a running ``flyslice up``, or the
cluster (``cluster:[NAMESPACE]``, :mod:`.cluster`).

Each becomes the normalised view ``compare`` diffs. Both desired-state sides are planned the way the
reconciler would: the head is placed with the base's placement as the current one, so the solver's
migration term keeps what needs not move where it is, and the diff shows real moves, not ties.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flyslice import solver
from flyslice.operator.intake.catalog import Catalog
from flyslice.operator.intake.errors import ManifestError
from flyslice.operator.intake.manifests import load_paths
from flyslice.operator.intake.validation import validate
from flyslice.operator.planning.pipeline import Plan, plan
from flyslice.operator.review.cluster import (
    ClusterReadError,
    in_namespace,
    is_cluster,
    namespace_of,
    read_cluster,
)
from flyslice.operator.review.compare import diff_views
from flyslice.solver.model import Assignment, Flavor


class DiffInputError(Exception):
    """A side cannot be read: the message names the side and what to do, in one line."""


@dataclass
class Side:
    label: str
    catalog: Catalog | None = None
    #: A live side's view, read from the status API (``catalog`` is then None).
    view: dict[str, Any] | None = None
    errors: list[ManifestError] = field(default_factory=list)


def is_live(spec: str) -> bool:
    """A side that is what runs (a running ``up`` or the cluster), not a desired state to plan."""
    return spec.startswith(("http://", "https://")) or is_cluster(spec)


@dataclass(frozen=True)
class ClusterAccess:
    """How to reach the API server for a ``cluster:`` side (``--kubeconfig``, ``--context``)."""

    kubeconfig: str | None = None
    context: str | None = None


def read_side(
    spec: str,
    repo: Path,
    path: str,
    workdir: Path,
    *,
    namespace: str | None = None,
    access: ClusterAccess | None = None,
) -> Side:
    """``cluster:[NS]``, ``http(s)://HOST:PORT`` (a running ``up``), an existing directory or file, else
    a git revision. ``namespace``: the other side's ``cluster:NS``, the namespace files are applied to."""
    if is_cluster(spec):
        access = access or ClusterAccess()
        try:
            view, errors = read_cluster(spec, kubeconfig=access.kubeconfig, context=access.context)
        except ClusterReadError as exc:
            raise DiffInputError(f"{spec}: {exc}") from None
        return Side(spec, view=view, errors=errors)
    if is_live(spec):
        return Side(spec, view=live_view(spec))
    if Path(spec).exists():
        return _from_files(spec, Path(spec), namespace)
    return _from_files(
        f"{spec}:{path}" if path not in ("", ".") else spec, _export(spec, repo, path, workdir), namespace
    )


def _from_files(label: str, root: Path, namespace: str | None = None) -> Side:
    manifests, load_errors = load_paths([root])
    ns_errors: list[ManifestError] = []
    if namespace:
        manifests, ns_errors = in_namespace(manifests, namespace)
    result = validate(manifests)
    errors = [*load_errors, *ns_errors, *result.errors]
    if not result.sources and not any(e.severity == "error" for e in errors):
        raise DiffInputError(f"{label}: no flyslice.io objects found; give the directory of your manifests")
    return Side(label, catalog=result.catalog, errors=errors)


def _git(repo: Path, *args: str) -> bytes:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False, timeout=60)
    except FileNotFoundError:
        raise DiffInputError("git is not installed; install it or diff two directories") from None
    if done.returncode != 0:
        msg = " ".join(done.stderr.decode(errors="replace").split()) or f"git exited {done.returncode}"
        raise DiffInputError(msg)
    return done.stdout


def _export(rev: str, repo: Path, path: str, workdir: Path) -> Path:
    """The files of ``path`` at ``rev``, written to a fresh directory; the work tree is never touched."""
    try:
        commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").decode().strip()
    except DiffInputError as exc:
        raise DiffInputError(
            f"{rev!r} is neither a directory nor a revision of the git repository {repo}: {exc}; "
            "give a branch, tag or commit (or --repo DIR)"
        ) from None
    pathspec = [] if path in ("", ".") else ["--", path]
    try:
        archive = _git(repo, "archive", "--format=tar", commit, *pathspec)
    except DiffInputError as exc:
        raise DiffInputError(f"{rev}: --path {path!r} is not in that revision: {exc}") from None
    dest = Path(tempfile.mkdtemp(prefix="rev-", dir=workdir))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest / path if path not in ("", ".") else dest


def live_view(url: str) -> dict[str, Any]:
    """A running ``up``'s placement: its console document (status plus capacities), else ``/status``."""
    base = url.rstrip("/")
    for path in ("/console/state", "/status"):
        try:
            with urllib.request.urlopen(base + path, timeout=10) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and path != "/status":
                continue  # an older `up` without the console
            raise DiffInputError(
                f"{base}{path} answered HTTP {exc.code}; is it a `flyslice up` status address?"
            ) from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DiffInputError(
                f"cannot read {base}{path}: {reason}; is `flyslice up` running there?"
            ) from None
        status = doc.get("status", doc) if isinstance(doc, dict) else None
        if not isinstance(status, dict) or not isinstance(status.get("slices"), list):
            raise DiffInputError(f"{base}{path} did not answer with a flyslice status document")
        topo = doc.get("topology") if path == "/console/state" else None
        return _view_from_status(url, status, topo)
    raise AssertionError("unreachable")


def _nf(inst: dict[str, Any]) -> str:
    return f"{inst['role']}@{inst['attachment']}" if inst.get("attachment") else str(inst["role"])


def _view_from_status(label: str, status: dict[str, Any], topo: dict[str, Any] | None) -> dict[str, Any]:
    slices = {}
    for s in status["slices"]:
        slices[f"{s['namespace']}/{s['name']}"] = {
            "admitted": s["phase"] not in ("Infeasible", "Expired"),
            "service": s.get("networkService"),
            "latencyMs": s.get("predictedLatencyMs"),
            "budgetMs": s.get("budgetMs"),
            "reasons": list(s.get("reasons") or []),
            "instances": {
                _nf(i): {"node": i["node"], "flavor": i["flavor"]} for i in s.get("instances") or []
            },
        }
    nodes = {}
    for n in (topo or {}).get("nodes") or status.get("nodes") or []:
        cpu, mem = n.get("cpu") or {}, n.get("memory") or {}
        nodes[n["name"]] = {
            "tier": n.get("tier"),
            "cpuUsedMillis": cpu.get("usedMillis", 0),
            "cpuCapacityMillis": cpu.get("capacityMillis"),
            "memoryUsedBytes": mem.get("usedBytes", 0),
            "memoryCapacityBytes": mem.get("capacityBytes"),
        }
    return {"label": label, "slices": slices, "nodes": nodes}


def view_from_plan(label: str, the_plan: Plan) -> dict[str, Any]:
    slices = {}
    for sp in the_plan.slices:
        lat = sp.placement.path_latency_ms
        slices[sp.slice.key] = {
            "admitted": sp.placement.admitted,
            "service": sp.service.name if sp.service else None,
            "latencyMs": round(max(lat.values()), 3) if lat and sp.placement.admitted else None,
            "budgetMs": sp.slice.max_latency_ms,
            "reasons": list(sp.placement.reasons),
            "instances": {
                nf: {"node": a.host, "flavor": str(a.flavor)}
                for nf, a in sorted(sp.placement.assignments.items())
            }
            if sp.placement.admitted
            else {},
        }
    nodes = {}
    for name, node in sorted(the_plan.catalog.nodes.items()):
        used = the_plan.placement.host_usage.get(name)
        nodes[name] = {
            "tier": node.tier,
            "cpuUsedMillis": used.cpu_millis if used else 0,
            "cpuCapacityMillis": node.cpu_millis,
            "memoryUsedBytes": used.memory_bytes if used else 0,
            "memoryCapacityBytes": node.memory_bytes,
        }
    return {"label": label, "slices": slices, "nodes": nodes}


def _current(view: dict[str, Any]) -> dict[str, dict[str, Assignment]]:
    return {
        key: {nf: Assignment(i["node"], Flavor(i["flavor"])) for nf, i in s["instances"].items()}
        for key, s in view["slices"].items()
        if s["admitted"]
    }


def diff(
    base_spec: str,
    head_spec: str,
    *,
    repo: Path,
    path: str = ".",
    options: solver.SolveOptions | None = None,
    access: ClusterAccess | None = None,
) -> tuple[dict[str, Any], list[ManifestError], list[ManifestError]]:
    """The diff document, the base's manifest errors and the head's. Raises :class:`DiffInputError`."""
    if is_live(base_spec) and is_live(head_spec):
        raise DiffInputError(
            "both sides are what runs (a running `up` or cluster:); give at least one revision or directory"
        )
    # Files diffed against cluster:NS land in NS, as `kubectl apply -n NS` would put them.
    try:
        namespace = next((namespace_of(s) for s in (base_spec, head_spec) if is_cluster(s)), None)
    except ClusterReadError as exc:
        raise DiffInputError(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="flyslice-diff-") as tmp:
        base = read_side(base_spec, repo, path, Path(tmp), namespace=namespace, access=access)
        head = read_side(head_spec, repo, path, Path(tmp), namespace=namespace, access=access)
        if base.view is None:
            assert base.catalog is not None
            current = _current(head.view) if head.view is not None else None
            base.view = view_from_plan(base.label, plan(base.catalog, options=options, current=current))
        if head.view is None:
            assert head.catalog is not None
            head.view = view_from_plan(
                head.label, plan(head.catalog, options=options, current=_current(base.view))
            )
    return diff_views(base.view, head.view), base.errors, head.errors
