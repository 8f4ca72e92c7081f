"""The one record schema every run writes (docs/records.md): writer, reader, run splitting.

A :class:`RecordWriter` writes JSON lines: ``start`` first, ``end`` last, whatever happens in
between. It never appends to an existing records file silently (a rerun onto a file that already
holds records refuses, unless asked to append), and it marks a run whose loss or metric was
non-finite, so that a NaN never reads as a perfect score.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

FORMAT = 1
STATUSES = ("completed", "interrupted", "failed")


class RecordsError(RuntimeError):
    """A records file cannot be written as asked (exists, is a folder, cannot be created, is full)."""


class RecordsRefused(RecordsError):
    """A records file refused before the run began (a folder, holds records, held by another run,
    cannot be created): nothing was written, and the run must not start."""


class MixedRunsError(ValueError):
    """A records file whose runs cannot be told apart (two runs wrote into it at once)."""


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def plain(value: Any) -> Any:
    """JSON-friendly: tensors and NumPy values become Python numbers or lists; paths strings;
    non-finite floats ``None`` (the ``end`` record says whether a loss or metric was one)."""
    if torch.is_tensor(value):
        value = value.detach().cpu()
        value = value.item() if value.numel() == 1 else value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    elif isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, Path):
        value = str(value)
    elif isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    elif isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _nonfinite(value: Any) -> bool:
    if torch.is_tensor(value):
        return bool((~torch.isfinite(value.detach().float())).any()) if value.numel() else False
    if isinstance(value, (float, np.floating)):
        return not math.isfinite(float(value))
    return False


def check_path(path: Path | str, append: bool = False) -> Path:
    """``path`` as a records file this run may write: refuses a folder, and an existing non-empty
    file unless ``append``. Creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise RecordsRefused(f"--record {path} is a folder: name a file, e.g. {path / 'records.jsonl'}")
    if not append and path.exists() and path.stat().st_size > 0:
        raise RecordsRefused(f"--record {path} already holds records: name a new file, remove it, "
                           "or pass --append to add this run to it")
    return path


class RecordWriter:
    """Writes one run's records to ``path`` (JSON lines), or keeps them in memory when ``path`` is None.

    ``start(...)`` writes the ``start`` record; ``write(event, **fields)`` any other;
    ``end(status, error)`` the ``end`` record (once; later calls do nothing). ``metric_fields`` are
    the names whose non-finite values mark the run ``nonfinite`` (every metric of ``start``, alone or
    per modality); a writer's user that sees a non-finite loss sets ``nonfinite`` itself.
    """

    def __init__(self, path: Path | str | None = None, append: bool = False, sinks: Iterable = ()):
        self.path = check_path(path, append) if path is not None else None
        self._fd: int | None = None
        self._created = False
        self._size_before = 0
        self.broken: str | None = None  # why the file stopped taking records (a full disk)
        #: callables that receive every row written (e.g. a TensorBoard writer); ``close()`` if they have it
        self.sinks = list(sinks)
        self.append = append
        self.events: list[dict] = []
        self.nonfinite = False
        self.counts = {"step": 0, "eval": 0}
        self.ended = False
        self.metric_fields: set[str] = set()
        if self.path is not None:
            self._open()

    # -- the file: opened once, locked for the run, written a whole line at a time -----------------

    def _open(self) -> None:
        """Open the records file and hold an exclusive lock on it for the run.

        The check that the file holds no records is made *after* the lock is taken, on the open
        file: two runs started together onto one file cannot both pass it (the check of
        :func:`check_path` alone was check-then-open), and a run appending (``--append``) never
        interleaves its lines with another's.
        """
        path = self.path
        # the folders this run makes, nearest first: a refused run takes them back (discard)
        self._made_dirs = [p for p in path.parents if not p.exists()]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), path.parent)
            raise RecordsRefused(f"cannot write records to {path}: {blocker} is a file, not a folder") from None
        except OSError as e:
            raise RecordsRefused(f"cannot write records to {path}: {e.strerror or e}") from None
        for _ in range(10):
            fd, created = self._open_once(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise RecordsRefused(f"--record {path} is being written by another run right now: name another "
                                   "file, or wait for that run to end") from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except OSError:
                same = False
            if same:
                break
            os.close(fd)  # a refused run removed (or someone replaced) the file between open and lock
        else:
            raise RecordsRefused(f"--record {path} keeps being replaced by another process: name another file")
        size = os.fstat(fd).st_size
        if size > 0 and not self.append:
            os.close(fd)
            raise RecordsRefused(f"--record {path} already holds records: name a new file, remove it, "
                               "or pass --append to add this run to it")
        self._fd, self._created, self._size_before = fd, created, size

    @staticmethod
    def _open_once(path: Path) -> tuple[int, bool]:
        """(descriptor, whether this call created the file)."""
        flags = os.O_WRONLY | os.O_APPEND
        for _ in range(10):
            try:
                return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666), True
            except FileExistsError:
                pass
            except OSError as e:
                raise RecordsRefused(f"cannot write records to {path}: {e.strerror or e}") from None
            try:
                return os.open(path, flags), False
            except FileNotFoundError:
                continue  # removed in between: create it
            except OSError as e:
                raise RecordsRefused(f"cannot write records to {path}: {e.strerror or e}") from None
        raise RecordsRefused(f"--record {path} keeps being replaced by another process: name another file")

    def _write_line(self, line: str) -> None:
        """Append one whole line, or nothing: on a failed or short write (a full disk) the file is
        cut back to where the line began, so that it never ends in a torn line."""
        data = line.encode("utf-8")
        start = os.lseek(self._fd, 0, os.SEEK_END)
        done = 0
        try:
            while done < len(data):
                n = os.write(self._fd, data[done:])
                if n <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                done += n
        except OSError as e:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                pass
            self.broken = e.strerror or str(e)
            raise RecordsError(f"cannot write records to {self.path}: {self.broken}; it holds every record "
                               "before this one, and no more will be written") from None

    def discard(self) -> None:
        """Take back everything this writer wrote: the file is removed if this run created it, else
        cut back to its size before the run (for a run refused before it began)."""
        self.ended = True
        for sink in self.sinks:
            if hasattr(sink, "discard"):
                sink.discard()
        if self._fd is None:
            self.close()
            return
        try:
            if self._created:
                os.unlink(self.path)
            else:
                os.ftruncate(self._fd, self._size_before)
        except OSError:
            pass
        self.close()
        for folder in getattr(self, "_made_dirs", []):
            try:
                folder.rmdir()  # only while empty: never another run's files
            except OSError:
                break

    # -- writing ---------------------------------------------------------------------------------

    def _emit(self, row: dict) -> None:
        for sink in self.sinks:
            sink(row)
        if self.path is None:
            self.events.append(row)
            return
        if self.broken is not None or self._fd is None:
            return  # the first failure was raised; later rows (the end record) have nowhere to go
        self._write_line(json.dumps(row) + "\n")

    def write(self, event: str, **fields: Any) -> dict:
        if event in self.counts:
            self.counts[event] += 1
        for name in self.metric_fields:
            if name in fields and _nonfinite(fields[name]):
                self.nonfinite = True
        row = {"event": event, **plain(fields)}
        self._emit(row)
        return row

    def start(self, *, upstream: str, script: str | None, modalities: Iterable[str],
              metrics: Iterable[str] = (), primary: str | None = None, higher_is_better: bool = True,
              config: dict | None = None, upstream_options: dict | None = None, **extra: Any) -> dict:
        metrics = list(metrics)
        modalities = list(modalities)
        if len(modalities) != 2:
            raise ValueError(f"a run names two modalities, modality 1 (ζ's) first; got {modalities}")
        # each metric, alone or per modality, is a metric: non-finite values mark the run
        self.metric_fields |= {f"{m}{s}" for m in metrics for s in ("", "_m1", "_m2", "_head_m1", "_head_m2")}
        return self.write("start", format=FORMAT, upstream=upstream, script=script, modalities=modalities,
                          metrics=metrics, primary=primary if primary is not None else (metrics[0] if metrics else None),
                          higher_is_better=higher_is_better, config=config or {},
                          upstream_options=upstream_options or {}, time=now(), **extra)

    def end(self, status: str = "completed", error: str | None = None) -> dict | None:
        if self.ended:
            return None
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self.ended = True
        try:
            row = self.write("end", status=status, error=error, nonfinite=self.nonfinite,
                             steps=self.counts["step"], evaluations=self.counts["eval"], time=now())
        finally:
            self.close()
        return row

    def close(self) -> None:
        for sink in self.sinks:
            if hasattr(sink, "close"):
                sink.close()
        self.sinks = []
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    # -- reading ---------------------------------------------------------------------------------

    def read(self) -> list[dict]:
        """Every record so far: from memory, or this run's records in the file (the last run's,
        when appending to a file that held earlier runs)."""
        if self.path is None:
            return list(self.events)
        found = read_records(self.path) if self.path.exists() else []
        split = runs(found)
        return split[-1] if split else found


def parse_lines(path: Path | str, torn_alone: bool = True) -> tuple[list[tuple[int, Any]], list[tuple[int, str]]]:
    """The JSON values of a JSON-lines file with their line numbers, and the lines that are not JSON
    (line number, why); a torn last line (a killed writer) is dropped (``torn_alone=False``: only
    after at least one value, so that a file of one line of text is not taken for an empty run). The
    one parser of records files: :func:`read_records` refuses what it finds wrong, the plots leave it
    out and say so. A file that is not UTF-8 text is a ``ValueError``."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not a records file (not UTF-8 text: {e.reason} at byte {e.start})") from None
    values: list[tuple[int, Any]] = []
    bad: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            values.append((i + 1, json.loads(line)))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1 and (values or torn_alone):
                break  # the last line of a run that was killed mid-write
            bad.append((i + 1, f"not JSON ({e.msg})"))
    return values, bad


def read_records(path: Path | str) -> list[dict]:
    """The records of a JSON-lines file; a torn last line (a killed writer) is dropped. A line that
    is not a JSON object elsewhere, and a file into which two runs wrote at once, are refused with a
    ``ValueError`` naming the file and the line (:class:`MixedRunsError` for the second)."""
    values, bad = parse_lines(path)
    if bad:
        line, why = bad[0]
        raise ValueError(f"{path} line {line}: {why}: not a records file, or a damaged one")
    out = []
    for line, record in values:
        if not isinstance(record, dict):
            raise ValueError(f"{path} line {line}: a JSON {type(record).__name__}, where a record is an object")
        out.append(record)
    try:
        runs(out)
    except MixedRunsError as e:
        raise MixedRunsError(f"{path}: {e}") from None
    return out


def runs(records: list[dict]) -> list[list[dict]]:
    """A file's records split into runs, at each ``start`` (records before the first start form a run).

    A run's ``end`` is its last record: anything but a new ``start`` after it means two runs wrote
    the file at once, and their records cannot be told apart (:class:`MixedRunsError`).
    """
    out: list[list[dict]] = []
    for i, r in enumerate(records):
        event = r.get("event") if isinstance(r, dict) else None
        if event == "start" or not out:
            out.append([])
        elif isinstance(out[-1][-1], dict) and out[-1][-1].get("event") == "end":
            raise MixedRunsError(f"record {i + 1} (a {event!r} record) follows its run's end: two runs wrote this "
                                 "file at once, and their records cannot be told apart")
        out[-1].append(r)
    return out


def is_complete(records: list[dict]) -> bool:
    """Whether the (last) run of ``records`` ended with status ``completed``."""
    split = runs(records)
    if not split:
        return False
    last = split[-1][-1]
    return last.get("event") == "end" and last.get("status") == "completed"


def status_of(exc: BaseException | None) -> tuple[str, str | None]:
    """(``end`` status, one-line error) for how a run left its block."""
    if exc is None:
        return "completed", None
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "interrupted (KeyboardInterrupt)"
    if isinstance(exc, SystemExit) and exc.code in (None, 0):
        return "completed", None
    text = str(exc).strip().splitlines()
    return "failed", f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling and a rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
