"""The data_view tool on real CSV/TSV, JSON, JSONL and Parquet files."""

from __future__ import annotations

import csv
import json
import resource
from pathlib import Path

import pytest

from core.errors import ToolError
from sandbox_helpers import require_bwrap
from tool.data_view import data_view_tool


@pytest.fixture(autouse=True)
def _sandbox() -> None:
    require_bwrap()  # the file is parsed in the sandbox; without bwrap data_view refuses, as shell does


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    with open(root / "people.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "name", "score", "member"])
        for i in range(100):
            w.writerow([i, f"name{i % 3}", "" if i % 10 == 0 else i / 2, i % 2 == 0])
    (root / "semi.csv").write_text("a;b\n1;x\n2;y\n")
    (root / "tabs.tsv").write_text("k\tv\none\t1\ntwo\t2\n")
    (root / "rows.jsonl").write_text("".join(json.dumps({"i": i, "tag": "t" + str(i % 2)}) + "\n" for i in range(50)))
    (root / "doc.json").write_text(json.dumps({"items": [{"a": 1}, {"a": 2, "b": "z"}]}))
    return root


def view(ws: Path, path: str, op: str, n: int = 10) -> str:
    return data_view_tool(ws).fn(path=path, op=op, n=n).content


def test_csv_head_and_tail(ws: Path) -> None:
    assert view(ws, "people.csv", "head", 2).splitlines()[1:] == [
        "| # | id | name | score | member |", "|---|---|---|---|---|",
        "| 0 | 0 | name0 |  | True |", "| 1 | 1 | name1 | 0.5 | False |"]
    tail = view(ws, "people.csv", "tail", 2).splitlines()
    assert tail[-2:] == ["| -2 | 98 | name2 | 49.0 | True |", "| -1 | 99 | name0 | 49.5 | False |"]


def test_csv_shape_columns_and_describe(ws: Path) -> None:
    assert view(ws, "people.csv", "shape").endswith("\n100 rows x 4 columns")
    assert "| score | float |" in view(ws, "people.csv", "columns")
    described = view(ws, "people.csv", "describe")
    assert "| id | 100 | 0 | 49.5 | 29.0115 | 0 | 99 |  |  |" in described
    assert "| score | 90 | 10 |" in described and "| name | 100 | 0 |  |  |  |  | 3 | name0 (34) |" in described


def test_sample_is_reproducible_and_in_file_order(ws: Path) -> None:
    first = view(ws, "people.csv", "sample", 5)
    assert first == view(ws, "people.csv", "sample", 5)
    rows = [int(line.split("|")[1]) for line in first.splitlines()[3:]]
    assert len(rows) == 5 and rows == sorted(rows)


def test_delimiters_are_sniffed(ws: Path) -> None:
    assert "| 0 | 1 | x |" in view(ws, "semi.csv", "head")
    assert "| 1 | two | 2 |" in view(ws, "tabs.tsv", "head")


def test_jsonl_and_json(ws: Path) -> None:
    assert view(ws, "rows.jsonl", "shape").endswith("50 rows x 2 columns")
    assert view(ws, "rows.jsonl", "tail", 1).splitlines()[-1] == "| -1 | 49 | t1 |"
    assert view(ws, "doc.json", "head").splitlines()[-2:] == ["| 0 | 1 |  |", "| 1 | 2 | z |"]


def test_parquet_from_metadata_and_row_groups(ws: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="pyarrow is needed to write the Parquet fixture")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": list(range(5000)), "s": [str(i) for i in range(5000)]}),
                   ws / "t.parquet", row_group_size=1000)
    assert view(ws, "t.parquet", "shape").endswith("5000 rows x 2 columns")
    assert "| x | int64 |" in view(ws, "t.parquet", "columns")
    assert view(ws, "t.parquet", "tail", 2).splitlines()[-2:] == ["| 4998 | 4998 | 4998 |", "| 4999 | 4999 | 4999 |"]
    assert view(ws, "t.parquet", "head", 1).splitlines()[-1] == "| 0 | 0 | 0 |"


def test_tail_and_shape_of_a_big_csv_do_not_load_it(ws: Path) -> None:
    row = "1234567890," * 9 + "end\n"
    with open(ws / "big.csv", "w") as f:
        f.write(",".join(f"c{i}" for i in range(10)) + "\n")
        for _ in range(20):
            f.write(row * 20_000)  # 400,000 rows, about 40 MB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert view(ws, "big.csv", "tail", 3).splitlines()[-1].endswith("| 1234567890 | end |")
    assert view(ws, "big.csv", "shape").endswith("400000 rows x 10 columns")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 20 * 1024  # KiB


@pytest.mark.parametrize("path,message", [
    ("../outside.csv", "outside the workspace"), ("data.gz", "compressed"), ("notes.md", "unknown data format"),
    ("absent.csv", "does not exist"),
])
def test_bad_paths_are_clear_errors(ws: Path, path: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        view(ws, path, "head")


def test_unknown_op_is_refused(ws: Path) -> None:
    with pytest.raises(ToolError, match="unknown op"):
        view(ws, "people.csv", "plot")


def test_a_byte_order_mark_is_not_part_of_the_first_column(ws: Path) -> None:
    (ws / "excel.csv").write_bytes("\ufeffcity,pop\nOslo,700000\n".encode("utf-8"))
    assert view(ws, "excel.csv", "columns").splitlines()[-2:] == ["| city | str |", "| pop | int |"]
    assert view(ws, "excel.csv", "head").splitlines()[-1] == "| 0 | Oslo | 700000 |"


def test_the_schema_is_valid(ws: Path) -> None:
    from jsonschema import Draft202012Validator

    tool = data_view_tool(ws)
    Draft202012Validator.check_schema(tool.parameters)
    assert not Draft202012Validator(tool.parameters).is_valid({"path": "a.csv", "op": "plot"})
    assert tool.read_only


def test_a_malformed_csv_is_a_clear_error(ws: Path) -> None:
    (ws / "broken.csv").write_text('a,b\n1,"' + "x" * 200_000 + '"\n')
    with pytest.raises(ToolError, match="line 2: field larger than field limit"):
        view(ws, "broken.csv", "shape")


@pytest.mark.parametrize("name", [".env", ".agent/sessions.db"])
def test_the_secrets_file_and_the_agents_state_are_not_shown(tmp_path, name):
    from core.paths import ProtectedPath

    target = tmp_path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("GEMINI_API_KEY,x\nsecret,1\n")
    tool = data_view_tool(tmp_path)
    with pytest.raises(ProtectedPath):
        tool.fn(path=name, op="head")


def test_the_file_is_parsed_in_the_sandbox_not_in_the_agent(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a stand-in reader that says where it runs: the host name, its working folder, its stdin
    from tool import data_view

    probe = ws.parent / "probe.py"
    probe.write_text("import json, os, socket, sys\n"
                     "print(json.dumps({'ok': True, 'kind': 'csv', 'size': 0, 'body': "
                     "socket.gethostname() + ' ' + str(sorted(os.listdir('.'))) + ' ' + sys.stdin.read(7)}))\n")
    monkeypatch.setattr(data_view, "READER", probe)
    text = data_view_tool(ws).fn(path="people.csv", op="head").content
    # the sandbox's host name, an empty folder of its own (not the workspace), the file on stdin
    assert text.splitlines()[1] == "sandbox [] id,name"
    unconfined = data_view_tool(ws, confined=False).fn(path="people.csv", op="head").content
    assert unconfined.splitlines()[1].endswith("[] id,name")  # control: the same reader, out of the sandbox
    assert not unconfined.splitlines()[1].startswith("sandbox ")
