"""The Hugging Face Hub as a place to share a library: push items as a model repository, pull one back.

A pushed repository is useful without the studio: one PEFT prompt-tuning adapter per prompt and origin under
``adapters/<id>/`` (``PeftModel.from_pretrained(base, repo, subfolder="adapters/<id>")`` loads it), the origins
and task prompt vectors as safetensors under ``items/``, ``studio_catalog.json`` (recipe, metrics, lineage) and a
model card. A pull reads that catalog back with the same content ids (pulling twice stores nothing twice) or, in a
repository the studio did not write (the paper authors' T5 adapters), every PEFT prompt-tuning adapter in it.
Everything in a snapshot is checked before anything is stored, and all of it is stored in one transaction, so a
bad repository (or a pull killed half-way) changes nothing. Before a pull downloads anything it lists the
repository (at one commit) and takes only the files it reads (the catalog, ``items/*.safetensors`` and the adapter
files; never a model's weight shards), refusing a repository where those are more than ``MAX_PULL_BYTES`` or
``MAX_PULL_FILES``: anyone may pull on a public Space, and its disk is shared. They go to a temporary folder that is
removed after the pull, not to the Hugging Face cache. A push refuses an existing repository without the studio's
catalog (it would replace that repository's card and files) unless told to ``overwrite`` it.

The studio is offline by default (``HF_HUB_OFFLINE=1``); both directions say so and how to go online. The token
stays with ``huggingface_hub`` (``HF_TOKEN`` or ``hf auth login``; on a Space, the visitor's Sign-in token, handed
to ``HfApi`` / the download only): it is never written, printed or logged. The web page pulls repository ids only
(``hub_only``, ``check_repo_id``), never a folder of the machine it runs on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from studio import StudioError
from studio.config import hub_offline, is_hub_id
from studio.files import check_export_target, new_folder, safe_extract_zip, scratch_folder
from studio.item_files import read_json_file, read_peft_adapter, read_prompt_file
from studio.library import (
    KINDS,
    PULLED_FROM,
    Item,
    Library,
    NewItem,
    content_id,
    prompt_and_vector,
    tensor_digest,
)
from studio.limits import MAX_CATALOG_BYTES, MAX_NAME, check_name, check_seed
from studio.prompts import TUNING_INITS, make_origin
from studio.weights import KNOWN_BACKBONES

CATALOG = "studio_catalog.json"
CATALOG_FORMAT = "tpv-studio-catalog"
CATALOG_VERSION = 1
TAGS = ["prompt-tuning", "task-prompt-vectors", "peft", "tpv-studio"]
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "studio_item.json")  # what pull reads of one
# What a pull downloads (weights as safetensors only: pickles are never fetched), as huggingface_hub's patterns, whose
# "*" also matches "/": the files they select are listed and sized first, so the limits hold for whatever they match.
CATALOG_PATTERNS = [CATALOG, "items/*.safetensors", *(f"adapters/*/{name}" for name in ADAPTER_FILES)]
ADAPTER_PATTERNS = [*ADAPTER_FILES, *(f"*/{name}" for name in ADAPTER_FILES)]  # adapters at any depth
MAX_PULL_BYTES = 200 * 1024 ** 2  # a studio library of hundreds of prompts is a few MB; an LLM's shards are GBs
MAX_PULL_FILES = 6_000  # about 2,000 items (a prompt's adapter is three files)
MAX_LISTED_FILES = 100_000  # a listing longer than this is not read to its end
STUDIO_FOLDERS = ["adapters/*", "items/*"]  # what a push replaces in the repository (its history keeps the rest)
ITEM_ID = re.compile(r"[opv]-[0-9a-f]{8,64}")  # the studio's ids; nothing else may become a file name
Progress = Callable[[float, str], object]  # (fraction done, what is happening now)


# ---- reaching the hub ---------------------------------------------------------------------------------------------
def require_online(action: str) -> None:
    """Fail before any work (or model load) when the hub cannot be reached, saying how to reach it."""
    if hub_offline():
        raise StudioError(
            f"the Hugging Face Hub is not reachable: the studio is offline by default (HF_HUB_OFFLINE=1). To {action} "
            "the hub, set HF_HUB_OFFLINE=0 on a machine that reaches huggingface.co and log in with `hf auth login` "
            "(`huggingface-cli login` in older versions) or set HF_TOKEN")


def is_local_folder(source: str | Path) -> bool:
    """A folder or a library zip of this machine (pulled offline), not a repository id."""
    path = Path(source).expanduser()
    return path.is_dir() or (path.suffix.lower() == ".zip" and path.is_file())


def _hub_call(what: str, token: str | None, call: Callable[[], object]) -> object:
    """One network call; whatever the network, the login or the hub says becomes one line (never the token)."""
    try:
        return call()
    except StudioError:
        raise
    except Exception as error:  # huggingface_hub and its HTTP client raise many types; all are the environment's
        message = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
        if token:
            message = message.replace(token, "***")
        hint = ""
        if any(code in message for code in ("401", "403", "Unauthorized", "Forbidden")):
            hint = " (log in with `hf auth login` or set HF_TOKEN to a token with write access)"
        raise StudioError(f"could not {what}: {message[:300]}{hint}") from None


def check_repo_id(text: str | None) -> str:
    """A repository id typed on the page, as ``owner/name``; anything else (a path such as ``/etc`` or ``../x``,
    a bare name, an empty field) gets one message, so the page can never make the server read its own folders."""
    repo_id = (text or "").strip()
    if not is_hub_id(repo_id):
        raise StudioError(f"{repo_id[:100]!r} is not a Hugging Face repository id: type owner/name (e.g. "
                          "someone/my-prompts); only repositories on the hub are read here, never folders")
    return repo_id


# ---- the repository a push writes ---------------------------------------------------------------------------------
def base_model_id(model: str) -> str | None:
    """The hub id a model card's ``base_model`` names: a known model's hub id, or the name when it is a hub id
    (a local folder is not one, and the hub refuses cards that name something that is not a model id)."""
    if model in KNOWN_BACKBONES:
        return KNOWN_BACKBONES[model].hub_id
    return model if is_hub_id(model) and not Path(model).expanduser().exists() else None


def hub_layout(library: Library, item_ids: list[str] | None, backbone, folder: str | Path,
               repo_id: str | None = None) -> Path:
    """Write the repository content for ``item_ids`` (None: the whole user library of ``backbone``'s model) into
    the new folder ``folder``: adapters/, items/, the catalog and the model card. Lineage is made complete: the
    origins and prompts the chosen items derive from come along."""
    items = items_to_push(library, item_ids, backbone.name)
    folder = Path(folder)
    check_export_target(folder, library.roots())
    try:
        with new_folder(folder) as partial:
            (partial / "adapters").mkdir()
            (partial / "items").mkdir()
            for item in items:
                if item.kind != "vector":  # a PEFT adapter holds a whole prompt, never a difference of prompts
                    library.export_peft(item.id, partial / "adapters" / item.id, backbone)
                if item.kind != "prompt":
                    library.export_safetensors(item.id, partial / "items" / f"{item.id}.safetensors")
            (partial / CATALOG).write_text(json.dumps(_catalog(items, backbone.name), indent=1))
            (partial / "README.md").write_text(model_card(items, backbone.name, repo_id), encoding="utf-8")
    except OSError as error:
        raise StudioError(f"could not write {folder}: {error.strerror or error}") from None
    return folder


def items_to_push(library: Library, item_ids: list[str] | None, model: str) -> list[Item]:
    """What a push of ``item_ids`` (None: the user's whole library of ``model``) uploads: those items and their
    lineage, parents first. Checked before anything is written or a model is loaded."""
    return _with_lineage(library, _chosen(library, item_ids, model))


def _chosen(library: Library, item_ids: list[str] | None, model: str) -> list[Item]:
    if item_ids is None:
        items = [item for item in library.items(model=model) if item.source == "user"]
        if not items:
            raise StudioError(f"your library has no items for {model}: nothing to push (tune or import some first, "
                              "or choose their model with --model)")
        return items
    if not item_ids:
        raise StudioError("choose at least one item to push")
    items = [library.get(item_id) for item_id in dict.fromkeys(item_ids)]
    for item in items:
        if item.model != model:
            raise StudioError(f"{item.id} was made for {item.model}, not {model}: push one model's items at a time "
                              f"(--model {item.model})")
    return items


def _with_lineage(library: Library, items: list[Item]) -> list[Item]:
    """The items and every origin and prompt they derive from, parents first, each once."""
    found: dict[str, Item] = {}

    def visit(item: Item) -> None:
        if item.id not in found:
            for parent in (item.origin_id, item.prompt_id):
                if parent:
                    visit(library.get(parent))
            found[item.id] = item

    for item in items:
        visit(item)
    return list(found.values())


def _repo_file(item: Item) -> str:
    return f"adapters/{item.id}/adapter_model.safetensors" if item.kind == "prompt" else f"items/{item.id}.safetensors"


def _catalog(items: list[Item], model: str) -> dict:
    records = [{**{k: v for k, v in item.to_dict().items() if k != "source"}, "file": _repo_file(item)}
               for item in items]
    return {"format": CATALOG_FORMAT, "version": CATALOG_VERSION, "model": model, "items": records}


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def _metrics_text(metrics: dict) -> str:
    """The headline numbers of an item (accuracies, F1), not their standard errors or counts."""
    shown = [f"{key} {value:.3f}" for key, value in metrics.items()
             if isinstance(value, float) and not key.endswith("_se") and "_se/" not in key]
    return ", ".join(shown[:4]) + (" ..." if len(shown) > 4 else "") or "-"


def _card_row(item: Item) -> str:
    lineage = ", ".join(f"{k.split('_')[0]} `{v}`" for k, v in (("origin_id", item.origin_id),
                                                                ("prompt_id", item.prompt_id)) if v) or "-"
    return (f"| `{item.id}` | {item.kind} | {_cell(item.name)} | {_cell(item.task or '-')} | {lineage} | "
            f"{_cell(_metrics_text(item.metrics))} |")


def model_card(items: list[Item], model: str, repo_id: str | None = None) -> str:
    """A model card: metadata the hub indexes (library, base model, tags), a table of the items, how to use them."""
    from huggingface_hub import ModelCardData

    base = base_model_id(model)
    metadata = ModelCardData(library_name="peft", base_model=base, tags=list(TAGS)).to_yaml()
    repo = repo_id or "OWNER/REPO"
    adapter = next((i.id for i in items if i.kind != "vector"), "ID")
    return "\n".join([
        "---", metadata, "---", "", f"# Soft prompts and task prompt vectors for `{base or model}`", "",
        f"{len(items)} items shared from Prompt Arithmetic Studio: tuned soft prompts (prompt tuning), their random "
        "origins, and task prompt vectors (TPVs: tuned prompt minus its origin; Belanec et al., ECML PKDD 2025).", "",
        "| id | kind | name | task | lineage | metrics |", "|---|---|---|---|---|---|",
        *[_card_row(item) for item in items], "",
        "## Files", "",
        "- `adapters/<id>/`: a PEFT prompt-tuning adapter per prompt and origin",
        "- `items/<id>.safetensors`: origins and task prompt vectors (tensor `prompt`, [virtual tokens, hidden])",
        f"- `{CATALOG}`: every item's recipe, metrics and lineage", "",
        "## Use", "", "```python", "from peft import PeftModel",
        f"model = PeftModel.from_pretrained(base_model, \"{repo}\", subfolder=\"adapters/{adapter}\")", "```", "",
        f"With the studio: `studio hub pull {repo}` (with `HF_HUB_OFFLINE=0`) brings every item back with its lineage.",
        "",
    ])


def push(library: Library, item_ids: list[str] | None, repo_id: str, backbone, token: str | None = None,
         private: bool = False, api=None, progress: Progress | None = None, overwrite: bool = False) -> str:
    """Upload ``item_ids`` (None: the whole user library of ``backbone``'s model) with their lineage to the model
    repository ``repo_id`` (created if needed) and return its address. The push replaces the repository's studio
    content (adapters/, items/, catalog, card) so that it is one consistent library; its history keeps older
    pushes. An existing repository without the studio's catalog is refused unless ``overwrite``: the push would
    replace its card and delete its adapters/ and items/. ``api`` (an ``HfApi``) is for tests; the token goes only
    to it. ``progress(fraction, what)`` hears of each step (the Library tab's progress bar)."""
    require_online("push to")
    if not is_hub_id(repo_id):
        raise StudioError(f"{repo_id[:100]!r} is not a Hugging Face repository id: use owner/name")
    say = progress or _silent
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    if not overwrite:
        say(0.0, f"checking {repo_id}")
        _check_push_target(api, repo_id, token)
    with scratch_folder("push") as tmp:
        say(0.0, "writing the adapters, vectors, catalog and model card")
        folder = hub_layout(library, item_ids, backbone, Path(tmp) / "repo", repo_id=repo_id)
        count = len(json.loads((folder / CATALOG).read_text())["items"])
        say(0.3, f"creating {repo_id}")
        url = _hub_call(f"create {repo_id}", token,
                        lambda: api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True))
        say(0.5, f"uploading {count} items to {repo_id}")
        _hub_call(f"upload to {repo_id}", token, lambda: api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), repo_type="model", delete_patterns=STUDIO_FOLDERS,
            commit_message=f"Prompt Arithmetic Studio: {count} items"))
    say(1.0, "pushed")
    return str(url) if isinstance(url, str) and url else f"https://huggingface.co/{repo_id}"


def _check_push_target(api, repo_id: str, token: str | None) -> None:
    """Refuse an existing repository with files the studio did not write (content but no catalog): a push would
    replace its README.md and delete its adapters/ and items/ folders, someone else's work (its history keeps it,
    but the page would not). An empty repository (only ``.gitattributes``: just created, or a push that failed
    after creating it) is the studio's to fill."""
    exists = _hub_call(f"look up {repo_id}", token, lambda: api.repo_exists(repo_id, repo_type="model"))
    if not exists:
        return
    files = _hub_call(f"look up {repo_id}", token, lambda: api.list_repo_files(repo_id, repo_type="model"))
    if CATALOG not in files and any(name != ".gitattributes" for name in files):
        raise StudioError(f"{repo_id} already exists and has no {CATALOG}, so the studio did not write it: a push "
                          "would replace its README.md and delete its adapters/ and items/; push to a new repository "
                          "(or, to replace its content on purpose, `studio hub push --overwrite`, or tick 'Replace a "
                          "repository the studio did not write' in the Library tab)")


def _silent(fraction: float, what: str) -> None:
    """The progress report of a caller that shows none (the command line prints its own lines)."""


# ---- pulling ------------------------------------------------------------------------------------------------------
@dataclass
class _Adapter:
    """A PEFT prompt-tuning adapter found in a snapshot without a catalog."""

    rel: str  # its folder inside the snapshot ("." for the snapshot itself)
    name: str
    tensor: torch.Tensor
    metadata: dict
    recipe: dict


def pull(library: Library, source: str | Path, backbone, revision: str | None = None, download=None,
         origin: str | None = None, token: str | bool | None = None, hub_only: bool = False,
         progress: Progress | None = None, api=None) -> list[Item]:
    """Store the items of a hub repository (or of a local snapshot folder) in ``library``; returns them.

    With a studio catalog, every item keeps its id, kind, task, name, recipe, metrics and lineage. Without one,
    every PEFT prompt-tuning adapter is a prompt; ``origin`` (an adapter's folder name, or an origin already in the
    library) makes that one the origin of the others, which are then stored with their task prompt vectors.
    ``hub_only`` (the web page) takes ``source`` as a repository id and never as a folder of this machine; ``token``
    goes to the listing and the download (None: ``huggingface_hub``'s own, False: none). A repository is listed
    first: only the files a pull reads are downloaded, within ``MAX_PULL_BYTES`` and ``MAX_PULL_FILES``, into a
    temporary folder. ``download`` (``snapshot_download``) and ``api`` (an ``HfApi``) are for tests. Nothing is
    stored unless everything checks out: what only a pull can check (the repository's files, its claims against
    the model) is checked here, then ``Library.add_together`` checks what it checks of any store (names, kinds,
    lineage) and stores all of it in one transaction, or nothing."""
    if library.read_only:
        raise StudioError("this library is read-only (the prebuilt library): pull into your own library")
    say = progress or _silent
    say(0.0, f"downloading {source}")
    with _snapshot(str(source), revision, download, token, hub_only, api) as (folder, label, provenance):
        say(0.6, f"checking {label}")
        new = _read_entries(library, folder, label, backbone, origin)
    for entry in new if provenance else ():  # where each came from, whatever the catalog says (``Item.pulled_from``)
        entry.recipe = {**(entry.recipe or {}), PULLED_FROM: provenance}
    say(0.9, f"storing {len(new)} items")
    return library.add_together(new, exist_ok=True)


def _read_entries(library: Library, folder: Path, label: str, backbone, origin: str | None) -> list[NewItem]:
    """The snapshot's items, read into memory (the snapshot may be a temporary folder) and checked."""
    if (folder / CATALOG).is_file():
        if origin:
            raise StudioError(f"{label} has a studio catalog, which states each item's origin: pull it without "
                              "--origin")
        return _catalog_entries(library, folder, backbone)
    return _adapter_entries(library, _read_adapters(folder, label, backbone), origin, backbone.name)


@contextmanager
def _snapshot(source: str, revision: str | None, download, token: str | bool | None = None,
              hub_only: bool = False, api=None) -> Iterator[tuple[Path, str, str | None]]:
    """A local folder as it is (unless ``hub_only``), or the files a pull reads of a repository id, downloaded to a
    temporary folder that goes when the pull is done; with a name for messages and where it came from for the
    pulled items' recipes (a repository at its commit, a folder by its name): None for a library zip, which is
    a restore of one's own Download my library, whose items keep what they say of themselves."""
    if hub_only:
        source = check_repo_id(source)
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            yield path, path.resolve().name, f"folder {path.resolve().name}"  # never a path of this machine
            return
        if path.suffix.lower() == ".zip" and path.is_file():
            with _unzipped(path) as folder:
                yield folder, path.name, None
            return
        if path.exists():
            raise StudioError(f"{source} is a file: pull takes a repository id (owner/name), a snapshot folder or "
                              "a library zip (Download my library)")
        if not is_hub_id(source):
            raise StudioError(f"{source[:100]!r} is neither a folder nor a Hugging Face repository id (owner/name)")
    require_online("pull from")
    secret = token if isinstance(token, str) else None
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    commit, patterns = _plan_download(api, source, revision, secret)
    if download is None:
        from huggingface_hub import snapshot_download as download
    options = {"token": token} if token is not None else {}
    with scratch_folder("pull") as tmp:
        where = _hub_call(f"download {source}", secret, lambda: download(
            repo_id=source, repo_type="model", revision=commit, allow_patterns=patterns, local_dir=tmp, **options))
        yield Path(str(where)), source.split("/")[-1], f"{source}@{commit[:12]}" if commit else source


@contextmanager
def _unzipped(path: Path) -> Iterator[Path]:
    """A library zip (the Library tab's Download my library, or a zipped repository), checked as it is extracted
    (``safe_extract_zip``), as the folder of its shallowest catalog, in a temporary folder that goes afterwards."""
    with scratch_folder("restore") as tmp:
        safe_extract_zip(path, tmp, MAX_PULL_FILES, MAX_PULL_BYTES, "a studio library zip")
        catalogs = sorted(Path(tmp).rglob(CATALOG), key=lambda p: len(p.parts))
        if not catalogs:
            raise StudioError(f"{path.name} holds no {CATALOG}: it is not a library made by this studio")
        yield catalogs[0].parent


def _plan_download(api, repo_id: str, revision: str | None, token: str | None) -> tuple[str, list[str]]:
    """The commit to download (the one listed, so the files cannot change in between) and the patterns of the
    files a pull reads there; refused before anything is downloaded when there are none, or too many."""
    info = _hub_call(f"download {repo_id}", token, lambda: api.model_info(repo_id, revision=revision))
    commit = getattr(info, "sha", None) or revision
    files = _hub_call(f"download {repo_id}", token, lambda: _list_files(api, repo_id, commit))
    if CATALOG not in files and not any(p.split("/")[-1] == "adapter_config.json" for p in files):
        raise _nothing_to_pull(repo_id)
    patterns = CATALOG_PATTERNS if CATALOG in files else ADAPTER_PATTERNS
    _check_pull_size(repo_id, _matching(files, patterns))
    return commit, patterns


def _list_files(api, repo_id: str, commit: str | None) -> dict[str, int]:
    """Every file of the repository at ``commit`` with its size in bytes (folders left out)."""
    files: dict[str, int] = {}
    for entry in api.list_repo_tree(repo_id, recursive=True, revision=commit, repo_type="model"):
        size = getattr(entry, "size", None)  # a folder has none
        if size is not None:
            files[entry.path] = int(size)
        if len(files) > MAX_LISTED_FILES:
            raise StudioError(f"{repo_id} holds more than {MAX_LISTED_FILES:,} files, more than a studio repository "
                              "ever does: download what you need yourself and pull that folder")
    return files


def _matching(files: dict[str, int], patterns: list[str]) -> dict[str, int]:
    """The files ``snapshot_download(allow_patterns=patterns)`` fetches: the same matching, so the sizes hold."""
    from huggingface_hub.utils import filter_repo_objects

    return {path: files[path] for path in filter_repo_objects(list(files), allow_patterns=patterns)}


def _check_pull_size(repo_id: str, wanted: dict[str, int]) -> None:
    total = sum(wanted.values())
    if len(wanted) > MAX_PULL_FILES or total > MAX_PULL_BYTES:
        raise StudioError(f"{repo_id} is too big to pull: the files the studio reads are {len(wanted):,} files of "
                          f"{total / 1024 ** 2:,.1f} MB, and a pull takes at most {MAX_PULL_FILES:,} files of "
                          f"{MAX_PULL_BYTES // 1024 ** 2} MB; download what you need yourself and pull that folder")


def _nothing_to_pull(label: str) -> StudioError:
    return StudioError(f"{label} has no {CATALOG} and no PEFT adapter (adapter_config.json): there is nothing the "
                       "studio can pull from it")


def _read_catalog(path: Path) -> list[dict]:
    data = read_json_file(path, MAX_CATALOG_BYTES, CATALOG)  # refused unread when larger than any library's
    if not isinstance(data, dict) or data.get("format") != CATALOG_FORMAT or not isinstance(data.get("items"), list):
        raise StudioError(f"{CATALOG} is not a studio catalog (not JSON, or no 'items' list): the repository was "
                          "not written by `studio hub push`; remove the file to pull its PEFT adapters instead")
    if data.get("version") != CATALOG_VERSION:
        raise StudioError(f"{CATALOG} has version {data.get('version')!r}; this studio reads version "
                          f"{CATALOG_VERSION}: update the studio")
    if not all(isinstance(record, dict) for record in data["items"]):
        raise StudioError(f"{CATALOG} lists something that is not an item")
    return data["items"]


def _catalog_entries(library: Library, folder: Path, backbone) -> list[NewItem]:
    records = _read_catalog(folder / CATALOG)
    if not records:
        raise StudioError(f"{CATALOG} lists no items: there is nothing to pull")
    entries = [_catalog_entry(folder, record, backbone) for record in records]
    seen: set[str] = set()
    for entry in entries:
        if entry.item_id in seen:
            raise StudioError(f"{CATALOG} lists {entry.item_id} twice: the repository is damaged")
        seen.add(entry.item_id)
    entries = _in_lineage_order(library, entries)
    _check_claims(library, entries, backbone)
    _check_shapes(library, entries)
    return entries


ORIGIN_TOLERANCE = 0.02  # of an origin's largest value: a bf16 and an fp32 model embed the same ids ~0.4% apart
VECTOR_TOLERANCE = 1e-4  # of a vector's prompt's largest value (both are stored in fp32), on top of its origin's


def _check_claims(library: Library, entries: list[NewItem], backbone) -> None:
    """What a catalog states that the studio can recompute must hold, or nothing is pulled. An origin that names its
    seed and init is that seed's origin: tuning jobs take it as theirs (``Library.find_origin``), so a forged one
    would steer every later job with that seed. A vector is its prompt minus its origin. A prompt cannot be
    recomputed without tuning it again: for prompts (and their scores) a pull trusts the repository."""
    pulled = {entry.item_id: entry.tensor for entry in entries}

    def tensor(item_id: str) -> torch.Tensor:
        return pulled[item_id] if item_id in pulled else library.tensor(item_id)

    for entry in entries:
        if entry.kind == "origin" and entry.seed is not None and entry.recipe.get("init") in TUNING_INITS:
            made = make_origin(backbone, entry.seed, entry.tensor.shape[0], entry.recipe["init"])
            if not _close(entry.tensor, made, ORIGIN_TOLERANCE * _largest(made)):
                raise StudioError(f"{entry.item_id} says it is origin {entry.seed} ({entry.recipe['init']}, "
                                  f"{entry.tensor.shape[0]} tokens) of {backbone.name}, but its values are not that "
                                  "origin's: the repository was altered or damaged, so nothing was pulled")
        elif entry.kind == "vector" and entry.origin_id and entry.prompt_id:
            prompt, origin = tensor(entry.prompt_id), tensor(entry.origin_id)
            # the origin here may be this machine's copy of the same id (made by a bf16 or an fp32 model): as
            # close as the origin check allows, plus fp32 rounding of the prompt
            allowed = ORIGIN_TOLERANCE * _largest(origin) + VECTOR_TOLERANCE * _largest(prompt)
            if not _close(entry.tensor, prompt - origin, allowed):
                raise StudioError(f"{entry.item_id} says it is {entry.prompt_id} minus {entry.origin_id}, but its "
                                  "values are not: the repository was altered or damaged, so nothing was pulled")


def _largest(tensor: torch.Tensor) -> float:
    return float(tensor.abs().max()) if tensor.numel() else 0.0


def _close(tensor: torch.Tensor, expected: torch.Tensor, allowed: float) -> bool:
    """Equal shapes, and no entry further than ``allowed`` from ``expected``."""
    if tensor.shape != expected.shape:
        return False
    return bool((tensor.float() - expected.float()).abs().max() <= allowed + 1e-6)


def _catalog_entry(folder: Path, record: dict, backbone) -> NewItem:
    item_id, kind = record.get("id"), record.get("kind")
    if kind not in KINDS or not isinstance(item_id, str) or not ITEM_ID.fullmatch(item_id) or item_id[0] != kind[0]:
        raise StudioError(f"{CATALOG} has an item with a bad id or kind ({str(item_id)[:40]!r}, {str(kind)[:20]!r})")
    if record.get("model") != backbone.name:
        raise StudioError(f"{item_id} was made for model {str(record.get('model'))[:100]}, not {backbone.name}: "
                          "choose that model (--model) to pull it")
    tensor = _catalog_tensor(folder, item_id, backbone)
    if [record.get("n_tokens"), record.get("hidden")] != list(tensor.shape):
        raise StudioError(f"{item_id}: its file holds a {tuple(tensor.shape)} prompt but the catalog says "
                          f"({record.get('n_tokens')}, {record.get('hidden')}): the repository is damaged")
    return NewItem(kind, tensor, backbone.name, item_id=item_id, **_catalog_fields(item_id, record))


def _catalog_tensor(folder: Path, item_id: str, backbone) -> torch.Tensor:
    """An item's tensor: ``items/<id>.safetensors`` (origins, vectors) or its adapter folder (prompts)."""
    flat, adapter = folder / "items" / f"{item_id}.safetensors", folder / "adapters" / item_id
    if flat.is_file():
        try:
            tensor, metadata = read_prompt_file(flat, backbone.hidden_size)
        except StudioError as error:
            raise StudioError(f"items/{item_id}.safetensors: {error}") from None
    elif adapter.is_dir():
        tensor, metadata, _ = read_peft_adapter(adapter, backbone, label=f"adapters/{item_id}")
    else:
        raise StudioError(f"{CATALOG} lists {item_id} but the repository has neither items/{item_id}.safetensors nor "
                          f"adapters/{item_id}/ (weights are read from safetensors only)")
    if metadata.get("model") and metadata["model"] != backbone.name:
        raise StudioError(f"{item_id}'s file was made for model {metadata['model'][:100]}, not {backbone.name}")
    return tensor


def _catalog_fields(item_id: str, record: dict) -> dict:
    """The catalog's description of an item, each field checked for its type (it is someone else's file)."""
    def bad(what: str) -> StudioError:
        return StudioError(f"{CATALOG}: item {item_id} has {what}: the repository is damaged")

    name, task = record.get("name") or item_id, record.get("task") or None
    seed = record.get("seed", record.get("origin"))  # catalogs pushed before the rename call it "origin"
    if not isinstance(name, str) or not (task is None or isinstance(task, str)):
        raise bad("a name or task that is not text")
    if seed is not None:
        try:
            check_seed(seed, "its origin seed")
        except StudioError as error:
            raise StudioError(f"{CATALOG}: item {item_id}: {error}: the repository is damaged") from None
    parents = {key: record.get(key) or None for key in ("origin_id", "prompt_id")}
    if any(p is not None and not (isinstance(p, str) and ITEM_ID.fullmatch(p)) for p in parents.values()):
        raise bad("a lineage id that is not a studio id")
    recipe, metrics = record.get("recipe") or {}, record.get("metrics") or {}
    if not isinstance(recipe, dict) or not isinstance(metrics, dict):
        raise bad("a recipe or metrics that are not JSON objects")
    return {"name": check_name(name, f"the name of {item_id}"), "task": task, "seed": seed, **parents,
            "recipe": recipe, "metrics": metrics}


def _in_lineage_order(library: Library, entries: list[NewItem]) -> list[NewItem]:
    """Parents before the items derived from them; every parent is in the snapshot or already in the library."""
    pending = {entry.item_id: entry for entry in entries}
    ordered: list[NewItem] = []
    placed: set[str] = set()
    while pending:
        ready = [e for e in pending.values()
                 if all(p not in pending and (p in placed or library.find(p)) for p in _parents(e))]
        if not ready:
            stuck = next(iter(pending.values()))
            missing = next((p for p in _parents(stuck) if p not in pending), _parents(stuck)[0])
            raise StudioError(f"the lineage of {stuck.item_id} is incomplete: {missing} is neither in the repository "
                              "nor in your library (or the lineage loops)")
        for entry in ready:
            ordered.append(pending.pop(entry.item_id))
            placed.add(entry.item_id)
    return ordered


def _parents(entry: NewItem) -> list[str]:
    return [p for p in (entry.origin_id, entry.prompt_id) if p]


def _check_shapes(library: Library, entries: list[NewItem]) -> None:
    """A prompt or vector has its origin's shape, or its vector could never be formed (the library does not check
    this: a tuning job's prompts have their origin's shape by construction)."""
    shapes = {entry.item_id: tuple(entry.tensor.shape) for entry in entries}
    for entry in entries:
        if entry.origin_id:
            origin = shapes.get(entry.origin_id) or _shape(library.get(entry.origin_id))
            if origin != tuple(entry.tensor.shape):
                raise StudioError(f"{entry.item_id} is a {tuple(entry.tensor.shape)} {entry.kind} but its origin "
                                  f"{entry.origin_id} is {origin}: the repository is damaged")


def _shape(item: Item) -> tuple[int, int]:
    return item.n_tokens, item.hidden


def _read_adapters(folder: Path, label: str, backbone) -> list[_Adapter]:
    """Every PEFT prompt-tuning adapter in the snapshot (any depth), each read and checked."""
    paths = sorted({p.parent for p in folder.rglob("adapter_config.json")
                    if not any(part.startswith(".") for part in p.relative_to(folder).parts)})
    if not paths:
        raise _nothing_to_pull(label)
    adapters = []
    for path in paths:
        rel = path.relative_to(folder).as_posix()
        where = label if rel == "." else f"{label}/{rel}"
        tensor, metadata, decisions = read_peft_adapter(path, backbone, label=where)
        if metadata.get("model") and metadata["model"] != backbone.name:
            raise StudioError(f"{where} was made for model {metadata['model'][:100]}, not {backbone.name}: "
                              "choose that model (--model) to pull it")
        name = (metadata.get("name") or (label if rel == "." else path.name))[:MAX_NAME]
        check_name(name, f"the name of {where}")
        adapters.append(_Adapter(rel, name, tensor, metadata, {"imported_from": where, **decisions}))
    return adapters


def _as_entry(adapter: _Adapter, kind: str, model: str) -> NewItem:
    """An adapter stored as it is: its content decides its id, so pulling it again stores nothing twice."""
    return NewItem(kind, adapter.tensor, model, adapter.name, task=adapter.metadata.get("task") or None,
                   recipe=adapter.recipe, item_id=content_id(kind, model, "peft", tensor_digest(adapter.tensor)))


def _adapter_entries(library: Library, adapters: list[_Adapter], origin: str | None, model: str) -> list[NewItem]:
    """Each adapter as it says it is (a prompt unless the studio exported it as an origin); with ``origin``, that
    adapter (or library origin) as the origin, and the others as its prompts with their task prompt vectors."""
    if origin is None:
        entries = [_as_entry(a, "origin" if a.metadata.get("kind") == "origin" else "prompt", model) for a in adapters]
        return list({entry.item_id: entry for entry in entries}.values())
    single = len(adapters) == 1  # then the repository's own name names its adapter too, wherever it lies
    marked = [a for a in adapters if origin in (a.rel, a.name, Path(a.rel).name, a.recipe["imported_from"])
              or (single and origin == a.recipe["imported_from"].split("/")[0])]
    if len(marked) > 1:
        raise StudioError(f"--origin {origin!r} names {len(marked)} adapters: give its folder ({marked[0].rel})")
    if marked:
        base = _as_entry(marked[0], "origin", model)
        entries = [base]
    else:
        found = _library_origin(library, origin, model, [a.rel for a in adapters])
        base = NewItem("origin", library.tensor(found.id), model, found.name, seed=found.seed, item_id=found.id)
        entries = []  # the library has it
    for adapter in adapters:
        if not marked or adapter is not marked[0]:
            entries += _prompt_and_vector(adapter, base)
    return list({entry.item_id: entry for entry in entries}.values())


def _library_origin(library: Library, origin: str, model: str, rels: list[str]) -> Item:
    found = library.find(origin)
    if found is None:
        names = ", ".join(rels[:10]) + (" ..." if len(rels) > 10 else "")
        raise StudioError(f"--origin {origin[:100]!r} is neither an adapter folder in the repository ({names}) nor an "
                          "item in your library")
    if found.kind != "origin" or found.model != model:
        raise StudioError(f"--origin {origin}: that is a {found.kind} for {found.model}, not an origin for {model}")
    return found


def _prompt_and_vector(adapter: _Adapter, origin: NewItem) -> tuple[NewItem, NewItem]:
    """A prompt tuned from ``origin`` and its task prompt vector (prompt - origin), as a tuning job stores them."""
    if adapter.tensor.shape != origin.tensor.shape:
        raise StudioError(f"{adapter.recipe['imported_from']} is a {tuple(adapter.tensor.shape)} prompt but the origin "
                          f"is {tuple(origin.tensor.shape)}: it was not tuned from that origin")
    prompt_id = content_id("prompt", origin.item_id, "peft", tensor_digest(adapter.tensor))
    return prompt_and_vector(origin.model, adapter.tensor, origin.tensor, name=adapter.name, prompt_id=prompt_id,
                             origin_id=origin.item_id, task=adapter.metadata.get("task") or None, seed=origin.seed,
                             recipe=adapter.recipe)
