"""The library: every origin, tuned prompt and task prompt vector, with its recipe and lineage.

A library is a folder: ``catalog.sqlite`` (WAL) plus one safetensors file per item under ``items/``. Files are
written to a temporary name and renamed before the catalog row is committed, so a crash never leaves a row
without its file or a half-written file. Stores and deletes change files only while they hold the catalog's write
lock, so that a delete and a store of the same item in two processes never interleave (a row left without its
file). The prebuilt library in ``assets/library`` is the same data exported
as ``catalog.json``; it is attached read-only beneath the user's own library.

User files are never unpickled: imports accept safetensors only and check key, shape, model and values (the file
formats, the studio's and PEFT's adapter folder, are read and written by ``item_files``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from studio import StudioError
from studio.faults import kill_point
from studio.files import check_export_target, new_folder, safe_extract_zip, scratch_folder, sweep_partials
from studio.item_files import (
    is_peft_export,
    read_json_file,
    read_peft_adapter,
    read_prompt_file,
    write_peft_adapter,
    write_prompt_file,
)
from studio.limits import (
    MAX_CATALOG_BYTES,
    MAX_ITEM_TASK,
    MAX_METRICS_BYTES,
    MAX_NAME,
    MAX_RECIPE_BYTES,
    check_json_size,
    check_name,
    check_seed,
    check_task_name,
)
from studio.prompts import DEFAULT_INIT, TaskPromptVector, check_prompt_tensor, scale_ratio

if TYPE_CHECKING:  # names for type hints only (``tuned_prompt_id``'s arguments)
    from studio.settings import TuneConfig
    from studio.tasks import TaskData

KINDS = ("origin", "prompt", "vector")
SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('origin', 'prompt', 'vector')),
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    task TEXT,
    seed INTEGER,
    origin_id TEXT,
    prompt_id TEXT,
    n_tokens INTEGER NOT NULL,
    hidden INTEGER NOT NULL,
    recipe TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}',
    file TEXT NOT NULL,
    created TEXT NOT NULL
)
"""
# when the catalog was first opened by a studio that keeps it: an item file older than that is not one of its
# orphans (see _set_orphans_aside)
META_SCHEMA = "CREATE TABLE IF NOT EXISTS catalog_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
# what ``delete`` renames an item's file to before its row goes (never a temporary name: ``sweep_partials`` would
# remove it, and a delete killed before its commit needs it back)
DELETING_SUFFIX = ".studio-deleting"
LOCK_WAIT_S = 120  # how long a writer waits for another's store (which writes its item files under the lock)
PULLED_FROM = "pulled_from"  # the recipe entry a pull records its source in (``Item.pulled_from``)
DEFAULT_IMPORT_KIND = "prompt"  # the kind an import gets when neither the file nor the caller names one


@dataclass
class Item:
    id: str
    kind: str
    name: str
    model: str
    task: str | None
    seed: int | None  # the random seed of the origin this item starts from (origin_id names the origin)
    origin_id: str | None
    prompt_id: str | None
    n_tokens: int
    hidden: int
    recipe: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    file: str = ""
    created: str = ""
    source: str = "user"  # "user" or "prebuilt"

    def to_dict(self) -> dict:
        """Every field, JSON-ready (the CLI's ``--json``, exports, the hub's catalog)."""
        return asdict(self)

    def accuracy(self, split: str) -> float | None:
        """Accuracy on ``split``: on its own task, else its single score, else the mean over the tasks a
        combination was scored on (``metric_key``'s per-task entries)."""
        value = self.metrics.get(metric_key(split, "accuracy", self.task)) if self.task else None
        if value is None:
            value = self.metrics.get(metric_key(split, "accuracy"))
        if value is None:
            prefix = metric_key(split, "accuracy") + "/"
            per_task = [v for k, v in self.metrics.items() if k.startswith(prefix) and isinstance(v, (int, float))]
            value = sum(per_task) / len(per_task) if per_task else None
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def pulled_from(self) -> str | None:
        """The repository (or folder, or library zip) this item was pulled from, as the pull recorded it; None for
        what was made or imported here. A pulled prompt was not tuned here: nothing can prove its values are what
        its recipe says, so what reuses it (a tuning job that finds its result stored) says where it came from."""
        where = self.recipe.get(PULLED_FROM)
        return where if isinstance(where, str) else None


def metric_key(split: str, metric: str, task: str | None = None) -> str:
    """The one spelling of a stored metric: ``validation_accuracy`` or, scored on one of several tasks,
    ``validation_accuracy/mr``. Every writer and reader of ``Item.metrics`` builds its keys here."""
    return f"{split}_{metric}" + (f"/{task}" if task else "")


def split_metrics(split: str, metrics: dict, task: str | None = None) -> dict:
    """An evaluation's metrics ({"accuracy": ..., "n": ...}) under their stored keys for ``split`` (and ``task``)."""
    return {metric_key(split, name, task): value for name, value in metrics.items()}


def content_id(kind: str, *identity) -> str:
    """A stable id from what makes an item what it is (model, seed, recipe, data...), not from when it was made:
    rebuilding the prebuilt library or rerunning a job gives the same ids, so saved lineage never dangles and the
    same result is never stored twice."""
    if kind not in KINDS:
        raise StudioError(f"unknown kind {kind!r}: use one of {', '.join(KINDS)}")
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    return f"{kind[0]}-{digest[:12]}"


def origin_id(model: str, seed: int, n_tokens: int, init: str = DEFAULT_INIT) -> str:
    """The content id of an origin: the same (model, init, seed, length) is the same origin in every library."""
    return content_id("origin", model, init, int(seed), int(n_tokens))


def tuned_prompt_id(origin: str, task: TaskData, config: TuneConfig) -> str:
    """The content id of a prompt tuned from ``origin`` on ``task`` with ``config`` (its vector: ``vector_id``)."""
    return content_id("prompt", origin, task.spec.name, task.data_hash, result_settings(config))


def vector_id(prompt_id: str) -> str:
    """The content id of a tuned prompt's task prompt vector: one vector per prompt."""
    return content_id("vector", prompt_id)


def result_settings(config: TuneConfig) -> dict:
    """The tuning settings that decide what a job makes (its id, a stored recipe to match): all but ``micro_batch``,
    which only splits the work."""
    return {k: v for k, v in asdict(config).items() if k != "micro_batch"}


@dataclass
class NewItem:
    """An item to store (``Library.add`` / ``add_together``): the tensor plus what the catalog records."""

    kind: str
    tensor: torch.Tensor
    model: str
    name: str = ""
    task: str | None = None
    seed: int | None = None
    origin_id: str | None = None
    prompt_id: str | None = None
    recipe: dict | None = None
    metrics: dict | None = None
    item_id: str | None = None


def prompt_and_vector(model: str, prompt: torch.Tensor, origin: torch.Tensor, *, name: str, prompt_id: str,
                      origin_id: str, task: str | None, seed: int | None, recipe: dict,
                      metrics: dict | None = None) -> tuple[NewItem, NewItem]:
    """A tuned prompt and its task prompt vector (prompt - origin), as they are stored together whoever tuned the
    prompt (a tuning job, a pull of PEFT adapters): the vector shares the prompt's task, seed, origin and metrics,
    is named ``TPV <name>``, records the prompt it comes ``from`` and takes its id from the prompt's."""
    vector = TaskPromptVector.between(prompt, origin, model).delta
    return (NewItem("prompt", prompt, model, name, task, seed, origin_id, recipe=recipe, metrics=metrics,
                    item_id=prompt_id),
            NewItem("vector", vector, model, f"TPV {name}"[:MAX_NAME], task, seed, origin_id, prompt_id,
                    recipe={"from": prompt_id}, metrics=metrics, item_id=vector_id(prompt_id)))


def tensor_digest(tensor: torch.Tensor) -> str:
    """A short hash of a tensor's values (fp32), for content ids of imported and pulled prompts."""
    return hashlib.sha256(tensor.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def _copy(item: Item) -> Item:
    """A copy whose recipe and metrics a caller may change without changing the (read-only) catalog's."""
    return replace(item, recipe=dict(item.recipe), metrics=dict(item.metrics))


def _renamed_fields(record: dict) -> dict:
    """A catalog record in today's field names: catalogs written before the rename call the seed ``origin``."""
    if "origin" in record and "seed" not in record:
        record["seed"] = record.pop("origin")
    return record


MAX_HISTORY_POINTS = 400  # a curve's points kept in a prompt's recipe (~160 bytes each; a recipe holds 256 KB)


def thinned_history(history: list[dict], best_step: int | None, most: int = MAX_HISTORY_POINTS) -> list[dict]:
    """The tuning curve as a prompt's recipe keeps it: every point when there are at most ``most``, else evenly
    spaced ones with the first, the last and the best step. A long job validated often (100,000 steps, every
    step) made a recipe over the catalog's limit, and its result could not be stored after all the tuning; items
    stored before, with their whole curve, are thinned the same way when they come back (a pull, a restore)."""
    if len(history) <= most:
        return list(history)
    keep = {round(i * (len(history) - 1) / (most - 2)) for i in range(most - 1)}
    keep |= {k for k, point in enumerate(history) if isinstance(point, dict) and point.get("step") == best_step}
    return [history[k] for k in sorted(keep)]


JSON_LIMITS = {"recipe": MAX_RECIPE_BYTES, "metrics": MAX_METRICS_BYTES}


def _checked_dict(value: dict | None, field_name: str, kind: str) -> dict:
    """An item's recipe or metrics as stored: a JSON object of bounded size (an import's or a pull's is someone
    else's, and every listing reads them all). Checked before any file is written."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise StudioError(f"the {field_name} of a {kind} must be a JSON object, not {type(value).__name__}")
    if field_name == "recipe" and isinstance(value.get("history"), list):
        value = {**value, "history": thinned_history(value["history"], value.get("best_step"))}
    check_json_size(value, f"the {field_name} of a {kind}", JSON_LIMITS[field_name])
    return value


def _row_to_item(row: sqlite3.Row, source: str) -> Item:
    data = _renamed_fields(dict(row))
    data["recipe"] = json.loads(data["recipe"])
    data["metrics"] = json.loads(data["metrics"])
    return Item(**data, source=source)


CATALOG_EXPORT_FILES = {"catalog.json", "items", "baselines.json", "views.json"}


def _is_catalog_export(folder: Path) -> bool:
    """A folder ``export_catalog`` wrote (and may replace): its files and nothing else."""
    names = {p.name for p in folder.iterdir()}
    return "catalog.json" in names and names <= CATALOG_EXPORT_FILES


def _catalog_created(db: sqlite3.Connection) -> float | None:
    """When the catalog was first opened by a studio that keeps this (for an older catalog: its first open since);
    None where the catalog file cannot be written (then no file counts as an orphan). Written once, read after."""
    read = "SELECT value FROM catalog_meta WHERE key = 'created'"
    try:
        row = db.execute(read).fetchone()
    except sqlite3.OperationalError:  # no such table: a catalog from before
        row = None
    if row is None:
        try:
            with db:
                db.execute(META_SCHEMA)
                db.execute("INSERT OR IGNORE INTO catalog_meta VALUES ('created', ?)", (repr(time.time()),))
        except sqlite3.OperationalError:  # a catalog file that cannot be written (it still opens, for reading)
            return None
        row = db.execute(read).fetchone()
    return float(row[0])


def _rename_seed_column(db: sqlite3.Connection) -> None:
    """Bring a catalog made before ``origin`` (a seed) was renamed ``seed`` up to date, in place."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(items)")}
    if "origin" in columns and "seed" not in columns:
        db.execute("ALTER TABLE items RENAME COLUMN origin TO seed")


class Library:
    """A catalog folder. ``read_only`` libraries (the prebuilt one) load ``catalog.json`` into memory."""

    def __init__(self, root: str | Path, read_only: bool = False, parents: list[Library] | None = None):
        self.root = Path(root)
        self.read_only = read_only
        self.parents = parents or []
        self.source = "prebuilt" if read_only else "user"
        self._ratios: dict[str, float] = {}
        self._tensors: dict[str, torch.Tensor] = {}  # read-only libraries only: id -> the file's tensor
        if read_only:
            catalog = self.root / "catalog.json"
            if not catalog.exists():
                raise StudioError(f"no library at {self.root} (catalog.json missing)")
            self._memory = sqlite3.connect(":memory:", check_same_thread=False)
            self._memory.row_factory = sqlite3.Row
            self._memory.execute(SCHEMA)
            records = read_json_file(catalog, MAX_CATALOG_BYTES, f"the catalog {catalog}")
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise StudioError(f"{catalog} is not a studio catalog (not JSON, or not a list of items): export it again")
            for record in records:
                record = _renamed_fields({k: v for k, v in record.items() if k != "source"})
                record["recipe"], record["metrics"] = json.dumps(record["recipe"]), json.dumps(record["metrics"])
                self._memory.execute(
                    f"INSERT INTO items ({', '.join(record)}) VALUES ({', '.join('?' * len(record))})",
                    list(record.values()),
                )
            # it never changes: read once, so that the UI's many look-ups at start-up cost no SQL
            rows = self._memory.execute("SELECT * FROM items ORDER BY created, rowid").fetchall()
            self._frozen = [_row_to_item(row, self.source) for row in rows]
            self._by_id = {item.id: item for item in self._frozen}
        else:
            self._open_folder()

    def _open_folder(self) -> None:
        """Create or check the library folder. A folder the user cannot write is opened for reading only: it can
        be listed, shown, exported and evaluated, and writing to it says why it cannot."""
        if self.root.exists() and not self.root.is_dir():
            raise StudioError(f"{self.root} is a file, not a library folder: choose a folder with --library "
                              "(or STUDIO_LIBRARY / STUDIO_HOME)")
        if (self.root / "catalog.json").exists() and not (self.root / "catalog.sqlite").exists():
            raise StudioError(f"{self.root} holds an exported catalog (catalog.json: the prebuilt library, a "
                              "build-library output or a download), not a working library: choose another folder "
                              "for your library (--library or STUDIO_LIBRARY); nothing in this one was changed")
        catalog = self.root / "catalog.sqlite"  # a read-only catalog file in a writable folder is read-only too
        self.writable = all(not path.exists() or os.access(path, os.W_OK) for path in (self.root, catalog))
        try:
            if self.writable:
                (self.root / "items").mkdir(parents=True, exist_ok=True)
                sweep_partials(self.root / "items")  # what a killed writer left behind (never an item file)
            db = self._connect()
            try:
                with db:
                    if self.writable:
                        db.execute("PRAGMA journal_mode=WAL")
                        db.execute(SCHEMA)
                        _rename_seed_column(db)
                    ids = {row[0] for row in db.execute("SELECT id FROM items")}
                created = _catalog_created(db) if self.writable else None
            finally:
                db.close()
            if self.writable:
                self._finish_deletes()
                if created is not None:
                    self._set_orphans_aside(ids, created)
                self._keep_wal_open()
        except sqlite3.DatabaseError as error:
            if not os.path.lexists(catalog):  # nothing to call damaged: the folder cannot hold one (/proc, a device)
                raise StudioError(f"cannot make a library catalog in {self.root} ({error}): choose a folder you can "
                                  "write with --library (or STUDIO_LIBRARY / STUDIO_HOME)") from None
            raise StudioError(f"{catalog} is damaged or not a studio catalog ({error}): move it away to start an "
                              "empty library there") from None
        except OSError as error:
            raise StudioError(f"cannot use {self.root} as a library folder: {error.strerror or error}") from None

    def _keep_wal_open(self) -> None:
        """Hold one idle connection while this library is open. Each read or write opens and closes its own
        connection; without a reader left open, every close is the last one, and SQLite then checkpoints the WAL and
        deletes its files, only for the next call to make them again (0.4 s of the app's start-up went there)."""
        self._wal_keeper = sqlite3.connect(self.root / "catalog.sqlite", check_same_thread=False)
        self._wal_keeper.execute("SELECT count(*) FROM items").fetchall()  # read to the end: it holds no snapshot

    def _set_orphans_aside(self, ids: set[str], created: float, older_than_s: float = 600.0) -> None:
        """Move item files with no catalog row to ``orphans/``: a store killed between its files and its transaction
        left them. Only files written since this catalog was made (one from before it belongs to another catalog:
        an export, a catalog moved away) and not in the last ``older_than_s`` (a writer in another process may be
        between its file and its row right now). Moved, never deleted: a file the studio did not write is not lost."""
        now = time.time()
        for path in (self.root / "items").glob("*.safetensors"):
            try:
                if path.stem not in ids and created <= path.stat().st_mtime <= now - older_than_s:
                    (self.root / "orphans").mkdir(exist_ok=True)
                    path.rename(self.root / "orphans" / path.name)
            except FileNotFoundError:
                continue

    def _finish_deletes(self) -> None:
        """Finish the deletes a kill cut short (see ``delete``): a file set aside whose row is still there goes back
        (that delete never committed); one whose row is gone is removed. Under the write lock, which a delete holds
        from setting its file aside to its commit: a delete still running is never taken for a killed one."""
        asides = list((self.root / "items").glob(f".*{DELETING_SUFFIX}"))
        if not asides:
            return
        with self._transaction(immediate=True) as db:
            for aside in asides:
                path = aside.with_name(aside.name[1 : -len(DELETING_SUFFIX)])
                kept = db.execute("SELECT 1 FROM items WHERE file = ?", (f"items/{path.name}",)).fetchone()
                if kept and not path.exists():
                    os.replace(aside, path)
                else:
                    aside.unlink(missing_ok=True)

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            return self._memory
        path = self.root / "catalog.sqlite"
        if getattr(self, "writable", True):
            db = sqlite3.connect(path, timeout=LOCK_WAIT_S)
        elif os.access(self.root, os.W_OK):  # only the catalog file is read-only: its owner may still write to it
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=LOCK_WAIT_S)
        else:  # read-only folder: no WAL files can be made, so open the database file itself read-only
            db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, timeout=LOCK_WAIT_S)
        db.row_factory = sqlite3.Row
        return db

    @contextmanager
    def _transaction(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection that commits on success, rolls back on error, and is always closed. A catalog that cannot
        be read or written (deleted, damaged, disk full) is a StudioError; a duplicate id stays an IntegrityError
        for ``add`` to handle. ``immediate``: take the write lock at once (not at the first write), so that what is
        read, and the item files changed, under it stay as they are until the commit."""
        try:
            db = self._connect()
        except sqlite3.DatabaseError as error:
            raise StudioError(f"cannot open the library catalog in {self.root}: {error}") from None
        try:
            with db:
                if immediate:
                    db.execute("BEGIN IMMEDIATE")
                yield db
            if db.total_changes and not self.read_only:  # a write: into the main file at once, as a reader that
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")  # cannot use the WAL (a read-only folder) reads it
        except sqlite3.IntegrityError:
            raise
        except sqlite3.DatabaseError as error:
            if isinstance(error, sqlite3.OperationalError) and "locked" in str(error):  # waited LOCK_WAIT_S
                raise StudioError(f"the library in {self.root} is busy: another studio process has been writing to "
                                  f"it for over {LOCK_WAIT_S} s (a large sweep merge?); try again when it is done"
                                  ) from None
            raise StudioError(f"the library catalog in {self.root} could not be read or written ({error}): check "
                              "that the folder still exists, is writable and has free space") from None
        finally:
            if not self.read_only:
                db.close()

    # ---- reading -----------------------------------------------------------------------------------------
    def _own(self, item_id: str) -> Item | None:
        if self.read_only:
            item = self._by_id.get(item_id)
            return _copy(item) if item else None
        with self._transaction() as db:
            row = db.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        return _row_to_item(row, self.source) if row else None

    def get(self, item_id: str) -> Item:
        for library in (self, *self.parents):
            item = library._own(item_id)
            if item:
                return item
        raise StudioError(f"no library item {item_id!r}: `studio library list` shows the ids")

    def items(self, kind: str | None = None, model: str | None = None, task: str | None = None,
              text: str | None = None) -> list[Item]:
        """All items (own first, then the read-only parents'), filtered."""
        found: list[Item] = []
        for library in (self, *self.parents):
            if library.read_only:
                found += [_copy(item) for item in library._frozen]
                continue
            with library._transaction() as db:
                rows = db.execute("SELECT * FROM items ORDER BY created, rowid").fetchall()  # as stored
            found += [_row_to_item(row, library.source) for row in rows]
        def keep(item: Item) -> bool:
            return ((kind is None or item.kind == kind) and (model is None or item.model == model)
                    and (task is None or item.task == task)
                    and (not text or text.lower() in f"{item.id} {item.name} {item.task}".lower()))
        return [item for item in found if keep(item)]

    def path_of(self, item: Item) -> Path:
        return self._holder(item).root / item.file

    def _holder(self, item: Item) -> Library:
        """The library (this one or a parent) the item was read from."""
        return next(lib for lib in (self, *self.parents) if lib.source == item.source)

    def tensor(self, item_id: str) -> torch.Tensor:
        item = self.get(item_id)
        holder = self._holder(item)
        if not holder.read_only:
            return read_prompt_file(self.path_of(item), item.hidden)[0]
        # the prebuilt library never changes: each file is read once (the first views read ~150 at start-up)
        if item_id not in holder._tensors:
            holder._tensors[item_id] = read_prompt_file(self.path_of(item), item.hidden)[0]
        return holder._tensors[item_id].clone()  # a copy: a caller that changes it in place changes only its own

    def vector(self, item_id: str) -> TaskPromptVector:
        """A vector item as-is, or a tuned prompt's vector relative to its origin."""
        item = self.get(item_id)
        if item.kind == "vector":
            return TaskPromptVector(self.tensor(item_id), item.model)
        if item.kind == "prompt" and item.origin_id:
            return TaskPromptVector.between(self.tensor(item_id), self.tensor(item.origin_id), item.model)
        raise StudioError(f"{item_id} is an {item.kind} without an origin: it has no task prompt vector")

    def scale_ratio(self, item_id: str) -> float | None:
        """|tau| / |P0| of a vector, or of a tuned prompt's vector; None for origins and items without an origin.

        Cached by id: ids are content ids, so an item's tensors never change under the same id."""
        if item_id not in self._ratios:
            item = self.get(item_id)
            if item.kind == "origin" or not item.origin_id:
                return None
            self._ratios[item_id] = scale_ratio(self.vector(item_id).delta, self.tensor(item.origin_id))
        return self._ratios[item_id]

    def describe(self, item_id: str) -> dict:
        """The item with its recipe, metrics and lineage: what it was made from, and what was made from it."""
        item = self.get(item_id)
        data = item.to_dict()
        data.pop("file", None)
        data["lineage"] = {"origin_id": item.origin_id, "prompt_id": item.prompt_id,
                           "dependents": [d.id for d in self.dependents(item.id)]}
        return data

    def dependents(self, item_id: str) -> list[Item]:
        return [i for i in self.items() if item_id in (i.origin_id, i.prompt_id)]

    # ---- writing -----------------------------------------------------------------------------------------
    def check_writable(self, item_id: str | None = None) -> None:
        """Refuse a change to a read-only library or to an item of the prebuilt one, saying where to work instead."""
        if self.read_only:
            raise StudioError("this library is read-only (the prebuilt library): work in your own library")
        if not getattr(self, "writable", True):
            raise StudioError(f"the library folder {self.root} (or its catalog.sqlite) is read-only: it can be "
                              "listed and exported, not changed; use a library folder you can write (--library)")
        if item_id is not None and self._own(item_id) is None:
            self.get(item_id)  # raises "no such item" if it is nowhere
            raise StudioError(f"{item_id} is part of the prebuilt library, which is read-only; export it to copy it")

    def add(self, kind: str, tensor: torch.Tensor, model: str, *, name: str = "", task: str | None = None,
            seed: int | None = None, origin_id: str | None = None, prompt_id: str | None = None,
            recipe: dict | None = None, metrics: dict | None = None, item_id: str | None = None,
            exist_ok: bool = False) -> Item:
        """Store a new item. With ``exist_ok``, an item that already has ``item_id`` (the same content id) is
        returned as it is instead of raising: rerunning the same job stores nothing twice."""
        new = NewItem(kind, tensor, model, name, task, seed, origin_id, prompt_id, recipe, metrics, item_id)
        return self.add_together([new], exist_ok)[0]

    def add_together(self, new: list[NewItem], exist_ok: bool = False) -> list[Item]:
        """Store several items as one, under the catalog's write lock: their files (each under a temporary name, then
        renamed), then every catalog row, in one transaction. A crash leaves all of them or none in the catalog (a
        tuned prompt never without its TPV); a leftover file without a row is rewritten by the rerun, or set aside
        when the library opens. Under the lock no delete can come between a file and its row, and an item whose row
        is there but whose file is not gets its file back. Any failure removes the files this call wrote (while
        the lock is still held: a store of the same id waits for it) and stores nothing."""
        self.check_writable()
        batch = {n.item_id: n.kind for n in new if n.item_id}
        prepared = [self._prepare(entry, exist_ok) for entry in new]  # all checked before any file
        written: list[Path] = []
        try:
            with self._transaction(immediate=True) as db:
                for entry in new:  # under the lock: a parent deleted by another process is never a parent here
                    self._check_lineage(entry, batch)
                try:
                    items = [self._store(db, entry, item, existing, exist_ok, written)
                             for entry, (item, existing) in zip(new, prepared)]
                    kill_point("store:files-written")
                    db.commit()
                except BaseException:  # an OverflowError from SQLite as much as a full disk: no file without its row
                    for path in written:
                        path.unlink(missing_ok=True)
                    raise
        except sqlite3.IntegrityError as error:
            raise StudioError(f"could not record {', '.join(str(n.item_id or n.kind) for n in new)} in the catalog: "
                              f"{error}") from None
        return [self._own(item.id) or item for item in items] if exist_ok else items

    def check_storable(self, new: list[NewItem], exist_ok: bool = False) -> None:
        """What ``add_together`` checks of ``new`` before it writes anything (kinds, tensors, names, an id taken by
        another item), for a caller with long work before its store: a tuning job checks its origins first, not
        after hours of tuning. The lineage is checked again under the lock when they are stored."""
        for entry in new:
            self._prepare(entry, exist_ok)

    def _store(self, db: sqlite3.Connection, entry: NewItem, item: Item, existing: Item | None, exist_ok: bool,
               written: list[Path]) -> Item:
        """One item of ``add_together``, under the write lock: a parent library's item is used as it is; a row that
        is here already is kept (its file written again if it is missing: a row must never lack its file); else the
        file is written (and noted in ``written``) and the row inserted."""
        if existing is not None and existing.source != self.source:
            return existing
        row = db.execute("SELECT * FROM items WHERE id = ?", (item.id,)).fetchone()
        if row is not None:
            stored = _row_to_item(row, self.source)
            _refuse_clash(stored, entry, exist_ok)
            if not (self.root / stored.file).exists():
                self._write_file(stored, entry.tensor)  # the same content id: the same content
            return stored
        written.append(self._write_file(item, entry.tensor))
        record = {k: v for k, v in item.to_dict().items() if k != "source"}
        record["recipe"], record["metrics"] = json.dumps(item.recipe), json.dumps(item.metrics)
        db.execute(f"INSERT INTO items ({', '.join(record)}) VALUES ({', '.join('?' * len(record))})",
                   list(record.values()))
        return item

    def _prepare(self, entry: NewItem, exist_ok: bool) -> tuple[Item, Item | None]:
        """The checked item to store, and the stored item with its id if there is one (``exist_ok``). Its lineage
        is checked later, under the write lock."""
        if entry.kind not in KINDS:
            raise StudioError(f"unknown kind {entry.kind!r}: use one of {', '.join(KINDS)}")
        check_prompt_tensor(entry.tensor, what=f"{entry.kind} tensor")
        name = check_name(entry.name, "an item name") if entry.name else ""
        task = check_task_name(entry.task, f"the task of a {entry.kind}", MAX_ITEM_TASK) if entry.task else None
        recipe, metrics = _checked_dict(entry.recipe, "recipe", entry.kind), _checked_dict(entry.metrics, "metrics",
                                                                                            entry.kind)
        if entry.seed is not None:
            check_seed(entry.seed, f"the seed of a {entry.kind}")
        item_id = entry.item_id or f"{entry.kind[0]}-{uuid.uuid4().hex[:8]}"
        existing = next((found for lib in (self, *self.parents) if (found := lib._own(item_id))), None)
        _refuse_clash(existing, entry, exist_ok)
        item = Item(item_id, entry.kind, name or item_id, entry.model, task, entry.seed, entry.origin_id,
                    entry.prompt_id, int(entry.tensor.shape[0]), int(entry.tensor.shape[1]), recipe, metrics,
                    f"items/{item_id}.safetensors", time.strftime("%Y-%m-%dT%H:%M:%S"))
        return item, existing

    def _check_lineage(self, entry: NewItem, batch: dict[str, str]) -> None:
        """An origin starts a lineage (it has no origin or prompt); an origin id names an origin and a prompt id a
        prompt, stored already or in the same ``batch``: a vector "from" a prompt as its origin cannot be applied."""
        if entry.kind == "origin" and (entry.origin_id or entry.prompt_id):
            raise StudioError(f"an origin starts a lineage and has no origin or prompt of its own (got "
                              f"{entry.origin_id or entry.prompt_id}): store it without one (leave --origin out)")
        for parent, wanted in ((entry.origin_id, "origin"), (entry.prompt_id, "prompt")):
            if parent:
                kind = batch.get(parent) or self.get(parent).kind
                if kind != wanted:
                    raise StudioError(f"{parent} is {_a(kind)}, not {_a(wanted)}: the {wanted} of {_a(entry.kind)} "
                                      f"must be {_a(wanted)} (`studio library list --kind {wanted}` shows them)")

    def _write_file(self, item: Item, tensor: torch.Tensor) -> Path:
        path = self.root / item.file
        try:
            write_prompt_file(tensor, path, {"kind": item.kind, "model": item.model, "task": item.task or "",
                                        "studio_id": item.id})
        except OSError as error:
            raise StudioError(f"could not write {path}: {error.strerror or error}") from None
        return path

    def find_origin(self, model: str, seed: int, n_tokens: int, init: str) -> Item | None:
        for item in self.items(kind="origin", model=model):
            if item.seed == seed and item.n_tokens == n_tokens and item.recipe.get("init") == init:
                return item
        return None

    def rename(self, item_id: str, name: str) -> Item:
        self.check_writable(item_id)
        name = check_name(name, "a name")
        with self._transaction() as db:
            db.execute("UPDATE items SET name = ? WHERE id = ?", (name, item_id))
        return self.get(item_id)

    def update_metrics(self, item_id: str, metrics: dict) -> Item:
        """Add ``metrics`` to an item's, read and written under the write lock: two evaluations of one prompt on
        different splits at once both keep their scores."""
        self.check_writable(item_id)
        with self._transaction(immediate=True) as db:
            row = db.execute("SELECT metrics FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                raise StudioError(f"{item_id} is no longer in the library: it was deleted meanwhile")
            merged = check_json_size({**json.loads(row[0]), **metrics}, f"the metrics of {item_id}",
                                     MAX_METRICS_BYTES)
            db.execute("UPDATE items SET metrics = ? WHERE id = ?", (merged, item_id))
        return self.get(item_id)

    def delete(self, item_id: str, cascade: bool = False) -> list[str]:
        """Delete an item; items derived from it (vectors of a prompt...) only with ``cascade``."""
        self.check_writable(item_id)
        dependents = self.dependents(item_id)
        if dependents and not cascade:
            names = ", ".join(d.id for d in dependents)
            raise StudioError(f"{item_id} is used by {names}: delete those first, or delete with cascade")
        deleted = []
        for dependent in dependents:
            if dependent.id not in deleted:  # a vector depends on its origin and its prompt: delete it once
                deleted += self.delete(dependent.id, cascade=True)
        item = self.get(item_id)
        path = self.root / item.file
        aside = path.with_name(f".{path.name}{DELETING_SUFFIX}")
        # under the write lock, as stores write their files: the file is set aside, the row deleted and committed,
        # and only then the file removed. A store of the same id cannot come between (it left a row without its
        # file), and a kill leaves the row with its file set aside (put back when the library opens) or neither.
        with self._transaction(immediate=True) as db:
            # dependents are listed before the lock: one another process stored since then is refused here
            late = [row[0] for row in db.execute("SELECT id FROM items WHERE origin_id = ? OR prompt_id = ?",
                                                 (item_id, item_id))]
            if late:
                raise StudioError(f"{item_id} is used by {', '.join(late)}, stored while it was being deleted: "
                                  "delete those first, or delete with cascade again")
            moved = _move(path, aside)
            try:
                kill_point("delete:file-aside")
                db.execute("DELETE FROM items WHERE id = ?", (item_id,))
                db.commit()
            except BaseException:
                if moved:
                    os.replace(aside, path)
                raise
        kill_point("delete:committed")
        aside.unlink(missing_ok=True)
        return deleted + [item_id]

    # ---- export / import ---------------------------------------------------------------------------------
    def roots(self) -> list[Path]:
        """This library's folder and its parents': no export may write into or around them."""
        return [library.root for library in (self, *self.parents)]

    def export_catalog(self, folder: str | Path, extra_files: dict[str, str] | None = None) -> Path:
        """Write this library as a read-only folder (catalog.json + items), e.g. the prebuilt library.

        ``folder`` must be new, empty, or an earlier catalog export (which is replaced whole, never merged).
        ``extra_files`` (name -> text) go in beside the catalog, e.g. baselines.json."""
        folder = Path(folder)
        check_export_target(folder, self.roots(), _is_catalog_export, overwrite=True)
        try:
            with new_folder(folder) as partial:
                (partial / "items").mkdir()
                records = []
                for item in self.items():
                    shutil.copy2(self.path_of(item), partial / item.file)
                    records.append({k: v for k, v in item.to_dict().items() if k != "source"})
                (partial / "catalog.json").write_text(json.dumps(records, indent=1))
                for name, text in (extra_files or {}).items():
                    (partial / name).write_text(text, encoding="utf-8")
        except OSError as error:
            raise StudioError(f"could not write {folder}: {error.strerror or error}") from None
        return folder

    def export_safetensors(self, item_id: str, path: str | Path, overwrite: bool = False) -> Path:
        item = self.get(item_id)
        path = Path(path)
        check_export_target(path, self.roots(), overwrite=overwrite)
        try:
            write_prompt_file(self.tensor(item_id), path, {"kind": item.kind, "model": item.model,
                                                      "task": item.task or "", "studio_id": item.id,
                                                      "origin_id": item.origin_id or "",
                                                      "recipe": json.dumps(item.recipe)})
        except OSError as error:
            raise StudioError(f"could not write {path}: {error.strerror or error}") from None
        return path

    def export_peft(self, item_id: str, out_dir: str | Path, backbone, overwrite: bool = False) -> Path:
        """A PEFT prompt-tuning adapter folder that ``peft.PeftModel.from_pretrained`` loads on the same base.

        ``out_dir`` must be new or empty; with ``overwrite``, an earlier adapter export is replaced."""
        out_dir = Path(out_dir)
        check_export_target(out_dir, self.roots(), is_peft_export, overwrite=overwrite)
        item = self.get(item_id)
        if item.kind == "vector":
            raise StudioError(f"{item_id} is a task prompt vector, not a prompt: apply it to an origin first")
        if item.model != backbone.name:
            raise StudioError(f"{item_id} was made for {item.model}, not {backbone.name}")
        try:
            with new_folder(out_dir) as partial:
                write_peft_adapter(partial, self.tensor(item_id), item.to_dict(), backbone)
        except OSError as error:
            raise StudioError(f"could not write {out_dir}: {error.strerror or error}") from None
        return out_dir

    def export_peft_zip(self, item_id: str, path: str | Path, backbone, overwrite: bool = False) -> Path:
        """The PEFT adapter of ``export_peft`` as one zip file (a browser's download; ``import_file`` reads it
        back). ``path`` must be new unless ``overwrite``; the adapter folder is built aside and never left behind."""
        from studio.files import zip_folder

        path = Path(path)
        check_export_target(path, self.roots(), overwrite=overwrite)
        with scratch_folder("peft") as tmp:
            folder = self.export_peft(item_id, Path(tmp) / "adapter", backbone)
            try:
                return zip_folder(folder, path)
            except OSError as error:
                raise StudioError(f"could not write {path}: {error.strerror or error}") from None

    def import_file(self, path: str | Path, backbone, *, kind: str | None = None, task: str | None = None,
                    name: str = "", origin_id: str | None = None) -> Item:
        """Import a safetensors prompt/vector file, a PEFT adapter folder or a zip of one, checked against
        ``backbone``. An adapter this studio exported remembers its task, name and origin: when that origin is in
        the library (and no other is given) the lineage is kept."""
        self.check_writable()
        path = Path(path)
        if path.suffix.lower() == ".zip" and path.is_file():
            with scratch_folder("import") as tmp:
                safe_extract_zip(path, tmp)
                configs = sorted((p for p in Path(tmp).rglob("adapter_config.json") if p.is_file()),
                                 key=lambda p: (len(p.parts), p.as_posix()))
                if not configs:
                    raise StudioError(f"{path.name} holds no adapter_config.json: it is not a zipped PEFT adapter "
                                      "folder")
                if len(configs) > 1 and len(configs[1].parts) == len(configs[0].parts):
                    raise StudioError(f"{path.name} holds several adapters side by side: zip one adapter folder "
                                      "per file (or pull the folder with `studio hub pull FOLDER`)")
                return self._import(configs[0].parent, path.name, backbone, kind, task, name, origin_id)
        if not path.exists():
            raise StudioError(f"file {path} not found: give a .safetensors file, a PEFT adapter folder or a .zip of one")
        return self._import(path, path.name, backbone, kind, task, name, origin_id)

    def _import(self, path: Path, source_name: str, backbone, kind: str, task: str | None, name: str,
                origin_id: str | None) -> Item:
        recipe: dict = {"imported_from": source_name}
        if path.is_dir():
            tensor, metadata, decisions = read_peft_adapter(path, backbone, label=source_name)
            recipe.update(decisions)
            name = name or metadata.get("name", "")
        else:
            tensor, metadata = read_prompt_file(path, backbone.hidden_size)
        origin_id = origin_id or getattr(self.find(metadata.get("origin_id")), "id", None)
        if metadata.get("model") and metadata["model"] != backbone.name:
            raise StudioError(f"{source_name} was made for model {metadata['model']}, not {backbone.name}: "
                              "choose that model to import it")
        kind = _import_kind(source_name, metadata.get("kind"), kind)
        task = task or metadata.get("task") or None
        if origin_id:
            self._check_lineage(NewItem(kind, tensor, backbone.name, origin_id=origin_id), {})  # what it is, first
            origin = self.get(origin_id)
            if origin.n_tokens != tensor.shape[0]:
                raise StudioError(f"{source_name} has {tensor.shape[0]} virtual tokens but origin {origin_id} has "
                                  f"{origin.n_tokens}: they cannot be combined")
        # a content id: importing the same file again (or rerunning an import that was killed) adds nothing; the same
        # prompt from another file is another import, with its own name and recipe
        item_id = content_id(kind, backbone.name, tensor_digest(tensor), task, origin_id, source_name)
        return self.add(kind, tensor, backbone.name, name=name or Path(source_name).stem, task=task,
                        origin_id=origin_id, recipe=recipe, item_id=item_id, exist_ok=True)

    def find(self, item_id: object) -> Item | None:
        """The item ``item_id`` names in this library or its parents, or None (``get`` raises instead)."""
        if not isinstance(item_id, str) or not item_id:
            return None
        try:
            return self.get(item_id)
        except StudioError:
            return None


def _import_kind(source_name: str, said: str | None, asked: str | None) -> str:
    """The kind an import stores: what the file says it holds, else what was asked (None: no choice), else
    ``DEFAULT_IMPORT_KIND``. An asked kind that contradicts the file's is refused, not silently dropped."""
    for kind in (said, asked):
        if kind and kind not in KINDS:
            raise StudioError(f"unknown kind {kind!r}: use one of {', '.join(KINDS)}")
    if said and asked and asked != said:
        raise StudioError(f"{source_name} says it holds {_a(said)}, but it was asked to be imported as {_a(asked)}: "
                          f"import it as {_a(said)} (leave --kind out, or choose {said}); to store its tensor as "
                          f"{_a(asked)}, save it again without the studio's metadata")
    return said or asked or DEFAULT_IMPORT_KIND


def _a(kind: str) -> str:
    """'an origin', 'a prompt': a kind in a sentence."""
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"


def _refuse_clash(existing: Item | None, entry: NewItem, exist_ok: bool) -> None:
    """An id that is taken is reused only with ``exist_ok`` and for the same item: the same kind, model, shape,
    seed, lineage and init. A stored item that differs is not what the id stands for (a pull can bring any tensor
    under any id it cannot check, such as an origin that names no seed), and reusing it would tie a job's results
    to it."""
    if existing and existing.kind != entry.kind:
        raise StudioError(f"an item with id {existing.id!r} already exists as {_a(existing.kind)}, so {_a(entry.kind)} "
                          "cannot be stored under that id")
    if existing and not exist_ok:
        raise StudioError(f"an item with id {existing.id!r} already exists")
    differs = existing and _identity(existing.model, existing.seed, existing.origin_id, existing.prompt_id,
                                     (existing.n_tokens, existing.hidden), existing.recipe) != _identity(
        entry.model, entry.seed, entry.origin_id, entry.prompt_id, tuple(entry.tensor.shape), entry.recipe or {})
    if differs:
        raise StudioError(f"{existing.id} in this library is not the {existing.kind} being stored under that id (their "
                          "model, seed, lineage or shape differ), so one of the two was altered or comes from a "
                          f"repository that was; nothing was stored. Look at the library's with `studio library show "
                          f"{existing.id}`; to store the new one instead, delete it first (`studio library delete "
                          f"{existing.id} --cascade --yes`: its prompts and TPVs go with it)")


def _identity(model: str, seed: int | None, origin_id: str | None, prompt_id: str | None, shape: tuple,
              recipe: dict) -> tuple:
    """What a content id stands for, as ``_refuse_clash`` compares it (an origin's init too: its values follow)."""
    return model, seed, origin_id, prompt_id, tuple(int(n) for n in shape), recipe.get("init")


def _move(path: Path, to: Path) -> bool:
    """Rename ``path`` to ``to``; False when there is no ``path`` (a file already gone)."""
    try:
        os.replace(path, to)
    except FileNotFoundError:
        return False
    return True


def open_library(root: str | Path | None = None, prebuilt: str | Path | None | bool = True) -> Library:
    """The user's library (writable), with the prebuilt library attached read-only beneath it if present."""
    from studio.config import PREBUILT_LIBRARY, user_library_dir

    parents = []
    prebuilt_root = PREBUILT_LIBRARY if prebuilt is True else prebuilt
    if prebuilt_root and (Path(prebuilt_root) / "catalog.json").exists():
        parents.append(Library(prebuilt_root, read_only=True))
    return Library(root or user_library_dir(), parents=parents)
