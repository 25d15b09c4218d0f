"""The examples' own placement tests use flyslice's pytest helpers, as a manifest repository would."""

pytest_plugins = ["flyslice.testing"]
