"""The limits every entry point checks (CLI, UI, API, imports): one place, one message each.

They keep a typo or a hostile request from turning into a job that cannot finish (10**30 as a seed, a 100,000-token
prompt, fifty origins at once) or into a name that breaks a listing (newlines, terminal escapes).
"""

from __future__ import annotations

from studio import StudioError

MAX_SEED = 2**31 - 1
MAX_SEEDS = 16  # origins in one job
MAX_PROMPT_TOKENS = 1000  # virtual tokens of a prompt, tuned or imported
MAX_STEPS = 100_000
MAX_NAME = 200  # characters of an item name


def parse_seeds(text: str | None) -> list[int]:
    """'0, 1,2' -> [0, 1, 2]: whole numbers from 0 to MAX_SEED, order kept, repeats dropped."""
    seeds: list[int] = []
    for part in (text or "").replace(";", ",").replace(" ", ",").split(","):
        if not part:
            continue
        try:
            seed = int(part)
        except ValueError:
            raise StudioError(f"origin seeds must be whole numbers separated by commas, e.g. 0,1,2 (got {part!r})"
                              ) from None
        if not 0 <= seed <= MAX_SEED:
            raise StudioError(f"an origin seed must be between 0 and {MAX_SEED} (got {part[:20]})")
        if seed not in seeds:
            seeds.append(seed)
    if not seeds:
        raise StudioError("give at least one origin seed, e.g. 0 or 0,1,2")
    if len(seeds) > MAX_SEEDS:
        raise StudioError(f"at most {MAX_SEEDS} origin seeds in one job (got {len(seeds)}): split the job")
    return seeds


def check_prompt_length(n_tokens: int, what: str = "a prompt") -> int:
    if not 1 <= int(n_tokens) <= MAX_PROMPT_TOKENS:
        raise StudioError(f"{what} must have between 1 and {MAX_PROMPT_TOKENS} virtual tokens (got {n_tokens})")
    return int(n_tokens)


def check_name(name: str, what: str = "a name") -> str:
    """A name as people will see it in tables and terminals: trimmed, printable, not too long."""
    name = (name or "").strip()
    if not name:
        raise StudioError(f"{what} cannot be empty")
    if len(name) > MAX_NAME:
        raise StudioError(f"{what} can have at most {MAX_NAME} characters (got {len(name)})")
    if not name.isprintable():
        raise StudioError(f"{what} cannot contain line breaks, tabs or control characters")
    return name
