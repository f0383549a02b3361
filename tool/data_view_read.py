"""The parsing half of ``data_view``, run as a script inside the sandbox (``tool/data_view.py`` calls it).

Untrusted files are parsed here, in a process of its own (pyarrow's C++ Parquet reader, up to
100 MB of JSON), never in the agent's. It imports nothing from the project (whose folder is not
visible in the sandbox). The file comes in as standard input, already opened by the agent through
the workspace confinement, so this process needs no view of the workspace at all. Request (argv
1, JSON): ``{"name": "data.csv", "op": "head", "n": 10}``; reply (stdout, JSON): ``{"ok": true,
"kind": "csv", "size": 1234, "body": "..."}`` or ``{"ok": false, "message": "...", "hint": "..."}``.

Operations: ``head``, ``tail``, ``shape``, ``columns`` (with types), ``describe`` and ``sample``.
Nothing is read whole into memory except a plain JSON document (capped): CSV and JSONL are
streamed row by row, ``tail`` seeks back from the end of the file, and Parquet answers
``shape``/``columns`` from its metadata and reads only the row groups it needs (pyarrow).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import sys
from abc import ABC, abstractmethod
from collections import Counter
from pathlib import Path
from typing import IO, Any, Iterator


class DataError(Exception):
    """A file data_view cannot show, with a hint; the reply carries both."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


OPS = ("head", "tail", "shape", "columns", "describe", "sample")
JSON_MAX_BYTES = 100 * 1024 * 1024  # a plain JSON document must be parsed whole
TYPE_SAMPLE_ROWS = 1000
UNIQUE_CAP = 10_000
CELL_WIDTH = 40
MAX_N = 1000


def _kind(path: Path) -> str:
    return file_format(path.name)


def file_format(file_name: str) -> str:
    """``csv``, ``jsonl``, ``json`` or ``parquet`` from a file name; :class:`DataError` for others."""
    name = file_name.lower()
    for suffix in (".gz", ".bz2", ".xz", ".zip"):
        if name.endswith(suffix):
            raise DataError(f"{file_name} is compressed", hint="decompress it with shell first (e.g. gunzip -k)")
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".json"):
        return "json"
    if name.endswith((".csv", ".tsv", ".tab", ".txt")):
        return "csv"
    raise DataError(f"{file_name}: unknown data format", hint="data_view reads .csv, .tsv, .parquet, .json and .jsonl")


# --- values ---------------------------------------------------------------------------------------


def _parse_cell(text: str) -> Any:
    """A CSV cell as the value it spells: None, bool, int, float or the string."""
    s = text.strip()
    if s == "" or s.lower() in ("na", "nan", "null", "none", "n/a"):
        return None
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return text


def _type_name(values: list[Any]) -> str:
    kinds = {type(v).__name__ for v in values if v is not None}
    if not kinds:
        return "empty"
    if kinds <= {"int", "bool"} and "int" in kinds:
        return "int"
    if kinds <= {"int", "float"}:
        return "float"
    return kinds.pop() if len(kinds) == 1 else "mixed(" + ",".join(sorted(kinds)) + ")"


def _cell(v: Any) -> str:
    text = "" if v is None else json.dumps(v, ensure_ascii=False, default=str) if isinstance(v, (dict, list)) else str(v)
    text = text.replace("\n", "\\n").replace("|", "\\|")
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + "…"


def _table(columns: list[str], rows: list[list[Any]], first_index: int | None = 0) -> str:
    header = (["#"] if first_index is not None else []) + [_cell(c) for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, row in enumerate(rows):
        cells = [_cell(v) for v in row] + [""] * (len(columns) - len(row))
        prefix = [str(first_index + i)] if first_index is not None else []
        lines.append("| " + " | ".join(prefix + cells) + " |")
    return "\n".join(lines)


# --- readers --------------------------------------------------------------------------------------


class _Reader(ABC):
    """Rows of one file, streamed: ``columns``, ``rows()``, ``head``, ``tail``, ``count``."""

    columns: list[str]

    @abstractmethod
    def rows(self) -> Iterator[list[Any]]:
        """Every row, in file order, as a list aligned with ``columns``."""

    def head(self, n: int) -> list[list[Any]]:
        out = []
        for row in self.rows():
            if len(out) >= n:
                break
            out.append(row)
        return out

    def count(self) -> int:
        return sum(1 for _ in self.rows())

    def tail(self, n: int) -> tuple[list[list[Any]], int | None]:
        """The last ``n`` rows and the index of the first (``None`` when not known cheaply)."""
        from collections import deque

        last: deque[list[Any]] = deque(maxlen=n)
        total = 0
        for row in self.rows():
            last.append(row)
            total += 1
        return list(last), total - len(last)

    def types(self) -> dict[str, str]:
        sample = self.head(TYPE_SAMPLE_ROWS)
        return {c: _type_name([r[i] if i < len(r) else None for r in sample]) for i, c in enumerate(self.columns)}


def _last_lines(f: IO[bytes], n: int, skip_first_line: bool) -> list[bytes]:
    """The last ``n`` non-empty lines of a binary file, reading blocks backwards from the end."""
    f.seek(0, os.SEEK_END)
    pos = f.tell()
    block, data = 65536, b""
    while pos > 0 and data.count(b"\n") <= n + 1:
        step = min(block, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step) + data
    lines = data.split(b"\n")
    if pos > 0:
        lines = lines[1:]  # the first piece is a partial line
    elif skip_first_line:
        lines = lines[1:]
    return [ln for ln in lines if ln.strip()][-n:] if n else []


class _CsvReader(_Reader):
    def __init__(self, f: IO[bytes], path: Path) -> None:
        self.f = f
        sample = f.read(65536).decode("utf-8-sig", "replace")  # -sig: a spreadsheet's BOM is not a column name
        f.seek(0)
        if path.suffix.lower() in (".tsv", ".tab"):
            self.delimiter = "\t"
        else:
            try:
                self.delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
            except csv.Error:
                self.delimiter = ","
        first = next(csv.reader(io.StringIO(sample), delimiter=self.delimiter), [])
        self.columns = [c.strip() or f"column_{i}" for i, c in enumerate(first)]

    def _text(self) -> IO[str]:
        self.f.seek(0)
        return io.TextIOWrapper(self.f, encoding="utf-8-sig", errors="replace", newline="")

    def rows(self) -> Iterator[list[Any]]:
        text = self._text()
        try:
            reader = csv.reader(text, delimiter=self.delimiter)
            next(reader, None)
            for row in reader:
                if row:
                    yield [_parse_cell(c) for c in row]
        except csv.Error as exc:  # e.g. a field past csv's 128 KiB limit: not a table data_view can show
            raise DataError(f"line {reader.line_num}: {exc}",
                            hint="check the delimiter and quoting, or inspect the file with shell") from None
        finally:
            text.detach()

    def tail(self, n: int) -> tuple[list[list[Any]], int | None]:
        # assumes the last rows hold no quoted line breaks, which is what makes seeking possible
        lines = _last_lines(self.f, n, skip_first_line=True)
        text = b"\n".join(lines).decode("utf-8", "replace")
        return [[_parse_cell(c) for c in row] for row in csv.reader(io.StringIO(text), delimiter=self.delimiter) if row], None


class _JsonlReader(_Reader):
    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        keys: dict[str, None] = {}
        for i, obj in enumerate(self._objects()):
            if i >= TYPE_SAMPLE_ROWS:
                break
            keys.update(dict.fromkeys(obj.keys() if isinstance(obj, dict) else ["value"]))
        self.columns = list(keys)

    def _objects(self) -> Iterator[Any]:
        self.f.seek(0)
        for lineno, line in enumerate(self.f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError:
                    raise DataError(f"line {lineno} is not valid JSON", hint="data_view expects one JSON value per line") from None

    def _row(self, obj: Any) -> list[Any]:
        return [obj.get(c) for c in self.columns] if isinstance(obj, dict) else [obj]

    def rows(self) -> Iterator[list[Any]]:
        return (self._row(o) for o in self._objects())

    def count(self) -> int:
        self.f.seek(0)
        return sum(1 for line in self.f if line.strip())

    def tail(self, n: int) -> tuple[list[list[Any]], int | None]:
        return [self._row(json.loads(ln)) for ln in _last_lines(self.f, n, skip_first_line=False)], None


class _JsonReader(_Reader):
    def __init__(self, f: IO[bytes], size: int) -> None:
        if size > JSON_MAX_BYTES:
            raise DataError(f"the JSON document is {size / 1e6:.0f} MB; data_view parses plain JSON up to "
                            f"{JSON_MAX_BYTES // 1_000_000} MB", hint="convert it to JSON Lines (one record per line)")
        try:
            doc = json.load(f)
        except ValueError as exc:
            raise DataError(f"not valid JSON: {exc}", hint="for one record per line, name the file .jsonl") from None
        if isinstance(doc, dict):
            lists = [k for k, v in doc.items() if isinstance(v, list)]
            doc = doc[lists[0]] if len(lists) == 1 else [doc]
        if not isinstance(doc, list):
            doc = [doc]
        keys: dict[str, None] = {}
        for obj in doc:
            keys.update(dict.fromkeys(obj.keys() if isinstance(obj, dict) else ["value"]))
        self.columns = list(keys)
        self.records = doc

    def rows(self) -> Iterator[list[Any]]:
        for obj in self.records:
            yield [obj.get(c) for c in self.columns] if isinstance(obj, dict) else [obj]

    def count(self) -> int:
        return len(self.records)


class _ParquetReader(_Reader):
    def __init__(self, f: IO[bytes]) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError("reading Parquet needs pyarrow", hint="pip install pyarrow into the agent's venv") from None
        try:
            self.pf = pq.ParquetFile(f)
        except Exception as exc:  # pyarrow raises its own ArrowInvalid/OSError family for a bad file
            raise DataError(f"not a readable Parquet file: {exc}", hint="check the file") from None
        self.columns = list(self.pf.schema_arrow.names)

    def rows(self) -> Iterator[list[Any]]:
        for batch in self.pf.iter_batches(batch_size=4096):
            cols = [c.to_pylist() for c in batch.columns]
            yield from (list(r) for r in zip(*cols))

    def count(self) -> int:
        return self.pf.metadata.num_rows

    def types(self) -> dict[str, str]:
        return {f.name: str(f.type) for f in self.pf.schema_arrow}

    def head(self, n: int) -> list[list[Any]]:
        for batch in self.pf.iter_batches(batch_size=max(n, 1)):
            return [list(r.values()) for r in batch.to_pylist()][:n]
        return []

    def tail(self, n: int) -> tuple[list[list[Any]], int | None]:
        meta = self.pf.metadata
        groups, have = [], 0
        for i in range(meta.num_row_groups - 1, -1, -1):
            groups.insert(0, i)
            have += meta.row_group(i).num_rows
            if have >= n:
                break
        rows: list[list[Any]] = []
        for i in groups:
            rows += [list(r.values()) for r in self.pf.read_row_group(i).to_pylist()]
        out = rows[-n:] if n else []
        return out, meta.num_rows - len(out)


# --- operations -----------------------------------------------------------------------------------


def _describe(reader: _Reader) -> str:
    n_cols = len(reader.columns)
    count = [0] * n_cols
    nulls = [0] * n_cols
    num = [[0, 0.0, 0.0, math.inf, -math.inf] for _ in range(n_cols)]  # n, mean, M2, min, max (Welford)
    uniq: list[Counter[str]] = [Counter() for _ in range(n_cols)]
    overflow = [False] * n_cols
    rows = 0
    for row in reader.rows():
        rows += 1
        for i in range(n_cols):
            v = row[i] if i < len(row) else None
            if v is None or (isinstance(v, float) and math.isnan(v)):
                nulls[i] += 1
                continue
            count[i] += 1
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                s = num[i]
                s[0] += 1
                delta = v - s[1]
                s[1] += delta / s[0]
                s[2] += delta * (v - s[1])
                s[3] = min(s[3], v)
                s[4] = max(s[4], v)
            else:
                key = _cell(v)
                if key in uniq[i] or len(uniq[i]) < UNIQUE_CAP:
                    uniq[i][key] += 1
                else:
                    overflow[i] = True
    header = ["column", "count", "nulls", "mean", "std", "min", "max", "unique", "top"]
    out = []
    for i, name in enumerate(reader.columns):
        n, mean, m2, lo, hi = num[i]
        stats = [f"{mean:.6g}", f"{math.sqrt(m2 / (n - 1)):.6g}" if n > 1 else "", f"{lo:.6g}", f"{hi:.6g}"] if n else [""] * 4
        top = uniq[i].most_common(1)
        unique = (f">{UNIQUE_CAP}" if overflow[i] else str(len(uniq[i]))) if uniq[i] else ""
        out.append([name, count[i], nulls[i], *stats, unique, f"{top[0][0]} ({top[0][1]})" if top else ""])
    return f"{rows} rows\n" + _table(header, out, first_index=None)


def _sample(reader: _Reader, n: int, seed: int) -> tuple[list[int], list[list[Any]]]:
    rng = random.Random(seed)
    picked: list[tuple[int, list[Any]]] = []
    for i, row in enumerate(reader.rows()):  # reservoir sampling: one pass, n rows in memory
        if len(picked) < n:
            picked.append((i, row))
        else:
            j = rng.randint(0, i)
            if j < n:
                picked[j] = (i, row)
    picked.sort(key=lambda p: p[0])
    return [p[0] for p in picked], [p[1] for p in picked]


def view(f: IO[bytes], name: str, op: str, n: int) -> tuple[str, int, str]:
    """(format, size in bytes, the table or figure) for ``op`` on the open file ``f`` named ``name``."""
    path = Path(name)
    kind = _kind(path)
    size = os.fstat(f.fileno()).st_size
    reader: _Reader
    if kind == "csv":
        reader = _CsvReader(f, path)
    elif kind == "jsonl":
        reader = _JsonlReader(f)
    elif kind == "json":
        reader = _JsonReader(f, size)
    else:
        reader = _ParquetReader(f)
    cols = reader.columns
    if op == "head":
        body = _table(cols, reader.head(n))
    elif op == "tail":
        rows, first = reader.tail(n)
        body = _table(cols, rows, first_index=first)
        if first is None:
            body = f"last {len(rows)} rows (numbered from the end)\n" + _table(cols, rows, first_index=-len(rows))
    elif op == "shape":
        body = f"{reader.count()} rows x {len(cols)} columns"
    elif op == "columns":
        types = reader.types()
        body = _table(["column", "type"], [[c, types.get(c, "")] for c in cols], first_index=None)
    elif op == "describe":
        body = _describe(reader)
    elif op == "sample":
        indexes, rows = _sample(reader, n, seed=0)
        body = _table(["row"] + cols, [[i, *r] for i, r in zip(indexes, rows)], first_index=None)
    else:
        raise DataError(f"unknown op {op!r}", hint="use one of: " + ", ".join(OPS))
    return kind, size, body


def main() -> None:
    request = json.loads(sys.argv[1])
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # whatever a library prints goes to stderr; stdout carries only the reply
    try:
        with os.fdopen(0, "rb", closefd=False) as f:
            kind, size, body = view(f, request["name"], request["op"], int(request["n"]))
        reply = {"ok": True, "kind": kind, "size": size, "body": body}
    except DataError as exc:
        reply = {"ok": False, "message": exc.message, "hint": exc.hint}
    except (MemoryError, RecursionError) as exc:
        reply = {"ok": False, "message": f"the file is too large or too deeply nested to show ({type(exc).__name__})",
                 "hint": "look at a part of it with shell (head, jq) instead"}
    with os.fdopen(reply_fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(reply))


if __name__ == "__main__":
    main()
