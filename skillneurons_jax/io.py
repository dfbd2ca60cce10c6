"""Atomic output files and their JSON sidecars: nothing a user made is ever half-written."""
from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import importlib.metadata
import io
import json
import logging
import os
import pathlib
import platform
import socket
import subprocess
import tempfile
import time
from typing import Any, Iterator

import numpy as np

from skillneurons_jax import layout

log = logging.getLogger(__name__)

_VERSIONED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "transformers", "tokenizers",
                       "numpy", "scipy", "torch", "skillneurons_jax")


@contextlib.contextmanager
def atomic_path(path: os.PathLike | str) -> Iterator[pathlib.Path]:
    """Yields a temporary path beside `path`; on success it is fsynced and renamed onto `path`."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = pathlib.Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the user's usual permissions
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data: bytes) -> pathlib.Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return pathlib.Path(path)


def atomic_write_text(path, text: str) -> pathlib.Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj: Any) -> pathlib.Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def as_written(obj: Any) -> Any:
    """`obj` as atomic_write_json stores it and json reads it back (numpy scalars as numbers, tuples as lists):
    what to compare with a JSON file's content."""
    return json.loads(json.dumps(obj, sort_keys=True, default=_json_default))


def atomic_save_npz(path, **arrays) -> pathlib.Path:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write_bytes(path, buf.getvalue())


def atomic_save_npy(path, array) -> pathlib.Path:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array))
    return atomic_write_bytes(path, buf.getvalue())


class JsonlLineError(ValueError):
    """A line of a JSON-lines file that is not what it must be; `path`, `line` (1-based) and `problem` name it."""

    def __init__(self, path, line: int, problem: str):
        self.path, self.line, self.problem = pathlib.Path(path), int(line), problem
        super().__init__(f"{path}, line {line}: {problem}")


def parse_jsonl(text: str, path, required: tuple[str, ...] = ()) -> list[dict]:
    """The JSON objects of the text of a JSON-lines file written by append_jsonl (`path` names it in messages).
    Its LAST line may be cut (a run killed during an append): that line is skipped with a warning. Any other line
    that is not a JSON object, or that lacks a key of `required`, is a JsonlLineError naming file and line."""
    lines = text.splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            if i == last:
                log.warning("%s: line %d is cut (an interrupted write); skipped", path, i + 1)
                break
            raise JsonlLineError(path, i + 1, f"not JSON ({err}); only the last line can be cut by an "
                                 "interrupted write, so the file was edited or damaged") from None
        if not isinstance(row, dict):
            raise JsonlLineError(path, i + 1, f"a JSON {type(row).__name__}, not an object")
        missing = [key for key in required if key not in row]
        if missing:
            raise JsonlLineError(path, i + 1, f"lacks {missing}")
        rows.append(row)
    return rows


def read_jsonl(path, required: tuple[str, ...] = ()) -> list[dict]:
    """parse_jsonl of the file at `path`; [] when it does not exist. The one reader of metrics.jsonl."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    return parse_jsonl(path.read_text(encoding="utf-8", errors="replace"), path, required)


def append_jsonl(path, obj: Any) -> None:
    """Appends one JSON line (a single write of a whole line, flushed and fsynced)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(obj, sort_keys=True, default=_json_default) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def package_versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The checkout's HEAD the first time this process asks (once per process: the code a process runs is what
    it imported at its start, so a commit made while a long run goes on must not relabel its later outputs)."""
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=pathlib.Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def machine() -> dict:
    """The CPU a process computes on, as its outputs record it: the model name, the widest vector instruction set
    XLA's CPU code can use (avx512 / avx2 / other: the rounding of a float sum depends on it, so a prompt trained on
    one CPU can differ from one trained on another) and the cores this process sees."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    isa = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else ("other" if flags else "unknown")
    return {"cpu": model, "vector_isa": isa, "cores": os.cpu_count(), "platform": platform.platform()}


def folder_key(value):
    """A recorded folder (a sidecar's data_dir or model_path) as a comparable key: an existing folder by its
    resolved path (../shared/data and /work/shared/data are one folder), anything else (None, "offline:" names,
    hub names) as it is."""
    if isinstance(value, str) and value not in ("", "None") and pathlib.Path(value).is_dir():
        return str(pathlib.Path(value).resolve())
    return value


def sidecar_path(path) -> pathlib.Path:
    path = pathlib.Path(path)
    return path.with_name(path.name + ".json") if path.suffix != ".json" else path.with_name(path.stem + ".meta.json")


def sha256_of(path) -> str:
    """sha256 (hex) of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# The sidecar field holding the sha256 of the output it describes (what a copy checks the bytes against).
SHA256_FIELD = "sha256"


def write_sidecar(path, *, output_complete: bool = True, **fields) -> pathlib.Path:
    """Writes `<path>.json` next to an output: the given fields plus versions, commit, machine, time and, when
    the output exists and `output_complete` (False for a file still being appended to, e.g. metrics.jsonl at the
    start of a run), the sha256 of its bytes (SHA256_FIELD)."""
    meta = dict(fields)
    meta.setdefault("created", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    meta["versions"] = package_versions()
    meta["git_commit"] = git_commit()
    meta["machine"] = machine()
    meta.pop(SHA256_FIELD, None)
    if output_complete and pathlib.Path(path).is_file():
        meta[SHA256_FIELD] = sha256_of(path)
    return atomic_write_json(sidecar_path(path), meta)


# What write_sidecar stamps on every sidecar: a copied result gets its own, and keeps the source's as provenance.
SIDECAR_STAMPS = ("created", "versions", "git_commit", "machine", SHA256_FIELD)


# What copied_from writes: a copy of a copy carries the first computation's commit, time and machine.
PROVENANCE_FIELDS = ("copied_from", "source_git_commit", "source_created", "source_machine")


def copied_from(source_path, source_meta: dict) -> dict:
    """The provenance fields of a result copied from `source_path` (its sidecar `source_meta`): where it came
    from, and the commit, time and machine it was computed at (the source's own, or, when the source is itself a
    copy, those it carries)."""
    copied = "copied_from" in source_meta
    return {"copied_from": str(source_path),
            "source_git_commit": source_meta.get("source_git_commit" if copied else "git_commit"),
            "source_created": source_meta.get("source_created" if copied else "created"),
            "source_machine": source_meta.get("source_machine" if copied else "machine")}


def copied_meta(source_path, source_meta: dict) -> dict:
    """The sidecar fields of a copy of the result at `source_path`: the source's fields less its stamps and its
    own provenance, plus copied_from's (write_sidecar adds this copy's stamps)."""
    kept = {k: v for k, v in source_meta.items() if k not in SIDECAR_STAMPS + PROVENANCE_FIELDS}
    return {**kept, **copied_from(source_path, source_meta)}


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, pathlib.Path):
        return str(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def check_writable_folder(path, *, what: str = "folder") -> pathlib.Path:
    """`path` is a folder this process can write, or can be created as one: checked without writing anything
    (ValueError naming `what`)."""
    path = pathlib.Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} is a file, not a folder; choose another {what}")
    existing = path if path.exists() else next((p for p in path.parents if p.exists()), pathlib.Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path} is not writable (no write permission on {existing}); choose another {what}")
    return path


# ------------------------------------------------------------------------------------------ folders a user gives
class OutsideFolder(ValueError):
    """A path under a folder the user gave leads outside it through a symbolic link: refused, never read."""


def inside(root, path) -> pathlib.Path:
    """`path`, a file or folder under `root` (a folder the user gave: a workdir, a reuse_from study, a
    --prompt_dir), resolved, when it stays under `root` resolved once every symbolic link on the way is followed;
    else OutsideFolder naming the path and where it leads. Opens nothing. A link that stays inside is fine."""
    root_real = pathlib.Path(root).resolve()
    real = pathlib.Path(path).resolve()
    if real != root_real and root_real not in real.parents:
        raise OutsideFolder(f"{path} leads outside {root} (a symbolic link, to {real}); refused: only files inside "
                            f"the folder given are read")
    return real


def check_tree_inside(root, folder=None, *, skip: tuple[str, ...] = ()) -> None:
    """`folder` (default: `root`) and every symbolic link below it stay inside `root` (`inside`); names in `skip`
    (e.g. the XLA cache) are not walked. A folder that does not exist passes."""
    folder = pathlib.Path(root if folder is None else folder)
    inside(root, folder)
    for dirpath, dirnames, filenames in os.walk(folder):      # links to folders are listed, never entered
        dirnames[:] = [d for d in dirnames if d not in skip]
        for name in dirnames + filenames:
            path = pathlib.Path(dirpath) / name
            if path.is_symlink():
                inside(root, path)


class Unverified(ValueError):
    """A file to be copied whose bytes its own records do not vouch for (no recorded sha256, or another one)."""


def _stage_record_hashes(root: pathlib.Path, path: pathlib.Path) -> dict[str, str]:
    """{record file: sha256 of `path`} from the plan's completion records under `root` that name it."""
    records = root / layout.STAGE_RECORDS_DIR
    try:
        name = str(path.absolute().relative_to(root.absolute()))    # how the plan names its outputs
    except ValueError:
        return {}
    out = {}
    for record in sorted(records.glob("*.json")) if records.is_dir() else []:
        try:
            inside(root, record)
            digest = (json.loads(record.read_text(encoding="utf-8")).get("sha256") or {}).get(name)
        except (OSError, ValueError, AttributeError) as err:   # an unreadable record vouches for nothing
            log.warning("%s: not read as a record (%s)", record, err)
            continue
        if isinstance(digest, str):
            out[str(record)] = digest
    return out


def recorded_sha256(root, path) -> dict[str, str]:
    """Where the records under `root` give the sha256 of the file `path` under it: {record file: sha256}, from
    the file's sidecar (SHA256_FIELD) and from every completion record of the plan (WORKDIR/.stages) whose outputs
    name it. The sidecar and records are read only inside `root` (OutsideFolder otherwise)."""
    root, path = pathlib.Path(root), pathlib.Path(path)
    out = {}
    side = sidecar_path(path)
    if side.exists():
        inside(root, side)
        try:
            digest = json.loads(side.read_text(encoding="utf-8")).get(SHA256_FIELD)
        except (OSError, ValueError, AttributeError) as err:
            log.warning("%s: not read as a record (%s)", side, err)
            digest = None
        if isinstance(digest, str):
            out[str(side)] = digest
    return {**out, **_stage_record_hashes(root, path)}


def read_verified(root, path) -> bytes:
    """The bytes of `path`, a file under `root` (another study's workdir) that is about to be copied, when they
    are what the source's own records say it wrote. Refused, with the reason: OutsideFolder when the path leads
    outside `root`; Unverified when no record under `root` gives its sha256 (recorded_sha256), or one gives
    another than the bytes have (changed after it was written). The bytes returned are the ones checked, so the
    copy writes exactly what was verified."""
    inside(root, path)
    path = pathlib.Path(path)
    data = path.read_bytes()
    records = recorded_sha256(root, path)
    if not records:
        raise Unverified(f"{path}: no record under {root} gives its sha256 (its sidecar's {SHA256_FIELD!r}, a "
                         f"{layout.STAGE_RECORDS_DIR}/ record), so its bytes cannot be checked")
    digest = hashlib.sha256(data).hexdigest()
    for record, expected in records.items():
        if expected != digest:
            raise Unverified(f"{path} changed after it was written: its sha256 is {digest[:12]}..., {record} "
                             f"records {expected[:12]}...")
    return data


def make_writable_folder(path, *, what: str = "folder") -> pathlib.Path:
    """THE "is it writable" probe: creates `path` (with its parents) and writes and removes a probe file in it, so
    a folder that cannot take files fails here, before any work (PermissionError naming `what` and the path);
    check_writable_folder is the check that writes nothing (--dry_run)."""
    path = pathlib.Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / ".write_probe", "")
        (path / ".write_probe").unlink()
    except OSError as error:
        raise PermissionError(f"{what} {path} is not writable: cannot write the {what} there "
                              f"({type(error).__name__}: {error})") from error
    return path


def is_sidecar(path) -> bool:
    """Whether `path` is named as sidecar_path names a sidecar: `<stem>.meta.json` (beside a JSON output) or
    `<file>.json` beside one of the non-JSON outputs (.npz, .npy, .jsonl, .md, .html)."""
    path = pathlib.Path(path)
    return path.name.endswith(".meta.json") or (
        path.suffix == ".json" and pathlib.Path(path.stem).suffix in (".npz", ".npy", ".jsonl", ".md", ".html"))


# ------------------------------------------------------------------------------------------ refused pickles
def refused_torch_file(path, error: Exception) -> str:
    """The message for a PyTorch file that `torch.load(weights_only=True)` would not read. PyTorch's own message
    advises reloading with weights_only=False (or allow-listing globals), which would unpickle the file and so run
    any code it holds: that advice is never passed on, only the reason the restricted reader gave."""
    text = str(error)
    if "weights_only" not in text and "WeightsUnpickler" not in text:
        return f"{path}: not a loadable PyTorch tensor file ({type(error).__name__}: {text})"
    reason = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else ""
    reason = " ".join(reason.split()).split(". ")[0].strip(" .")        # e.g. "Unsupported global: GLOBAL print ..."
    reason = reason.split(" was not an allowed global")[0].split(" Check the documentation")[0]
    return (f"{path}: not a loadable PyTorch tensor file: refused, because reading it needs unpickling beyond plain "
            f"tensors, and unpickling can run code stored in the file"
            + (f" (the restricted reader found: {reason})" if reason else "")
            + "; save the weights as safetensors or as a dict of plain tensors")


# ------------------------------------------------------------------------------------------ one writer per stage
class LockHeld(ValueError):
    """Another run holds the output folder of this stage (a user error: the launch scripts exit 2 with it)."""


def _holder_alive(pid: int) -> bool:
    """Whether a process of this host with `pid` exists (signal 0 checks without signalling)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:        # exists, owned by another user
        return True
    return True


def _read_lock(path: pathlib.Path) -> dict | None:
    """The holder recorded in a lock file; None when it vanished; {} when it cannot be parsed (being written)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _create_lock(path: pathlib.Path, holder: dict) -> bool:
    """Creates the lock file if none exists (O_EXCL: of two creators exactly one wins); False if one exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(holder, f)
        f.flush()
        os.fsync(f.fileno())
    return True


UNREADABLE_LOCK_S = 10.0   # a lock file still unreadable after this long was left half-written by a killed run


def _age_s(path: pathlib.Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _describe_holder(holder: dict) -> str:
    return (f"pid {holder.get('pid')} on host {holder.get('host')!r} (since {holder.get('started')}, "
            f"{holder.get('what', 'a run')})")


@contextlib.contextmanager
def stage_lock(lock_file, output, what: str, *, enabled: bool = True) -> Iterator[pathlib.Path | None]:
    """Holds a stage's `output` (a folder or a file; layout.lock_path gives its `lock_file`, whose folder is
    created if absent) for this run: the lock file records the pid and host. A second run raises LockHeld naming
    the holder; a lock whose holder is a dead process of this host (a killed run) is taken over. A lock of another
    host cannot be checked from here: the message says which file to delete if that run is gone. `enabled=False`
    (processes other than 0 of one multi-host program) holds nothing. The lock is removed when the block ends,
    however it ends."""
    if not enabled:
        yield None
        return
    path = pathlib.Path(lock_file)
    created = [d for d in [path.parent, *path.parent.parents] if not d.exists()]   # deepest first
    path.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    mine = {"pid": os.getpid(), "host": host, "what": what,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    for _ in range(50):
        if _create_lock(path, mine):
            break
        holder = _read_lock(path)
        if holder is None:                      # released meanwhile: try again
            continue
        if not holder:                          # being written by its creator: look again shortly, unless it is
            if _age_s(path) > UNREADABLE_LOCK_S:   # an empty file its creator left when killed while writing it
                _take_over(path, holder)
            else:
                time.sleep(0.05)
            continue
        if holder.get("host") == host and not _holder_alive(holder.get("pid", -1)):
            _take_over(path, holder)            # a killed run of this host: its lock is stale
            continue
        where = "" if holder.get("host") == host else f"; if that run is gone, delete {path}"
        _remove_empty(created)
        raise LockHeld(f"{output} is held by another run: {_describe_holder(holder)}; this run ({what}) "
                       f"refused to write there. Wait for it or use another --workdir{where}")
    else:
        _remove_empty(created)
        raise LockHeld(f"{path}: could not take the lock (it keeps changing); is another run starting?")
    try:
        yield path
    finally:
        if _read_lock(path) == mine:
            path.unlink()
        _remove_empty(created)      # a run that wrote nothing (refused, failed early) leaves no folder behind


def _remove_empty(folders) -> None:
    """Removes the folders this run created, deepest first, where they are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:             # not empty (outputs were written) or gone: keep
            break


def _take_over(path: pathlib.Path, stale: dict) -> None:
    """Removes a stale lock, unless it changed since it was read (another run took it over first). The rename
    to a name of our own is atomic, so of two runs taking over one stale lock only one removes it; the other finds
    the winner's fresh lock and is refused."""
    grave = path.with_name(f"{path.name}.stale.{os.getpid()}")
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return
    if _read_lock(grave) != stale:              # we moved a fresh lock of the winner: put it back
        with contextlib.suppress(FileExistsError):
            os.link(grave, path)
    grave.unlink()
