"""Run a reader in a background thread so batch preparation overlaps compute."""
import queue
import threading

_END = object()


class _Failure:
    def __init__(self, exc):
        self.exc = exc


def prefetch(iterable, depth):
    """Yield the items of `iterable`, produced up to `depth` ahead in a thread.

    An exception in the reader is re-raised in the consumer (never a hang);
    depth 0 iterates inline.
    """
    if depth <= 0:
        yield from iterable
        return
    q = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put(_Failure(exc))

    thread = threading.Thread(target=produce, name="reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
