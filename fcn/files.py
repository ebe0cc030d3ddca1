"""Files as every command writes them: atomically (a reader, or a rerun after a
kill, never sees half of one), after checking the disk has room for what is large
(a full disk is one line, never a traceback, an abort or a partial file), into
folders one run at a time (a lock), never over a file the project did not write;
folders made whole or not at all (new_folder); and checksums and caches that a
damaged byte cannot turn into a traceback. Pure Python; every module that writes
results uses it."""
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
from contextlib import contextmanager
from pathlib import Path

from fcn.errors import FcnError
from fcn.paths import OUT


class NoSpace(FcnError):
    """The disk is (or would be) full; one line naming the file and the space."""


def mb(n):
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


def existing_parent(path):
    p = Path(path).resolve()
    while not p.exists():
        p = p.parent
    return p


def need_space(folder, nbytes, what):
    """Refuse (NoSpace, one line) to start writing ``nbytes`` of ``what`` into
    ``folder`` when its file system has less free."""
    free = shutil.disk_usage(existing_parent(folder)).free
    if free < nbytes:
        raise NoSpace(f"not enough disk space for {what} in {folder}: {mb(nbytes)} needed, "
                      f"{mb(free)} free; free some space (or write elsewhere) and run again")


def disk_full(e):
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def temporary_name(path, pid):
    """The hidden temporary file write_atomic writes ``path`` through in process ``pid``."""
    return path.with_name(f".{path.stem}.tmp{pid}{path.suffix}")


def alive(pid):
    """Whether process ``pid`` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:           # EPERM: it exists, another user's
        pass
    return True


def sweep_temporaries(path):
    """Remove the temporary files of ``path`` (temporary_name) that write_atomic left
    in a process that is gone (a kill: nothing else leaves one). Only the temporaries
    of this very file: their name is derived from it, so no file of the user's can be
    taken for one."""
    path = Path(path)
    head = f".{path.stem}.tmp"
    try:
        names = [n for n in os.listdir(path.parent)
                 if n.startswith(head) and n.endswith(path.suffix)]
    except OSError:
        return
    for name in names:
        pid = name[len(head):len(name) - len(path.suffix)]
        if re.fullmatch(r"[1-9][0-9]*", pid) and int(pid) != os.getpid() and \
                name == temporary_name(path, pid).name and not alive(int(pid)):
            (path.parent / name).unlink(missing_ok=True)


def write_atomic(path, write):
    """Call ``write(tmp)`` on a temporary path beside ``path`` (same folder, same
    suffix, so writers that add or check a suffix work), then rename it into place:
    ``path`` holds either its old content or the whole new one. A full disk removes
    the temporary file and raises NoSpace; a kill leaves it, and the next write of
    ``path`` removes it (sweep_temporaries). Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(path)
    tmp = temporary_name(path, os.getpid())
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if disk_full(e):
            raise NoSpace(f"the disk is full: could not write {path}; free some space and "
                          "run again (nothing was left half-written)") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


def append_line(path, line):
    """Append one line to a log; on a full disk, the file is cut back to where it was
    (no partial line) and NoSpace is raised."""
    path = Path(path)
    with open(path, "a") as f:
        start = f.tell()
        try:
            f.write(line.rstrip("\n") + "\n")
            f.flush()
        except OSError as e:
            if not disk_full(e):
                raise
            f.truncate(start)
            raise NoSpace(f"the disk is full: could not append to {path}; free some space "
                          "and run again") from None


def checksum(path, algo="sha256"):
    """Hex digest of a file, read in 1 MB blocks."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tar_rest_is_padding(t):
    """True when nothing but zero blocks follows the last member tarfile read: it
    stops silently at a damaged header in the middle of an archive. Reading to the
    end also makes gzip check its CRC and length."""
    t.fileobj.seek(t.offset)
    for block in iter(lambda: t.fileobj.read(1 << 20), b""):
        if block.count(0) != len(block):
            return False
    return True


# ---------------------------------------------------------------------------
# Caches: files a rerun can rebuild are read here, and anything unreadable is absent


def read_cache(path, parse=json.loads):
    """``parse(text of path)``, or None when the file is missing, not text, or
    ``parse`` refuses it (ValueError, TypeError, KeyError, AttributeError): a cache a
    rerun rebuilds is never worth a traceback."""
    try:
        return parse(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError,
            IndexError):
        return None


def write_cache(path, text):
    """Write a cache a rerun can rebuild, atomically; where something that is not a
    file stands in its place (a folder), the cache is not kept rather than refused."""
    path = Path(path)
    if path.exists() and not path.is_file():
        return None
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def read_jsonl(path, say=None):
    """The JSON records of a log written a line at a time. A damaged tail (a run killed
    mid-append, NUL bytes after a crash) is dropped from the file; a damaged line with
    intact records after it is skipped and left in the file. ``say`` is told of both;
    every intact record is kept."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    records, damaged, end, good_end = [], [], 0, 0
    for number, line in enumerate(raw.splitlines(keepends=True), 1):
        end += len(line)
        text = line.strip()
        if not text:
            continue
        try:
            record = json.loads(text.decode("utf-8"))
            if not isinstance(record, dict) or not line.endswith(b"\n"):
                raise ValueError
        except (UnicodeDecodeError, ValueError):
            damaged.append((number, end))
            continue
        records.append(record)
        good_end = end
    middle = [number for number, at in damaged if at <= good_end]
    if middle and say:
        say(f"note: {path}: skipped {len(middle)} damaged line(s) (line{'s' * (len(middle) > 1)} "
            f"{', '.join(map(str, middle))}); the intact records around them are kept")
    dropped = len(damaged) - len(middle)
    if dropped:
        write_atomic(path, lambda tmp: tmp.write_bytes(raw[:good_end]))
        if say:
            say(f"note: {path}: dropped {dropped} damaged line(s) at its end (a run stopped "
                f"while writing it); {len(records)} records kept")
    return records


# ---------------------------------------------------------------------------
# One run at a time in a folder


_HELD = {}


def lock_holder(folder):
    """'process PID (its command line)' holding a flock on ``folder``, from
    /proc/locks; 'another process' when that cannot be told."""
    try:
        ino = os.stat(folder).st_ino
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            if "FLOCK" in parts and parts[-3].rsplit(":", 1)[-1] == str(ino):
                pid = parts[-4]
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                return f"process {pid} ({cmd.decode(errors='replace').strip()[:120]})"
    except (OSError, IndexError):
        pass
    return "another process"


def try_lock(path):
    """An open descriptor of the folder ``path`` holding the kernel's exclusive flock
    on it, or None when another process holds it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextmanager
def locked(folder, flag):
    """Hold ``folder`` for one run: a second run on it (in another process) stops at
    once with one line naming the process that has it. The lock is the kernel's
    (flock on the folder itself): it leaves no file behind and goes with the process,
    however that ends. Re-entrant within a process (a command that calls another)."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield folder
        finally:
            _HELD[key][1] -= 1
        return
    fd = try_lock(folder)
    if fd is None:
        raise FcnError(f"{flag} {folder} is in use by {lock_holder(folder)}; wait for it to "
                       f"end, or choose another {flag}")
    _HELD[key] = [fd, 1]
    try:
        yield folder
    finally:
        _HELD[key][1] -= 1
        if not _HELD[key][1]:
            del _HELD[key]
            os.close(fd)


# ---------------------------------------------------------------------------
# Never over a file the project did not write


def same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def inside(path, folder):
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def check_replaceable(path, flag, inputs=(), ours=None):
    """Refuse, before any work, an output ``path`` that is one of ``inputs`` or an
    existing file the project did not write: ``ours(path)`` says whether it did (a
    marker in the file); anything under the project's out/ is its own."""
    path = Path(path)
    for i in inputs:
        if i is not None and Path(i).exists() and same_file(path, i):
            raise FcnError(f"{flag} {path} would overwrite the input {i}; choose another "
                           f"{flag}")
    if not path.exists() and not path.is_symlink():
        return path
    if path.is_dir():
        raise FcnError(f"{flag} {path} is a folder; choose another {flag}")
    if inside(path, OUT) or (ours is not None and ours(path)):
        return path
    raise FcnError(f"{flag} {path} exists and was not written by this project; it is left "
                   f"as it is: choose another {flag}, or move the file away")


MARKER = ".fcn-output"


def claim_folder(folder, flag, command):
    """Make ``folder`` the output folder of ``command`` (solve.py, reproduce.py, make
    demo), which fill it with files of their own: it must be new or empty, under the
    project's out/, or one such a command filled before (its marker file, or a
    training run's solver.prototxt from before the marker). Anything else is a
    folder of the user's, refused before any work with one line."""
    folder = Path(folder)
    marker = folder / MARKER
    if not marker.is_file() and not inside(folder, OUT) and \
            not (folder / "solver.prototxt").is_file():
        theirs = sorted(p.name for p in folder.iterdir())
        if theirs:
            raise FcnError(f"{flag} {folder} holds files this project did not write "
                           f"({', '.join(theirs[:3])}{', ...' if len(theirs) > 3 else ''}); "
                           f"{command} fills its own folder: choose a new or empty {flag}")
    if not marker.is_file():
        write_atomic(marker, lambda tmp: tmp.write_text(json.dumps({"command": command}) + "\n"))
    return folder


# ---------------------------------------------------------------------------
# A folder made whole or not at all


def tree(folder):
    """Every file and folder under ``folder``, relative, as sorted strings."""
    folder = Path(folder)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def marker_of(folder):
    """The record in ``folder``'s marker file (a dict), or None where there is none
    that reads."""
    record = read_cache(Path(folder) / MARKER)
    return record if isinstance(record, dict) else None


def listed(names, more=3):
    return ", ".join(names[:more]) + (", ..." if len(names) > more else "")


def check_new_folder(folder, flag, command):
    """Refuse (one line), before anything is written, a ``folder`` that new_folder may
    not put ``command``'s output in: it must be new, empty, or one new_folder made for
    ``command`` holding nothing but the files its marker lists (a file of the
    user's put into it is never removed), and its nearest existing parent a writable
    folder. (Unlike claim_folder, being under out/ is not enough: the folder is
    replaced whole.) Returns the folder as an absolute path, links resolved."""
    shown = folder
    folder = Path(folder).resolve()
    if folder.parent == folder:
        raise FcnError(f"{flag} {shown} is the root folder; choose another {flag}")
    if folder.exists() and not folder.is_dir():
        raise FcnError(f"{flag} {shown} is a file, not a folder; choose another {flag}")
    if folder.is_dir():
        names = tree(folder)
        record = marker_of(folder)
        if not names:
            pass
        elif record is None or MARKER not in names:
            theirs = [n for n in names if "/" not in n]
            raise FcnError(f"{flag} {shown} holds files this project did not write "
                           f"({listed(theirs)}); {command} fills its own folder: choose a new "
                           f"or empty {flag}")
        elif record.get("command") != command:
            raise FcnError(f"{flag} {shown} is the output folder of {record.get('command')}; "
                           f"choose another {flag}")
        elif not isinstance(record.get("files"), list):
            raise FcnError(f"{flag} {shown} was made by an earlier version of {command}, "
                           f"which did not record its files; remove it (rm -r {shlex.quote(str(shown))}) or "
                           f"choose another {flag}")
        else:
            extra = [n for n in names if n != MARKER and n not in record["files"]]
            if extra:
                raise FcnError(f"{flag} {shown} holds files {command} did not write "
                               f"({listed(extra)}); it would replace the folder whole: move "
                               f"them away, or choose another {flag}")
    parent = existing_parent(folder.parent)
    if not parent.is_dir():
        raise FcnError(f"{flag} {shown} is under a file, not a folder; choose another {flag}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FcnError(f"{flag} {shown}: {parent} is not writable; choose another {flag}")
    return folder


def exchange(a, b):
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); OSError where the
    C library or the file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:
        raise OSError(errno.ENOSYS, "no renameat2") from None
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange):
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(b))


def hold(path, flag, shown):
    """(descriptor, path) holding a flock on the folder ``path``, made if missing; one
    line when another process holds it. Checks that the lock taken is on what
    ``path`` names still (a holder that has just finished moves its folder away)."""
    for _ in range(5):
        path.mkdir(exist_ok=True)
        fd = try_lock(path)
        if fd is None:
            raise FcnError(f"{flag} {shown} is in use by {lock_holder(path)}; wait for it to "
                           f"end, or choose another {flag}")
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    raise FcnError(f"{flag} {shown} is in use by another process; wait for it to end, or "
                   f"choose another {flag}")


def clear(folder):
    for p in Path(folder).iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


@contextmanager
def new_folder(folder, flag, command):
    """Make ``folder`` ``command``'s output whole or not at all. Yields a hidden
    temporary folder beside it (.NAME.fcn-tmp: the same file system), held by this
    process, as is an old folder: a second run into the same folder stops at once
    with one line naming the process. When the block ends without an error, a marker
    listing every file is written and the temporary folder takes the folder's place
    in one step (an old one, which check_new_folder allowed, is swapped out
    atomically, then removed). On an error or Ctrl-C the temporary folder is removed;
    a kill leaves it, and the next run into the folder clears it. Call
    check_new_folder first, before any work; it is checked again here, held."""
    shown = folder
    folder = check_new_folder(folder, flag, command)
    tmp = folder.with_name(f".{folder.name}.fcn-tmp")
    old = folder.with_name(f".{folder.name}.fcn-old")
    folder.parent.mkdir(parents=True, exist_ok=True)
    held = [hold(tmp, flag, shown)]
    ours = True                                  # tmp names a folder this process holds
    try:
        if folder.is_dir():
            fd = try_lock(folder)
            if fd is None:
                raise FcnError(f"{flag} {shown} is in use by {lock_holder(folder)}; wait "
                               f"for it to end, or choose another {flag}")
            held.append(fd)
        clear(tmp)                               # what a killed run left
        shutil.rmtree(old, ignore_errors=True)
        check_new_folder(folder, flag, command)  # as it is now, held
        yield tmp
        record = {"command": command, "files": tree(tmp)}
        write_atomic(tmp / MARKER, lambda t: t.write_text(json.dumps(record) + "\n"))
        if folder.is_dir() and any(folder.iterdir()):
            try:
                exchange(tmp, folder)            # tmp now names the old folder, still held
                return
            except OSError:                      # no RENAME_EXCHANGE here: two renames
                os.rename(folder, old)
        os.rename(tmp, folder)                   # over nothing, or over an empty folder
        ours = False
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if ours:
            shutil.rmtree(tmp, ignore_errors=True)   # the old folder, or an unfinished one
        for fd in held:
            os.close(fd)
