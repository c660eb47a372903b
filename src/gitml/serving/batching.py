"""Requests that wait for the model at the same time are predicted together, in one call.

A one-row predict of the pipeline costs most of what a 100-row one does: scikit-learn's input
checks, the column transformer and the per-tree loop of HistGradientBoosting are paid per call,
not per row (20 ms for 1 row, 27 ms for 100, on a busy 2-core machine). So when requests queue
in one worker (each in a thread of FastAPI's pool), one of them leads: it takes the rows
waiting, oldest first and up to `max_rows`, predicts them in one call and hands each request
its own slice. A request alone goes straight through, a batch of one.

Each row's prediction does not depend on the rows beside it (the pipeline transforms and scores
rows one by one), so a batched request gets the very numbers it would get alone.
"""

import threading
from collections.abc import Callable
from typing import Any


class _Waiting:
    __slots__ = ("done", "error", "result", "rows")

    def __init__(self, rows: list[Any]) -> None:
        self.rows, self.done = rows, False
        self.result: list[Any] = []
        self.error: BaseException | None = None


class Batcher:
    """`batcher(rows)` is `predict(rows)`, for rows of any number of threads at once."""

    def __init__(self, predict: Callable[[list[Any]], list[Any]], max_rows: int) -> None:
        self.predict, self.max_rows = predict, max_rows
        self._changed = threading.Condition()
        self._queue: list[_Waiting] = []
        self._busy = False  # a leader is predicting

    def __call__(self, rows: list[Any]) -> list[Any]:
        mine = _Waiting(rows)
        with self._changed:
            self._queue.append(mine)
        while True:
            with self._changed:
                while self._busy and not mine.done:
                    self._changed.wait()
                if mine.done:  # predicted, by this thread or by a leader with its own rows
                    return self._result(mine)
                self._busy = True
                batch = self._take()  # the oldest first: this request may wait one more round
            self._run(batch)

    def _run(self, batch: list[_Waiting]) -> None:
        try:
            predictions = self.predict([row for waiting in batch for row in waiting.rows])
            start = 0
            for waiting in batch:
                waiting.result = predictions[start : start + len(waiting.rows)]
                start += len(waiting.rows)
        except BaseException as err:  # every request of the batch fails as the call did
            for waiting in batch:
                waiting.error = err
        finally:
            with self._changed:
                for waiting in batch:
                    waiting.done = True
                self._busy = False
                self._changed.notify_all()  # the answered return; one of the rest leads next

    def _take(self) -> list[_Waiting]:
        """The oldest waiting requests, up to max_rows rows (always at least one request)."""
        batch: list[_Waiting] = []
        rows = 0
        while self._queue and (not batch or rows + len(self._queue[0].rows) <= self.max_rows):
            waiting = self._queue.pop(0)
            batch.append(waiting)
            rows += len(waiting.rows)
        return batch

    @staticmethod
    def _result(waiting: _Waiting) -> list[Any]:
        if waiting.error is not None:
            raise waiting.error
        return waiting.result
