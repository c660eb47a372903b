"""Requests predicted together (gitml.serving.batching): each gets its own rows' answers."""

import threading
import time
from collections.abc import Callable

import pytest

from gitml.serving.batching import Batcher


def slow_double(calls: list[list[int]]) -> Callable[[list[int]], list[int]]:
    def predict(rows: list[int]) -> list[int]:
        calls.append(rows)
        time.sleep(0.02)  # long enough for the other threads to queue behind it
        if -1 in rows:
            raise ValueError("a bad row")
        return [row * 2 for row in rows]

    return predict


def in_threads(batched: Batcher, requests: list[list[int]]) -> dict[int, object]:
    answers: dict[int, object] = {}

    def send(number: int) -> None:
        try:
            answers[number] = batched(requests[number])
        except ValueError as err:
            answers[number] = err

    threads = [threading.Thread(target=send, args=(n,)) for n in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_concurrent_requests_share_calls_and_each_gets_its_own_rows() -> None:
    calls: list[list[int]] = []
    requests = [[n] * (1 + n % 3) for n in range(30)]
    answers = in_threads(Batcher(slow_double(calls), max_rows=5), requests)
    assert answers == {n: [row * 2 for row in rows] for n, rows in enumerate(requests)}
    assert sorted(row for call in calls for row in call) == sorted(
        row for rows in requests for row in rows
    )
    assert len(calls) < len(requests) and max(len(call) for call in calls) <= 5


def test_a_request_alone_is_one_call_of_its_rows() -> None:
    calls: list[list[int]] = []
    assert Batcher(slow_double(calls), max_rows=5)([1, 2, 3, 4, 5, 6, 7]) == [
        2,
        4,
        6,
        8,
        10,
        12,
        14,
    ]
    assert calls == [[1, 2, 3, 4, 5, 6, 7]]  # more than max_rows: a request is never split


def test_a_failed_call_fails_exactly_its_requests_and_the_others_are_answered() -> None:
    """Two rows per call at most: the 2-row requests always go alone, so they must be answered
    whatever the bad row does; a 1-row request fails only if it shared the bad row's call."""
    calls: list[list[int]] = []
    batched = Batcher(slow_double(calls), max_rows=2)
    requests = [[1, 2], [-1], [3, 4], [5]]
    answers = in_threads(batched, requests)
    assert answers[0] == [2, 4] and answers[2] == [6, 8]  # never batched with the bad row
    assert isinstance(answers[1], ValueError) and "a bad row" in str(answers[1])
    with_bad_row = next(call for call in calls if -1 in call)
    assert isinstance(answers[3], ValueError) == (5 in with_bad_row), (calls, answers[3])
    assert answers[3] == [10] or 5 in with_bad_row
    assert batched([4]) == [8]  # the next calls work
    with pytest.raises(ValueError, match="a bad row"):
        batched([-1])


def test_a_batch_fills_up_to_max_rows_and_each_request_gets_its_own_slice() -> None:
    calls: list[list[int]] = []
    requests = [[n] * (1 + n % 2) for n in range(40)]  # one or two rows each, oldest first
    answers = in_threads(Batcher(slow_double(calls), max_rows=6), requests)
    assert answers == {n: [row * 2 for row in rows] for n, rows in enumerate(requests)}
    # 1 + 2 + 1 + 2 rows: the queued requests fill a call exactly, never beyond
    assert max(len(call) for call in calls) == 6
