"""The prune guard's rule: removing every slice, or more than the share of running NFs, waits."""

from __future__ import annotations

from flyslice.operator.gitops.prune_guard import confirmed_by_message, decide


def test_removing_every_slice_is_held_until_confirmed() -> None:
    held = decide(["ns/a"], [], {"ns/a": 9})
    assert held.held == ("ns/a",) and "removes every slice" in held.reason
    assert "Flyslice-Prune: confirm" in held.reason and "--confirm-prune" in held.reason
    assert decide(["ns/a"], [], {"ns/a": 9}, confirmed=True).held == ()


def test_more_than_the_share_of_running_instances_is_held_and_less_is_not() -> None:
    running = {"ns/a": 6, "ns/b": 2, "ns/c": 2}
    assert decide(["ns/a", "ns/b", "ns/c"], ["ns/b", "ns/c"], running).held == ("ns/a",)  # 60 %
    assert decide(["ns/a", "ns/b", "ns/c"], ["ns/a", "ns/c"], running).held == ()  # 20 %
    assert decide(["ns/a", "ns/b", "ns/c"], ["ns/a", "ns/c"], running, max_share=0.1).held == ("ns/b",)
    assert decide(["ns/a"], ["ns/a", "ns/new"], running) == decide([], [], {})  # nothing removed


def test_the_confirmation_is_a_trailer_line() -> None:
    assert confirmed_by_message("retire it\n\nFlyslice-Prune: confirm\n")
    assert confirmed_by_message("x\n\nflyslice-prune:   CONFIRM")
    assert not confirmed_by_message("do not Flyslice-Prune: confirm this")
    assert not confirmed_by_message("Flyslice-Prune: maybe")
