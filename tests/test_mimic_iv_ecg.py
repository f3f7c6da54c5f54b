"""MIMIC-IV-ECG in its published layout: reading, labels from the machine statements, subject-level
splits, manifest updates, report texts embedded once, and pretraining against reports.

The dataset folder is built here in exactly MIMIC-IV-ECG's layout (``record_list.csv``,
``machine_measurements.csv`` with ``report_0`` ... ``report_17``, WFDB records written by
``wfdb.wrsamp`` at 500 Hz under ``files/pNNNN/pNNNNNNNN/sNNNNNNNN/``) from real 500 Hz CinC 2021
records in ../shared/data, or, where that folder is absent, from ked's packaged PTB-XL sample
resampled from 100 Hz to 500 Hz.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.signal
import torch
import wfdb

from encoders.datasets import open_manifest
from encoders.ecg import Manifest, open_source
from encoders.ecg.readers import MIMICIVECGSource, read_wfdb_signal
from encoders.ecg.sources import detect_format, sample_source
from encoders.models.ked_model import KedModel, ModelConfig
from encoders.text import Embedder, EncoderSpec
from encoders.text.reports import embed_reports
from encoders.training import LoopSettings, load_checkpoint
from encoders.training.losses import AlignmentLoss, LossWeights, report_loss
from encoders.training.report_targets import ReportTargets, manifest_reports, with_reports
from kb_store.store import KnowledgeBase
from knowledge.statements import StatementMapper, mimiciv_statement_mapper
from knowledge.vocab import load_vocabulary
from tests.conftest import SHARED_DATA
from tests.support.cli import run_ked

MIMIC_LEADS = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")
FS = 500
SAMPLES = 5000

# Machine reports in MIMIC-IV-ECG's style: one statement per report_N column, blanks between.
REPORTS: tuple[tuple[str, ...], ...] = (
    ("Sinus rhythm", "Normal ECG"),
    ("Sinus tachycardia", "Left axis deviation", "Borderline ECG"),
    ("Atrial fibrillation with rapid ventricular response", "RBBB", "Abnormal ECG"),
    (
        "Sinus rhythm",
        "Possible anterior infarct - age undetermined",
        "Inferior/lateral ST-T changes may be due to myocardial ischemia",
        "Abnormal ECG",
    ),
    ("Sinus bradycardia", "Prolonged QT interval", "Lateral T wave changes are nonspecific"),
    ("--- Pediatric criteria used ---", "Sinus rhythm", "", "Normal ECG"),
)
# (subject_id, study_id): 14 subjects, 6 of them with two studies.
STUDIES = [(10000032 + 7 * i, 40000000 + 1117 * i) for i in range(14)]
STUDIES += [(10000032 + 7 * i, 41000000 + 311 * i) for i in range(6)]


@dataclass(frozen=True)
class MimicDir:
    root: Path
    source: str  # where the signals came from


def _real_signals(count: int) -> tuple[list[np.ndarray], str]:
    """``count`` real 12-lead signals (12, 5000) in mV at 500 Hz."""
    cinc = SHARED_DATA / "cinc2021"
    signals: list[np.ndarray] = []
    if cinc.is_dir():
        for header in sorted(cinc.glob("*.hea")):
            first = header.read_text(encoding="ascii", errors="ignore").split()
            if len(first) >= 4 and first[1] == "12" and float(first[2]) == FS:
                wave = read_wfdb_signal(header)
                if wave.signal.shape[1] >= SAMPLES and np.isfinite(wave.signal).all():
                    signals.append(wave.signal[:, :SAMPLES])
            if len(signals) == count:
                return signals, f"CinC 2021 records in {cinc}"
    sample = sample_source()
    for ref in sample.refs()[:count]:
        record = sample.read(ref)
        signals.append(scipy.signal.resample(record.signal, SAMPLES, axis=1))
    return signals, "the packaged PTB-XL sample, resampled to 500 Hz"


def build_mimic_dir(root: Path) -> MimicDir:
    """A MIMIC-IV-ECG folder in the published layout (20 studies of 14 subjects)."""
    signals, origin = _real_signals(len(STUDIES))
    records, measurements = [], []
    for number, ((subject, study), signal) in enumerate(zip(STUDIES, signals, strict=True)):
        folder = Path("files") / f"p{str(subject)[:4]}" / f"p{subject}" / f"s{study}"
        (root / folder).mkdir(parents=True, exist_ok=True)
        standard = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
        order = [standard.index(lead) for lead in MIMIC_LEADS]
        wfdb.wrsamp(
            str(study),
            fs=FS,
            units=["mV"] * 12,
            sig_name=list(MIMIC_LEADS),
            p_signal=np.ascontiguousarray(signal[order].T, dtype=np.float64),
            fmt=["16"] * 12,
            adc_gain=[1000.0] * 12,
            baseline=[0] * 12,
            write_dir=str(root / folder),
        )
        time = f"2180-07-{1 + number % 28:02d} 08:{number:02d}:00"
        records.append(
            {
                "subject_id": subject,
                "study_id": study,
                "file_name": study,
                "ecg_time": time,
                "path": f"{folder.as_posix()}/{study}",
            }
        )
        statements = list(REPORTS[number % len(REPORTS)])
        row: dict[str, object] = {"subject_id": subject, "study_id": study, "cart_id": 6848296}
        row["ecg_time"] = time
        row.update(
            {f"report_{i}": (statements[i] if i < len(statements) else None) for i in range(18)}
        )
        row.update({"bandwidth": "0.005-150 Hz", "filtering": "60 Hz notch Baseline filter"})
        row.update({"rr_interval": 659, "qrs_axis": 38})
        measurements.append(row)
    pd.DataFrame(records).to_csv(root / "record_list.csv", index=False)
    pd.DataFrame(measurements).to_csv(root / "machine_measurements.csv", index=False)
    return MimicDir(root, origin)


@pytest.fixture(scope="module")
def mimic_template(tmp_path_factory: pytest.TempPathFactory) -> MimicDir:
    return build_mimic_dir(tmp_path_factory.mktemp("mimic-template") / "mimic-iv-ecg")


@pytest.fixture
def mimic(mimic_template: MimicDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MimicDir:
    """A private copy of the MIMIC folder and a private manifest cache."""
    import shutil

    monkeypatch.setenv("KED_CACHE", str(tmp_path / "cache"))
    root = Path(shutil.copytree(mimic_template.root, tmp_path / "mimic-iv-ecg"))
    return MimicDir(root, mimic_template.source)


def test_statements_map_to_mimiciv_ked_labels_through_synonyms_and_variants() -> None:
    mapper = mimiciv_statement_mapper()
    expected = {
        "Sinus rhythm": ("sinus rhythm",),
        "Atrial fibrillation with rapid ventricular response": (
            "atrial fibrillation",
            "rapid ventricular response",
        ),
        "Possible anterior infarct - age undetermined": ("anterior myocardial infarction",),
        "Inferior/lateral ST-T changes may be due to myocardial ischemia": (
            "inferior/lateral ST-T changes",
            "myocardial ischemia",
        ),
        "RBBB": ("right bundle branch block",),
        "Lateral T wave changes are nonspecific": ("non-specific lateral T wave changes",),
        "1st degree A-V block": ("first degree atrioventricular block",),
        "Sinus rhythm with PACs": ("sinus rhythm", "atrial premature complex"),
        "Low voltage, extremity and precordial leads": (
            "low voltage in the extremity leads",
            "low voltage in the precordial leads",
        ),
        "Inferior infarct, probably old": ("old inferior myocardial infarction",),
        "ST junctional depression is nonspecific": (
            "non-specific ST segment junctional depression",
        ),
    }
    for statement, labels in expected.items():
        assert mapper.match(statement).labels == labels, statement
    pediatric = mapper.match("--- Pediatric criteria used ---")
    assert not pediatric.diagnostic and pediatric.labels == () and "no finding" in pediatric.ignored
    unknown = mapper.match("Atrial flutter with 2:1 A-V conduction")
    assert unknown.labels == ("atrial flutter",) and unknown.unmatched == ("2:1 A-V conduction",)
    assert mapper.match("Pacemaker rhythm").labels == ()
    coverage = mapper.coverage()
    assert coverage.vocabulary_labels == len(load_vocabulary("mimiciv-ked")) == 105
    assert coverage.synonyms > 20 and coverage.ignore_rules > 10


def test_statement_table_rejects_unknown_labels_and_merged_labels(tmp_path: Path) -> None:
    table = tmp_path / "table.csv"
    table.write_text("kind,phrase,value\nsynonym,afib,atrial fibrilation\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown labels"):
        StatementMapper(["atrial fibrillation"], table)
    table.write_text("kind,phrase,value\nspelling,enlargement,abnormality\n", encoding="utf-8")
    with pytest.raises(ValueError, match="merges two labels"):
        StatementMapper(["left atrial abnormality", "left atrial enlargement"], table)


def test_reads_the_published_layout_with_labels_from_the_reports(mimic: MimicDir) -> None:
    assert detect_format(mimic.root) is MIMICIVECGSource
    source = open_source(f"mimic-iv-ecg:{mimic.root}")
    skipped: list = []
    records = {r.record_id: r for r in source.iter_records(skipped)}
    assert not skipped and len(records) == len(STUDIES), mimic.source
    first = records[str(STUDIES[0][1])]
    assert (first.fs, first.n_samples, first.units) == (500.0, 5000, "mV")
    assert first.leads == MIMIC_LEADS and first.patient_id == str(STUDIES[0][0])
    assert first.meta["report"] == "Sinus rhythm. Normal ECG."
    assert first.labels == ("sinus rhythm", "normal ECG")
    afib = records[str(STUDIES[2][1])]
    assert afib.labels == (
        "atrial fibrillation",
        "rapid ventricular response",
        "right bundle branch block",
        "abnormal ECG",
    )
    pediatric = records[str(STUDIES[5][1])]
    assert pediatric.meta["report"] == "Sinus rhythm. Normal ECG."  # the note is left out
    assert pediatric.labels == ("sinus rhythm", "normal ECG")
    # the signal is the one written (lead I at gain 1000/mV, 16-bit)
    written = wfdb.rdrecord(str(Path(first.source).with_suffix(""))).p_signal.T
    assert np.allclose(first.signal, written, atol=1e-3)
    assert source.reports()[str(STUDIES[3][1])].startswith("Sinus rhythm. Possible anterior")


def test_missing_and_corrupt_record_files_are_named_and_skipped(mimic: MimicDir) -> None:
    source = open_source(str(mimic.root))
    refs = source.refs()
    refs[0].path.with_suffix(".dat").unlink()
    refs[1].path.write_text("garbage header\n", encoding="ascii")
    table = pd.read_csv(mimic.root / "machine_measurements.csv")
    table[table["study_id"].astype(str) != refs[2].record_id].to_csv(
        mimic.root / "machine_measurements.csv", index=False
    )
    source = open_source(str(mimic.root))
    skipped: list = []
    records = list(source.iter_records(skipped))
    assert len(records) == len(STUDIES) - 3
    bad = {refs[0].record_id, refs[1].record_id, refs[2].record_id}
    assert {s.record_id for s in skipped} == bad
    assert all(str(mimic.root) in s.path for s in skipped)
    assert any("no row for" in s.reason for s in skipped)
    assert set(Manifest.scan(source).errors["record_id"]) == bad


def test_splits_are_by_subject_and_seeded(mimic: MimicDir) -> None:
    manifest = open_manifest(f"mimic-iv-ecg:{mimic.root}", split_seed=3)
    table = manifest.table
    assert set(table["split"]) == {"train", "val", "test"}
    assert (table.groupby("patient_id")["split"].nunique() == 1).all()
    assert table["patient_id"].value_counts().max() == 2  # subjects with two studies exist
    again = open_manifest(f"mimic-iv-ecg:{mimic.root}", split_seed=3)
    assert list(again.table["split"]) == list(table["split"])


def test_manifest_rereads_what_changed(mimic: MimicDir) -> None:
    spec = f"mimic-iv-ecg:{mimic.root}"
    path = mimic.root.parent / "manifest.parquet"
    manifest = Manifest.open(spec, path)
    source = open_source(spec)
    _, changed = manifest.refreshed(source)
    assert changed == 0
    header = source.refs()[4].path
    stat = header.stat()
    os.utime(header, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    _, changed = manifest.refreshed(source)
    assert changed == 1
    # a corrected statement changes the labels: the reports table is part of every record
    table = pd.read_csv(mimic.root / "machine_measurements.csv")
    table.loc[0, "report_1"] = "Left bundle branch block"
    table.to_csv(mimic.root / "machine_measurements.csv", index=False)
    updated = Manifest.open(spec, path)
    labels = dict(zip(updated.table["record_id"], updated.table["labels"], strict=True))
    assert labels[str(STUDIES[0][1])] == ("sinus rhythm", "left bundle branch block")


def test_distinct_reports_are_embedded_once_into_the_cache(mimic: MimicDir, kb_copy: Path) -> None:
    manifest = open_manifest(str(mimic.root))
    reports = manifest_reports(manifest)
    assert len(reports) == len(STUDIES) and all(reports)
    with KnowledgeBase(kb_copy) as kb:
        first = embed_reports(Embedder(kb, EncoderSpec()), reports)
        assert (first.total, first.distinct) == (len(STUDIES), 5)  # two reports read the same
        assert first.summary.embedded == 5 and first.ratio == 5 / len(STUDIES)
        again = embed_reports(Embedder(kb, EncoderSpec()), reports)
    assert again.summary.embedded == 0 and again.summary.cache_hits == 5
    assert not again.summary.model_loaded
    assert np.array_equal(first.vectors[first.ids], again.vectors[again.ids])
    same = [i for i, text in enumerate(reports) if text == reports[0]]
    assert len(same) > 1 and len(set(first.ids[same])) == 1


def test_pretrain_against_labels_and_reports_on_the_mimic_layout(
    mimic: MimicDir, kb_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--db", str(kb_copy), "pretrain", "--data", str(mimic.root), "--vocab"]
    common += ["mimiciv-ked", "--view", "name", "--epochs", "1", "--batch-size", "8"]
    common += ["--max-steps-per-epoch", "2", "--no-augment"]
    code, out, err = run_ked(capsys, *common, "--targets", "both", "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert "best epoch 1" in out
    lines = (tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert np.isfinite(json.loads(lines[-1])["train_loss"])
    assert load_checkpoint(tmp_path / "run").config["training"]["targets"] == "both"
    with KnowledgeBase(kb_copy, read_only=True) as kb:  # the reports went into the same cache
        cached = {row[0] for row in kb.con.execute("SELECT text FROM texts").fetchall()}
    assert {
        "Sinus rhythm. Normal ECG.",
        "Sinus tachycardia. Left axis deviation. Borderline ECG.",
    } <= cached
    code, _, err = run_ked(
        capsys, "--db", str(kb_copy), "pretrain", "--data", "sample", "--vocab", "ptbxl",
        "--view", "name", "--targets", "reports", "--out", str(tmp_path / "bad"),
    )  # fmt: skip
    assert code == 2 and "no training record of sample has a report" in err
    assert "Traceback" not in err and "Loading weights" not in err  # refused before any work


def test_report_term_pulls_recordings_to_their_own_report() -> None:
    reports = torch.eye(3)
    ids = torch.tensor([0, 0, 2, -1])
    matched = torch.stack([reports[0], reports[0], reports[2], reports[1]])
    swapped = torch.stack([reports[2], reports[2], reports[0], reports[1]])
    assert report_loss(matched, reports, ids, 0.1) < report_loss(swapped, reports, ids, 0.1)
    assert report_loss(matched, reports, torch.full((4,), -1), 0.1) == 0
    weights = LossWeights(bce=0.0, contrastive=0.0, report=1.0)
    with pytest.raises(ValueError, match="report vectors"):
        AlignmentLoss(weights)
    loss = AlignmentLoss(weights, reports)
    logits, labels, targets = torch.zeros(4, 2), torch.eye(2, 3), torch.zeros(4, 2)
    terms = loss(logits, matched.requires_grad_(), labels, targets, ids)
    assert terms["loss"] == terms["report"] > 0


def test_report_vectors_are_standardised_like_the_label_vectors() -> None:
    config = ModelConfig(encoder="xresnet1d_small", text_dim=16, center_labels=True)
    model = KedModel(replace(config, whiten_labels=0.1))
    texts = torch.nn.functional.normalize(torch.randn(30, 16) + 2.0, dim=-1)
    model.fit_label_space(texts)
    reports = ReportTargets(texts[:4].numpy(), np.array([0, 1, 2, 3]), total=4, distinct=4)
    _, loss = with_reports(model, [None] * 4, reports, LoopSettings())  # type: ignore[arg-type]
    assert loss is not None and loss.reports is not None
    expected = model.adapter(model.standardize_texts(texts[:4]))  # the label side's transform
    torch.testing.assert_close(loss.reports, expected.detach())
    assert not torch.allclose(
        loss.reports, torch.nn.functional.normalize(texts[:4] - texts.mean(0))
    )
