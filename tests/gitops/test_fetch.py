"""GitSource against real remotes: local path, file://, git:// (git daemon) and HTTP (smart and dumb)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema
import pytest
import yaml

from flyslice.operator.gitops.fetcher import (
    FetchError,
    GitCredentials,
    GitRef,
    GitSource,
    GitSourceSpec,
)

from .conftest import DumbHttpServer, GitDaemon, SmartHttpServer, Upstream, git

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]


def files_under(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(params=["local", "file", "git", "smart-http", "dumb-http"])
def remote_url(request: pytest.FixtureRequest, upstream: Upstream) -> Iterator[str]:
    kind = request.param
    if kind == "local":
        yield str(upstream.bare)
    elif kind == "file":
        yield upstream.bare.as_uri()
    elif kind == "git":
        daemon = GitDaemon(upstream.base)
        daemon.start()
        yield daemon.url()
        daemon.stop()
    elif kind == "smart-http":
        smart = SmartHttpServer(upstream.base)
        yield smart.url()
        smart.stop()
    else:
        dumb = DumbHttpServer(upstream.base)
        yield dumb.url()
        dumb.stop()


def test_branch_path_snapshot_is_pinned_to_one_commit(
    remote_url: str, upstream: Upstream, tmp_path: Path
) -> None:
    source = GitSource(GitSourceSpec(url=remote_url, path="deploy"), tmp_path / "cache")
    first = source.fetch()
    assert first.revision == upstream.head()
    # Only the path inside the repository is exported, with its subdirectories.
    assert files_under(first.root) == {"nodes.yaml": "kind: EdgeNode\n", "extra/slice.yaml": "kind: Slice\n"}

    second_sha = upstream.commit(
        {"deploy/nodes.yaml": "kind: EdgeNode\nv: 2\n", "deploy/extra/slice.yaml": None}
    )
    second = source.fetch()
    assert second.revision == second_sha != first.revision
    assert files_under(second.root) == {"nodes.yaml": "kind: EdgeNode\nv: 2\n"}
    # The earlier snapshot is untouched: a reconcile reading it sees exactly its commit.
    assert files_under(first.root) == {"nodes.yaml": "kind: EdgeNode\n", "extra/slice.yaml": "kind: Slice\n"}
    assert source.status.last_fetched_revision == second_sha
    assert source.status.last_error == ""


def test_unchanged_remote_gives_the_same_snapshot(upstream: Upstream, tmp_path: Path) -> None:
    source = GitSource(GitSourceSpec(url=str(upstream.bare)), tmp_path / "cache")
    assert source.fetch() == source.fetch()
    assert (source.fetch().root / "README").read_text() == "hello\n"


def test_tags_lightweight_annotated_and_moved(upstream: Upstream, tmp_path: Path) -> None:
    tagged = upstream.head()
    upstream.tag("v1")
    upstream.tag("v1-annotated", annotated=True)
    upstream.commit({"deploy/nodes.yaml": "later\n"})
    for tag in ("v1", "v1-annotated"):
        source = GitSource(GitSourceSpec(url=str(upstream.bare), ref=GitRef("tag", tag)), tmp_path / tag)
        snap = source.fetch()
        # An annotated tag is peeled to its commit.
        assert snap.revision == tagged
        assert (snap.root / "deploy/nodes.yaml").read_text() == "kind: EdgeNode\n"
    # A tag moved on the remote (forced) is followed.
    upstream.tag("v1", force=True)
    moved = GitSource(GitSourceSpec(url=str(upstream.bare), ref=GitRef("tag", "v1")), tmp_path / "v1").fetch()
    assert moved.revision == upstream.head()


def test_commit_ref_full_and_abbreviated(upstream: Upstream, git_daemon: GitDaemon, tmp_path: Path) -> None:
    pinned = upstream.head()
    upstream.commit({"deploy/nodes.yaml": "later\n"})
    for i, name in enumerate((pinned, pinned[:9])):
        source = GitSource(
            GitSourceSpec(url=git_daemon.url(), ref=GitRef("commit", name)), tmp_path / f"c{i}"
        )
        snap = source.fetch()
        assert snap.revision == pinned
        assert (snap.root / "deploy/nodes.yaml").read_text() == "kind: EdgeNode\n"
    # A commit we hold needs no remote: the pin keeps working while the remote is down.
    git_daemon.stop()
    again = GitSource(
        GitSourceSpec(url=git_daemon.url(), ref=GitRef("commit", pinned)), tmp_path / "c0"
    ).fetch()
    assert again.revision == pinned


def test_unknown_commit_branch_and_path_are_clear_errors(upstream: Upstream, tmp_path: Path) -> None:
    cases = [
        (
            GitSourceSpec(url=str(upstream.bare), ref=GitRef("commit", "deadbeef")),
            "RefNotFound",
            "commit deadbeef not found",
        ),
        (
            GitSourceSpec(url=str(upstream.bare), ref=GitRef("branch", "nope")),
            "RefNotFound",
            "branch 'nope' does not exist",
        ),
        (
            GitSourceSpec(url=str(upstream.bare), ref=GitRef("tag", "v9")),
            "RefNotFound",
            "tag 'v9' does not exist",
        ),
        (
            GitSourceSpec(url=str(upstream.bare), path="missing/dir"),
            "PathNotFound",
            "path 'missing/dir' does not exist",
        ),
        (
            GitSourceSpec(url=str(upstream.bare), path="README"),
            "PathNotFound",
            "path 'README' is a blob, not a directory",
        ),
    ]
    for i, (spec, reason, message) in enumerate(cases):
        source = GitSource(spec, tmp_path / f"s{i}")
        with pytest.raises(FetchError, match=message):
            source.fetch()
        assert source.status.last_error_reason == reason
        assert source.status.conditions["Ready"].status == "False"
        assert source.last_good is None


def test_force_push_rewriting_history_is_followed(
    upstream: Upstream, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    upstream.commit({"deploy/nodes.yaml": "bad\n"}, "bad change")
    source = GitSource(GitSourceSpec(url=git_daemon.url(), path="deploy"), tmp_path / "cache")
    bad = source.fetch()
    assert (bad.root / "nodes.yaml").read_text() == "bad\n"

    rewritten = upstream.rewrite_last({"deploy/nodes.yaml": "fixed\n"}, "fixed change")
    snap = source.fetch()
    assert snap.revision == rewritten
    assert (snap.root / "nodes.yaml").read_text() == "fixed\n"
    # The old tip is no longer an ancestor of what we follow: history really was rewritten.
    assert bad.revision not in git(upstream.work, "rev-list", rewritten).split()


def test_remote_disappears_then_returns_over_git_daemon(
    upstream: Upstream, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    source = GitSource(GitSourceSpec(url=git_daemon.url(), path="deploy"), tmp_path / "cache")
    good = source.fetch()
    newer = upstream.commit({"deploy/nodes.yaml": "newer\n"})
    git_daemon.stop()

    with pytest.raises(FetchError) as err:
        source.fetch()
    assert git_daemon.url() in str(err.value)
    status = source.status
    assert status.last_error_reason == "FetchFailed"
    assert status.last_fetched_revision == good.revision
    assert f"still serving {good.revision}" in status.conditions["Ready"].message
    # The last good snapshot stays available and complete.
    assert source.last_good == good
    assert (good.root / "nodes.yaml").read_text() == "kind: EdgeNode\n"

    git_daemon.start()
    back = source.fetch()
    assert back.revision == newer
    assert status.last_error == "" and status.conditions["Ready"].status == "True"


def test_local_remote_moved_away_then_back(upstream: Upstream, tmp_path: Path) -> None:
    source = GitSource(GitSourceSpec(url=upstream.bare.as_uri()), tmp_path / "cache")
    good = source.fetch()
    aside = upstream.bare.with_name("aside.git")
    upstream.bare.rename(aside)
    with pytest.raises(FetchError, match="does not appear to be a git repository"):
        source.fetch()
    assert source.last_good == good and (good.root / "README").is_file()
    aside.rename(upstream.bare)
    assert source.fetch() == good


def test_http_token_is_sent_and_never_leaks(
    upstream: Upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    token = "s3cr3t-token-value-42"
    server = SmartHttpServer(upstream.base, auth=("flyslice", token))
    caplog.set_level(logging.DEBUG)
    try:
        anonymous = GitSource(GitSourceSpec(url=server.url()), tmp_path / "anon")
        with pytest.raises(FetchError):
            anonymous.fetch()
        assert anonymous.status.last_error_reason == "AuthenticationFailed"

        wrong = GitSource(
            GitSourceSpec(url=server.url(), credentials=GitCredentials(username="flyslice", token="wrong")),
            tmp_path / "w",
        )
        with pytest.raises(FetchError):
            wrong.fetch()

        monkeypatch.setenv("FLYSLICE_TEST_TOKEN", token)
        spec = GitSourceSpec(
            url=server.url(), credentials=GitCredentials(username="flyslice", token_env="FLYSLICE_TEST_TOKEN")
        )
        source = GitSource(spec, tmp_path / "cache")
        assert source.fetch().revision == upstream.head()

        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        by_file = GitSourceSpec(
            url=server.url(), credentials=GitCredentials(username="flyslice", token_file=token_file)
        )
        assert GitSource(by_file, tmp_path / "file").fetch().revision == upstream.head()

        direct = GitSourceSpec(url=server.url(), credentials=GitCredentials(username="flyslice", token=token))
        failing = GitSource(direct, tmp_path / "direct")
        server.stop()
        with pytest.raises(FetchError) as err:
            failing.fetch()
    finally:
        server.stop()
    # The token went to the server, and nowhere else we control.
    assert any(h.startswith("Basic ") for h in server.seen_authorization)
    leaks = [
        str(err.value),
        repr(direct),
        repr(spec),
        str(source.status),
        anonymous.status.last_error,
        caplog.text,
    ]
    leaks += [
        p.read_text(errors="replace")
        for p in (tmp_path / "cache").rglob("*")
        if p.is_file() and p.stat().st_size < 1 << 20
    ]
    assert not [text for text in leaks if token in text]


def test_url_user_info_is_redacted(upstream: Upstream, tmp_path: Path) -> None:
    server = SmartHttpServer(upstream.base, auth=("me", "pw-in-url"))
    try:
        url = server.url().replace("http://", "http://me:pw-in-url@")
        source = GitSource(GitSourceSpec(url=url), tmp_path / "cache")
        assert source.fetch().revision == upstream.head()
        assert "pw-in-url" not in source.describe() and "pw-in-url" not in source.status.url
        server.stop()
        with pytest.raises(FetchError) as err:
            source.fetch()
        assert "pw-in-url" not in str(err.value)
    finally:
        server.stop()


def test_status_renders_the_crd_status_schema(upstream: Upstream, tmp_path: Path) -> None:
    crd = yaml.safe_load((REPO / "crds" / "gitsource.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    clock_values = iter([1000.0 + i for i in range(100)])
    clock: Callable[[], float] = lambda: next(clock_values)  # noqa: E731
    source = GitSource(GitSourceSpec(url=str(upstream.bare)), tmp_path / "cache", clock=clock)
    snap = source.fetch()
    status = source.status.as_crd_status(observed_generation=3)
    jsonschema.validate(status, schema)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["lastFetchedRevision"] == snap.revision and "lastAppliedRevision" not in status
    assert conditions["Reconciling"]["status"] == "True"

    source.mark_applied(
        snap.revision,
        inventory=["Slice/default/wildfire", "EdgeNode/gw1"],
        errors=[{"file": "a.yaml", "line": 3, "object": "Slice/x", "path": "spec.qos", "message": "bad"}],
    )
    status = source.status.as_crd_status(observed_generation=3)
    jsonschema.validate(status, schema)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["lastAppliedRevision"] == snap.revision
    assert status["lastAppliedAt"].endswith("Z")
    assert status["inventory"] == ["EdgeNode/gw1", "Slice/default/wildfire"]
    assert status["errors"][0]["object"] == "Slice/x"
    assert conditions["Reconciling"]["status"] == "False"
    assert conditions["Ready"]["status"] == "True"


def test_old_snapshots_are_collected_but_not_the_applied_one(upstream: Upstream, tmp_path: Path) -> None:
    source = GitSource(GitSourceSpec(url=str(upstream.bare)), tmp_path / "cache", keep_snapshots=2)
    applied = source.fetch()
    source.mark_applied(applied.revision)
    for i in range(4):
        upstream.commit({"README": f"v{i}\n"})
        latest = source.fetch()
    kept = {d.name.split("-")[0] for d in (tmp_path / "cache" / "snapshots").iterdir()}
    assert applied.revision in kept and latest.revision in kept
    assert len(kept) <= 3
    assert applied.root.is_dir()


def test_wildfire_example_served_from_git_loads_and_validates(upstream: Upstream, tmp_path: Path) -> None:
    from flyslice.operator.intake.manifests import load_paths
    from flyslice.operator.intake.validation import validate

    wildfire = REPO / "examples" / "wildfire"
    upstream.commit({f"clusters/edge/{p.name}": p.read_text() for p in wildfire.glob("*.yaml")}, "wildfire")
    snap = GitSource(
        GitSourceSpec(url=upstream.bare.as_uri(), path="clusters/edge"), tmp_path / "cache"
    ).fetch()
    manifests, errors = load_paths([snap.root])
    assert not errors
    result = validate(manifests)
    assert result.ok, [str(e) for e in result.errors]
    assert len(result.catalog.slices) == 1


def test_damaged_cache_is_rebuilt_and_an_unusable_one_is_a_fetch_error(
    upstream: Upstream, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "repo.git").write_text("not a repository")
    source = GitSource(GitSourceSpec(url=str(upstream.bare)), cache)
    assert source.fetch().revision == upstream.head()

    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "snapshots").write_text("a file where the snapshot directory should be")
    unusable = GitSource(GitSourceSpec(url=str(upstream.bare)), blocked)
    with pytest.raises(FetchError, match="failed"):
        unusable.fetch()
    assert unusable.status.conditions["Ready"].status == "False"


def test_commit_on_no_branch_is_fetched_by_sha(
    upstream: Upstream, git_daemon: GitDaemon, tmp_path: Path
) -> None:
    orphan = upstream.commit({"README": "soon rewritten\n"})
    upstream.rewrite_last({"README": "rewritten\n"}, "rewrite")
    assert orphan not in git(upstream.work, "rev-list", "--all").split()
    snap = GitSource(
        GitSourceSpec(url=git_daemon.url(), ref=GitRef("commit", orphan)), tmp_path / "c"
    ).fetch()
    assert snap.revision == orphan
    assert (snap.root / "README").read_text() == "soon rewritten\n"


def test_a_remote_that_never_answers_times_out(tmp_path: Path) -> None:
    # A TCP listener that accepts connections and never speaks: the git protocol waits forever.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        source = GitSource(
            GitSourceSpec(url=f"git://127.0.0.1:{port}/fleet.git", timeout_s=1.0), tmp_path / "c"
        )
        with pytest.raises(FetchError, match="timed out: no complete answer within 1s"):
            source.fetch()
    assert source.status.last_error_reason == "TimedOut"
    assert source.status.last_fetch_duration_s is not None and source.status.last_fetch_duration_s < 30
