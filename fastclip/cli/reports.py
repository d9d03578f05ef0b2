"""What a benchmark reports: :func:`report_title` (the device, torch, the rounds, the ceilings),
:func:`method_rows` (one flat record per case and method), :func:`format_table` and
:func:`markdown_table` (lists of :class:`Column`), :func:`write_json` and :func:`write_csv`
(written whole or not at all)."""

import csv
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from .outputs import write_atomically

__all__ = ["Column", "format_table", "markdown_table", "method_rows", "report_title", "write_csv", "write_json"]


def report_title(report: Mapping[str, Any]) -> str:
    """A report's first line: the device, torch, the rounds, and the ceilings timed in them
    (each a range over the cases, when they measured any)."""
    title = f"{report['device']}, torch {report['torch']}, median of {report['repeat']} rounds"
    cases = [case for case in report["cases"] if "ceilings" in case]
    if not cases:
        return title

    def spread(key):
        values = [case["ceilings"][key] for case in cases]
        low, high = f"{min(values) / 1e9:.1f}", f"{max(values) / 1e9:.1f}"
        return low if low == high else f"{low}-{high}"

    return (
        f"{title}; memory ceilings timed in the same rounds: read {spread('read_bytes_per_s')} GB/s, "
        f"in-place {spread('in_place_bytes_per_s')} GB/s"
    )


def method_rows(
    cases: Iterable[dict], case_fields: Mapping[str, Callable[[dict], Any]], method_fields: Iterable[str]
) -> Iterator[dict[str, Any]]:
    """One flat record per case and method (the rows of tables and CSV files): each of
    ``case_fields`` (name -> its value for a case), ``method`` (the method's name), then each of
    ``method_fields`` from the method's results, a name ending in ``_ms`` giving the result
    ``..._s`` in milliseconds."""
    method_fields = list(method_fields)
    for case in cases:
        for method, r in case["methods"].items():
            row = {name: value(case) for name, value in case_fields.items()}
            row["method"] = method
            for key in method_fields:
                row[key] = r[key[:-3] + "_s"] * 1e3 if key.endswith("_ms") else r[key]
            yield row


class Column(NamedTuple):
    """A column of :func:`format_table` and :func:`markdown_table`: its ``header``, its ``cell``
    text for a row, the ``width`` its text (and header) is padded to, left-aligned if ``left``
    (text) or else right-aligned (numbers)."""

    header: str
    cell: Callable[[dict], str]
    width: int = 0
    left: bool = False


def format_table(rows: Iterable[dict], columns: Sequence[Column], sep: str = " ") -> str:
    """A text table: the headers, then one line per row, each column padded to its width."""

    def line(texts):
        return sep.join(t.ljust(c.width) if c.left else t.rjust(c.width) for t, c in zip(texts, columns)).rstrip()

    return "\n".join([line([c.header for c in columns])] + [line([c.cell(row) for c in columns]) for row in rows])


def markdown_table(rows: Iterable[dict], columns: Sequence[Column]) -> str:
    """The same rows and columns as a markdown table (widths ignored)."""
    lines = [
        "| " + " | ".join(c.header for c in columns) + " |",
        "| " + " | ".join("---" if c.left else "---:" for c in columns) + " |",
    ]
    lines += ["| " + " | ".join(c.cell(row) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_json(data: Any, path: str) -> None:
    """Writes ``data`` as JSON (indented), whole or not at all."""

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)

    write_atomically(path, write)


def write_csv(rows: Iterable[dict], path: str) -> None:
    """Writes records with the same keys (e.g. :func:`method_rows`) as CSV, whole or not at all."""
    rows = list(rows)

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    write_atomically(path, write)
