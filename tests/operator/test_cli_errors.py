"""No traceback reaches a user: every failure of `flyslice` is one line on stderr and a documented exit code.

0 success, 1 invalid input (or the machine refused), 2 usage error, 3 internal error, 141 stdout closed
early. Each test runs the real console script (or `python -c` around the real ``main``) in a subprocess.
"""

from __future__ import annotations

import errno
import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WILDFIRE = REPO / "examples" / "wildfire"
#: The console script installed next to this interpreter (the venv's bin/ need not be on PATH).
FLYSLICE = str(Path(sys.executable).with_name("flyslice"))
TIMEOUT = 120


def flyslice(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLYSLICE, *argv], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT, env=env
    )


def with_import_failing(module: str, error: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """`flyslice ARGV` in a Python where importing ``module`` raises ``error``, as a missing or broken
    installation does: a meta-path finder fails the import itself, nothing of flyslice is replaced."""
    code = (
        "import sys\n"
        "class Fail:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.partition('.')[0] == {module!r}:\n"
        f"            raise {error}\n"
        "sys.meta_path.insert(0, Fail())\n"
        "from flyslice.operator.cli import main\n"
        "raise SystemExit(main())\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT
    )


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# -- plan ------------------------------------------------------------------------------------------


def test_plan_with_highs_when_highspy_cannot_be_imported_is_a_usage_error() -> None:
    out = with_import_failing(
        "highspy", "ModuleNotFoundError(f'No module named {name!r}', name=name)", "plan", str(WILDFIRE),
        "--solver", "highs", "-o", "json",
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    assert one_line(out.stderr) == (
        "flyslice plan: --solver highs needs the highspy package, which this Python cannot import; "
        "install it (pip install 'flyslice[highs]') or use --solver cbc"
    )


def test_unknown_solver_is_a_usage_error_listing_the_choices() -> None:
    out = flyslice("plan", str(WILDFIRE), "--solver", "gurobi")
    assert out.returncode == 2 and out.stdout == ""
    line = one_line(out.stderr)
    # The choices' quoting differs between Python versions; what they are does not.
    assert line.startswith("flyslice plan: argument --solver: invalid choice: 'gurobi' (choose from ")
    assert "cbc" in line and "highs" in line and line.endswith("; see `flyslice plan --help`")


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1", "soon"])
def test_a_time_limit_that_is_not_a_positive_number_is_a_usage_error(value: str) -> None:
    out = flyslice("plan", str(WILDFIRE), "--time-limit", value)
    assert out.returncode == 2 and out.stdout == ""
    assert one_line(out.stderr).startswith(f"flyslice plan: argument --time-limit: '{value}'")


@pytest.mark.parametrize("output", ["table", "json"])
def test_plan_on_invalid_input_says_nothing_was_planned_without_a_solver_status(output: str) -> None:
    bad = REPO / "tests" / "invalid" / "unknown-field-typo.yaml"
    out = flyslice("plan", str(bad), "-o", output)
    assert out.returncode == 1
    assert out.stdout == ""  # no solver status over an empty table, no empty plan document
    assert "status=" not in out.stderr and "Optimal" not in out.stderr and "Traceback" not in out.stderr
    *errors, last = out.stderr.splitlines()
    assert [e.split(":")[0] for e in errors] == ["error"]
    assert last == (
        "flyslice plan: nothing planned: the input is invalid (1 error above) and no valid Slice is left "
        "to place; fix the errors and rerun"
    )


def test_plan_without_any_slice_says_so(tmp_path: Path) -> None:
    out = flyslice("plan", str(WILDFIRE / "nodes.yaml"))
    assert out.returncode == 1 and out.stdout == ""
    assert one_line(out.stderr) == (
        "flyslice plan: nothing planned: the input has no Slice; add one that asks for a service "
        "(examples/wildfire/slice.yaml is one)"
    )


def test_plan_on_a_directory_without_manifests_says_so(tmp_path: Path) -> None:
    out = flyslice("plan", str(tmp_path))
    assert out.returncode == 1 and out.stdout == ""
    assert one_line(out.stderr).startswith(f"error: {tmp_path}: no manifests: ")


# -- validate --------------------------------------------------------------------------------------


def test_validate_on_a_directory_without_manifests_says_so(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# slices go here\n")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "node.yaml").write_text((WILDFIRE / "nodes.yaml").read_text())
    out = flyslice("validate", str(tmp_path))
    assert out.returncode == 1
    assert one_line(out.stderr) == (
        f"error: {tmp_path}: no manifests: this directory has no *.yaml or *.yml file (hidden directories "
        "are skipped); give the files or directories that hold your flyslice.io manifests"
    )
    assert out.stdout == "0 valid object(s), 1 error(s)\n"
    doc = flyslice("validate", str(tmp_path), "-o", "json")
    assert doc.returncode == 1 and doc.stderr == ""
    assert '"valid": false' in doc.stdout and "no manifests: this directory" in doc.stdout


def test_validate_on_yaml_without_flyslice_objects_says_so(tmp_path: Path) -> None:
    (tmp_path / "app.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n")
    out = flyslice("validate", str(tmp_path))
    assert out.returncode == 1
    note, error = out.stderr.splitlines()
    assert note.startswith("note: ") and "skipped" in note
    assert error == (
        f"error: {tmp_path}: no flyslice.io objects in its 1 YAML file(s); give the files or directories "
        "that hold your flyslice.io manifests"
    )


# -- up and status ---------------------------------------------------------------------------------


def test_up_while_the_status_port_is_taken_says_so_and_exits_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = flyslice(
            "up", str(WILDFIRE), "--no-view", "--status-addr", f"127.0.0.1:{port}",
            "--state-dir", str(tmp_path), "--exit-when-ready", "60",
        )  # fmt: skip
    assert out.returncode == 1 and out.stdout == ""
    assert one_line(out.stderr) == (
        f"flyslice up: status API: cannot listen on 127.0.0.1:{port}: {os.strerror(errno.EADDRINUSE)}; "
        "is another `flyslice up` running? Stop it, or choose another --status-addr (port 0 picks a free one)"
    )


def test_status_where_nothing_listens_says_so_and_exits_1() -> None:
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused, the port stays ours
        port = bound.getsockname()[1]
        for output in ("table", "json"):
            out = flyslice("status", "--status-addr", f"127.0.0.1:{port}", "-o", output)
            assert out.returncode == 1 and out.stdout == ""
            assert one_line(out.stderr) == (
                f"flyslice status: cannot reach http://127.0.0.1:{port}/status: "
                f"{os.strerror(errno.ECONNREFUSED)}; is `flyslice up` running? Start it, or pass the "
                "--status-addr it serves on"
            )


@pytest.fixture
def other_http_server(tmp_path: Path) -> Iterator[int]:
    """A web server that is not flyslice: /status is a plain text file."""
    (tmp_path / "status").write_text("all good\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_status_of_something_else_says_so_and_exits_1(other_http_server: int) -> None:
    out = flyslice("status", "--status-addr", f"127.0.0.1:{other_http_server}")
    assert out.returncode == 1 and out.stdout == ""
    assert one_line(out.stderr) == (
        f"flyslice status: http://127.0.0.1:{other_http_server}/status did not answer with a flyslice "
        "status document; is `flyslice up` running? Start it, or pass the --status-addr it serves on"
    )


def test_status_address_that_is_not_host_port_is_a_usage_error() -> None:
    out = flyslice("status", "--status-addr", "localhost")
    assert out.returncode == 2
    assert one_line(out.stderr) == (
        "flyslice status: argument --status-addr: 'localhost' is not HOST:PORT (a port from 0 to 65535); "
        "see `flyslice status --help`"
    )


# -- a reader that goes away -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv", [("validate", str(WILDFIRE), "-o", "json"), ("plan", str(WILDFIRE), "-o", "json")]
)
def test_stdout_closed_before_any_output_exits_141_quietly(argv: tuple[str, ...]) -> None:
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([FLYSLICE, *argv], cwd=REPO, stdout=write_end, stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    os.close(read_end)  # long before the command has its answer: every write finds no reader
    _, err = proc.communicate(timeout=TIMEOUT)
    assert (proc.returncode, err) == (141, "")


def test_json_piped_into_head_exits_141_quietly(tmp_path: Path) -> None:
    # 400 invalid nodes: ~150 kB of JSON, more than head's read and the pipe's buffer together hold.
    node = (
        "apiVersion: flyslice.io/v1alpha1\nkind: EdgeNode\nmetadata: {{name: gw-{i}}}\n"
        "spec: {{tier: gateway, runtimes: [fnf], capacity: {{cpu: '1', memory: 12Q}}}}\n"
    )
    (tmp_path / "nodes.yaml").write_text("---\n".join(node.format(i=i) for i in range(400)))
    producer = subprocess.Popen(
        [FLYSLICE, "validate", str(tmp_path), "-o", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert producer.stdout is not None and producer.stderr is not None
    head = subprocess.run(["head", "-1"], stdin=producer.stdout, capture_output=True, timeout=TIMEOUT)
    producer.stdout.close()
    err = producer.stderr.read()
    producer.wait(timeout=TIMEOUT)
    producer.stderr.close()
    assert head.stdout == b"{\n"
    assert (producer.returncode, err) == (141, b"")


# -- an internal error -----------------------------------------------------------------------------


def test_an_unexpected_exception_is_one_line_and_exit_3() -> None:
    broken = "RuntimeError('pulp is broken (simulated)')"
    out = with_import_failing("pulp", broken, "plan", str(WILDFIRE))
    assert out.returncode == 3 and out.stdout == ""
    assert one_line(out.stderr) == (
        "flyslice plan: internal error: RuntimeError: pulp is broken (simulated); rerun with --debug for the "
        "traceback and please report it"
    )
    # --debug wherever it stands: the traceback, then the same line.
    for argv in (("--debug", "plan", str(WILDFIRE)), ("plan", str(WILDFIRE), "--debug")):
        out = with_import_failing("pulp", broken, *argv)
        assert out.returncode == 3
        assert out.stderr.startswith("Traceback (most recent call last):\n")
        assert out.stderr.splitlines()[-1] == (
            "flyslice plan: internal error: RuntimeError: pulp is broken (simulated); the traceback is "
            "above; please report it"
        )


# -- the other commands ----------------------------------------------------------------------------


def test_usage_errors_are_one_line_naming_the_help() -> None:
    out = flyslice("frobnicate")
    assert out.returncode == 2
    assert one_line(out.stderr).startswith("flyslice: argument COMMAND: invalid choice: 'frobnicate'")
    out = flyslice("validate")
    assert out.returncode == 2
    assert one_line(out.stderr) == (
        "flyslice validate: the following arguments are required: PATH; see `flyslice validate --help`"
    )
    out = flyslice("up", str(WILDFIRE), "--heartbeat-timeout", "nan")
    assert out.returncode == 2
    assert one_line(out.stderr).startswith("flyslice up: argument --heartbeat-timeout: 'nan': ")
    out = flyslice("operator", "--liveness", "everywhere")
    assert out.returncode == 2
    assert one_line(out.stderr).startswith(
        "flyslice operator: argument --liveness: 'everywhere' is not HOST:PORT"
    )


def test_operator_without_cluster_credentials_says_so(tmp_path: Path) -> None:
    out = flyslice("operator", "--kubeconfig", str(tmp_path / "missing"), "--liveness", "off")
    assert out.returncode == 1
    line = one_line(out.stderr)
    assert line.startswith(f"flyslice operator: no cluster credentials ({tmp_path / 'missing'}): ")
    assert line.endswith("; pass --kubeconfig FILE or run it in a pod")


def test_agent_failures_are_one_line(tmp_path: Path) -> None:
    out = flyslice("agent", "--node", "gw-1", "--state-dir", str(tmp_path), "--mqtt", "broker")
    assert out.returncode == 2
    assert one_line(out.stderr) == (
        "flyslice agent: argument --mqtt: 'broker' is not HOST:PORT (a port from 0 to 65535); "
        "see `flyslice agent --help`"
    )
    out = flyslice("agent", "--node", "gw-1", "--state-dir", str(tmp_path), "--peer", "gw-2")
    assert out.returncode == 2 and "'gw-2' is not NODE=HOST:PORT" in one_line(out.stderr)
    # Secure by default: no --tls-dir and no --insecure-plaintext is a usage error, before anything starts.
    out = flyslice("agent", "--node", "gw-1", "--state-dir", str(tmp_path / "never"))
    assert out.returncode == 2
    assert one_line(out.stderr) == (
        "flyslice agent: the data plane needs mutual TLS: add --tls-dir DIR (ca.pem, cert.pem, key.pem), "
        "or --insecure-plaintext to serve unauthenticated plain TCP; see `flyslice agent --help`"
    )
    assert not (tmp_path / "never").exists()
    out = flyslice(
        "agent",
        "--node",
        "gw-1",
        "--state-dir",
        str(tmp_path),
        "--insecure-plaintext",
        "--trusted-key",
        "missing.pem",
    )
    assert out.returncode == 1
    assert one_line(out.stderr) == (f"flyslice agent: --trusted-key missing.pem: {os.strerror(errno.ENOENT)}")
    # The cluster agent shares the option and its check: a usage error naming the file, no traceback.
    (tmp_path / "garbage.pem").write_text("garbage\n")
    out = flyslice("agent", "--kube", "--node", "gw-1", "--state-dir", str(tmp_path / "kube"),
                   "--trusted-key", str(tmp_path / "garbage.pem"))  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.splitlines()[-1].startswith(
        f"flyslice agent --kube: error: --trusted-key {tmp_path / 'garbage.pem'}: not an ed25519 public key ("
    )
    (tmp_path / "file").write_text("")
    out = flyslice(
        "agent", "--node", "gw-1", "--state-dir", str(tmp_path / "file" / "state"), "--insecure-plaintext"
    )
    assert out.returncode == 1
    assert one_line(out.stderr).startswith(f"flyslice agent: --state-dir {tmp_path / 'file' / 'state'}: ")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = flyslice(
            "agent", "--node", "gw-1", "--state-dir", str(tmp_path / "s"), "--listen", f"127.0.0.1:{port}",
            "--insecure-plaintext",
        )  # fmt: skip
    assert out.returncode == 1
    assert one_line(out.stderr) == (
        f"flyslice agent: cannot listen on --listen 127.0.0.1:{port}: {os.strerror(errno.EADDRINUSE)}; "
        "choose a free local address"
    )
