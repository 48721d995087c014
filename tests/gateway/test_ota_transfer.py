"""The master's side of an OTA transfer as a table: events in, actions and errors out (no bus)."""

from __future__ import annotations

import pytest

from gateway.ota_transfer import (
    Answered,
    Done,
    Exception_,
    NoAnswer,
    OtaBusy,
    OtaFailed,
    OtaRefused,
    OtaUnsupported,
    ReadStatus,
    Status,
    Transfer,
    WriteChunk,
    WriteCommit,
    WriteOffer,
)
from hardware.ota_image import Offer, OtaStatus

STREAM = bytes(range(256)) * 4   # 1024 bytes: 5 chunks of 240 (the last 64)


def status(state: str, next_chunk: int = 0, reason: int = 0) -> Status:
    return Status(OtaStatus(state, next_chunk * 240, next_chunk, reason, (1, 4, 0)))


def transfer(**kw: object) -> Transfer:
    return Transfer(7, STREAM, Offer.of(STREAM, 240, (1, 4, 0)), **kw)  # type: ignore[arg-type]


def run(t: Transfer, events: list[object]) -> list[str]:
    """Feed events one per action; the kinds of the actions asked for, in order."""
    seen = []
    for i, event in enumerate(events):
        action = t.action()
        seen.append(type(action).__name__ + (f"({action.index})"
                                             if isinstance(action, WriteChunk) else ""))
        t.feed(event, float(i))  # type: ignore[arg-type]
    seen.append(type(t.action()).__name__)
    return seen


def test_a_whole_transfer_offers_syncs_sends_every_chunk_commits_and_waits_for_staged() -> None:
    ok = Answered()
    t = transfer()
    assert run(t, [ok, status("receiving"), ok, ok, ok, ok, ok, ok,
                   NoAnswer("rebooting"), status("verify_pending"), status("staged")]) == [
        "WriteOffer", "ReadStatus", "WriteChunk(0)", "WriteChunk(1)", "WriteChunk(2)",
        "WriteChunk(3)", "WriteChunk(4)", "WriteCommit", "ReadStatus", "ReadStatus",
        "ReadStatus", "Done"]
    assert t.done_bytes == len(STREAM)


def test_a_resumed_transfer_starts_where_the_node_says() -> None:
    t = transfer()
    assert run(t, [Answered(), status("receiving", 3), Answered()]) == [
        "WriteOffer", "ReadStatus", "WriteChunk(3)", "WriteChunk"]
    assert t.done_bytes == 4 * 240


def test_a_chunk_without_an_answer_is_sent_again_and_an_exception_resyncs() -> None:
    t = transfer()
    assert run(t, [Answered(), status("receiving", 1), NoAnswer("timeout"), Answered(),
                   Exception_(2), status("receiving", 2), Answered()]) == [
        "WriteOffer", "ReadStatus", "WriteChunk(1)", "WriteChunk(1)", "WriteChunk(2)",
        "ReadStatus", "WriteChunk(2)", "WriteChunk"]


def test_too_many_failures_in_a_row_give_up_naming_the_cause() -> None:
    t = transfer(max_failures=3)
    with pytest.raises(OtaFailed, match=r"3 failures in a row.*garbled"):
        run(t, [Answered(), status("receiving"), NoAnswer("a"), NoAnswer("b"),
                NoAnswer("garbled")])


def test_progress_resets_the_failure_count() -> None:
    t = transfer(max_failures=2)
    run(t, [Answered(), status("receiving"), NoAnswer("x"), Answered(), NoAnswer("y"),
            Answered()])
    assert t.next_chunk == 2


@pytest.mark.parametrize(("code", "reason"), [(6, "bad hash"), (5, "downgrade"),
                                              (3, "unknown key"), (1, "malformed")])
def test_a_refusal_carries_the_devices_reason(code: int, reason: str) -> None:
    t = transfer()
    with pytest.raises(OtaRefused) as err:
        run(t, [Answered(), status("receiving", 5), Answered(), NoAnswer("reboot"),
                status("refused", 5, code)])
    assert (err.value.code, err.value.reason) == (code, reason)
    assert reason in str(err.value)


def test_a_node_on_trial_is_busy_and_a_node_without_the_window_is_unsupported() -> None:
    with pytest.raises(OtaBusy):
        run(transfer(), [Exception_(6)])
    # an old firmware answers the offer with 02 (illegal data address) or 01 (illegal function)
    for code in (1, 2):
        with pytest.raises(OtaUnsupported, match=f"exception {code:02d}"):
            run(transfer(), [Exception_(code)])
    with pytest.raises(OtaFailed, match="exception 04"):  # a device failure is not that
        run(transfer(), [Exception_(4)])


def test_no_verification_result_in_time_fails() -> None:
    t = transfer(verify_timeout_s=5.0)
    for event in [Answered(), status("receiving", 5), Answered()]:
        t.action()
        t.feed(event, 0.0)   # type: ignore[arg-type]
    assert isinstance(t.action(), ReadStatus)
    t.feed(NoAnswer("rebooting"), 4.0)
    with pytest.raises(OtaFailed, match="no verification result within 5 s"):
        t.feed(NoAnswer("rebooting"), 6.0)


def test_a_commit_that_did_not_take_is_sent_again() -> None:
    t = transfer()
    assert run(t, [Answered(), status("receiving", 5), NoAnswer("lost"),
                   status("receiving", 5), Answered(), status("staged", 5)]) == [
        "WriteOffer", "ReadStatus", "WriteCommit", "ReadStatus", "WriteCommit", "ReadStatus",
        "Done"]


def test_without_waiting_the_commit_ends_it() -> None:
    t = transfer(wait_verified=False)
    run(t, [Answered(), status("receiving", 5), Answered()])
    assert isinstance(t.action(), Done)
    assert not isinstance(t.action(), (WriteOffer, WriteCommit))


def test_the_node_rebooting_to_take_the_offer_is_waited_for_not_counted() -> None:
    t = transfer(max_failures=2, verify_timeout_s=10.0)
    t.action()
    t.feed(Answered(), 0.0)
    for second in (1.0, 2.0, 3.0):   # more silences than max_failures, within the time
        assert t.action() == ReadStatus(wait=second > 1.0)
        t.feed(NoAnswer("rebooting"), second)
    assert t.action() == ReadStatus(wait=True)
    t.feed(status("receiving", 2), 4.0)
    assert isinstance(t.action(), WriteChunk) and t.next_chunk == 2
    t2 = transfer(max_failures=2, verify_timeout_s=1.0)
    t2.action()
    t2.feed(Answered(), 0.0)
    t2.feed(NoAnswer("gone"), 2.0)
    with pytest.raises(OtaFailed):
        t2.feed(NoAnswer("gone"), 3.0)
