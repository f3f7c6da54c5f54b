"""From a dataset spec and a label set to train/val datasets with knowledge-base targets."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from encoders.ecg import ECGDataset, Manifest, Preprocessing
from encoders.text.labels import LabelEntry
from kb_store.store import KnowledgeBase
from knowledge.names import normalize_name

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where ked keeps manifests and prepared-signal caches (``KED_CACHE``, ~/.cache/ked)."""
    return Path(os.environ.get("KED_CACHE") or Path.home() / ".cache" / "ked").expanduser()


def open_manifest(spec: str, *, rescan: bool = False, split_seed: int = 0) -> Manifest:
    """The dataset's readable records with train/val/test splits, from its saved manifest
    brought up to date (only new and changed records are read; all of them with ``rescan``).
    Unreadable records are left out with a warning naming them."""
    path = _manifest_path(spec)
    manifest = Manifest.open(spec, path, rescan=rescan)
    errors = manifest.errors
    if len(errors):
        named = "; ".join(f"{e.record_id} ({e.error})" for e in errors.head(5).itertuples())
        log.warning(
            "%d unreadable records in %s are skipped: %s%s (all in the manifest %s)",
            len(errors),
            spec,
            named,
            " ..." if len(errors) > 5 else "",
            path,
        )
    return manifest.ok.with_splits(seed=split_seed)


def rescan_manifests(specs: Iterable[str]) -> None:
    """Read every record of the datasets again and save their manifests (``--rescan``).

    Under torchrun only the first process scans; the others open the fresh manifests after it.
    """
    if os.environ.get("RANK", "0") != "0":
        return
    for spec in specs:
        Manifest.open(spec, _manifest_path(spec), rescan=True)


def _manifest_path(spec: str) -> Path:
    key = hashlib.sha256(_spec_identity(spec).encode()).hexdigest()[:16]
    return cache_dir() / "manifests" / f"{key}.parquet"


def _spec_identity(spec: str) -> str:
    kind, sep, rest = spec.partition(":")
    target = rest if sep and not Path(spec).exists() else spec
    resolved = str(Path(target).expanduser().resolve()) if target != "sample" else "sample"
    return f"{kind if sep else ''}:{resolved}"


def target_labels(
    kb: KnowledgeBase, entries: Sequence[LabelEntry], record_labels: Iterable[str]
) -> dict[str, str]:
    """Map each record label string to the target label it counts for.

    A record label that is literally one of the targets' queries (``SNOMED:713427006``) maps to
    that target; otherwise it maps to the first target naming the same diagnosis.
    """
    by_query = {normalize_name(e.query): e.label for e in entries}
    by_diagnosis: dict[int, str] = {}
    for entry in entries:
        if entry.diagnosis_id is not None:
            by_diagnosis.setdefault(entry.diagnosis_id, entry.label)
    distinct = sorted(set(record_labels))
    resolved = kb.resolve_many(distinct)
    mapping = {}
    for label in distinct:
        if normalize_name(label) in by_query:
            mapping[label] = by_query[normalize_name(label)]
        elif (diagnosis := resolved[label]) is not None and diagnosis.id in by_diagnosis:
            mapping[label] = by_diagnosis[diagnosis.id]
    return mapping


def record_label_strings(manifest: Manifest) -> set[str]:
    return {label for labels in manifest.table["labels"] for label in labels}


def datasets(
    manifest: Manifest,
    labels: Sequence[str],
    mapping: dict[str, str],
    preprocessing: Preprocessing,
    *,
    splits: Sequence[str] = ("train", "val"),
) -> dict[str, ECGDataset]:
    """One dataset per split; training crops at random, evaluation from the start."""
    out = {}
    for split in splits:
        part = manifest.split(split)
        if len(part) == 0:
            raise ValueError(f"the {split} split is empty")
        crop = preprocessing if split == "train" else evaluation_preprocessing(preprocessing)
        out[split] = ECGDataset(part, crop, labels, mapping.get, cache="memory")
    return out


def evaluation_preprocessing(preprocessing: Preprocessing) -> Preprocessing:
    """The same pipeline with a deterministic crop (from the start) for scoring."""
    return replace(preprocessing, crop="start") if preprocessing.crop == "random" else preprocessing
