"""Bad input gets a clear error of the documented type and never anything else."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from flyslice.nodeagent.message import EnvelopeError, check_envelope
from flyslice.nodeagent.spec import InstanceSpec, SpecError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
spec_keys = st.sampled_from(
    [
        "name",
        "slice",
        "role",
        "package",
        "flavor",
        "module",
        "digest",
        "image",
        "config",
        "nextHops",
        "resources",
        "generation",
    ]
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(spec_keys, json_values, max_size=12))
def test_instance_spec_parsing_raises_only_spec_error(d: dict[str, Any]) -> None:
    try:
        spec = InstanceSpec.from_dict(d)
    except SpecError as exc:
        assert str(exc)
        return
    assert spec.flavor in ("fnf", "vnf")
    assert InstanceSpec.from_dict(spec.to_dict()) == spec  # what parses round-trips through the cache format


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_envelope_check_raises_only_envelope_error(obj: Any) -> None:
    try:
        msg = check_envelope(obj)
    except EnvelopeError as exc:
        assert "message" in str(exc)
        return
    assert isinstance(msg["slice"], str) and msg["slice"]
    json.dumps(msg)  # an accepted envelope is JSON-able
