"""The limits every entry point checks (CLI, UI, API, imports): one place, one message each.

They keep a typo or a hostile request from turning into a job that cannot finish (10**30 as a seed, a 100,000-token
prompt, fifty origins at once) or into a name that breaks a listing (newlines, terminal escapes).
"""

from __future__ import annotations

import json
import unicodedata

from studio import StudioError

MAX_SEED = 2**31 - 1
MAX_SEEDS = 16  # origins in one job
MAX_PROMPT_TOKENS = 1000  # virtual tokens of a prompt, tuned or imported
MAX_STEPS = 100_000
MAX_NAME = 200  # characters of an item name
MAX_TASK_NAME = 80  # characters of a task's name (a file task's: "file:" and the file's stem, or the name given)
MAX_ITEM_TASK = 1000  # characters of an item's task: one name, or several joined by "+" (combinations, mixtures)
TASK_JOINER = "+"  # joins the tasks of a combination or a mixture into one item task ("mr+subj")
MAX_HIDDEN = 16_384  # width of a prompt read from a file when the model's is not known (the largest models': 16,384)
MAX_LABELS = 100  # classes of a task: each is scored for every example (a text column taken as labels has thousands)
MAX_LABEL_CHARS = 100  # characters of one label word: the target the prompt is tuned to produce
MAX_FILE_ROWS = 200_000  # rows of a user's CSV/JSONL task file: a full load keeps every row's texts in memory
MAX_RECIPE_BYTES = 256 * 1024  # an item's recipe as JSON: settings and a tuning curve (~160 bytes a validation)
MAX_METRICS_BYTES = 64 * 1024  # an item's metrics as JSON: scores per split and task
MAX_ITEM_JSON_BYTES = 1024 * 1024  # an adapter's adapter_config.json or studio_item.json, a safetensors header
MAX_CATALOG_BYTES = 16 * 1024 * 1024  # an exported or pulled catalog (JSON): thousands of items


def parse_seeds(text: str | None) -> list[int]:
    """'0, 1,2' -> [0, 1, 2]: whole numbers from 0 to MAX_SEED, order kept, repeats dropped."""
    seeds: list[int] = []
    for part in (text or "").replace(";", ",").replace(" ", ",").split(","):
        if not part:
            continue
        try:
            seed = check_seed(int(part))
        except ValueError:
            raise StudioError(f"origin seeds must be whole numbers separated by commas, e.g. 0,1,2 (got {part!r})"
                              ) from None
        if seed not in seeds:
            seeds.append(seed)
    if not seeds:
        raise StudioError("give at least one origin seed, e.g. 0 or 0,1,2")
    if len(seeds) > MAX_SEEDS:
        raise StudioError(f"at most {MAX_SEEDS} origin seeds in one job (got {len(seeds)}): split the job")
    return seeds


def check_seed(seed: object, what: str = "an origin seed") -> int:
    """A seed as the catalog stores it: a whole number from 0 to ``MAX_SEED`` (10**30 reached SQLite, which cannot
    store it, after the item's file was written)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise StudioError(f"{what} must be a whole number between 0 and {MAX_SEED} (got {str(seed)[:20]})")
    return seed


def check_prompt_length(n_tokens: int, what: str = "a prompt") -> int:
    if not 1 <= int(n_tokens) <= MAX_PROMPT_TOKENS:
        raise StudioError(f"{what} must have between 1 and {MAX_PROMPT_TOKENS} virtual tokens (got {n_tokens})")
    return int(n_tokens)


def check_name(name: str, what: str = "a name") -> str:
    """A name as people will see it in tables and terminals: trimmed, printable, not too long."""
    name = (name or "").strip()
    if not name:
        raise StudioError(f"{what} cannot be empty")
    return _shown_text(name, what, MAX_NAME)


def check_task_name(name: object, what: str = "a task name", longest: int = MAX_TASK_NAME) -> str:
    """A task name as tables and terminals show it: text, printable (no line breaks or terminal escapes), not empty,
    at most ``longest`` characters. Never trimmed: a task name is an identity (ids, filters, data hashes)."""
    if not isinstance(name, str) or not name:
        raise StudioError(f"{what} must be non-empty text")
    return _shown_text(name, what, longest)


def check_single_task_name(name: object, what: str = "a task name") -> str:
    """The name of one task (a file's, a registered one's): a ``check_task_name`` without ``TASK_JOINER``, which
    would make it read as several tasks joined (a combination's task), so the Arithmetic tab would not offer it."""
    name = check_task_name(name, what)
    if TASK_JOINER in name:
        raise StudioError(f"{what} cannot contain {TASK_JOINER!r} ({name[:40]!r}): it joins the tasks of a combination; "
                          "use '-' or '_' instead")
    return name


def check_label_words(words: tuple[str, ...], what: str) -> tuple[str, ...]:
    """A task's label words: 2 to ``MAX_LABELS`` different ones, each printable and at most ``MAX_LABEL_CHARS``."""
    if len(set(words)) != len(words):
        raise StudioError(f"{what}: the label words repeat one another; give each class once")
    if not 2 <= len(words) <= MAX_LABELS:
        raise StudioError(f"{what} has {len(words):,} labels: a task has between 2 and {MAX_LABELS}")
    for word in words:
        check_label_word(word, f"{what}: a label word")
    return words


def check_label_word(word: str, what: str) -> str:
    """One label word (given, or read from a file's row): printable, at most ``MAX_LABEL_CHARS``; it is printed in
    previews, listings and reports, so a terminal escape in it would run there."""
    return _shown_text(word, what, MAX_LABEL_CHARS)


# control and format characters (terminal escapes, zero-width and direction marks), line and paragraph breaks,
# surrogates, private and unassigned code points; spaces of any kind (a no-break space in "très bon") are text
HIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def _shown_text(text: str, what: str, longest: int) -> str:
    if len(text) > longest:
        raise StudioError(f"{what} can have at most {longest} characters (got {len(text)}): choose a shorter one")
    if any(unicodedata.category(c) in HIDDEN_CATEGORIES for c in text):
        raise StudioError(f"{what} cannot contain line breaks, tabs or control characters: choose a plain one")
    return text


def check_json_size(value: object, what: str, limit: int) -> str:
    """``value`` as the JSON the catalog stores, refused when it is not JSON or over ``limit`` bytes: recipes and
    metrics are settings and scores, and one from an import or a pull must not fill the catalog or every listing."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError) as error:
        raise StudioError(f"{what} is not JSON data ({str(error)[:100]}): keep to numbers, text, lists and objects"
                          ) from None
    if len(text) > limit:  # json.dumps writes ASCII: characters are bytes
        raise StudioError(f"{what} is {len(text):,} bytes of JSON, over the {limit:,} kept: it holds more than "
                          "settings and scores")
    return text


def whole_number(value: object, what: str) -> int:
    """A whole number as typed into a form or a flag ("12", 12.0, 12): empty, text or a fraction is one StudioError
    that names ``what``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise StudioError(f"{what} is empty: enter a whole number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise StudioError(f"{what} must be a whole number (got {value!r})") from None
    if not number.is_integer():
        raise StudioError(f"{what} must be a whole number (got {value})")
    return int(number)
