"""Peer-supplied text in logs: escaped, capped; repeated refusals aggregated, bounded."""

from __future__ import annotations

import pytest

from trisa_peer.logtext import RefusalLimiter, peer_text, text_digest


def test_plain_text_passes_unchanged() -> None:
    assert peer_text("7a1e6b2c-3d4f-4a5b-9c8d-0e1f2a3b4c5d") == (
        "7a1e6b2c-3d4f-4a5b-9c8d-0e1f2a3b4c5d")


@pytest.mark.parametrize("hostile", [
    "x\nstep=4 outcome=accept", "x\r\nforged", "x\u2028forged", "x\x1b[31mred", "x\x00",
    "x\\nalready-escaped",
])
def test_no_peer_text_starts_a_line_or_smuggles_an_escape(hostile: str) -> None:
    shown = peer_text(hostile)
    assert shown.isprintable()
    assert "\n" not in shown and "\r" not in shown
    # escaping is reversible for everything but the cut, so nothing is ambiguous
    assert shown.encode("ascii", "backslashreplace").decode("unicode_escape") == hostile


def test_long_text_is_cut_and_says_how_much() -> None:
    shown = peer_text("a" * 4_000_000)
    assert shown == "a" * 64 + "…(+3,999,936 chars)"
    assert peer_text("a" * 64) == "a" * 64  # the twin: exactly at the limit, no mark


def test_bytes_are_decoded_with_invalid_bytes_escaped() -> None:
    assert peer_text(b"ok\xff\n") == "ok\\xff\\n"


def test_digest_names_the_value() -> None:
    assert text_digest("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    assert text_digest(b"abc") == text_digest("abc")


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_repeated_refusals_are_aggregated_per_interval() -> None:
    clock = FakeTime()
    limiter = RefusalLimiter(interval=10, clock=clock)
    first = limiter.refuse(("fp", "not-registered"))
    assert (first.log, first.count) == (True, 1)
    for _ in range(999):
        clock.now += 0.005
        assert not limiter.refuse(("fp", "not-registered")).log
    clock.now = 110.0
    report = limiter.refuse(("fp", "not-registered"))
    assert (report.log, report.count, report.seconds) == (True, 1000, 10.0)
    # another reason of the same peer is its own key: logged at once
    assert limiter.refuse(("fp", "revoked")).log


def test_limiter_memory_is_bounded_lru() -> None:
    clock = FakeTime()
    limiter = RefusalLimiter(interval=10, max_keys=100, clock=clock)
    for i in range(10_000):
        limiter.refuse((f"attacker-{i}", "x"))
    assert len(limiter) == 100
    # the oldest keys were forgotten: refusing one again logs it as new
    assert limiter.refuse(("attacker-0", "x")).log
    # a recent key is still aggregated (its twin)
    assert not limiter.refuse(("attacker-9999", "x")).log


def test_zero_interval_logs_every_refusal() -> None:
    limiter = RefusalLimiter(interval=0, clock=FakeTime())
    assert all(limiter.refuse("k").log for _ in range(5))


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RefusalLimiter(interval=-1)
    with pytest.raises(ValueError):
        RefusalLimiter(max_keys=0)
