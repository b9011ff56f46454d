"""Files the commands write, written so that nothing is lost or destroyed.

- `check_output`: an output path is refused when it is one of the inputs (the same file by
  device and inode, which catches hard links and symbolic links, or the same resolved
  path), when it names something that is not a regular file (a FIFO would block the
  writer, a device would swallow the rows), or when its directory does not exist.
- `OutputLock`: one writer per output. An exclusive `fcntl.flock` on a sidecar file
  (`NAME.lock` beside the output, holding the writer's pid); a second writer gets an
  InvalidInputError naming the pid. The sidecar is removed when the writer finishes.
- `AtomicFile`: a whole file is written to a temporary file in the same directory and
  renamed over the target (`os.replace`) only when complete: an interrupted write leaves
  the previous file as it was.
- `ResumableRows`: rows appended one at a time (one `write` each, flushed), JSON Lines or
  CSV by the suffix, one row per key (a file, a segment). Opening it takes the lock, cuts a
  torn last row (what a killed writer leaves), and reads the rows already there, so a
  rerun predicts only what is missing; rows can be dropped (to retry them) by rewriting
  the file atomically.

Names that are not UTF-8 (a Linux file name is bytes) are kept exactly: text is Python's
`os.fsdecode` form, where each byte that is not UTF-8 is a lone surrogate U+DC80..U+DCFF.
JSON Lines are ASCII with those as `\\udcXX` escapes (`json.loads` then `os.fsencode` give
the original bytes); CSV is UTF-8 with those bytes written as they are (read it with
`errors="surrogateescape"`).
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import stat
import tempfile
from pathlib import Path

from .errors import InvalidInputError

ROW_SUFFIXES = (".jsonl", ".csv")


def _kind(mode: int) -> str:
    return ("a directory" if stat.S_ISDIR(mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")


def check_output(path, inputs=(), what: str = "--out") -> Path:
    """`path` as a Path, or an InvalidInputError when writing it could destroy an input or
    hang: it is (or resolves to, or is a hard link of) one of `inputs`, it exists and is not a
    regular file, or its directory does not exist."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise InvalidInputError(f"{what} {path}: cannot use it ({exc.strerror})") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise InvalidInputError(f"{what} {path}: is {_kind(st.st_mode)}; results go to a regular file")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise InvalidInputError(f"{what} {path}: the directory {parent} does not exist")
    real = os.path.realpath(path)
    for item in inputs:
        item = Path(item)
        same = os.path.realpath(item) == real
        if not same and st is not None:
            try:
                other = os.stat(item)
                same = (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)
            except OSError:
                pass
        if same:
            raise InvalidInputError(f"{what} {path}: is the input {item}; writing it would destroy what is read: "
                                    "name another file")
    return path


class OutputLock:
    """An exclusive lock on `NAME.lock` beside `path`, for as long as one writer writes it."""

    def __init__(self, path, what: str = "--out"):
        self.path = Path(os.path.realpath(path))
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.what = what
        self.fd: int | None = None

    def acquire(self) -> "OutputLock":
        for _ in range(100):
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
            except OSError as exc:
                raise InvalidInputError(f"{self.what} {self.path}: cannot create its lock file {self.lock_path} "
                                        f"({exc.strerror})") from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise InvalidInputError(f"{self.what} {self.path}: its lock file {self.lock_path} is not a regular "
                                        "file")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise InvalidInputError(f"{self.what} {self.path}: another process (pid {holder}) is writing it; "
                                        "wait for it to finish (then rerun: it resumes), or name another file") \
                    from None
            try:  # the file we locked must still be the one at the name (not one removed meanwhile)
                current = os.stat(self.lock_path, follow_symlinks=False)
                held = os.fstat(fd)
                if (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()}\n".encode())
                    self.fd = fd
                    return self
            except FileNotFoundError:
                pass
            os.close(fd)
        raise InvalidInputError(f"{self.what} {self.path}: could not take its lock {self.lock_path}")

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.lock_path)  # while holding it: a waiting writer re-checks the name
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class AtomicFile:
    """`with AtomicFile(path) as tmp:` write `tmp` (a path in the same directory); on a clean
    exit it replaces `path` in one rename, on an exception it is removed and `path` is left
    as it was. `keep_partial=True` renames what was written even on KeyboardInterrupt (a
    recording stopped with Ctrl-C is still a recording)."""

    def __init__(self, path, keep_partial: bool = False):
        self.path = Path(os.path.realpath(path))
        self.keep_partial = keep_partial
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        fd, name = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=f".partial{self.path.suffix}",
                                    dir=self.path.parent)
        try:  # mkstemp makes it 0600: give it the target's mode, or what a new file gets here
            mode = stat.S_IMODE(os.stat(self.path).st_mode)
        except FileNotFoundError:
            mask = os.umask(0)
            os.umask(mask)
            mode = 0o666 & ~mask
        os.fchmod(fd, mode)
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def commit(self) -> None:
        if self.tmp is not None and self.tmp.exists():
            with open(self.tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(self.tmp, self.path)
        self.tmp = None

    def discard(self) -> None:
        if self.tmp is not None:
            try:
                self.tmp.unlink()
            except FileNotFoundError:
                pass
            self.tmp = None

    def __exit__(self, kind, exc, tb):
        if kind is None or (self.keep_partial and issubclass(kind, KeyboardInterrupt)):
            self.commit()
        else:
            self.discard()


def write_atomically(path, data: bytes) -> None:
    with AtomicFile(path) as tmp:
        tmp.write_bytes(data)


class RowsError(InvalidInputError):
    """An existing output that is not rows this kind of output writes."""


class ResumableRows:
    """Rows appended to a JSON Lines or CSV file (by its suffix), resumed by a rerun.

    `fields`: the CSV columns (JSON Lines rows are whole objects); `key`: the field naming
    what a row is about (one row per key in the end); `flatten(row) -> dict`: a row as CSV
    cells (default: the row itself); `inputs`: paths the output must not be.

        with ResumableRows(out, fields=[...], inputs=files) as rows:
            rows.rows          # the rows already there (dicts; CSV cells are strings)
            rows.keep(lambda row: ...)   # drop rows (rewritten atomically), e.g. to retry them
            rows.append({...})           # one row, written and flushed at once

    Opening takes the output's lock (a second writer gets an InvalidInputError) and cuts a
    torn last row; `repaired` is how many bytes that removed.
    """

    def __init__(self, path, fields: list[str] | None = None, key: str = "file", flatten=None, inputs=(),
                 what: str = "--out"):
        path = Path(path)
        if path.suffix.lower() not in ROW_SUFFIXES:
            raise InvalidInputError(f"{what} {path}: name a .jsonl or .csv file")
        self.name = path
        self.what = what
        self.inputs = inputs
        self.csv = path.suffix.lower() == ".csv"
        if self.csv and not fields:
            raise InvalidInputError("a CSV output needs its fields")
        self.fields = list(fields or [])
        self.key = key
        self.flatten = flatten or (lambda row: row)
        self.rows: list[dict] = []
        self._raw: list[bytes] = []
        self._header = b""
        self.repaired = 0
        self._lock: OutputLock | None = None
        self._f = None

    # -- opening ------------------------------------------------------------------------
    def open(self) -> "ResumableRows":
        check_output(self.name, self.inputs, self.what)
        self.path = Path(os.path.realpath(self.name))
        self._lock = OutputLock(self.path, self.what).acquire()
        try:
            data = self.path.read_bytes() if self.path.exists() else b""
            keep = self._parse_csv(data) if self.csv else self._parse_jsonl(data)
            if keep < len(data):
                self.repaired = len(data) - keep
                with open(self.path, "rb+") as f:
                    f.truncate(keep)
            self._f = open(self.path, "ab", buffering=0)
            if self.csv and not self._header:
                self._header = self._csv_line(self.fields)
                self._write(self._header)
        except BaseException:
            self.close()
            raise
        return self

    def _parse_jsonl(self, data: bytes) -> int:
        """Read complete lines; -> the length of the file without its torn last line."""
        end = data.rfind(b"\n") + 1  # a last line without its newline was cut short
        for number, line in enumerate((part + b"\n" for part in data[:end].split(b"\n")[:-1]), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8", "surrogateescape"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                row = None
            if not isinstance(row, dict) or self.key not in row:
                raise RowsError(f"{self.what} {self.name}: line {number} is not a result row ({line[:60]!r}); "
                                "it is not a file this command wrote: name another file")
            self.rows.append(row)
            self._raw.append(line)
        return end

    def _parse_csv(self, data: bytes) -> int:
        """Read complete records (a record ends at a newline outside quotes with the header's
        number of cells); -> the length of the file without a torn last record."""
        text = data.decode("utf-8", "surrogateescape")
        pos, start, quotes, end, records = 0, 0, 0, 0, []
        while pos < len(text):
            nl = text.find("\n", pos)
            if nl < 0:
                break  # no newline: the last record was cut short
            quotes += text.count('"', pos, nl + 1)
            pos = nl + 1
            if quotes % 2 == 0:  # outside quotes: a record ends here
                records.append((start, pos))
                start, quotes = pos, 0
        for n, (a, b) in enumerate(records):
            cells = next(csv.reader(io.StringIO(text[a:b], newline="")), [])
            raw = text[a:b].encode("utf-8", "surrogateescape")
            if n == 0:
                if cells != self.fields:
                    raise RowsError(f"{self.what} {self.name}: its columns are {', '.join(cells[:8])}"
                                    f"{', ...' if len(cells) > 8 else ''}, this run writes "
                                    f"{', '.join(self.fields[:8])}{', ...' if len(self.fields) > 8 else ''} (results "
                                    "of another bundle?): name another file")
                self._header = raw
            elif len(cells) != len(self.fields):
                if n == len(records) - 1:  # cut at a line break inside the row
                    return len(text[:a].encode("utf-8", "surrogateescape"))
                raise RowsError(f"{self.what} {self.name}: record {n} has {len(cells)} cells, the header "
                                f"{len(self.fields)}; it is not a file this command wrote: name another file")
            else:
                self.rows.append(dict(zip(self.fields, cells)))
                self._raw.append(raw)
            end = b
        return len(text[:end].encode("utf-8", "surrogateescape"))

    # -- writing ------------------------------------------------------------------------
    @staticmethod
    def _csv_line(cells) -> bytes:
        buffer = io.StringIO(newline="")
        csv.writer(buffer).writerow(cells)
        return buffer.getvalue().encode("utf-8", "surrogateescape")

    def encode(self, row: dict) -> bytes:
        if self.csv:
            cells = self.flatten(row)
            return self._csv_line(["" if cells.get(f) is None else cells.get(f) for f in self.fields])
        return (json.dumps(row, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._f.write(view):]

    def append(self, row: dict) -> None:
        """Write one row at once (one write, flushed to the OS): a kill leaves at most a torn
        last row, which the next open() cuts."""
        data = self.encode(row)
        self._write(data)
        self.rows.append(row if not self.csv else {k: str(v) for k, v in self.flatten(row).items()})
        self._raw.append(data)

    def append_group(self, rows: list[dict]) -> None:
        """Write several rows together (one write, then fsync): the rows of one file in a
        `batch --timeline`. A kill can still cut the write short; the next open() cuts the torn
        last row and the caller recognises the incomplete group by its rows (see
        foal_edge/batch.py, `timeline_keep`)."""
        data = [self.encode(row) for row in rows]
        self._write(b"".join(data))
        try:
            os.fsync(self._f.fileno())
        except OSError:
            pass
        for row, raw in zip(rows, data):
            self.rows.append(row if not self.csv else {k: str(v) for k, v in self.flatten(row).items()})
            self._raw.append(raw)

    def keep(self, wanted) -> int:
        """Keep only the rows for which wanted(row) is true: the file is rewritten atomically
        (a temporary file renamed over it). -> rows dropped."""
        chosen = [(row, raw) for row, raw in zip(self.rows, self._raw) if wanted(row)]
        dropped = len(self.rows) - len(chosen)
        if dropped:
            self._f.close()
            self._f = None
            write_atomically(self.path, self._header + b"".join(raw for _, raw in chosen))
            self.rows = [row for row, _ in chosen]
            self._raw = [raw for _, raw in chosen]
            self._f = open(self.path, "ab", buffering=0)
        return dropped

    def close(self) -> None:
        if self._f is not None:
            try:
                os.fsync(self._f.fileno())
            except OSError:
                pass
            self._f.close()
            self._f = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()
