"""Atomic writes: a reader sees the old complete file (or directory) or the
new complete one, never a half-written one, and a failed write leaves the
old one in place.

Temporary names are `<final>.tmp-<pid>` and `<final>.old-<pid>`, so the
leftovers of a killed process are recognisable (`clean_leftovers`).
"""
import glob
import os
import re
import shutil


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


def clean_leftovers(directory):
    """Undo the leftovers of atomic writes killed in `directory` by processes
    that are gone: half-written copies are deleted, an old copy whose
    replacement never arrived is put back. Returns what was done, as text."""
    done = []
    for path in sorted(glob.glob(os.path.join(glob.escape(directory), "*.tmp-*")) +
                       glob.glob(os.path.join(glob.escape(directory), "*.old-*"))):
        final, kind, pid = re.fullmatch(r"(.*)\.(tmp|old)-(\d+)", path).groups()
        if _alive(int(pid)):
            continue
        if kind == "old" and not os.path.exists(final):
            os.rename(path, final)
            done.append(f"restored {final} from an interrupted replacement")
        else:
            (shutil.rmtree if os.path.isdir(path) else os.remove)(path)
            done.append(f"removed {path}, left by an interrupted write")
    return done
