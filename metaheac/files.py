"""Atomic writes: a reader sees the old complete file (or directory) or the
new complete one, never a half-written one, and a failed write leaves the
old one in place.

Temporary names are `<final>.tmp-<pid>` and `<final>.old-<pid>`, so the
leftovers of a killed process are recognisable (`clean_leftovers`).

`DirLock` keeps a second process out of a directory that a run is writing.
"""
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


class DirLock:
    """One run per directory: `path` is created with O_CREAT|O_EXCL and holds
    the owner's pid, host and start time. A second process gets a ConfigError
    naming the holder; a lock left by a dead process of this host is taken
    over with a warning. `key` is the config key the message tells to change."""

    def __init__(self, path, key):
        self.path, self.key, self.held = os.fspath(path), key, False

    def _create(self):
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}, f)
        except BaseException:  # an empty lock would name no holder
            os.remove(self.path)
            raise

    def _holder(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):  # being written, or not ours: treat as held by someone unknown
            return {}

    def acquire(self):
        try:
            self._create()
        except FileExistsError:
            self._take_over()
        except OSError as exc:  # read-only, full, no permission: found before any work is done
            raise ConfigError(f"{self.path}: cannot write there ({exc.strerror}); choose a writable "
                              f"{self.key}") from None
        self.held = True
        return self

    def _take_over(self):
        holder = self._holder()
        pid, host = holder.get("pid"), holder.get("host")
        if not (host == socket.gethostname() and isinstance(pid, int) and not _alive(pid)):
            raise ConfigError(f"{self.path}: in use by pid {pid} on {host} since {holder.get('started')}; "
                              f"wait for that run to end or choose another {self.key} (if no such run is "
                              f"going on, delete the lock file)") from None
        logger.warning("%s: taking over the lock of pid %d, which is no longer running", self.path, pid)
        os.remove(self.path)
        try:
            self._create()
        except FileExistsError:  # another process took it over first
            raise ConfigError(f"{self.path}: taken by another run just now; choose another {self.key}") from None

    def release(self):
        if self.held and self._holder().get("pid") == os.getpid():
            os.remove(self.path)
        self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
