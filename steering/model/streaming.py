"""Streaming across threads: the model runs on a thread of its own, the caller iterates anywhere.

A web server iterates a stream from whichever worker thread serves the request, while the model
must run start to finish on one thread (the torch backend holds the base model's lock there, and
must release it on the thread that took it; llama.cpp keeps its OpenMP team on one thread). Both
backends stream through `streamed`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
Job = Callable[[Callable[[T], None], threading.Event], None]

_ITEM, _ERROR, _DONE = "item", "error", "done"


def streamed(job: Job, submit: Callable[[Callable[[], None]], object] | None = None) -> Iterator[T]:
    """Run `job(emit, stop)` on another thread and yield every item it emits, in order.

    `submit(fn)` runs fn on a thread of the caller's choosing (default: a new daemon thread). An
    exception in the job is raised here. Closing the iterator (or dropping it) sets `stop`, which
    the job checks after every item, so an abandoned stream stops at its next token.
    """
    items: queue.Queue = queue.Queue()
    stop = threading.Event()

    def run() -> None:
        try:
            job(lambda item: items.put((_ITEM, item)), stop)
        except BaseException as error:  # noqa: BLE001 (handed to the consumer)
            items.put((_ERROR, error))
        else:
            items.put((_DONE, None))

    if submit is None:
        threading.Thread(target=run, name="stream", daemon=True).start()
    else:
        submit(run)
    try:
        while True:
            kind, value = items.get()
            if kind == _ERROR:
                raise value
            if kind == _DONE:
                return
            yield value
    finally:
        stop.set()
