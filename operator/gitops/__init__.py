"""GitOps: where desired state comes from when it lives in git (or a plain directory).

Parses GitSource specs, fetches a ref into an immutable snapshot with auth and commit-signature
checks, watches by polling or a push webhook, and keeps the inventory that pruning relies on.
"""
