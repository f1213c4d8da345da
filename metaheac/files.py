"""Atomic writes: a reader sees the old complete file (or directory) or the
new complete one, never a half-written one, and a failed write leaves the
old one in place.

Temporary names are `<final>.tmp-<pid>` and `<final>.old-<pid>`, so the
leftovers of a killed process are recognisable (`clean_leftovers`).

`DirLock` keeps a second process out of a directory that a run is writing;
`claim` takes it and cleans up after killed writes.
"""
import fcntl
import glob
import json
import logging
import os
import re
import shutil
import socket
import time

from metaheac.errors import ConfigError

logger = logging.getLogger(__name__)
_LEFTOVER = re.compile(r"(.*)\.(tmp|old)-(\d+)")


def _temporary(final):
    return f"{final}.tmp-{os.getpid()}"


def atomic_write(path, write):
    """Call write(tmp_path) and rename the result to `path`. Returns `path`."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = _temporary(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_dir(final, fill):
    """Call fill(tmp_dir) on a fresh directory and put it in place of `final`.

    The old `final` is moved aside before the new one is renamed in and only
    deleted after, so at every moment a complete copy exists under `final` or
    under `<final>.old-<pid>` (a kill between the two renames leaves the old
    copy there; `clean_leftovers` puts it back). Returns `final`.
    """
    tmp = _temporary(final)
    old = f"{final}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        fill(tmp)
        if os.path.exists(final):
            os.rename(final, old)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.exists(old) and not os.path.exists(final):
            os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def is_leftover(path):
    """Whether `path` is a temporary name of an atomic write (`<final>.tmp-<pid>`, `<final>.old-<pid>`)."""
    return _LEFTOVER.fullmatch(os.fspath(path)) is not None


def clean_leftovers(directory, name=None):
    """Undo the leftovers of atomic writes killed in `directory` (of `name`
    only, if given) by processes that are gone: half-written copies are
    deleted, an old copy whose replacement never arrived is put back.
    Returns what was done, as text."""
    done = []
    pattern = os.path.join(glob.escape(directory), "*" if name is None else glob.escape(name))
    for path in sorted(glob.glob(pattern + ".tmp-*") + glob.glob(pattern + ".old-*")):
        match = _LEFTOVER.fullmatch(path)
        if not match:
            continue
        final, kind, pid = match.groups()
        if _alive(int(pid)):
            continue
        if kind == "old" and not os.path.exists(final):
            os.rename(path, final)
            done.append(f"restored {final} from an interrupted replacement")
        else:
            (shutil.rmtree if os.path.isdir(path) else os.remove)(path)
            done.append(f"removed {path}, left by an interrupted write")
    return done


def claim(lock_path, key, directory, name=None):
    """Create `directory`, take the DirLock at lock_path, then undo the
    leftovers of killed atomic writes in `directory` (of `name` only, if
    given), each logged: the start of a run that writes there. `key` is the
    config key the messages tell to change. Returns the lock."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot create {directory} ({exc.strerror}); choose a writable directory") from None
    lock = DirLock(lock_path, key).acquire()
    try:
        for note in clean_leftovers(directory, name):
            logger.warning("%s", note)
    except BaseException:
        lock.release()
        raise
    return lock


class DirLock:
    """One run per directory: an exclusive advisory lock (flock) on the file
    `path`, which holds the owner's pid, host and start time. The kernel
    drops the lock when its process ends, however it ends, so a dead run
    leaves nothing to take over, and two processes can never both hold it.
    A second process gets a ConfigError naming the holder. `key` is the
    config key the message tells to change."""

    def __init__(self, path, key):
        self.path, self.key, self.fd = os.fspath(path), key, None

    @property
    def held(self):
        return self.fd is not None

    def _holder(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):  # being written, or not ours: someone unknown
            return {}

    def acquire(self):
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:  # read-only, full, no permission: found before any work is done
                raise ConfigError(f"{self.path}: cannot write there ({exc.strerror}); choose a writable "
                                  f"{self.key}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                holder = self._holder()
                raise ConfigError(f"{self.path}: in use by pid {holder.get('pid')} on {holder.get('host')} since "
                                  f"{holder.get('started')}; wait for that run to end or choose another "
                                  f"{self.key}") from None
            try:  # a holder releasing it removes the file: locked, it must still be the file at `path`
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        previous = self._holder().get("pid")
        if isinstance(previous, int) and previous != os.getpid():
            logger.warning("%s: taking over the lock of pid %d, which is no longer running", self.path, previous)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}).encode()
        try:
            os.ftruncate(fd, 0)
            os.write(fd, record)
        except OSError as exc:
            os.close(fd)
            raise ConfigError(f"{self.path}: cannot write there ({exc.strerror}); choose a writable "
                              f"{self.key}") from None
        self.fd = fd
        return self

    def release(self):
        if self.fd is None:
            return
        try:
            os.remove(self.path)  # still locked: a process that opened it meanwhile sees it gone and retries
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
