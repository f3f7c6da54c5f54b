"""Zero-shot diagnosis: score recordings against any diagnosis written in words.

Each label resolves to a diagnosis in the knowledge base; a label without knowledge gets it
from the configured LLM, or falls back to its bare name with a warning. Label vectors come
from the cache with the checkpoint's own text encoder: a different fingerprint is an error,
never a silent mix of vector spaces. Several views can be ensembled by averaging their
vectors or their scores.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd
import torch

from encoders.datasets import evaluation_preprocessing
from encoders.ecg import ECGDataset, ECGRecord
from encoders.ecg.rhythm import RhythmMeasurement, measure_prepared
from encoders.evaluation.label_space import LabelSpace
from encoders.inference.criteria import criteria_log_prior
from encoders.inference.predict import predict
from encoders.models.checkpoint import Checkpoint
from encoders.text import Embedder, EncoderSpec, LabelEntry, label_entries, label_matrix
from kb_store.connection import ReadOnlyError
from kb_store.embeddings import EncoderMismatchError
from kb_store.store import KnowledgeBase
from knowledge.generate import generate_knowledge
from knowledge.leads import STANDARD_LEADS
from knowledge.llm import KnowledgeClient, LLMSettings
from knowledge.schema import DiagnosisKnowledge
from knowledge.views import check_view

log = logging.getLogger(__name__)

Ensemble = Literal["vectors", "scores"]
LLMProvider = tuple[LLMSettings, str | None]  # settings and API key


def text_spec(checkpoint: Checkpoint) -> EncoderSpec:
    """The text-encoder settings a checkpoint was trained with."""
    info = checkpoint.text_encoder
    return EncoderSpec(
        model=info["model"],
        backend=info["backend"],
        pooling=info["pooling"] if info["backend"] == "transformers" else None,
        normalize=info["normalize"],
        max_length=info["max_length"],
        dtype=info["dtype"],
        long_texts=info.get("long_texts", "truncate"),
    )


@dataclass
class LabelVectors:
    entries: list[LabelEntry]
    views: list[str]
    per_view: dict[str, torch.Tensor]  # view -> (C, D)
    fallback: list[str]  # labels scored by their bare name (no knowledge)
    knowledge: list[DiagnosisKnowledge | None]  # each label's current record, if any

    def resolved(self) -> LabelVectors:
        """Only the labels that resolve to a diagnosis, in the same order."""
        rows = [i for i, e in enumerate(self.entries) if e.diagnosis_id is not None]
        return replace(
            self,
            entries=[self.entries[i] for i in rows],
            per_view={view: vectors[rows] for view, vectors in self.per_view.items()},
            knowledge=[self.knowledge[i] for i in rows],
        )

    def combined(self) -> torch.Tensor:
        """The mean of the per-view vectors, renormalised (a single view as it is)."""
        if len(self.per_view) == 1:
            return next(iter(self.per_view.values()))
        mean = torch.stack(list(self.per_view.values())).mean(0)
        return torch.nn.functional.normalize(mean, dim=-1)


class ZeroShotClassifier:
    """A checkpoint plus a knowledge base: ``predict(signals, labels)`` for any labels."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        kb: KnowledgeBase,
        *,
        llm: LLMProvider | None = None,
        device: str | None = None,
    ) -> None:
        self.checkpoint = checkpoint
        self.kb = kb
        self.llm = llm
        self.device = torch.device(device or "cpu")
        self.model = checkpoint.model.to(self.device).eval()
        self.embedder = Embedder(kb, text_spec(checkpoint), device=device)
        expected = checkpoint.text_encoder.get("fingerprint")
        if expected != self.embedder.fingerprint:
            raise EncoderMismatchError(
                f"checkpoint {checkpoint.path} was trained with text encoder "
                f"{str(expected)[:12]} but {checkpoint.text_encoder['model']!r} with the same "
                f"settings gives {self.embedder.fingerprint[:12]} here (other model files?); "
                "its vectors would not match the model's label space"
            )

    def label_vectors(
        self,
        *,
        labels: Sequence[str] = (),
        vocab: str | None = None,
        views: Sequence[str] = ("full",),
    ) -> LabelVectors:
        """Vectors of each view for the labels, generating or falling back where needed."""
        for view in views:
            check_view(view)
        entries = label_entries(self.kb, vocab=vocab, labels=labels)
        entries = self._with_knowledge(entries, labels if vocab is None else [])
        known = self.kb.usable_many(e.diagnosis_id for e in entries if e.diagnosis_id)
        fallback = [e.label for e in entries if e.diagnosis_id not in known]
        per_view = {
            view: label_matrix(self.embedder, entries, [view], fallback_to_name=True).tensor()
            for view in views
        }
        records = [
            known[e.diagnosis_id].record if e.diagnosis_id in known else None for e in entries
        ]
        vectors = LabelVectors(entries, list(views), per_view, fallback, records)
        return self._with_learned_head(vectors)

    @torch.inference_mode()
    def scoring_space(self, vectors: LabelVectors) -> LabelSpace:
        """The label vectors as this model scores them (centred, adapted): where zero-shot
        separates labels or not, which can differ from the raw text space."""
        space = self.model.label_space(vectors.combined().to(self.device)).cpu().numpy()
        return LabelSpace(
            [e.label for e in vectors.entries],
            space,
            "+".join(vectors.views),
            [e.diagnosis for e in vectors.entries],
        )

    def _with_learned_head(self, vectors: LabelVectors) -> LabelVectors:
        """A fine-tuned checkpoint scores its own labels with the label vectors it learned.

        Only labels it was tuned on, and only with the views it was tuned with; other labels
        keep their text vectors (zero-shot). A pretrained checkpoint's vectors are the text
        vectors themselves, recomputed here so that updated knowledge takes effect.
        """
        checkpoint = self.checkpoint
        learned = str(checkpoint.config.get("kind", "")).startswith("finetune")
        if not learned or vectors.views != checkpoint.views:
            return vectors
        row_of = {e.diagnosis_id: i for i, e in enumerate(checkpoint.entries)}
        combined = vectors.combined().clone()
        replaced = 0
        for i, entry in enumerate(vectors.entries):
            if entry.diagnosis_id in row_of:
                combined[i] = checkpoint.label_vectors[row_of[entry.diagnosis_id]]
                replaced += 1
        log.info("%d labels scored with the checkpoint's fine-tuned label vectors", replaced)
        return replace(vectors, per_view={"+".join(vectors.views): combined})

    def _with_knowledge(
        self, entries: list[LabelEntry], free_labels: Sequence[str]
    ) -> list[LabelEntry]:
        """Generate knowledge for free-text labels that have none, when an LLM is configured."""
        missing = [e.label for e in entries if e.diagnosis_id is None and e.label in free_labels]
        if not missing:
            return entries
        if self.llm is None:
            log.warning(
                "no knowledge for %s and no LLM provider configured: scoring the bare names "
                "(set OPENAI_BASE_URL or OPENAI_API_KEY to generate knowledge)",
                ", ".join(missing),
            )
            return entries
        if self.kb.read_only:
            raise ReadOnlyError(f"knowledge to generate for {', '.join(missing)}")
        settings, key = self.llm

        async def run() -> None:
            client = KnowledgeClient(settings, api_key=key)
            try:
                summary = await generate_knowledge(self.kb, client, missing)
            finally:
                await client.aclose()
            if summary.failed:
                log.warning("knowledge generation failed for %s", ", ".join(summary.failed))

        asyncio.run(run())
        return label_entries(self.kb, labels=[e.label for e in entries])

    def scores(
        self,
        data: ECGDataset,
        vectors: LabelVectors,
        ensemble: Ensemble = "vectors",
        batch_size: int = 64,
        measured_criteria: bool = False,
        measured: Sequence[RhythmMeasurement] | None = None,
    ) -> np.ndarray:
        """Logits (N, C) of the dataset's recordings for the labels; with ``measured_criteria``
        plus each label's `criteria_prior` (from ``measured``, if `measure` already ran)."""
        if ensemble == "vectors" or len(vectors.per_view) == 1:
            logits = predict(self.model, data, vectors.combined(), batch_size, self.device)[0]
        else:
            per_view = [
                predict(self.model, data, v, batch_size, self.device)[0]
                for v in vectors.per_view.values()
            ]
            logits = np.mean(per_view, axis=0)
        if not measured_criteria:
            return logits
        return logits + self.criteria_prior(data, vectors, measured)

    def criteria_prior(
        self,
        data: ECGDataset,
        vectors: LabelVectors,
        measured: Sequence[RhythmMeasurement] | None = None,
    ) -> np.ndarray:
        """(N, C) log-compatibility of what is measured from each recording (``measured``, or
        `measure` now) with what each label's knowledge states (`encoders.inference.criteria`);
        add it to `scores`."""
        return criteria_log_prior(
            vectors.knowledge, self.measure(data) if measured is None else measured
        )

    def measure(self, data: ECGDataset) -> list[RhythmMeasurement]:
        """What the measured criteria read from each recording's preprocessed window (wave
        amplitudes only for records in millivolts), with the patient's sex where known."""
        return [
            measure_prepared(data.preprocessing, data.prepared(i), data.units(i), data.sex(i))
            for i in range(len(data))
        ]

    def predict(
        self,
        signals: np.ndarray | Sequence[ECGRecord],
        labels: Sequence[str],
        *,
        fs: float | None = None,
        views: Sequence[str] = ("full",),
        ensemble: Ensemble = "vectors",
        record_ids: Sequence[str] | None = None,
        units: str = "mV",
        bandpass_hz: tuple[float, float] | None = None,
        measured_criteria: bool = True,
    ) -> pd.DataFrame:
        """A tidy table (record_id, label, diagnosis, score, probability) for raw signals.

        With ``measured_criteria`` what each label's knowledge states is checked against the
        recording's measurements (`criteria_prior`, `encoders.inference.criteria`).

        ``signals`` is an array (N, 12, T) in standard lead order sampled at ``fs`` (default:
        the checkpoint's rate) in ``units`` (``mV`` or ``z-score``), already filtered to
        ``bandpass_hz`` if given, or a sequence of :class:`ECGRecord`.
        """
        rate = fs or self.checkpoint.preprocessing.fs
        records = _as_records(signals, rate, record_ids, units, bandpass_hz)
        vectors = self.label_vectors(labels=labels, views=views)
        data = ECGDataset(
            records, evaluation_preprocessing(self.checkpoint.preprocessing), [], lambda _: None
        )
        logits = self.scores(data, vectors, ensemble, measured_criteria=measured_criteria)
        return tidy(data.record_ids, vectors.entries, logits)


def tidy(
    record_ids: Sequence[str],
    entries: Sequence[LabelEntry],
    logits: np.ndarray,
    targets: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per (recording, label) with the logit and its probability."""
    n, c = logits.shape
    table = pd.DataFrame(
        {
            "record_id": np.repeat(list(record_ids), c),
            "label": [e.label for e in entries] * n,
            "diagnosis": [e.diagnosis for e in entries] * n,
            "score": logits.reshape(-1),
            "probability": 1 / (1 + np.exp(-logits.reshape(-1))),
        }
    )
    if targets is not None:
        table["target"] = targets.reshape(-1).astype(int)
    return table


def measurement_table(
    record_ids: Sequence[str], measured: Sequence[RhythmMeasurement]
) -> pd.DataFrame:
    """One row per recording: rate, RR irregularity and range, premature beats, QRS duration,
    PR interval, QRS axis, P-wave strength, QT and QTc, and per lead the T-wave polarity and
    size, ST level, pathological Q wave, terminal R' and the R, S, QRS and P amplitudes in mV
    (NaN for records not in millivolts), and the patient's sex where the record states it."""
    rows = []
    for record_id, m in zip(record_ids, measured, strict=True):
        row: dict[str, object] = {"record_id": record_id}
        for name, value in asdict(m).items():
            if isinstance(value, tuple):  # per lead
                values = zip(STANDARD_LEADS, m.per_lead(name), strict=True)
                row |= {f"{name}_{lead}": v for lead, v in values}
            else:
                row[name] = value
        rows.append(row)
    return pd.DataFrame(rows)


def _as_records(
    signals: np.ndarray | Sequence[ECGRecord],
    fs: float,
    record_ids: Sequence[str] | None,
    units: str,
    bandpass_hz: tuple[float, float] | None,
) -> list[ECGRecord]:
    if not isinstance(signals, np.ndarray):
        return list(signals)
    if signals.ndim != 3 or signals.shape[1] != 12:
        raise ValueError(f"signals must be (N, 12, T) in standard lead order, got {signals.shape}")
    ids = list(record_ids) if record_ids is not None else [str(i) for i in range(len(signals))]
    return [
        ECGRecord(rid, s, fs, STANDARD_LEADS, units, (), None, "array", "array", {}, bandpass_hz)
        for rid, s in zip(ids, signals, strict=True)
    ]
