"""`flyslice --version`, `--help` everywhere: every option explained, the exit codes, the defaults."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

import flyslice
from flyslice.operator import cli

REPO = Path(__file__).resolve().parents[2]
WILDFIRE = REPO / "examples" / "wildfire"
FLYSLICE = str(Path(sys.executable).with_name("flyslice"))


def flyslice_cmd(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLYSLICE, *argv], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)


def test_version_is_the_installed_distributions() -> None:
    out = flyslice_cmd("--version")
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout == f"flyslice {flyslice.__version__}\n"
    assert flyslice.__version__ == importlib.metadata.version("flyslice")


class _Parsed(BaseException):
    """Stops a command once its parser has been built (not an Exception: main() must not catch it)."""


def parser_used_by(monkeypatch: pytest.MonkeyPatch, *argv: str) -> argparse.ArgumentParser:
    """The parser ``flyslice ARGV`` builds, caught as it starts parsing (nothing runs)."""
    seen: list[argparse.ArgumentParser] = []

    def record(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> argparse.Namespace:
        seen.append(self)
        raise _Parsed

    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", record)
        with pytest.raises(_Parsed):
            cli.main(list(argv))
    return seen[0]


def walk(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    """Every (command, option) pair, subcommands included."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                found.append((parser.prog, choice))
            for sub in action.choices.values():
                found += walk(sub)
        else:
            found.append((parser.prog, action))
    return found


@pytest.mark.parametrize(
    "argv",
    [("validate",), ("agent", "--node", "gw-1"), ("agent", "--kube")],
    ids=["flyslice", "agent", "agent-kube"],
)
def test_every_option_of_every_command_has_help(
    monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...]
) -> None:
    actions = walk(parser_used_by(monkeypatch, *argv))
    assert len(actions) > 10
    missing = [
        f"{prog} {'/'.join(a.option_strings) or a.dest}" for prog, a in actions if not (a.help or "").strip()
    ]
    assert missing == []


def test_the_subcommands_are_all_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    progs = {prog for prog, _ in walk(parser_used_by(monkeypatch, "validate"))}
    assert progs == {f"flyslice {c}" for c in cli.COMMANDS if c != "agent"} | {"flyslice"}


def test_named_options_explain_themselves() -> None:
    for argv, option in [
        (("plan",), "--time-limit SECONDS"),
        (("plan",), "-o {table,json,yaml}, --output {table,json,yaml}"),
        (("up",), "--heartbeat-timeout SECONDS"),
        (("status",), "--status-addr HOST:PORT"),
        (("status",), "-o {table,json}, --output {table,json}"),
        (("validate",), "-o {text,json}, --output {text,json}"),
    ]:
        out = flyslice_cmd(*argv, "--help")
        assert out.returncode == 0
        lines = out.stdout.splitlines()
        at = next(i for i, line in enumerate(lines) if line.strip().startswith(option))
        text = lines[at].strip()[len(option) :].strip() or lines[at + 1].strip()
        assert len(text) > 10, (argv, option, text)


def test_agent_help_names_the_command_a_user_types() -> None:
    for argv in (("agent", "--help"), ("agent", "--kube", "--help")):
        out = flyslice_cmd(*argv)
        assert out.returncode == 0
        assert out.stdout.startswith("usage: flyslice agent ")
        assert "flyslice.nodeagent" not in out.stdout


def test_help_lists_the_exit_codes() -> None:
    out = flyslice_cmd("--help")
    assert out.returncode == 0
    epilog = out.stdout[out.stdout.index("exit codes:") :]
    assert epilog == cli.EXIT_CODES
    codes = [line.split()[0] for line in epilog.splitlines()[1:] if line[:3].strip()]
    assert codes == ["0", "1", "2", "3", "130", "141"]
    assert "  2    usage error" in epilog and "  3    internal error" in epilog and "--debug" in epilog
    readme = " ".join((REPO / "README.md").read_text().split())
    for code in (
        "**0** on success",
        "**1** on invalid input",
        "**2** on a usage error",
        "**3** on an internal",
    ):
        assert code in readme


def env_without_xdg(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "XDG_STATE_HOME"}
    return {**env, "HOME": str(home), **extra}


def test_up_help_shows_the_default_state_directory(tmp_path: Path) -> None:
    def shown(env: dict[str, str]) -> str:
        out = flyslice_cmd("up", "--help", env=env)
        assert out.returncode == 0
        return "".join(out.stdout.split())  # argparse wraps a long path anywhere, even inside a word

    def says(path: str) -> str:
        return f"here{path})"

    assert says(f"{tmp_path}/.local/state/flyslice") in shown(env_without_xdg(tmp_path))
    xdg = env_without_xdg(tmp_path, XDG_STATE_HOME=f"{tmp_path}/xdg")
    assert says(f"{tmp_path}/xdg/flyslice") in shown(xdg)
    # The XDG spec: a relative value is ignored (it would follow whatever directory `up` starts in).
    relative = env_without_xdg(tmp_path, XDG_STATE_HOME="rel")
    assert says(f"{tmp_path}/.local/state/flyslice") in shown(relative)
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "`$XDG_STATE_HOME/flyslice`, by default `~/.local/state/flyslice`" in readme


@pytest.mark.slow
def test_up_keeps_its_state_in_the_default_directory(tmp_path: Path) -> None:
    out = flyslice_cmd(
        "up", str(WILDFIRE), "--no-view", "--status-addr", "127.0.0.1:0", "--exit-when-ready", "60",
        env=env_without_xdg(tmp_path),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    agents = tmp_path / ".local" / "state" / "flyslice" / "agents"
    assert sorted(p.name for p in agents.iterdir()) == ["cloud", "fog-1", "gw-1", "gw-2"]
