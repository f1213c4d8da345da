"""One progress logger for long loops (training, infer, preprocessing):
throttled lines with position, rate, elapsed time and ETA."""
import time


def duration(seconds):
    """'42s', '3m07s', '1h02m'."""
    seconds = int(round(max(seconds, 0)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Position in a loop of `total` units (None: unknown), logged every
    `every` units and at the end.

        progress = Progress(n_batches, 10)
        for i, batch in enumerate(batches, 1):
            ...
            if progress.due(i):
                log.info("batch %s", progress.status(i))
    """

    def __init__(self, total, every):
        self.total, self.every = total, max(int(every), 1)
        self.start = time.perf_counter()
        self.next = self.every

    def due(self, done):
        if done >= self.next or done == self.total:
            self.next = (done // self.every + 1) * self.every
            return True
        return False

    def status(self, done, unit=""):
        """'12/40 | 3.2 <unit>/s, elapsed 4s, ETA 9s'."""
        elapsed = time.perf_counter() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        number = (lambda x: f"{x:,}") if isinstance(self.total or done, int) else (lambda x: f"{x:,.1f}")
        position = f"{number(done)}/{number(self.total)}" if self.total else number(done)
        text = f"{position} | {rate:,.2f}{' ' + unit if unit else ''}/s, elapsed {duration(elapsed)}"
        if self.total and rate > 0:
            text += f", ETA {duration((self.total - done) / rate)}"
        return text
