"""GitOps: where desired state comes from when it lives in git (or a plain directory).

Parses GitSource specs, fetches a ref into an immutable snapshot with auth and commit-signature
checks, watches by polling or a push webhook, and keeps the inventory that pruning relies on.
"""

from typing import TYPE_CHECKING

from flyslice._lazy import lazy_exports

if TYPE_CHECKING:
    from flyslice.operator.gitops.fetcher import GitSource
    from flyslice.operator.gitops.inventory import object_key, parse_object_key, plan_prune, retained_keys
    from flyslice.operator.gitops.sources import DesiredSource, DirectorySource, FetchError, Snapshot
    from flyslice.operator.gitops.spec import (
        GitCredentials,
        GitRef,
        GitSourceSpec,
        GitSpecError,
        SignaturePolicy,
        parse_interval,
    )
    from flyslice.operator.gitops.watch import SourceWatcher
    from flyslice.operator.gitops.webhook import WebhookReceiver

__getattr__ = lazy_exports(
    __name__,
    {
        "fetcher": ["GitSource"],
        "inventory": ["object_key", "parse_object_key", "plan_prune", "retained_keys"],
        "sources": ["DesiredSource", "DirectorySource", "FetchError", "Snapshot"],
        "spec": [
            "GitCredentials",
            "GitRef",
            "GitSourceSpec",
            "GitSpecError",
            "SignaturePolicy",
            "parse_interval",
        ],
        "watch": ["SourceWatcher"],
        "webhook": ["WebhookReceiver"],
    },
)

__all__ = [
    "DesiredSource",
    "DirectorySource",
    "FetchError",
    "GitCredentials",
    "GitRef",
    "GitSource",
    "GitSourceSpec",
    "GitSpecError",
    "SignaturePolicy",
    "Snapshot",
    "SourceWatcher",
    "WebhookReceiver",
    "object_key",
    "parse_interval",
    "parse_object_key",
    "plan_prune",
    "retained_keys",
]
