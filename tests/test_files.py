"""Atomic writes and export targets: nothing half-written, nothing deleted that the studio did not write."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from studio import StudioError
from studio.files import PARTIAL_SUFFIX, atomic_write, atomic_write_text, new_folder, sweep_partials


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    target = atomic_write_text(tmp_path / "a.json", "old")

    def fails_half_way(partial):
        partial.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, fails_half_way)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    assert atomic_write_text(target, "new").read_text() == "new"


def test_new_folder_appears_whole_and_a_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), new_folder(tmp_path / "out") as partial:
        (partial / "file").write_text("x")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with new_folder(tmp_path / "out") as partial:
        (partial / "file").write_text("x")
    assert (tmp_path / "out" / "file").read_text() == "x" and len(list(tmp_path.iterdir())) == 1


def test_sweep_removes_only_old_temporaries(tmp_path):
    old, fresh, item = (tmp_path / f".a{PARTIAL_SUFFIX}", tmp_path / f".b{PARTIAL_SUFFIX}",
                        tmp_path / "p-1.safetensors")
    for path in (old, fresh, item):
        path.write_text("x")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert sweep_partials(tmp_path) == [old]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, item.name])
    with pytest.raises(StudioError):  # a failed export target check is a StudioError, not a traceback
        from studio.files import check_export_target

        check_export_target(tmp_path / "missing" / "x")


def test_a_dead_writers_temporaries_are_swept_at_once_a_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from studio.files import partial_name

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f".x.{int(gone.stdout)}-abcd1234{PARTIAL_SUFFIX}"
    dead.write_text("left by a killed writer")
    live = partial_name(tmp_path / "y")  # this process's: a writer that is still running
    live.write_text("being written")
    assert sweep_partials(tmp_path) == [dead] and live.exists()
    # writing the same target again also clears what a killed writer of that target left
    dead_of_x = tmp_path / f".x.{int(gone.stdout)}-ffff0000{PARTIAL_SUFFIX}"
    dead_of_x.write_text("half")
    atomic_write_text(tmp_path / "x", "whole")
    assert not dead_of_x.exists() and (tmp_path / "x").read_text() == "whole"


def test_an_earlier_export_left_aside_by_a_killed_writer_goes_back_to_its_own_name_only(tmp_path):
    """``new_folder`` moves an earlier export aside before the new one takes its name; a writer killed in between
    leaves it under a temporary name. The next writer of that name puts it back; a writer of another name that
    starts the same ("mr" for "mr.v1") leaves it alone, even when it refuses its own target."""
    from studio.files import ASIDE_SUFFIX, check_export_target

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    aside = tmp_path / f".mr.v1.{int(gone.stdout)}-abcd1234{ASIDE_SUFFIX}"
    aside.mkdir()
    (aside / "adapter_model.safetensors").write_text("the only copy")
    (tmp_path / "mr").mkdir()
    (tmp_path / "mr" / "other.txt").write_text("not an export")
    with pytest.raises(StudioError, match="not empty"):
        check_export_target(tmp_path / "mr")
    assert (aside / "adapter_model.safetensors").read_text() == "the only copy"
    check_export_target(tmp_path / "fresh")
    assert aside.exists()
    with pytest.raises(StudioError, match="not empty"):  # its own name: put back first, then checked as it is
        check_export_target(tmp_path / "mr.v1")
    assert not aside.exists() and (tmp_path / "mr.v1" / "adapter_model.safetensors").read_text() == "the only copy"


def test_an_earlier_export_left_aside_is_never_deleted_whatever_took_its_name(tmp_path):
    """After the kill, someone made an empty folder at the name (``mkdir -p out``): the old export goes back in its
    place. Where a file or a folder with content took the name, the old export is kept beside it, visibly."""
    from studio.files import ASIDE_SUFFIX, check_export_target

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)

    def left_aside(name: str) -> None:
        aside = tmp_path / f".{name}.{int(gone.stdout)}-abcd1234{ASIDE_SUFFIX}"
        aside.mkdir()
        (aside / "adapter_model.safetensors").write_text(f"the only copy of {name}")

    left_aside("out")
    (tmp_path / "out").mkdir()
    with pytest.raises(StudioError, match="not empty"):
        check_export_target(tmp_path / "out")
    assert (tmp_path / "out" / "adapter_model.safetensors").read_text() == "the only copy of out"
    left_aside("notes")
    (tmp_path / "notes").write_text("someone's file")
    with pytest.raises(StudioError, match="exists"):
        check_export_target(tmp_path / "notes")
    assert (tmp_path / "notes").read_text() == "someone's file"
    [recovered] = tmp_path.glob("notes.recovered-*")
    assert (recovered / "adapter_model.safetensors").read_text() == "the only copy of notes"
    assert not list(tmp_path.glob(f".*{ASIDE_SUFFIX}"))


def test_download_folders_are_bounded_and_nothing_else_is_removed(tmp_path, monkeypatch):
    """Each figure or export gets a fresh folder and only the newest are kept, so downloads do not pile up; and
    clearing old ones removes only folders the studio named. The export folder sits at a fixed name in the shared
    temp folder: a link planted there by another user pointed the clearing at their files (7 of 30 deleted)."""
    import tempfile

    from studio import files

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(files, "_export_root", None)
    projects = tmp_path / "someone-elses"
    for k in range(30):
        (projects / f"project{k}").mkdir(parents=True)
    (tmp_path / "tmp" / "tpv-studio-exports").symlink_to(projects)
    folder = files.export_folder("export")
    assert len(list(projects.iterdir())) == 30 and not folder.resolve().is_relative_to(projects)

    monkeypatch.setattr(files, "_export_root", None)
    (tmp_path / "tmp" / "tpv-studio-exports").unlink()
    root = files.export_root()
    assert root == tmp_path / "tmp" / "tpv-studio-exports" and not root.is_symlink()
    (root / "notes").mkdir()
    # a download another visitor is still building is never removed, however many figures come meanwhile
    building = files.export_folder("my-library")
    for _ in range(files.EXPORTS_KEPT + 6):
        files.export_folder("figure")
    assert building.is_dir()
    # ...within a bound: a burst of figures never fills the disk
    for _ in range(files.EXPORTS_MAX + 10):
        files.export_folder("figure")
    assert len([p for p in root.iterdir() if p.name != "notes"]) == files.EXPORTS_MAX
    # once settled, only the newest are kept
    monkeypatch.setattr(files, "EXPORT_MIN_AGE_S", 0)
    made = []
    for _ in range(files.EXPORTS_KEPT + 6):
        made.append(files.export_folder("figure"))
        time.sleep(0.01)  # the oldest go first: each a clock tick apart
    assert sorted(p for p in root.iterdir() if p.name != "notes") == sorted(made[-files.EXPORTS_KEPT:])
    assert (root / "notes").is_dir()


def test_overwriting_an_export_through_a_link_replaces_the_link_and_keeps_what_it_points_to(tmp_path):
    """`library export ID --format peft --out out2/link --overwrite` with link -> an earlier export printed "Cannot
    call rmtree on a symbolic link" after the export had succeeded, and left the link behind under a temporary name.
    The link itself is replaced; the folder it pointed to (maybe shared by other links) is left whole."""
    from studio.files import check_export_target

    real = tmp_path / "real"
    with new_folder(real) as partial:
        (partial / "studio_item.json").write_text("earlier")
    (tmp_path / "out2").mkdir()
    link = tmp_path / "out2" / "link"
    link.symlink_to(real, target_is_directory=True)
    check_export_target(link, replaceable=lambda folder: True, overwrite=True)
    with new_folder(link) as partial:
        (partial / "studio_item.json").write_text("new")
    assert not link.is_symlink() and (link / "studio_item.json").read_text() == "new"
    assert (real / "studio_item.json").read_text() == "earlier"
    assert [p.name for p in (tmp_path / "out2").iterdir()] == ["link"]  # no temporary left beside it
    # a link to nothing is someone's name too: replaced only when asked
    dangling = tmp_path / "out2" / "dangling"
    dangling.symlink_to(tmp_path / "gone", target_is_directory=True)
    with pytest.raises(StudioError, match="is a link to a missing place: .* add --overwrite to replace the link"):
        check_export_target(dangling, replaceable=lambda folder: True)
    check_export_target(dangling, replaceable=lambda folder: True, overwrite=True)
    with new_folder(dangling) as partial:
        (partial / "studio_item.json").write_text("new")
    assert not dangling.is_symlink() and (dangling / "studio_item.json").read_text() == "new"
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["dangling", "link"]


def test_a_folder_that_cannot_take_its_place_puts_the_earlier_export_back(tmp_path, monkeypatch):
    from pathlib import Path

    target = tmp_path / "adapter"
    with new_folder(target) as partial:
        (partial / "studio_item.json").write_text("earlier")
    rename = Path.rename

    def fails_for_the_new_folder(self, to):
        if PARTIAL_SUFFIX in self.name and Path(to) == target and (self / "studio_item.json").read_text() == "new":
            raise OSError("disk full")
        return rename(self, to)

    monkeypatch.setattr(Path, "rename", fails_for_the_new_folder)
    with pytest.raises(OSError), new_folder(target) as partial:
        (partial / "studio_item.json").write_text("new")
    assert (target / "studio_item.json").read_text() == "earlier" and [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_csv_cells_that_a_spreadsheet_would_run_are_escaped_and_numbers_stay_numbers(tmp_path):
    """Item names are anyone's: a similarity CSV with an item named =HYPERLINK(...) ran it as a formula when opened
    in a spreadsheet. Text that starts like a formula gets a leading quote (OWASP); numbers, negative ones too, not."""
    import csv

    import numpy as np

    from studio.plots import write_csv

    names = ['=HYPERLINK("http://x","y")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tTAB", "\rCR", "plain"]
    rows = [[name, -0.5, np.float64(-1.25), 3, "-0.25", "\t-1"] for name in names]
    path = write_csv(tmp_path / "s.csv", ["item", *names], rows)
    with path.open(newline="") as handle:
        header, *read = list(csv.reader(handle))
    shown = ["'" + name for name in names[:-1]] + ["plain"]
    assert header == ["item", *shown]
    assert [row[0] for row in read] == shown
    assert all(row[1:] == ["-0.5", "-1.25", "3", "-0.25", "'\t-1"] for row in read)


def test_csv_and_library_texts_are_utf8_whatever_the_locale(tmp_path):
    """A machine whose locale is ASCII (a bare container) failed the few-shot table's CSV ("± se") and any
    non-ASCII name with 'ascii' codec can't encode: files the studio writes are UTF-8 everywhere."""
    script = tmp_path / "write.py"
    script.write_text(
        "import sys\n"
        "from studio.plots import write_csv\n"
        "write_csv(sys.argv[1], ['shots', '\\u00b1 se'], [['caf\\u00e9', 0.5]])\n")
    env = {**os.environ, "PYTHONCOERCECLOCALE": "0", "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
    out = tmp_path / "table.csv"
    subprocess.run([sys.executable, "-X", "utf8=0", str(script), str(out)], env=env, check=True, timeout=120,
                   capture_output=True)
    assert out.read_text(encoding="utf-8") == "shots,\u00b1 se\ncaf\u00e9,0.5\n"


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_users_usual_mode(tmp_path, umask, mode):
    """safetensors writes 0600: an exported prompt shared on a multi-user machine could not be read by anyone else."""
    import torch

    from studio.library import Library

    library = Library(tmp_path / "lib")
    item = library.add("origin", torch.randn(4, 8), "tiny")
    previous = os.umask(umask)
    try:
        exported = library.export_safetensors(item.id, tmp_path / "shared.safetensors")
        text = atomic_write_text(tmp_path / "notes.txt", "hello")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(exported.stat().st_mode) == stat.S_IMODE(text.stat().st_mode) == mode


def test_a_folder_export_gives_its_files_the_usual_mode_and_a_refused_chmod_writes_anyway(tmp_path, monkeypatch):
    """A PEFT adapter's weights were still 0600 (safetensors' own mode, written into a new folder); on a file
    system that refuses modes (a FAT stick) the export must still be written."""
    import torch
    from safetensors.torch import save_file

    previous = os.umask(0o022)
    try:
        with new_folder(tmp_path / "adapter") as partial:
            save_file({"prompt_embeddings": torch.zeros(2, 4)}, str(partial / "adapter_model.safetensors"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "adapter" / "adapter_model.safetensors").stat().st_mode) == 0o644

    def refused(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refused)
    written = atomic_write(tmp_path / "stick.safetensors",
                           lambda p: save_file({"prompt": torch.zeros(2, 4)}, str(p)))
    assert written.exists() and not list(tmp_path.glob(f"*{PARTIAL_SUFFIX}"))


def test_scratch_folders_of_a_killed_studio_are_swept_when_the_next_one_starts(tmp_path):
    """A pull downloads into a scratch folder (up to 200 MB) that it removes when done; killed first, the folder
    stays. The next command line (or app) removes the scratch folders of processes that are gone, and only those:
    a running studio's and anything not the studio's stay."""
    from studio.files import SCRATCH_PREFIX, scratch_folder, sweep_dead_scratch

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"{SCRATCH_PREFIX}pull.{int(gone.stdout)}-abc123"
    (dead / "adapters").mkdir(parents=True)
    (dead / "adapters" / "big.safetensors").write_bytes(b"x" * 1000)
    live = tmp_path / f"{SCRATCH_PREFIX}page.{os.getpid()}-def456"
    live.mkdir()
    other = tmp_path / "someone-elses"
    other.mkdir()
    with scratch_folder("pull") as folder:  # the system's temporary folder; named for this process
        assert folder.is_dir() and folder.name.startswith(f"{SCRATCH_PREFIX}pull.{os.getpid()}_")
    assert not folder.exists()
    env = {**os.environ, "TMPDIR": str(tmp_path), "HF_HUB_OFFLINE": "1", "STUDIO_HOME": str(tmp_path / "home")}
    listed = subprocess.run([sys.executable, "-m", "studio", "data", "list"], capture_output=True, text=True, env=env)
    assert listed.returncode == 0, listed.stderr[-1000:]
    assert not dead.exists() and live.is_dir() and other.is_dir()
    assert sweep_dead_scratch(tmp_path) == []


def test_a_temporary_names_its_writer_so_a_reused_process_id_is_not_taken_for_it(tmp_path):
    """Every ``docker run`` is process 1: a killed writer's temporaries carried this process's id and were never
    cleared. Names carry the writer's start time and machine too: the same id started at another time is another
    process (its temporaries are cleared); another machine's writer (a shared network folder) is left alone."""
    from studio.files import _host, process_tag

    pid = os.getpid()
    assert process_tag().startswith(f"{pid}_") and process_tag() == process_tag()
    same_id_earlier = tmp_path / f".x.{pid}_1_{_host()}-abcd1234{PARTIAL_SUFFIX}"
    other_machine = tmp_path / f".y.{pid}_1_zzzzzz-abcd1234{PARTIAL_SUFFIX}"
    mine = tmp_path / f".z.{process_tag()}-abcd1234{PARTIAL_SUFFIX}"
    for path in (same_id_earlier, other_machine, mine):
        path.write_text("half")
    assert sweep_partials(tmp_path) == [same_id_earlier]
    assert other_machine.exists() and mine.exists()
