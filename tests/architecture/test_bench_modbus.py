"""The Modbus bench's breakdown of a transaction, read from the bus hub's trace (sender port,
first bytes read, handed to the receivers, length; port 0 is the master)."""

from __future__ import annotations

import pytest

from bench.bench_modbus import turnarounds


def test_each_answered_request_gives_the_nodes_and_the_masters_turnaround() -> None:
    trace = [(0, 0.0, 1.0, 8), (1, 3.0, 5.0, 25), (0, 7.5, 8.5, 8), (1, 10.0, 12.0, 25),
             (0, 14.0, 15.0, 8)]
    node, master = turnarounds(trace)
    assert node == [2.0, 1.5]           # request handed over -> the answer's first bytes
    assert master == [2.5, 2.0]         # answer handed over -> the next request's first bytes


@pytest.mark.parametrize("trace", [
    [(0, 0.0, 1.0, 8), (0, 3.0, 4.0, 8), (0, 6.0, 7.0, 8)],          # nobody answers
    [(0, 0.0, 1.0, 8), (1, 3.0, 5.0, 25), (2, 6.0, 8.0, 25)],       # two answers, no request
    [(0, 0.0, 1.0, 8), (1, 3.0, 5.0, 25)],                          # the run ended on an answer
])
def test_a_request_without_an_answer_and_a_following_request_is_left_out(
        trace: list[tuple[int, float, float, int]]) -> None:
    assert turnarounds(trace) == ([], [])
