"""A GitSource fetcher: follow a branch, tag or commit of a repository and export one directory of it.

Each :meth:`GitSource.fetch` resolves the ref to exactly one commit, checks the signature policy,
and exports ``spec.path`` at that commit into an immutable snapshot directory, so a reconcile reads
one consistent revision however often the remote moves. Everything lives in a per-source cache:

    <cache>/repo.git           bare repository; fetched refs live under refs/flyslice/
    <cache>/snapshots/<sha>-<path hash>/   the exported directory, one per revision
    <cache>/trust/             keyring and allowed signers for the signature policy

Remote history rewrites (force pushes) are followed: the fetch refspecs are forced. When the remote
is unreachable, a ref vanishes or a commit is refused, :meth:`fetch` raises :class:`FetchError` with
the reason, the status records it, and :attr:`GitSource.last_good` still points at the last
snapshot that passed, whose files stay on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import git

from flyslice.operator.gitops.auth import git_environment, scrub
from flyslice.operator.gitops.signatures import SignatureCheck, SignatureRejected, SignatureVerifier
from flyslice.operator.gitops.sources import FetchError, Snapshot
from flyslice.operator.gitops.spec import (
    GitCredentials,
    GitRef,
    GitSourceSpec,
    GitSpecError,
    SignaturePolicy,
    parse_interval,
)

__all__ = [
    "FetchError",
    "GitCredentials",
    "GitRef",
    "GitSource",
    "GitSourceSpec",
    "GitSourceStatus",
    "GitSpecError",
    "SignaturePolicy",
    "SignatureRejected",
    "Snapshot",
    "parse_interval",
]

log = logging.getLogger("flyslice.gitsource")

_TARGET = "refs/flyslice/target"
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:")


@dataclass
class Condition:
    type: str
    status: str
    reason: str
    message: str
    last_transition_time: float


@dataclass
class GitSourceStatus:
    """What was fetched and applied; :meth:`as_crd_status` renders the GitSource ``status``.

    Times are seconds since the epoch (from the source's clock). ``last_fetched_revision`` is the last
    commit that was fetched *and accepted*; a commit the signature policy refused is recorded in
    ``refused_revision`` instead, with the reason in ``last_error``.
    """

    url: str
    last_fetched_revision: str = ""
    last_fetched_at: float | None = None
    last_applied_revision: str = ""
    last_applied_at: float | None = None
    last_attempt_at: float | None = None
    last_fetch_duration_s: float | None = None
    last_error: str = ""
    #: CamelCase: FetchFailed, TimedOut, AuthenticationFailed, HostKeyVerificationFailed, RefNotFound, PathNotFound, SignatureRefused, InvalidSpec.
    last_error_reason: str = ""
    last_error_at: float | None = None
    #: Failed fetches since the last successful one (``status.fetchFailures``; the operator's
    #: ``flyslice_git_fetch_errors_total`` counts its increments).
    fetch_failures: int = 0
    refused_revision: str = ""
    #: Who signed the last accepted commit (when the policy is ``required``).
    signed_by: str = ""
    #: Objects applied from this source (``Kind/namespace/name``), set by the caller; used for pruning.
    inventory: tuple[str, ...] = ()
    #: Per-object errors of the last applied revision, as dicts (file, line, object, path, message).
    errors: list[dict[str, Any]] = field(default_factory=list)
    conditions: dict[str, Condition] = field(default_factory=dict)

    def set_condition(self, type_: str, status: bool, reason: str, message: str, now: float) -> None:
        value = "True" if status else "False"
        old = self.conditions.get(type_)
        since = old.last_transition_time if old is not None and old.status == value else now
        self.conditions[type_] = Condition(type_, value, reason, message, since)

    def as_crd_status(self, observed_generation: int | None = None) -> dict[str, Any]:
        """The GitSource ``status`` object, in the CRD's field names."""
        out: dict[str, Any] = {}
        if self.last_fetched_revision:
            out["lastFetchedRevision"] = self.last_fetched_revision
        if self.last_fetched_at is not None:
            out["lastFetchedAt"] = _rfc3339(self.last_fetched_at)
        if self.last_applied_revision:
            out["lastAppliedRevision"] = self.last_applied_revision
        if self.last_applied_at is not None:
            out["lastAppliedAt"] = _rfc3339(self.last_applied_at)
        if observed_generation is not None:
            out["observedGeneration"] = observed_generation
        out["fetchFailures"] = self.fetch_failures
        out["inventory"] = list(self.inventory)
        out["errors"] = [dict(e) for e in self.errors]
        conditions = []
        for c in sorted(self.conditions.values(), key=lambda c: c.type):
            cond: dict[str, Any] = {
                "type": c.type,
                "status": c.status,
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": _rfc3339(c.last_transition_time),
            }
            if observed_generation is not None:
                cond["observedGeneration"] = observed_generation
            conditions.append(cond)
        out["conditions"] = conditions
        return out


class GitSource:
    """Fetches one :class:`GitSourceSpec` into ``cache_dir``. Satisfies the embedded controller's
    ``DesiredSource`` protocol (``fetch`` and ``describe``). Thread-safe: one fetch at a time."""

    def __init__(
        self,
        spec: GitSourceSpec,
        cache_dir: Path,
        *,
        name: str = "",
        clock: Callable[[], float] = time.time,
        keep_snapshots: int = 3,
    ) -> None:
        self.spec = spec
        self.name = name or spec.display_url
        self.cache_dir = Path(cache_dir)
        self._clock = clock
        self._keep = max(1, keep_snapshots)
        self._url = _absolute_if_local(spec.url)
        self._lock = threading.Lock()  # one fetch at a time
        self._state_lock = threading.Lock()  # status and state file; never held across network I/O
        self.status = GitSourceStatus(url=spec.display_url)
        self.last_good: Snapshot | None = None
        self.last_signature: SignatureCheck | None = None
        #: The applied inventory with the file (relative to the snapshot root) each object came from.
        self.inventory_files: dict[str, str] = {}
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._verifier = SignatureVerifier(spec.verify, self.cache_dir / "trust", timeout_s=spec.timeout_s)
        self._load_state()

    def describe(self) -> str:
        return f"{self.spec.display_url} ({self.spec.ref}, path {self.spec.path})"

    # -- fetch -------------------------------------------------------------------------------

    def fetch(self) -> Snapshot:
        """Fetch, resolve the ref to one commit, verify it and export ``spec.path`` at that commit."""
        with self._lock:
            started = self._clock()
            self.status.last_attempt_at = started
            try:
                snap = self._fetch_locked()
            except FetchError as exc:
                with self._state_lock:
                    self._record_failure(exc, started)
                raise
            with self._state_lock:
                return self._record_success(snap, started)

    def _record_success(self, snap: Snapshot, started: float) -> Snapshot:
        now = self._clock()
        st = self.status
        st.last_fetched_revision = snap.revision
        st.last_fetched_at = now
        st.last_fetch_duration_s = now - started
        st.last_error = st.last_error_reason = ""
        st.fetch_failures = 0
        st.refused_revision = ""
        st.signed_by = self.last_signature.signer if self.last_signature else ""
        st.set_condition("Ready", True, "Succeeded", f"fetched revision {snap.revision}", now)
        st.set_condition("Stalled", False, "Succeeded", "", now)
        self._set_reconciling(now)
        self.last_good = snap
        self._collect_snapshots()
        self._save_state()
        return snap

    def _fetch_locked(self) -> Snapshot:
        try:
            env = git_environment(self._url, self.spec.credentials, self.cache_dir / "auth")
        except GitSpecError as exc:
            raise FetchError(str(exc)) from exc
        try:
            repo = self._repo()
            with repo.git.custom_environment(**env):
                sha = self._resolve(repo)
                self.last_signature = self._verifier.require_range(repo, sha, self._accepted(repo))
                return Snapshot(sha, self._export(repo, sha), self._message(repo, sha))
        except (OSError, git.GitError) as exc:
            # A full disk, an unwritable cache, a git that cannot run: still a fetch error, never a crash.
            message = scrub(
                f"fetching {self.spec.display_url} failed: {exc}", self._url, self.spec.credentials
            )
            raise FetchError(message) from None

    def _accepted(self, repo: git.Repo) -> tuple[str, ...]:
        """The revisions whose history was already verified: the last applied and the last fetched
        (accepted) one. They are pinned under ``refs/flyslice/accepted/`` so that neither a force
        push upstream nor ``git gc`` in the cache can drop them (the next range is computed from
        them)."""
        st = self.status
        accepted = tuple(dict.fromkeys(r for r in (st.last_applied_revision, st.last_fetched_revision) if r))
        if self.spec.verify.mode != "none":
            for name, rev in (("applied", st.last_applied_revision), ("fetched", st.last_fetched_revision)):
                if rev and self._rev_parse(repo, rev) == rev:
                    repo.git.execute(["git", "update-ref", f"refs/flyslice/accepted/{name}", rev])
        return accepted

    def _repo(self) -> git.Repo:
        path = self.cache_dir / "repo.git"
        if path.exists():
            try:
                return git.Repo(path)
            except (git.InvalidGitRepositoryError, git.NoSuchPathError):
                log.warning("%s: cache repository %s is damaged; starting a new one", self.name, path)
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        return git.Repo.init(path, bare=True)

    def _git(self, repo: git.Repo, *args: str, what: str) -> str:
        try:
            return str(repo.git.execute(["git", *args], kill_after_timeout=self.spec.timeout_s))
        except git.GitCommandError as exc:
            raise FetchError(self._explain(what, exc)) from None

    def _explain(self, what: str, exc: git.GitCommandError) -> str:
        stderr = exc.stderr if isinstance(exc.stderr, str) else str(exc.stderr or "")
        if "Timeout:" in stderr and "did not complete" in stderr:
            detail = f"timed out: no complete answer within {self.spec.timeout_s:g}s"
        else:
            detail = _summarize_stderr(stderr) or f"git exited with status {exc.status}"
        return scrub(f"{what} {self.spec.display_url}: {detail}", self._url, self.spec.credentials)

    def _fetch_refspecs(self, repo: git.Repo, *refspecs: str) -> None:
        self._git(
            repo,
            "fetch",
            "--force",
            "--no-tags",
            "--no-write-fetch-head",
            "--quiet",
            self._url,
            *refspecs,
            what=f"fetching {self.spec.ref} from",
        )

    def _rev_parse(self, repo: git.Repo, rev: str) -> str | None:
        try:
            return str(
                repo.git.execute(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"])
            ).strip()
        except git.GitCommandError:
            return None

    def _resolve(self, repo: git.Repo) -> str:
        ref = self.spec.ref
        if ref.kind == "commit":
            return self._resolve_commit(repo, ref.name)
        remote = f"refs/heads/{ref.name}" if ref.kind == "branch" else f"refs/tags/{ref.name}"
        try:
            # Forced refspec: a force-pushed branch (or a moved tag) simply replaces our copy.
            self._fetch_refspecs(repo, f"+{remote}:{_TARGET}")
        except FetchError as exc:
            if "couldn't find remote ref" in str(exc):
                raise FetchError(
                    f"{ref.kind} {ref.name!r} does not exist in {self.spec.display_url}"
                ) from None
            raise
        sha = self._rev_parse(repo, _TARGET)
        if sha is None:
            raise FetchError(f"{ref} in {self.spec.display_url} does not point at a commit")
        return sha

    def _resolve_commit(self, repo: git.Repo, wanted: str) -> str:
        # A pinned commit never changes: once we hold it, no network round trip is needed.
        sha = self._rev_parse(repo, wanted)
        if sha is None or not sha.startswith(wanted):
            self._fetch_refspecs(
                repo, "+refs/heads/*:refs/flyslice/heads/*", "+refs/tags/*:refs/flyslice/tags/*"
            )
            sha = self._rev_parse(repo, wanted)
        if (sha is None or not sha.startswith(wanted)) and len(wanted) == 40:
            # Not on any branch or tag: servers that allow fetching any reachable SHA still serve it.
            try:
                self._fetch_refspecs(repo, f"{wanted}:refs/flyslice/pinned")
                sha = self._rev_parse(repo, wanted)
            except FetchError:
                sha = None
        if sha is None or not sha.startswith(wanted):
            raise FetchError(f"commit {wanted} not found in any branch or tag of {self.spec.display_url}")
        return sha

    def _export(self, repo: git.Repo, sha: str) -> Path:
        path_key = hashlib.sha256(self.spec.path.encode()).hexdigest()[:8]
        dest = self.cache_dir / "snapshots" / f"{sha}-{path_key}"
        if dest.is_dir():
            dest.touch()  # most recently used, for snapshot collection
            return dest
        treeish = f"{sha}^{{tree}}" if self.spec.path == "." else f"{sha}:{self.spec.path}"
        kind = self._object_type(repo, treeish)
        if kind != "tree":
            found = "does not exist" if kind is None else f"is a {kind}, not a directory"
            raise FetchError(
                f"path {self.spec.path!r} {found} at commit {sha[:12]} of {self.spec.display_url}"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".export-", dir=dest.parent))
        try:
            with tempfile.TemporaryFile(dir=dest.parent) as archive:
                try:
                    repo.git.execute(
                        ["git", "archive", "--format=tar", treeish],
                        output_stream=archive,
                        kill_after_timeout=self.spec.timeout_s,
                    )
                except git.GitCommandError as exc:
                    raise FetchError(self._explain(f"exporting {sha[:12]} from", exc)) from None
                archive.seek(0)
                with tarfile.open(fileobj=archive) as tar:
                    # The data filter refuses absolute paths, links out of the tree and device files.
                    tar.extractall(staging, filter="data")
            staging.rename(dest)  # atomic: a snapshot directory is complete or absent
        except (tarfile.TarError, OSError) as exc:
            raise FetchError(f"cannot export {self.spec.path!r} at {sha[:12]}: {exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return dest

    def _message(self, repo: git.Repo, sha: str) -> str:
        try:
            return str(repo.git.execute(["git", "show", "-s", "--format=%B", sha]))
        except git.GitCommandError:
            return ""  # informative only (the prune guard's trailer): never fail a fetch for it

    def _object_type(self, repo: git.Repo, treeish: str) -> str | None:
        try:
            return str(repo.git.execute(["git", "cat-file", "-t", treeish])).strip()
        except git.GitCommandError:
            return None

    # -- status ------------------------------------------------------------------------------

    def mark_applied(
        self,
        revision: str,
        *,
        inventory: Mapping[str, str] | Iterable[str] | None = None,
        errors: Iterable[dict[str, Any]] | None = None,
    ) -> None:
        """Record that the caller applied ``revision`` (its valid objects), with what it now owns:
        inventory keys, or keys mapped to the file each came from (see ``git_inventory.plan_revision``)."""
        with self._state_lock:
            now = self._clock()
            self.status.last_applied_revision = revision
            self.status.last_applied_at = now
            if isinstance(inventory, Mapping):
                self.inventory_files = {str(k): str(v) for k, v in inventory.items()}
                self.status.inventory = tuple(sorted(self.inventory_files))
            elif inventory is not None:
                self.status.inventory = tuple(sorted(set(inventory)))
                self.inventory_files = {k: self.inventory_files.get(k, "") for k in self.status.inventory}
            if errors is not None:
                self.status.errors = [dict(e) for e in errors]
            self._set_reconciling(now)
            self._save_state()

    def _set_reconciling(self, now: float) -> None:
        st = self.status
        pending = bool(st.last_fetched_revision) and st.last_fetched_revision != st.last_applied_revision
        message = (
            f"revision {st.last_fetched_revision} fetched, not yet applied"
            if pending
            else f"applied revision {st.last_applied_revision or '(none)'}"
        )
        st.set_condition("Reconciling", pending, "Progressing" if pending else "Applied", message, now)

    def _record_failure(self, exc: FetchError, started: float) -> None:
        now = self._clock()
        st = self.status
        st.last_error = str(exc)
        st.last_error_at = now
        st.fetch_failures += 1
        st.last_fetch_duration_s = now - started
        if isinstance(exc, SignatureRejected):
            st.last_error_reason = "SignatureRefused"
            st.refused_revision = exc.revision
        else:
            st.last_error_reason = _classify(str(exc))
        kept = f"; still serving {self.last_good.revision}" if self.last_good else ""
        st.set_condition("Ready", False, st.last_error_reason, str(exc) + kept, now)
        # kstatus Stalled: only what retrying on the interval will not fix (credentials, a missing
        # ref or path, a refused signature); a network failure or timeout may heal by itself.
        stalled = st.last_error_reason not in TRANSIENT_REASONS
        st.set_condition(
            "Stalled",
            stalled,
            st.last_error_reason if stalled else "Retrying",
            str(exc) + kept if stalled else "",
            now,
        )
        log.warning("%s: %s%s", self.name, exc, kept)

    # -- state that survives a restart ---------------------------------------------------------

    def _save_state(self) -> None:
        """The last good snapshot, what was applied and the inventory, so that a restart during an
        outage still serves the last good revision and pruning still knows what flyslice created."""
        st = self.status
        state = {
            "url": st.url,
            "path": self.spec.path,
            "ref": str(self.spec.ref),
            "lastGood": {
                "revision": self.last_good.revision,
                "root": str(self.last_good.root),
                "message": self.last_good.message,
            }
            if self.last_good
            else None,
            "lastFetchedRevision": st.last_fetched_revision,
            "lastFetchedAt": st.last_fetched_at,
            "lastAppliedRevision": st.last_applied_revision,
            "lastAppliedAt": st.last_applied_at,
            "inventory": list(st.inventory),
            "inventoryFiles": self.inventory_files,
        }
        target = self.cache_dir / "state.json"
        tmp = target.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(state, indent=1))
            tmp.replace(target)
        except OSError as exc:
            log.warning("%s: cannot save %s: %s", self.name, target, exc)

    def _load_state(self) -> None:
        try:
            state = json.loads((self.cache_dir / "state.json").read_text())
        except (OSError, ValueError):
            return
        if (
            not isinstance(state, dict)
            or state.get("url") != self.status.url
            or state.get("path") != self.spec.path
            or state.get("ref") != str(self.spec.ref)
        ):
            # The cache belonged to another spec: start afresh. Above all never serve another ref's
            # last good revision as this one's (a branch that does not exist must be an error).
            return
        st = self.status
        good = state.get("lastGood")
        if isinstance(good, dict) and Path(str(good.get("root"))).is_dir():
            self.last_good = Snapshot(
                str(good["revision"]), Path(str(good["root"])), str(good.get("message") or "")
            )
            st.last_fetched_revision = str(state.get("lastFetchedRevision") or "")
            st.last_fetched_at = state.get("lastFetchedAt")
        st.last_applied_revision = str(state.get("lastAppliedRevision") or "")
        st.last_applied_at = state.get("lastAppliedAt")
        st.inventory = tuple(str(k) for k in state.get("inventory") or ())
        files = state.get("inventoryFiles")
        files = files if isinstance(files, dict) else {}
        self.inventory_files = {k: str(files.get(k, "")) for k in st.inventory}

    def _collect_snapshots(self) -> None:
        """Delete old snapshot directories, never the latest nor the one last applied."""
        base = self.cache_dir / "snapshots"
        protected = {self.status.last_fetched_revision, self.status.last_applied_revision} - {""}
        dirs = sorted(
            (d for d in base.iterdir() if d.is_dir() and not d.name.startswith(".")),
            key=lambda d: d.stat().st_mtime,
            reverse=True,
        )
        for d in dirs[self._keep :]:
            if d.name.split("-", 1)[0] not in protected:
                shutil.rmtree(d, ignore_errors=True)


def _summarize_stderr(stderr: str) -> str:
    """The lines of git's stderr that say what failed: the first ``fatal:``/``error:`` line and the
    line before it (where ssh says "Permission denied" or "Host key verification failed")."""
    lines = [
        ln.strip().removeprefix("stderr: ").strip("'").strip()
        for ln in stderr.strip().strip("'").splitlines()
    ]
    # ssh's boxed warnings ("@@@@ ... @") are decoration, not the reason.
    lines = [ln for ln in lines if ln and not ln.startswith("@")]
    first = next((i for i, ln in enumerate(lines) if ln.startswith(("fatal:", "error:"))), None)
    if first is None:
        return "; ".join(lines[-2:])
    if first == 0:
        return "; ".join(lines[:2])
    return "; ".join(lines[first - 1 : first + 1])


#: Fetch failures that retrying on the interval may fix: not Stalled (kstatus).
TRANSIENT_REASONS = frozenset({"FetchFailed", "TimedOut"})


def _classify(message: str) -> str:
    lowered = message.lower()
    if "timed out: no complete answer" in lowered:
        return "TimedOut"
    if "host key verification failed" in lowered:
        return "HostKeyVerificationFailed"
    auth_markers = (
        "authentication failed",
        "could not read username",
        "permission denied",
        "returned error: 401",
        "returned error: 403",
    )
    if any(marker in lowered for marker in auth_markers):
        return "AuthenticationFailed"
    if "does not exist in" in lowered or "not found in any branch" in lowered:
        return "RefNotFound"
    if message.startswith("path "):
        return "PathNotFound"
    if "spec." in message or "credentials." in message:
        return "InvalidSpec"
    return "FetchFailed"


def _absolute_if_local(url: str) -> str:
    """Local paths are made absolute so the cache repository can fetch from them (its cwd differs)."""
    if "://" in url or _SCP_LIKE.match(url):
        return url
    return str(Path(url).expanduser().resolve())


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
