"""A user's own CSV / JSONL file as a task: its columns previewed and guessed, every row checked as it streams by.

``load_file_task`` reads a file once, keeping each row's clipped texts and label, never the file: an upload may be
100 MB. Every problem names its row and the fix; the task is split as any other and registered under its name for
whoever read it (``tasks.register_task``), so ``tasks.load_task`` finds it afterwards. ``preview_file`` reads only
the first rows, for choosing the text and label columns (``guess_columns`` makes the first guess).
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from studio import StudioError
from studio.limits import (
    MAX_FILE_ROWS,
    MAX_LABEL_CHARS,
    MAX_LABELS,
    check_label_word,
    check_label_words,
    check_single_task_name,
)
from studio.tasks import Example, TaskData, TaskSpec, clip_text, make_task_data, register_task, split_examples

TEXT_COLUMN_NAMES = ("text", "sentence", "review")  # the columns a text is usually in, most likely first


def guess_columns(columns: list[str], *, first_if_unsure: bool = True) -> tuple[list[str], str | None]:
    """A first guess at a file's text column(s) and label column, for people to confirm. Without a usual text
    column name the first column is the guess (the Tune tab shows it to be confirmed); ``first_if_unsure=False``
    guesses no text column then: a file loaded as it is (the command line) asks for one instead."""
    text = [c for c in TEXT_COLUMN_NAMES if c in columns][:1]
    if not text and first_if_unsure:
        text = columns[:1]
    label = "label" if "label" in columns else (columns[-1] if columns else None)
    return text, label


def preview_file(path: str | Path, rows: int = 8) -> tuple[list[str], list[list[str]]]:
    """The columns and first ``rows`` rows of a CSV / JSONL file (read as ``load_file_task`` reads it), so people
    can choose the text and label columns before the whole file is checked. Reads only those rows: it runs on
    every file pick, and an upload may be 100 MB."""
    path = Path(path)
    records = _records(path)
    try:
        first = [record for _, record in itertools.islice(records, max(rows, 1))]
    finally:
        records.close()
    if not first:
        raise StudioError(f"{path.name} has no data rows: add rows with a text and a label column")
    columns = list(first[0].keys())
    return columns, [["" if record.get(c) is None else str(record.get(c)) for c in columns] for record in first[:rows]]


@dataclass
class _FileRows:
    """What a full read keeps of a file: each row's clipped texts and label, never the row itself."""

    texts: list[tuple[tuple[str, str], ...]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # one string object per distinct label, shared by its rows
    problems: list[str] = field(default_factory=list)  # the first few, for the message
    n_problems: int = 0

    def problem(self, text: str) -> None:
        self.n_problems += 1
        if len(self.problems) < 5:
            self.problems.append(text)


def _check_columns(path: Path, columns: list[str], text_columns: tuple[str, ...], label_column: str) -> None:
    if not text_columns:
        raise StudioError(f"{path.name}: say which column holds the text (--text-column); columns: {', '.join(columns)}")
    for column in (*text_columns, label_column):
        if column not in columns:
            raise StudioError(f"{path.name}: column {column!r} not found; columns are: {', '.join(columns)}")
    if label_column in text_columns:  # every row its own class: 40 rows made 40 classes
        raise StudioError(f"{path.name}: column {label_column!r} is chosen as both a text column and the label "
                          "column: the label column holds each row's class; choose a different column for one of "
                          "them")


def _read_rows(path: Path, records: Iterator[tuple[int, dict]], text_columns: tuple[str, ...], label_column: str,
               label_words: tuple[str, ...] | None) -> _FileRows:
    """Every row checked as it streams by, keeping only what the task needs (at most ``MAX_FILE_ROWS`` rows)."""
    rows, distinct = _FileRows(), {}
    for line, record in records:
        if len(rows.labels) == MAX_FILE_ROWS:
            raise StudioError(f"{path.name} has more than {MAX_FILE_ROWS:,} rows: keep a sample of at most "
                              f"{MAX_FILE_ROWS:,} (a task needs far fewer to tune a prompt)")
        for column in text_columns:
            if not str(record.get(column) or "").strip():
                rows.problem(f"row {line}: empty {column!r}")
        value = record.get(label_column)  # JSON labels may be numbers: 0 is a label, not an empty cell
        label = "" if value is None else str(value).strip()
        if not label:
            rows.problem(f"row {line}: empty label")
        elif len(label) > MAX_LABEL_CHARS:
            rows.problem(f"row {line}: a label of {len(label):,} characters (at most {MAX_LABEL_CHARS}): is "
                          f"{label_column!r} the label column?")
            label = ""  # not kept: the message says enough
        elif not _printable_label(rows, line, label):
            label = ""  # not kept: the message says enough
        elif label_words and label not in label_words:
            rows.problem(f"row {line}: label {label!r} is not one of {', '.join(label_words)}")
        elif label not in distinct and len(distinct) == MAX_LABELS:
            raise StudioError(f"{path.name}: more than {MAX_LABELS} different labels by row {line} (a task has at "
                              f"most {MAX_LABELS}): is {label_column!r} the label column?")
        rows.labels.append(distinct.setdefault(label, label))
        rows.texts.append(tuple((c, clip_text(record.get(c) or "")) for c in text_columns))
    return rows


def _printable_label(rows: _FileRows, line: int, label: str) -> bool:
    """Whether a row's label is plain text (the checks label words given by hand pass); if not, the row's problem
    is noted: a label is printed by previews and listings, where a terminal escape in it would run."""
    try:
        check_label_word(label, f"row {line}: label {label!r}")
    except StudioError as error:
        rows.problem(str(error))
        return False
    return True


def load_file_task(
    path: str | Path,
    text_columns: tuple[str, ...] | list[str] | None = None,
    label_column: str = "label",
    label_words: tuple[str, ...] | list[str] | None = None,
    instruction: str | None = None,
    name: str | None = None,
) -> TaskData:
    """A user's CSV or JSONL file as a task. Every row is checked; errors name the row and the fix. The file is
    streamed: memory holds each row's clipped texts, not the file, and at most ``MAX_FILE_ROWS`` rows."""
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"data file {path} not found")
    task_name = check_single_task_name(name or f"file:{path.stem}", "a task name" if name else
                                       f"the task name taken from the file's name {path.name} (rename the file)")
    records = _records(path)
    try:
        first = next(records, None)
        if first is None:
            raise StudioError(f"{path.name} has no data rows: add rows with text and label columns")
        columns = list(first[1].keys())
        text_columns = tuple(text_columns or guess_columns(columns, first_if_unsure=False)[0])
        _check_columns(path, columns, text_columns, label_column)
        label_words = (check_label_words(tuple(str(w).strip() for w in label_words), f"{path.name}")
                       if label_words else None)
        rows = _read_rows(path, itertools.chain([first], records), text_columns, label_column, label_words)
    finally:
        records.close()
    if rows.problems:
        more = f" (and {rows.n_problems - 5} more)" if rows.n_problems > 5 else ""
        raise StudioError(f"{path.name}: " + "; ".join(rows.problems) + more + ": fix or remove these rows")
    distinct = set(rows.labels)
    label_words = label_words or tuple(sorted(distinct))
    if len(distinct) < 2:
        raise StudioError(f"{path.name}: every row has the label {rows.labels[0]!r}; a task needs at least 2 labels")
    spec = TaskSpec(
        task_name, path.stem, "custom",
        instruction or f"Classify this text as one of: {', '.join(label_words)}.",
        text_columns, label_words, "file", f"User file {path.name} ({len(rows.labels)} rows)",
    )
    index = {word: i for i, word in enumerate(label_words)}
    examples = [Example(texts, index[label]) for texts, label in zip(rows.texts, rows.labels)]
    del rows  # the examples share its texts; the lists themselves go
    if len(examples) < 10:
        raise StudioError(f"{path.name} has only {len(examples)} rows: a task needs at least 10 to split")
    return register_task(make_task_data(spec, *split_examples(examples)))


MAX_CSV_FIELD = 10_000_000  # characters in one cell; Python's default (131,072) refuses long documents


def _csv_records(path: Path) -> Iterator[tuple[int, dict]]:
    """CSV rows as (line, record), one at a time; a row with more cells than the header is an error naming the row."""
    csv.field_size_limit(MAX_CSV_FIELD)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            for i, row in enumerate(csv.DictReader(handle)):
                if None in row:  # DictReader puts extra cells under the key None
                    raise StudioError(f"{path.name}: row {i + 2} has more cells than the header has columns: quote "
                                      "cells that contain commas, or fix the row")
                yield i + 2, row
    except csv.Error as error:
        raise StudioError(f"{path.name} is not a readable CSV file ({error}): save it as UTF-8 CSV") from None


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    """JSON Lines objects as (line, record), one line at a time; a line is read up to ``MAX_CSV_FIELD`` characters
    (a CSV cell's limit): one line of a whole upload is not parsed."""
    with path.open(encoding="utf-8-sig") as handle:  # a byte-order mark (Windows editors) is read as CSV reads it
        for i, line in enumerate(iter(lambda: handle.readline(MAX_CSV_FIELD + 1), ""), start=1):
            if len(line) > MAX_CSV_FIELD:
                raise StudioError(f"{path.name}: line {i} is over {MAX_CSV_FIELD:,} characters: one example per line")
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise StudioError(f"{path.name}: line {i} is not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise StudioError(f"{path.name}: line {i} is not a JSON object")
            yield i, record


def _records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) pairs from a .csv or .jsonl/.json file, streamed: a caller takes what it needs and
    closes the rest (``preview_file`` stops after a few rows)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        reader = _csv_records(path)
    elif suffix in (".jsonl", ".json"):
        reader = _jsonl_records(path)
    else:
        raise StudioError(f"{path.name}: unsupported file type {suffix!r}; use .csv or .jsonl")
    try:
        yield from reader
    except UnicodeDecodeError:
        raise StudioError(f"{path.name} is not UTF-8 text: save it as UTF-8 CSV or JSONL") from None
    finally:
        reader.close()
