"""From dataset specs and a label set to labelled datasets with knowledge-base targets.

Shared by training (pretraining, fine-tuning) and inference (evaluation, zero-shot), which
must not import each other's stage: manifests, splits, record-label mapping, label masks
across datasets and the held-out label closure live here.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from encoders.ecg import ECGDataset, Manifest, Preprocessing
from encoders.ecg.signal_store import BuildSummary, SignalStore, build_store
from encoders.text.labels import LabelEntry
from kb_store.store import KnowledgeBase
from knowledge.names import normalize_name
from knowledge.vocab import load_vocabulary, ptbxl_group_queries, ptbxl_groups_of

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where ked keeps manifests and prepared-signal caches (``KED_CACHE``, ~/.cache/ked)."""
    return Path(os.environ.get("KED_CACHE") or Path.home() / ".cache" / "ked").expanduser()


_READERS_VERSION = "2"
"""Part of a manifest's cache key: bumped when readers change what they record (v2: PTB-XL
diagnostic classes as labels), so an old manifest is rescanned instead of reused."""


def open_manifests(specs: Sequence[str], *, split_seed: int = 0) -> Manifest:
    """The manifests of several datasets as one (each split per dataset), in the given order."""
    if not specs:
        raise ValueError("give at least one dataset")
    return Manifest.concat([open_manifest(spec, split_seed=split_seed) for spec in specs])


def open_manifest(spec: str, *, rescan: bool = False, split_seed: int = 0) -> Manifest:
    """The dataset's readable records with train/val/test splits, from its saved manifest
    brought up to date (only new and changed records are read; all of them with ``rescan``).
    Unreadable records are left out with a warning naming them."""
    return _readable(spec, rescan=rescan).with_splits(seed=split_seed)


def _readable(spec: str, *, rescan: bool = False) -> Manifest:
    """The dataset's readable records from its up-to-date manifest, splits as it defines them."""
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
    return manifest.ok


def build_signal_store(
    specs: Sequence[str],
    out: str | Path,
    preprocessing: Preprocessing | None = None,
    *,
    workers: int = 0,
    rescan: bool = False,
    on_record: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> BuildSummary:
    """Write or update the on-disk signal store of several datasets (`signal_store`): their
    manifests are brought up to date first, so only new and changed records are prepared.
    ``on_total(n)`` learns the record count once the manifests are read."""
    if not specs:
        raise ValueError("give at least one dataset")
    manifest = Manifest.concat([_readable(spec, rescan=rescan) for spec in specs])
    if on_total:
        on_total(len(manifest))
    return build_store(
        manifest, out, preprocessing or Preprocessing(), workers=workers, on_record=on_record
    )


def store_manifest(store: SignalStore, *, split_seed: int = 0) -> Manifest:
    """A store's records with train/val/test splits, as `open_manifests` gives its sources'."""
    return store.manifest().with_splits(seed=split_seed)


def rescan_manifests(specs: Iterable[str]) -> None:
    """Read every record of the datasets again and save their manifests (``--rescan``).

    Under torchrun only the first process scans; the others open the fresh manifests after it.
    """
    if os.environ.get("RANK", "0") != "0":
        return
    for spec in specs:
        Manifest.open(spec, _manifest_path(spec), rescan=True)


def _manifest_path(spec: str) -> Path:
    identity = f"{_READERS_VERSION}:{_spec_identity(spec)}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
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


def held_out_diagnoses(kb: KnowledgeBase, holdout: Sequence[str]) -> set[int]:
    """Diagnosis ids kept out of training: the held-out labels and every PTB-XL class or
    sub-class that contains one (holding out complete LBBB also holds out conduction
    disturbance, whose positives include every LBBB record)."""
    resolved = kb.resolve_many(holdout)
    missing = [label for label, diagnosis in resolved.items() if diagnosis is None]
    if missing:
        raise ValueError(f"held-out labels not found: {', '.join(missing)}")
    held = {diagnosis.id for diagnosis in resolved.values() if diagnosis is not None}
    statements = load_vocabulary("ptbxl").labels
    by_statement = kb.resolve_many([s.query for s in statements])
    groups = ptbxl_group_queries()
    containing = {
        groups[group]
        for s in statements
        if (d := by_statement[s.query]) is not None and d.id in held
        for group in ptbxl_groups_of(s.code or "")
        if group in groups
    }
    held |= {d.id for d in kb.resolve_many(sorted(containing)).values() if d is not None}
    return held


def record_label_strings(manifest: Manifest) -> set[str]:
    return {label for labels in manifest.table["labels"] for label in labels}


def reported_labels(manifest: Manifest, mapping: dict[str, str]) -> dict[str, set[str]]:
    """Per dataset spec, the target labels it reports at least once (in any split).

    A dataset that never reports a label could not have: its records are unknown for that
    label, not negative (CODE-15 has no label for ST elevation, PTB-XL no label for pacing
    spikes in this sample), and the loss leaves those pairs out.
    """
    out: dict[str, set[str]] = {}
    for spec, labels in zip(manifest.table["spec"], manifest.table["labels"], strict=True):
        out.setdefault(str(spec), set()).update(
            mapping[label] for label in labels if label in mapping
        )
    return out


def datasets(
    manifest: Manifest,
    labels: Sequence[str],
    mapping: dict[str, str],
    preprocessing: Preprocessing,
    *,
    splits: Sequence[str] = ("train", "val"),
    store: SignalStore | None = None,
) -> dict[str, ECGDataset]:
    """One dataset per split; training crops at random, evaluation from the start.

    With several datasets in ``manifest``, a label that a dataset never reports is unknown
    (NaN target) for that dataset's records, so the loss does not count it as negative.
    The prepared signals stay in memory, or, with a ``store`` (whose `store_manifest` is
    ``manifest``), on disk, memory-mapped.
    """
    reported = reported_labels(manifest, mapping)
    mask = len(reported) > 1
    out = {}
    for split in splits:
        part = manifest.split(split)
        if len(part) == 0:
            raise ValueError(f"the {split} split is empty")
        crop = preprocessing if split == "train" else evaluation_preprocessing(preprocessing)
        prepared = None if store is None else store.view(part.table["store_row"].to_numpy())
        out[split] = ECGDataset(
            part,
            crop,
            labels,
            mapping.get,
            cache="memory" if prepared is None else None,
            prepared=prepared,
            reported=reported if mask else None,
        )
    return out


def evaluation_preprocessing(preprocessing: Preprocessing) -> Preprocessing:
    """The same pipeline with a deterministic crop (from the start) for scoring."""
    return replace(preprocessing, crop="start") if preprocessing.crop == "random" else preprocessing
