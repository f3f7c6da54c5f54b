"""A torch ``Dataset`` of preprocessed ECG windows with multi-hot targets, and a throughput probe.

Each item is ``(x, lead_mask, target)``: float32 (12, n_samples), bool (12,), float32
(n_labels,); a target is NaN where the record's dataset never reports that label (training on
several datasets at once). Targets come from the records' label strings through ``label_of``, a
callable that maps a record label (``"SNOMED:164889003"``) to one of the dataset's target labels
or None (ked's knowledge base provides it). With ``cache``, stage 1 of the pipeline (lead order,
gaps, resampling, filtering) runs once per record, into memory or into ``.npy`` files that workers
memory-map; with ``prepared`` it comes from elsewhere (a signal store, `signal_store`); each item
then only crops, normalises and pads, so loading stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from encoders.ecg.manifest import Manifest
from encoders.ecg.preprocess import PreprocessedECG, Preprocessing, resampled_length
from encoders.ecg.readers.base import ECGSource
from encoders.ecg.record import ECGRecord
from encoders.ecg.sources import open_source
from knowledge.leads import STANDARD_LEADS

logger = logging.getLogger(__name__)

LabelOf = Callable[[str], str | None]
_CACHE_FILES = ("signals.npy", "offsets.npy", "masks.npy")


class PreparedSource(Protocol):
    """Where a dataset takes its items' stage-1 outputs from (a cache, a signal store)."""

    def get(self, index: int, record_id: str) -> PreprocessedECG: ...


class ECGDataset(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Preprocessed windows of a manifest's readable records (or of in-memory records).

    ``labels`` is the ordered list of target labels (the target's columns). ``cache`` is None
    (read and prepare every item), ``"memory"``, or a folder for a memory-mapped ``.npy`` cache
    that is reused while the records and the stage-1 settings are unchanged.
    ``cache_workers`` processes prepare the cache in parallel. ``prepared`` instead serves the
    stage-1 outputs in the records' order (e.g. a `signal_store.StoreView`). With
    ``crop="random"`` the crop offset comes from torch's random generator, so
    ``torch.manual_seed`` (and the DataLoader's per-worker seeding) make it reproducible.
    """

    def __init__(
        self,
        records: Manifest | Sequence[ECGRecord],
        preprocessing: Preprocessing,
        labels: Sequence[str],
        label_of: LabelOf,
        *,
        cache: str | Path | None = None,
        cache_workers: int = 0,
        reported: Mapping[str, set[str]] | None = None,
        prepared: PreparedSource | None = None,
    ) -> None:
        self.preprocessing = preprocessing
        self.labels = tuple(labels)
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("target labels must be unique")
        if isinstance(records, Manifest):
            manifest = records.ok
            if len(manifest) < len(records):
                logger.warning("%d unreadable records left out", len(records) - len(manifest))
            self._manifest: Manifest | None = manifest
            self._records: list[ECGRecord] | None = None
            self.record_ids = tuple(str(record_id) for record_id in manifest.table["record_id"])
            record_labels = list(manifest.table["labels"])
        else:
            self._manifest = None
            self._records = list(records)
            self.record_ids = tuple(record.record_id for record in self._records)
            record_labels = [record.labels for record in self._records]
        self.targets = multi_hot(record_labels, self.labels, label_of)
        if reported is not None:
            if self._manifest is None:
                raise ValueError("reported= needs a dataset over a manifest (its spec column)")
            specs = [str(spec) for spec in self._manifest.table["spec"]]
            self.targets = unreported_as_unknown(self.targets, self.labels, specs, reported)
        self._sources: dict[str, ECGSource] = {}
        if cache is not None and prepared is not None:
            raise ValueError("give cache= or prepared=, not both")
        self._cache: PreparedSource | None = prepared
        if cache is not None:
            self._cache = PreparedCache.build(self, self._lengths(), cache, workers=cache_workers)

    def __len__(self) -> int:
        return len(self.record_ids)

    def _lengths(self) -> list[int]:
        """Each record's length after resampling."""
        fs = self.preprocessing.fs
        if self._manifest is None:
            return [resampled_length(r.n_samples, r.fs, fs) for r in self._records or []]
        table = self._manifest.table
        return [
            resampled_length(int(n), float(rate), fs)
            for n, rate in zip(table["n_samples"], table["fs"], strict=True)
        ]

    def record(self, index: int) -> ECGRecord:
        """Read the record at ``index`` (from its source when the dataset is over a manifest)."""
        if self._manifest is None:
            return self._records[index]  # type: ignore[index]
        spec, ref = self._manifest.ref(index)
        if spec not in self._sources:
            self._sources[spec] = open_source(spec)
        return self._sources[spec].read(ref)

    def units(self, index: int) -> str | None:
        """The record's units (``mV`` or ``z-score``; None when a signal store does not say)."""
        return self._described(index, "units", lambda record: record.units)

    def sex(self, index: int) -> str | None:
        """The patient's sex (``male`` or ``female``; None where the dataset does not say)."""
        return self._described(index, "sex", lambda record: record.meta.get("sex"))

    def _described(
        self, index: int, column: str, of_record: Callable[[ECGRecord], str | None]
    ) -> str | None:
        """What the manifest's ``column`` says of the record at ``index``, or ``of_record`` of
        the record itself for a dataset of records."""
        if self._manifest is None:
            return of_record(self._records[index])  # type: ignore[index]
        value = self._manifest.table[column].iat[index]
        return None if value is None else str(value)

    def prepared(self, index: int) -> PreprocessedECG:
        """Stage 1 of the pipeline for one record, from the cache when there is one."""
        if self._cache is not None:
            return self._cache.get(index, self.record_ids[index])
        return self.preprocessing.prepare(self.record(index))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = None
        if self.preprocessing.crop == "random":
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        window = self.preprocessing.window(self.prepared(index), rng)
        return (
            torch.from_numpy(window.x),
            torch.from_numpy(window.lead_mask),
            torch.from_numpy(self.targets[index]),
        )

    def identity(self) -> str:
        """Digest of the records' identities (source, id, length): what a cache depends on."""
        if self._manifest is not None:
            columns = ["spec", "record_id", "source", "index", "n_samples"]
            rows = self._manifest.table[columns].itertuples(index=False)
        else:
            rows = ((r.source, r.record_id, r.n_samples) for r in self._records or [])
        text = "\n".join("\t".join(map(str, row)) for row in rows)
        return hashlib.sha256(text.encode()).hexdigest()

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes open their own sources.
        return {**self.__dict__, "_sources": {}}


def multi_hot(
    record_labels: Sequence[Sequence[str]], labels: Sequence[str], label_of: LabelOf
) -> np.ndarray:
    """(n_records, n_labels) float32 targets: 1 where a record label maps to a target label."""
    column = {label: i for i, label in enumerate(labels)}
    resolved: dict[str, str | None] = {}
    targets = np.zeros((len(record_labels), len(labels)), dtype=np.float32)
    unused: set[str] = set()
    for row, strings in enumerate(record_labels):
        for text in strings:
            if text not in resolved:
                resolved[text] = label_of(text)
            target = resolved[text]
            if target in column:
                targets[row, column[target]] = 1.0
            elif target is not None:
                unused.add(target)
    if unused:
        logger.info("%d resolved labels are not targets, e.g. %s", len(unused), sorted(unused)[:5])
    return targets


def unreported_as_unknown(
    targets: np.ndarray,
    labels: Sequence[str],
    specs: Sequence[str],
    reported: Mapping[str, set[str]],
) -> np.ndarray:
    """``targets`` with NaN where a record's dataset (``specs[row]``) never reports the label."""
    out = targets.copy()
    for spec in set(specs):
        rows = np.fromiter((s == spec for s in specs), dtype=bool, count=len(specs))
        known = reported.get(spec, set())
        unknown = np.array([i for i, label in enumerate(labels) if label not in known], dtype=int)
        out[np.ix_(rows, unknown)] = np.nan
    return out


class PreparedCache:
    """Stage-1 outputs of all records as one ragged array: (12, total) signals + offsets."""

    def __init__(self, folder: Path | None, arrays: dict[str, np.ndarray] | None = None) -> None:
        self.folder = folder
        self._arrays = arrays

    @classmethod
    def build(
        cls, dataset: ECGDataset, lengths: Sequence[int], cache: str | Path, *, workers: int = 0
    ) -> PreparedCache:
        """Prepare every record of ``dataset`` into memory (``"memory"``) or a cache folder."""
        offsets = np.concatenate(([0], np.cumsum(lengths, dtype=np.int64)))
        shape = (len(STANDARD_LEADS), int(offsets[-1]))
        folder = None if str(cache) == "memory" else Path(cache)
        if folder is None:
            signals = np.empty(shape, dtype=np.float32)
        else:
            key = _cache_key(dataset)
            if _read_key(folder) == key:
                logger.info("reusing prepared ECG cache %s", folder)
                return cls(folder)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "key.json").unlink(missing_ok=True)
            signals = np.lib.format.open_memmap(
                folder / "signals.npy", mode="w+", dtype=np.float32, shape=shape
            )
        masks = np.zeros((len(lengths), len(STANDARD_LEADS)), dtype=bool)
        started = time.perf_counter()
        for index, prepared in prepared_records(dataset, workers=workers):
            start, stop = offsets[index], offsets[index + 1]
            if prepared.x.shape[-1] != stop - start:
                raise RuntimeError(
                    f"record {prepared.record_id}: prepared length {prepared.x.shape[-1]} differs "
                    f"from the expected {stop - start}"
                )
            signals[:, start:stop] = prepared.x
            masks[index] = prepared.lead_mask
        logger.info("prepared %d records in %.1f s", len(lengths), time.perf_counter() - started)
        if folder is None:
            return cls(None, {"signals": signals, "offsets": offsets, "masks": masks})
        if isinstance(signals, np.memmap):
            signals.flush()
        del signals
        np.save(folder / "offsets.npy", offsets)
        np.save(folder / "masks.npy", masks)
        (folder / "key.json").write_text(json.dumps(key))
        return cls(folder)

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The cache's arrays, memory-mapped on first use in each process."""
        if self._arrays is None:
            folder = Path(str(self.folder))
            self._arrays = {
                name.removesuffix(".npy"): np.load(folder / name, mmap_mode="r", allow_pickle=False)
                for name in _CACHE_FILES
            }
        return self._arrays

    def get(self, index: int, record_id: str) -> PreprocessedECG:
        """The prepared record at ``index``."""
        arrays = self.arrays
        start, stop = arrays["offsets"][index], arrays["offsets"][index + 1]
        return PreprocessedECG(
            np.asarray(arrays["signals"][:, start:stop]),
            np.array(arrays["masks"][index]),
            record_id,
        )

    def __getstate__(self) -> dict[str, Any]:
        # A memory-mapped cache is re-opened by each worker instead of being copied to it.
        if self.folder is not None:
            return {"folder": self.folder, "_arrays": None}
        return self.__dict__


def prepared_records(
    dataset: ECGDataset, *, workers: int = 0
) -> Iterator[tuple[int, PreprocessedECG]]:
    """Stage 1 of every record of ``dataset``, in order, by ``workers`` processes (0: this one)."""
    loader = DataLoader(
        _Preparer(dataset), batch_size=None, num_workers=workers, collate_fn=_identity
    )
    return iter(loader)


class _Preparer(Dataset[tuple[int, PreprocessedECG]]):
    """Stage 1 of every record, so a DataLoader can build a cache with worker processes."""

    def __init__(self, dataset: ECGDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, PreprocessedECG]:
        return index, self.dataset.preprocessing.prepare(self.dataset.record(index))


def _identity(item: Any) -> Any:
    return item


def _cache_key(dataset: ECGDataset) -> dict[str, Any]:
    return {
        "version": 1,
        "prepare": dataset.preprocessing.prepare_key(),
        "records": dataset.identity(),
    }


def _read_key(folder: Path) -> dict[str, Any] | None:
    path = folder / "key.json"
    if not path.is_file() or not all((folder / name).is_file() for name in _CACHE_FILES):
        return None
    return json.loads(path.read_text())


def measure_throughput(
    dataset: ECGDataset,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    max_batches: int | None = None,
) -> float:
    """Records per second that a DataLoader over ``dataset`` delivers (for benchmarks)."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    count = 0
    started = time.perf_counter()
    for batch_number, (x, _, _) in enumerate(loader):
        count += x.shape[0]
        if max_batches is not None and batch_number + 1 >= max_batches:
            break
    elapsed = time.perf_counter() - started
    return count / elapsed if elapsed > 0 else float("inf")
