"""The environment a git command runs with for one source: credentials that never reach argv or logs.

An HTTPS token travels as an ``http.<url>.extraHeader`` set through ``GIT_CONFIG_*`` environment
variables: it is scoped to the source's URL, never on a command line (visible in ``ps``), never written
to the cache repository's config, and never part of an error message. SSH uses ``GIT_SSH_COMMAND`` with
the source's own key and, if given, its own known_hosts; ``BatchMode`` so ssh never prompts.
"""

from __future__ import annotations

import base64
import os
import shlex
from pathlib import Path
from urllib.parse import urlsplit

from flyslice.operator.gitops.spec import ALLOWED_SCHEMES, GitCredentials, redact_url


def git_environment(url: str, credentials: GitCredentials, workdir: Path) -> dict[str, str]:
    """Environment overrides for every git command that talks to ``url``."""
    env = {
        # Never wait for a password on a terminal; fail with an error instead.
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
        "SSH_ASKPASS": "",
        # Locale-independent messages, so errors can be classified.
        "LC_ALL": "C",
        # Only these transports, whatever the URL or a redirect says (no ext::, fd::, ...).
        "GIT_ALLOW_PROTOCOL": ":".join(ALLOWED_SCHEMES),
    }
    token = credentials.resolve_token()
    if token is not None and _is_http(url):
        pair = f"{credentials.username}:{token}".encode()
        header = "Authorization: Basic " + base64.b64encode(pair).decode()
        env.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": f"http.{_url_scope(url)}.extraHeader",
                "GIT_CONFIG_VALUE_0": header,
            }
        )
    if credentials.uses_ssh:
        key_file = credentials.ssh_key_file or _write_private(workdir / "identity", credentials.ssh_key or "")
        options = ["-i", str(key_file), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]
        known_hosts = credentials.known_hosts_file
        if known_hosts is None and credentials.known_hosts:
            known_hosts = _write_private(workdir / "known_hosts", credentials.known_hosts)
        if known_hosts is not None:
            options += ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes"]
        env["GIT_SSH_COMMAND"] = "ssh " + " ".join(shlex.quote(o) for o in options)
    return env


def scrub(text: str, url: str, credentials: GitCredentials) -> str:
    """``text`` (e.g. git's stderr) with the URL's user-info and any token removed."""
    text = text.replace(url, redact_url(url))
    try:
        token = credentials.resolve_token()
    except ValueError:
        token = None
    if token:
        text = text.replace(token, "***")
    return text


def _is_http(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def _url_scope(url: str) -> str:
    """``scheme://host[:port]/path`` without user-info: the prefix git matches http.<url>.* against."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def _write_private(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    return path
