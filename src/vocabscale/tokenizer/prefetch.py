"""A reader thread ahead of the encoding: pyarrow decodes without the GIL, so the next batch is
read while tokenizers' pool encodes this one."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetch:
    """Run an iterator in a background thread, at most `depth` items ahead of the consumer;
    its error is raised in the consumer, and leaving the `with` block stops the thread."""

    _DONE = object()

    def __init__(self, iterator: Iterator[Any], depth: int = 2) -> None:
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(iterator,), name="tokenize-reader", daemon=True
        )
        self._thread.start()

    def _run(self, iterator: Iterator[Any]) -> None:
        try:
            for item in iterator:
                if not self._put(item):
                    return
            self._put(self._DONE)
        except BaseException as error:
            self._put(_Failure(error))

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
