"""An on-disk store of prepared ECG signals, memory-mapped read-only by every rank and worker.

Stage 1 of the pipeline (`Preprocessing.prepare`: lead order, gaps, resampling, filtering) runs
once per record, into float16 chunk files; training then only crops, normalises and pads, and
the records never have to fit in a process's memory: ranks and loader workers share them
through the page cache. A store folder holds::

    store.json                  the commit: version, stage-1 settings, record count, index file
    index-<digest>.parquet      one row per record: manifest columns + chunk, start, length, leads
    chunks/<digest>.npy         (samples, 12) float16: the prepared records of a chunk, back to back
    chunks/<digest>.masks.npy   (records, 12) bool lead masks of the chunk

Building (`build_store`) is resumable and incremental. A chunk's name is the digest of its
records' identities (source, id, file sizes and modification times) and the stage-1 settings;
its data file appears by an atomic rename only once complete, so an interrupted build redoes
only the chunk it was writing. Records whose identity matches a row of the committed index keep
their data; only new and changed records (the manifest's size and mtime check) are prepared.
The index is committed last (``store.json`` replaced atomically), so a reader never sees a
half-written store; chunks no longer referenced are removed after the commit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from encoders.ecg.dataset import ECGDataset, prepared_records
from encoders.ecg.manifest import Manifest
from encoders.ecg.preprocess import PreprocessedECG, Preprocessing, resampled_length
from ked.errors import UserError
from knowledge.leads import STANDARD_LEADS

log = logging.getLogger(__name__)

STORE_VERSION = 1
CHUNK_RECORDS = 2048
"""Records per chunk file (about 48 MiB of 10 s records at 100 Hz)."""
MANIFEST_COLUMNS = (
    "record_id",
    "index",
    "spec",
    "dataset",
    "fs",
    "n_samples",
    "labels",
    "patient_id",
    "split",
)
"""The manifest columns read back from a store; the others (file stamps, leads) stay on disk."""
_IDENTITY_COLUMNS = ("spec", "record_id", "source", "index", "files", "sizes", "mtimes_ns")
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_LEAD_BITS = 1 << np.arange(len(STANDARD_LEADS), dtype=np.int32)


class SignalStoreError(UserError, ValueError):
    """A store folder that is missing, from another ked, or built with other settings."""


@dataclass(frozen=True)
class BuildSummary:
    """What a build did: records in the store, prepared now, kept from before, resumed."""

    records: int
    prepared: int
    reused: int
    resumed: int
    wall_s: float

    @property
    def records_per_s(self) -> float:
        """Records prepared per second of this build."""
        return self.prepared / self.wall_s if self.wall_s > 0 else 0.0


def build_store(
    manifest: Manifest,
    folder: str | Path,
    preprocessing: Preprocessing,
    *,
    workers: int = 0,
    chunk_records: int = CHUNK_RECORDS,
    on_record: Callable[[int], None] | None = None,
) -> BuildSummary:
    """Write (or bring up to date) the store of ``manifest``'s readable records in ``folder``.

    ``on_record(n)`` is called as records are prepared or found done (for a progress bar).
    """
    started = time.perf_counter()
    folder = Path(folder)
    (folder / "chunks").mkdir(parents=True, exist_ok=True)
    for stale in (folder / "chunks").glob(".*.tmp.npy"):  # a chunk an interrupted build wrote
        stale.unlink()
    key = preprocessing.prepare_key()
    table = manifest.ok.table.reset_index(drop=True)
    identities = _identities(table)
    placed = _committed_placements(folder, key)
    rows: list[tuple[str, int, int, int] | None] = [placed.get(i) for i in identities]
    pending = [i for i, row in enumerate(rows) if row is None]
    reused = len(table) - len(pending)
    if on_record and reused:
        on_record(reused)
    resumed = 0
    chunks = [pending[s : s + chunk_records] for s in range(0, len(pending), chunk_records)]
    names = [_chunk_name(key, [identities[i] for i in chunk]) for chunk in chunks]
    todo = []
    for chunk, name in zip(chunks, names, strict=True):
        if _chunk_done(folder, name):
            resumed += len(chunk)
            if on_record:
                on_record(len(chunk))
        else:
            todo.append((chunk, name))
    lengths = [
        resampled_length(int(n), float(fs), preprocessing.fs)
        for n, fs in zip(table["n_samples"], table["fs"], strict=True)
    ]
    _prepare_chunks(table, lengths, todo, folder, preprocessing, workers, on_record)
    for chunk, name in zip(chunks, names, strict=True):
        masks = np.load(folder / "chunks" / f"{name}.masks.npy", allow_pickle=False)
        start = 0
        for position, row in enumerate(chunk):
            bits = int((masks[position] * _LEAD_BITS).sum())
            rows[row] = (name, start, lengths[row], bits)
            start += lengths[row]
    _commit(folder, table, rows, key)
    summary = BuildSummary(
        records=len(table),
        prepared=sum(len(chunk) for chunk, _ in todo),
        reused=reused,
        resumed=resumed,
        wall_s=time.perf_counter() - started,
    )
    log.info("signal store %s: %s", folder, summary)
    return summary


def _prepare_chunks(
    table: pd.DataFrame,
    lengths: Sequence[int],
    todo: Sequence[tuple[list[int], str]],
    folder: Path,
    preprocessing: Preprocessing,
    workers: int,
    on_record: Callable[[int], None] | None,
) -> None:
    """Prepare the records of the chunks still to do, one worker pool for all of them."""
    rows = [row for chunk, _ in todo for row in chunk]
    if not rows:
        return
    dataset = ECGDataset(
        Manifest(table.iloc[rows].reset_index(drop=True)), preprocessing, [], _none
    )
    prepared = prepared_records(dataset, workers=workers)
    for chunk, name in todo:
        _write_chunk(folder, name, [lengths[row] for row in chunk], prepared, on_record)


def _write_chunk(
    folder: Path,
    name: str,
    lengths: Sequence[int],
    prepared: Iterator[tuple[int, PreprocessedECG]],
    on_record: Callable[[int], None] | None,
) -> None:
    """One chunk's data and masks, each appearing under its final name only when complete."""
    final = folder / "chunks" / f"{name}.npy"
    tmp = final.with_name(f".{name}.{os.getpid()}.tmp.npy")
    signals = np.lib.format.open_memmap(
        tmp, mode="w+", dtype=np.float16, shape=(int(sum(lengths)), len(STANDARD_LEADS))
    )
    masks = np.zeros((len(lengths), len(STANDARD_LEADS)), dtype=bool)
    start = 0
    for position, length in enumerate(lengths):
        _, record = next(prepared)
        if record.x.shape[-1] != length:
            raise RuntimeError(
                f"record {record.record_id}: prepared length {record.x.shape[-1]} differs from "
                f"the expected {length}"
            )
        if np.abs(record.x).max(initial=0.0) > _FLOAT16_MAX:
            raise SignalStoreError(
                f"record {record.record_id}: values beyond float16's range ({_FLOAT16_MAX:g}); "
                "its source's units are too small for a float16 store"
            )
        signals[start : start + length] = record.x.T
        masks[position] = record.lead_mask
        start += length
        if on_record:
            on_record(1)
    signals.flush()
    del signals
    _save_atomic(folder / "chunks" / f"{name}.masks.npy", masks)
    tmp.replace(final)


class SignalStore:
    """A committed store, opened read-only (see the module docstring)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser()
        header_path = self.folder / "store.json"
        if not header_path.is_file():
            raise SignalStoreError(
                f"no signal store at {self.folder} (no store.json); build one with "
                "'ked data build --data SPEC --out DIR'"
            )
        header = json.loads(header_path.read_text())
        if header.get("version") != STORE_VERSION:
            raise SignalStoreError(
                f"signal store {self.folder} has version {header.get('version')}, ked reads "
                f"{STORE_VERSION}; build it again with 'ked data build'"
            )
        self.header: dict[str, Any] = header
        self.index_path = self.folder / str(header["index"])

    def __len__(self) -> int:
        return int(self.header["records"])

    @property
    def prepare_key(self) -> dict[str, Any]:
        """The stage-1 settings the store was prepared with."""
        return dict(self.header["prepare"])

    def require(self, preprocessing: Preprocessing) -> None:
        """Refuse a pipeline whose stage 1 differs from the store's (resampling, filtering)."""
        if preprocessing.prepare_key() != self.prepare_key:
            raise SignalStoreError(
                f"signal store {self.folder} was prepared with {self.prepare_key}, the run needs "
                f"{preprocessing.prepare_key()}; build a store with those settings"
            )

    def manifest(self) -> Manifest:
        """The stored records as a manifest with a ``store_row`` column (for `view`); only
        `MANIFEST_COLUMNS` are read, the others hold one shared placeholder each."""
        columns = pq.read_table(self.index_path, columns=list(MANIFEST_COLUMNS))
        table = columns.drop_columns(["labels"]).to_pandas()
        table["labels"] = _shared_label_tuples(columns.column("labels"))
        table["source"] = str(self.index_path)
        table["ok"], table["error"] = True, None
        table["units"] = None  # a store keeps no units: amplitudes are not read as millivolts
        table["sex"] = None  # nor the patient's sex, which only millivolt limits need
        for column in ("leads", "files", "sizes", "mtimes_ns"):
            table[column] = [()] * len(table)
        table["store_row"] = np.arange(len(table), dtype=np.int64)
        return Manifest(table)

    def view(self, rows: Sequence[int] | np.ndarray) -> StoreView:
        """The prepared signals of the stored records ``rows``, in that order."""
        placement = pd.read_parquet(
            self.index_path, columns=["chunk", "start", "length", "lead_bits"]
        )
        chunks, codes = np.unique(placement["chunk"].to_numpy(dtype=str), return_inverse=True)
        picked = np.asarray(rows, dtype=np.int64)
        return StoreView(
            self.folder,
            [str(c) for c in chunks],
            codes[picked].astype(np.int32),
            placement["start"].to_numpy(np.int64)[picked],
            placement["length"].to_numpy(np.int64)[picked],
            placement["lead_bits"].to_numpy(np.int32)[picked],
        )


class StoreView:
    """Prepared records read from a store's memory-mapped chunks; pickles as paths and
    positions, so each loader worker maps the files itself."""

    def __init__(
        self,
        folder: Path,
        chunks: list[str],
        chunk_of: np.ndarray,
        starts: np.ndarray,
        lengths: np.ndarray,
        lead_bits: np.ndarray,
    ) -> None:
        self.folder = folder
        self.chunks = chunks
        self.chunk_of = chunk_of
        self.starts = starts
        self.lengths = lengths
        self.lead_bits = lead_bits
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.starts)

    def _chunk(self, number: int) -> np.ndarray:
        if number not in self._maps:
            path = self.folder / "chunks" / f"{self.chunks[number]}.npy"
            self._maps[number] = np.load(path, mmap_mode="r", allow_pickle=False)
        return self._maps[number]

    def get(self, index: int, record_id: str) -> PreprocessedECG:
        """The prepared record at ``index`` as float32 (12, samples)."""
        start = int(self.starts[index])
        block = self._chunk(int(self.chunk_of[index]))[start : start + int(self.lengths[index])]
        mask = (int(self.lead_bits[index]) & _LEAD_BITS) != 0
        return PreprocessedECG(block.T.astype(np.float32), mask, record_id)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}}


def _shared_label_tuples(labels: pa.ChunkedArray) -> list[tuple[str, ...]]:
    """Each record's labels as a tuple, records with the same labels sharing one tuple, converted
    a batch at a time: the manifest of a large store costs memory per distinct label set rather
    than per label of every record."""
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}
    out: list[tuple[str, ...]] = []
    for chunk in labels.chunks:
        for start in range(0, len(chunk), 8192):
            for values in chunk.slice(start, 8192).to_pylist():
                key = tuple(values or ())
                out.append(shared.setdefault(key, key))
    return out


def _none(_: str) -> None:
    return None


def _identities(table: pd.DataFrame) -> list[str]:
    """One string per record: what its prepared signal depends on besides the settings."""
    columns = [table[c] for c in _IDENTITY_COLUMNS]
    return [
        json.dumps(
            [
                str(spec),
                str(record_id),
                str(source),
                None if pd.isna(index) else int(index),
                [str(f) for f in files],
                [int(n) for n in sizes],
                [int(t) for t in mtimes],
            ]
        )
        for spec, record_id, source, index, files, sizes, mtimes in zip(*columns, strict=True)
    ]


def _chunk_name(key: dict[str, Any], identities: Sequence[str]) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode())
    for identity in identities:
        digest.update(identity.encode() + b"\n")
    return digest.hexdigest()[:24]


def _chunk_done(folder: Path, name: str) -> bool:
    chunks = folder / "chunks"
    return (chunks / f"{name}.npy").is_file() and (chunks / f"{name}.masks.npy").is_file()


def _committed_placements(
    folder: Path, key: dict[str, Any]
) -> dict[str, tuple[str, int, int, int]]:
    """Identity -> (chunk, start, length, lead bits) of the committed store's records, when it
    was prepared with the same settings and its chunks are intact."""
    try:
        store = SignalStore(folder)
    except SignalStoreError:
        return {}
    if store.prepare_key != key:
        log.info("signal store %s: stage-1 settings changed; preparing every record", folder)
        return {}
    index = pd.read_parquet(store.index_path)
    placements = zip(
        index["chunk"], index["start"], index["length"], index["lead_bits"], strict=True
    )
    done = {name: _chunk_done(folder, name) for name in set(index["chunk"])}
    return {
        identity: (str(chunk), int(start), int(length), int(bits))
        for identity, (chunk, start, length, bits) in zip(
            _identities(index), placements, strict=True
        )
        if done[chunk]
    }


def _commit(
    folder: Path,
    table: pd.DataFrame,
    rows: Sequence[tuple[str, int, int, int] | None],
    key: dict[str, Any],
) -> None:
    """Write the index, then replace ``store.json``; then remove what nothing references."""
    index = table.copy()
    index["chunk"], index["start"], index["length"], index["lead_bits"] = (
        zip(*rows, strict=True) if rows else ([], [], [], [])
    )
    for column in ("leads", "labels", "files", "sizes", "mtimes_ns"):
        index[column] = index[column].map(list)
    digest = hashlib.sha256(
        pd.util.hash_pandas_object(index[["record_id", "chunk", "start"]]).values.tobytes()
    )
    name = f"index-{digest.hexdigest()[:16]}.parquet"
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    index.to_parquet(tmp, index=False)
    tmp.replace(folder / name)
    header = {
        "version": STORE_VERSION,
        "prepare": key,
        "records": len(index),
        "index": name,
        "specs": sorted(set(map(str, index["spec"]))),
        "dtype": "float16",
        "leads": list(STANDARD_LEADS),
    }
    tmp = folder / f".store.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(header, indent=2) + "\n")
    tmp.replace(folder / "store.json")
    _remove_unreferenced(folder, name, set(index["chunk"]))


def _remove_unreferenced(folder: Path, index_name: str, chunks: set[str]) -> None:
    for path in folder.glob("index-*.parquet"):
        if path.name != index_name:
            path.unlink(missing_ok=True)
    for path in (folder / "chunks").glob("*.npy"):
        name = path.name.removesuffix(".npy").removesuffix(".masks")
        if name not in chunks and not path.name.startswith("."):
            path.unlink(missing_ok=True)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, array, allow_pickle=False)
    tmp.replace(path)
