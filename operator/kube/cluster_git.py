"""GitSource objects in a cluster: follow each repository and apply its valid objects into the cluster.

The same GitOps engine as the embedded mode (:class:`GitSource` fetches one pinned revision,
:func:`validate` checks it like ``flyslice validate``, :mod:`.git_inventory` plans pruning): each
valid flyslice object of the revision is server-side applied with field manager
``flyslice-gitsource`` and the label ``flyslice.io/gitsource=<namespace>.<name>``; per-object errors
go to the GitSource ``status.errors`` and never block the valid objects; pruning deletes only objects
in the GitSource's recorded ``status.inventory`` that still carry its label.

The prune guard (:mod:`flyslice.operator.gitops.prune_guard`, as in ``flyslice up``): a revision that
removes every Slice, or more than half of the running NFInstances, is applied except for its
deletions, which wait — with the condition ``PruneHeld=True`` on the GitSource and a Warning Event —
until the commit carries ``Flyslice-Prune: confirm`` or the GitSource is annotated
``flyslice.io/confirm-prune: "<revision>"`` (that revision, so a stale annotation never confirms the
next mistake). Every deletion is logged and gets an Event.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from flyslice.crds import is_namespaced
from flyslice.operator.gitops import prune_guard
from flyslice.operator.gitops.fetcher import GitSource
from flyslice.operator.gitops.inventory import object_key, parse_object_key, plan_prune, retained_keys
from flyslice.operator.gitops.sources import FetchError, Snapshot
from flyslice.operator.gitops.spec import GitCredentials, GitSourceSpec, GitSpecError
from flyslice.operator.intake.errors import ManifestError
from flyslice.operator.intake.manifests import load_paths
from flyslice.operator.intake.validation import validate
from flyslice.operator.kube.cluster import GROUP, PLURALS, VERSION, ClusterClient

log = logging.getLogger("flyslice.operator.gitsource")

SOURCE_LABEL = "flyslice.io/gitsource"
FIELD_MANAGER = "flyslice-gitsource"
REVISION_ANNOTATION = "flyslice.io/revision"
FILE_ANNOTATION = "flyslice.io/source-file"
#: On a GitSource: the revision (full or at least 7 hex digits of it) whose held prune to carry out.
CONFIRM_PRUNE_ANNOTATION = "flyslice.io/confirm-prune"
#: NFInstances are the operator's output, never input from git.
APPLIED_KINDS = frozenset({"EdgeNode", "NFPackage", "NetworkService", "Slice", "GitSource"})


def source_label(namespace: str, name: str) -> str:
    return f"{namespace}.{name}"[:63].strip("-.")


class GitSourceSync:
    """Apply one fetched revision of one GitSource object into the cluster (blocking API calls)."""

    def __init__(self, cluster: ClusterClient, obj: Mapping[str, Any]) -> None:
        self.cluster = cluster
        meta = obj["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.label = source_label(self.namespace, self.name)
        self.previous_inventory: tuple[str, ...] = tuple((obj.get("status") or {}).get("inventory") or ())
        self.files: dict[str, str] = {}
        self.obj: dict[str, Any] = dict(obj)
        #: The prune guard's decision on the last applied revision (``held`` empty: nothing waits).
        self.prune_held = prune_guard.PruneDecision((), ())

    def apply(
        self, snap: Snapshot, prune: bool, *, confirmed: bool = False
    ) -> tuple[tuple[str, ...], list[ManifestError]]:
        """Apply ``snap``'s valid objects and prune; the new inventory and the errors to report.

        ``confirmed``: the GitSource's annotation confirms this revision's prune.
        """
        manifests, load_errors = load_paths([snap.root])
        for m in manifests:
            m.file = _relative(m.file, snap.root)
            meta = m.data.get("metadata")
            # Like Flux's targetNamespace: objects without one land in the GitSource's namespace.
            if isinstance(meta, dict) and is_namespaced(m.kind) and not meta.get("namespace"):
                meta["namespace"] = self.namespace
        load_errors = [replace(e, file=_relative(e.file, snap.root)) for e in load_errors]
        result = validate(manifests)
        errors = [*load_errors, *result.errors]
        desired: list[str] = []
        files: dict[str, str] = {}
        for (kind, ns, name), m in sorted(result.sources.items()):
            key = object_key(kind, ns, name)
            if kind not in APPLIED_KINDS:
                errors.append(
                    m.error(
                        ("kind",),
                        f"{kind} objects are written by the operator, not taken from git: remove it",
                    )
                )
                continue
            try:
                self._apply_one(kind, ns, m.data, snap.revision, m.file)
            except Exception as exc:  # one refused object never blocks the others
                errors.append(m.error((), f"the API server refused it: {_reason(exc)}"))
                continue
            desired.append(key)
            files[key] = m.file
        broken_objects = {e.object for e in errors if e.severity == "error" and e.object}
        broken_files = {e.file for e in errors if e.severity == "error" and not e.object}
        retained = retained_keys(
            {**self._files_of(self.previous_inventory), **self.files},
            broken_objects=broken_objects,
            broken_files=broken_files,
        )
        plan = plan_prune(self.previous_inventory, desired, retained=retained, prune=prune)
        decision = self._guard(
            plan.prune, plan.inventory, confirmed or prune_guard.confirmed_by_message(snap.message)
        )
        if decision.held:
            # Hold every deletion of the revision, not only the Slices': a held Slice still needs
            # its EdgeNodes, packages and service. They stay in the inventory, so a confirmation
            # (or a later revision) prunes them then.
            if decision.reason != self.prune_held.reason:
                log.warning(
                    "%s/%s: revision %s: prune held: %s",
                    self.namespace,
                    self.name,
                    snap.revision[:12],
                    decision.reason,
                )
                self._event("PruneHeld", f"revision {snap.revision[:12]}: {decision.reason}", "Warning")
            self.prune_held = decision
            plan = replace(plan, prune=(), inventory=tuple(sorted({*plan.inventory, *plan.prune})))
        else:
            self.prune_held = decision
        for key in plan.prune:
            try:
                self._prune(key)
                self._event("Pruned", f"revision {snap.revision[:12]} removes {key}: pruned it", "Normal")
            except Exception as exc:
                errors.append(ManifestError("", 0, key, "", f"could not be pruned: {_reason(exc)}"))
        self.previous_inventory = plan.inventory
        self.files = {k: v for k, v in {**self.files, **files}.items() if k in plan.inventory}
        return plan.inventory, errors

    def _guard(
        self, pruning: tuple[str, ...], inventory: tuple[str, ...], confirmed: bool
    ) -> prune_guard.PruneDecision:
        """The prune guard over this source's Slices, weighed by their NFInstances in the cluster."""

        def slices(keys: tuple[str, ...]) -> list[str]:
            return [f"{ns}/{name}" for kind, ns, name in map(parse_object_key, keys) if kind == "Slice"]

        previous = slices(self.previous_inventory)
        if not set(previous) & set(slices(pruning)):
            return prune_guard.PruneDecision((), ())
        running: dict[str, int] = {}
        for inst in self.cluster.list_kind("NFInstance"):
            meta = inst.get("metadata") or {}
            key = f"{meta.get('namespace', '')}/{(inst.get('spec') or {}).get('slice', '')}"
            running[key] = running.get(key, 0) + 1
        return prune_guard.decide(
            previous,
            [k for k in previous if k not in set(slices(pruning))]
            + [k for k in slices(inventory) if k not in previous],
            running,
            confirmed=confirmed,
            how=f"or annotate the GitSource {CONFIRM_PRUNE_ANNOTATION}=<revision>",
        )

    def _event(self, reason: str, message: str, type_: str) -> None:
        """An Event on the GitSource; a failure to post one never fails the sync."""
        try:
            self.cluster.post_event({**self.obj, "kind": "GitSource"}, reason, message, type_)
        except Exception as exc:
            log.warning("event on GitSource %s/%s: %s", self.namespace, self.name, _reason(exc))

    def _apply_one(self, kind: str, ns: str, data: Mapping[str, Any], revision: str, file: str) -> None:
        body = copy.deepcopy(dict(data))
        meta = body.setdefault("metadata", {})
        meta["labels"] = {**(meta.get("labels") or {}), SOURCE_LABEL: self.label}
        meta["annotations"] = {
            **(meta.get("annotations") or {}),
            REVISION_ANNOTATION: revision,
            FILE_ANNOTATION: file,
        }
        body.pop("status", None)
        custom = self.cluster.custom
        kwargs: dict[str, Any] = {
            "field_manager": FIELD_MANAGER,
            "force": True,
            "_content_type": "application/apply-patch+yaml",
        }
        if is_namespaced(kind):
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, ns, PLURALS[kind], meta["name"], body, **kwargs
            )
        else:
            custom.patch_cluster_custom_object(GROUP, VERSION, PLURALS[kind], meta["name"], body, **kwargs)

    def _get(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        custom = self.cluster.custom
        obj: dict[str, Any]
        try:
            if is_namespaced(kind):
                obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURALS[kind], name)
            else:
                obj = custom.get_cluster_custom_object(GROUP, VERSION, PLURALS[kind], name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def _files_of(self, inventory: tuple[str, ...]) -> dict[str, str]:
        """Where previously applied objects came from (their annotation), for objects not seen this life."""
        out = {}
        for key in inventory:
            if key in self.files:
                continue
            try:
                kind, ns, name = parse_object_key(key)
                obj = self._get(kind, ns, name) if kind in PLURALS else None
            except Exception:
                continue
            if obj is not None:
                out[key] = ((obj.get("metadata") or {}).get("annotations") or {}).get(FILE_ANNOTATION, "")
        self.files.update(out)
        return out

    def _prune(self, key: str) -> None:
        """Delete ``key`` only if it still carries this source's label: never what others own now."""
        from kubernetes.client.exceptions import ApiException

        kind, ns, name = parse_object_key(key)
        if kind not in PLURALS:
            return
        obj = self._get(kind, ns, name)
        if obj is None or ((obj.get("metadata") or {}).get("labels") or {}).get(SOURCE_LABEL) != self.label:
            return
        custom = self.cluster.custom
        try:
            if is_namespaced(kind):
                custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURALS[kind], name)
            else:
                custom.delete_cluster_custom_object(GROUP, VERSION, PLURALS[kind], name)
            log.info("%s/%s: pruned %s", self.namespace, self.name, key)
        except ApiException as exc:
            if exc.status != 404:
                raise


class GitSourceManager:
    """One follower task per GitSource object, (re)started when its spec changes, stopped when it goes."""

    def __init__(
        self, cluster: ClusterClient, cache_root: Path, *, on_applied: Callable[[], None] = lambda: None
    ) -> None:
        self.cluster = cluster
        self.cache_root = Path(cache_root)
        self.on_applied = on_applied
        self._tasks: dict[tuple[str, str], tuple[Any, asyncio.Task[None]]] = {}
        self.applied: dict[tuple[str, str], str] = {}  # key -> last applied revision

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A GitSource event from kopf (on the event loop)."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        running = self._tasks.get(key)
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            if running:
                running[1].cancel()
                del self._tasks[key]
            return
        version = (meta.get("uid"), meta.get("generation"))
        if running and running[0] == version and not running[1].done():
            return
        if running:
            running[1].cancel()
        self._tasks[key] = (version, asyncio.create_task(self._follow(dict(body))))

    def prune_all(self, obj: Mapping[str, Any]) -> int:
        """A deleted GitSource with ``prune`` takes along every object it applied that still carries
        its label (as Flux does for a deleted Kustomization); returns how many were deleted."""
        if not (obj.get("spec") or {}).get("prune", True):
            return 0
        sync = GitSourceSync(self.cluster, obj)
        for key in sync.previous_inventory:
            sync._prune(key)
        return len(sync.previous_inventory)

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()
        for _, task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*(t for _, t in self._tasks.values()), return_exceptions=True)
        self._tasks.clear()

    async def _follow(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        ns, name, generation = meta["namespace"], meta["name"], int(meta.get("generation") or 0)
        where = f"GitSource {ns}/{name}"
        try:
            credentials = await asyncio.to_thread(self._credentials, obj)
            spec = GitSourceSpec.from_manifest(obj, credentials=credentials)
        except (GitSpecError, LookupError) as exc:
            await self._status(ns, name, _failed_status(generation, "InvalidSpec", str(exc)))
            return
        if spec.suspend:
            await self._status(
                ns, name, _failed_status(generation, "Suspended", "spec.suspend is true", ready=True)
            )
            return
        source = GitSource(spec, self.cache_root / ns / name / str(meta.get("uid", "")), name=where)
        sync = GitSourceSync(self.cluster, obj)
        applied = ""
        while True:
            try:
                applied = await self._round(ns, name, source, sync, spec, applied, generation)
            except Exception:  # the API server or git misbehaved: retry on the next interval
                log.exception("%s: sync round failed", where)
            await asyncio.sleep(spec.interval_s)

    async def _round(
        self, ns: str, name: str, source: GitSource, sync: GitSourceSync, spec: GitSourceSpec,
        applied: str, generation: int,
    ) -> str:  # fmt: skip
        """One fetch (and apply, when the revision is new); the revision applied afterwards."""
        where = f"GitSource {ns}/{name}"
        try:
            snap = await asyncio.to_thread(source.fetch)
        except FetchError:
            snap = None
        # A held prune is re-applied once the GitSource's annotation confirms that revision (an
        # annotation does not bump the generation, so the follower reads it itself).
        confirm = await asyncio.to_thread(self._confirmation, ns, name) if sync.prune_held.held else ""
        confirmed = snap is not None and _confirms(confirm, snap.revision)
        if snap is not None and (snap.revision != applied or confirmed):
            inventory, errors = await asyncio.to_thread(sync.apply, snap, spec.prune, confirmed=confirmed)
            if sync.prune_held.held:
                source.status.set_condition(
                    "PruneHeld", True, "PruneNeedsConfirmation", sync.prune_held.reason, time.time()
                )
            elif "PruneHeld" in source.status.conditions:
                source.status.set_condition(
                    "PruneHeld", False, "Confirmed" if confirmed else "NothingHeld",
                    f"revision {snap.revision[:12]}: no deletion waits", time.time(),
                )  # fmt: skip
            source.mark_applied(
                snap.revision,
                inventory=inventory,
                errors=[_error_dict(e) for e in errors if e.severity == "error"],
            )
            applied = snap.revision
            self.applied[(ns, name)] = applied
            log.info(
                "%s: applied %s (%d object(s), %d error(s))",
                where,
                applied[:12],
                len(inventory),
                len(errors),
            )
            self.on_applied()
        await self._status(ns, name, source.status.as_crd_status(generation))
        return applied

    def _confirmation(self, ns: str, name: str) -> str:
        """The GitSource's ``flyslice.io/confirm-prune`` annotation now ("" if none or unreadable)."""
        try:
            obj = self.cluster.custom.get_namespaced_custom_object(
                GROUP, VERSION, ns, PLURALS["GitSource"], name
            )
        except Exception as exc:
            log.warning("GitSource %s/%s: cannot read its annotations: %s", ns, name, _reason(exc))
            return ""
        return str(((obj.get("metadata") or {}).get("annotations") or {}).get(CONFIRM_PRUNE_ANNOTATION, ""))

    def _credentials(self, obj: Mapping[str, Any]) -> GitCredentials | None:
        ref = ((obj.get("spec") or {}).get("secretRef") or {}).get("name")
        if not ref:
            return None
        import base64

        ns = obj["metadata"]["namespace"]
        try:
            secret = self.cluster.core.read_namespaced_secret(ref, ns)
        except Exception as exc:
            raise LookupError(f"spec.secretRef: cannot read Secret {ns}/{ref}: {_reason(exc)}") from exc
        data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
        return GitCredentials.from_secret_data(data)

    async def _status(self, ns: str, name: str, status: Mapping[str, Any]) -> None:
        try:
            await asyncio.to_thread(self.cluster.patch_status, "GitSource", ns, name, status)
        except Exception as exc:
            log.warning("status of GitSource %s/%s: %s", ns, name, _reason(exc))


def _failed_status(generation: int, reason: str, message: str, *, ready: bool = False) -> dict[str, Any]:
    import time

    from flyslice.operator.kube.cluster import rfc3339

    return {
        "observedGeneration": generation,
        "conditions": [
            {
                "type": "Ready", "status": "True" if ready else "False", "reason": reason, "message": message,
                "lastTransitionTime": rfc3339(time.time()), "observedGeneration": generation,
            }
        ],
    }  # fmt: skip


def _confirms(annotation: str, revision: str) -> bool:
    """Whether the annotation names ``revision``: in full or by a prefix of at least 7 characters."""
    value = annotation.strip().lower()
    return len(value) >= 7 and revision.lower().startswith(value)


def _error_dict(e: ManifestError) -> dict[str, Any]:
    return {"file": e.file, "line": e.line, "object": e.object, "path": e.path, "message": e.message}


def _relative(file: str, root: Path) -> str:
    try:
        return str(Path(file).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return file


def _reason(exc: BaseException) -> str:
    import json

    body = getattr(exc, "body", None)
    if body:
        try:
            return str(json.loads(body).get("message"))
        except (TypeError, ValueError):
            pass
    return str(exc)
