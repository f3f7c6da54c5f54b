"""Metrics, bootstrap intervals, validation thresholds, prediction files, reports and plots."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    auc,
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from encoders.evaluation import (
    BootstrapSettings,
    Estimate,
    EvaluationResult,
    choose_thresholds,
    evaluate,
    plot_auroc_bars,
    plot_roc_curves,
    read_predictions,
    report_dict,
    write_predictions,
    write_report,
)
from encoders.evaluation.bootstrap import resample_counts
from encoders.evaluation.metrics import roc_points

PNG = b"\x89PNG\r\n\x1a\n"


def simulate(
    n: int, labels: int, seed: int, *, decimals: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Scores that carry some signal about 0/1 targets; ``decimals`` makes many ties."""
    rng = np.random.default_rng(seed)
    prevalence = rng.uniform(0.03, 0.4, labels)
    targets = (rng.random((n, labels)) < prevalence).astype(np.int64)
    scores = targets * rng.uniform(0.3, 1.5, labels) + rng.normal(0.0, 1.0, (n, labels))
    if decimals is not None:
        scores = np.round(scores, decimals)
    return scores, targets, [f"label {j}" for j in range(labels)]


def interval(estimate: Estimate) -> tuple[float, float, float]:
    """(low, value, high) of an estimate that must be defined with an interval."""
    assert estimate.value is not None and estimate.low is not None and estimate.high is not None
    return estimate.low, estimate.value, estimate.high


@pytest.mark.parametrize("decimals", [None, 1])
def test_point_estimates_equal_sklearn(decimals: int | None) -> None:
    scores, targets, labels = simulate(400, 12, seed=1, decimals=decimals)
    result = evaluate(scores, targets, labels, bootstrap=BootstrapSettings(resamples=50))
    for j, row in enumerate(result.labels):
        assert row.label == labels[j]
        assert row.positives == targets[:, j].sum()
        assert row.auroc.value == pytest.approx(roc_auc_score(targets[:, j], scores[:, j]), 1e-12)
        expected_ap = average_precision_score(targets[:, j], scores[:, j])
        assert row.auprc.value == pytest.approx(expected_ap, abs=1e-12)
    assert result.macro["auroc"].estimate.value == pytest.approx(
        roc_auc_score(targets, scores, average="macro"), abs=1e-12
    )
    assert result.micro["auroc"].estimate.value == pytest.approx(
        roc_auc_score(targets, scores, average="micro"), abs=1e-12
    )
    assert result.macro["auprc"].estimate.value == pytest.approx(
        average_precision_score(targets, scores, average="macro"), abs=1e-12
    )
    assert result.micro["auprc"].estimate.value == pytest.approx(
        average_precision_score(targets, scores, average="micro"), abs=1e-12
    )


def test_each_resample_is_the_metric_of_recordings_drawn_with_replacement() -> None:
    scores, targets, labels = simulate(150, 4, seed=2, decimals=1)
    settings = BootstrapSettings(resamples=30, seed=5)
    result = evaluate(scores, targets, labels, bootstrap=settings)
    counts = resample_counts(len(scores), settings)
    assert counts.sum(axis=1) == pytest.approx(np.full(30, 150.0))
    for b in range(10):
        drawn = np.repeat(np.arange(len(scores)), counts[b].astype(int))
        for j in range(len(labels)):
            expected = roc_auc_score(targets[drawn, j], scores[drawn, j])
            assert result.samples["auroc"][b, j] == pytest.approx(expected, abs=1e-12)
            expected = average_precision_score(targets[drawn, j], scores[drawn, j])
            assert result.samples["auprc"][b, j] == pytest.approx(expected, abs=1e-12)


def test_intervals_contain_the_point_and_narrow_with_more_recordings() -> None:
    widths = []
    for n in (200, 2000):
        scores, targets, labels = simulate(n, 8, seed=3)
        result = evaluate(scores, targets, labels)
        estimates = [e for row in result.labels for e in (row.auroc, row.auprc)]
        estimates += [m.estimate for m in (*result.macro.values(), *result.micro.values())]
        for estimate in estimates:
            low, value, high = interval(estimate)
            assert low <= value <= high
        low, _, high = interval(result.macro["auroc"].estimate)
        widths.append(high - low)
    assert widths[1] < 0.6 * widths[0]


def test_bootstrap_is_seeded() -> None:
    scores, targets, labels = simulate(300, 5, seed=4)

    def run(seed: int) -> dict:
        return evaluate(scores, targets, labels, bootstrap=BootstrapSettings(seed=seed)).to_dict()

    assert run(7) == run(7)
    other = run(8)
    assert other["macro"]["auroc"]["value"] == run(7)["macro"]["auroc"]["value"]
    assert other["macro"]["auroc"]["low"] != run(7)["macro"]["auroc"]["low"]


def test_single_class_labels_are_undefined_listed_and_not_averaged() -> None:
    scores, targets, labels = simulate(300, 6, seed=5)
    targets[:, 1] = 0  # no positives
    targets[:, 3] = 1  # no negatives
    targets[:, 4] = 0
    targets[17, 4] = 1  # one positive: single-class in about a third of the resamples
    result = evaluate(scores, targets, labels)
    assert result.undefined == {"label 1": "no positives", "label 3": "no negatives"}
    assert [row.label for row in result.labels] == labels
    for j in (1, 3):
        row = result.labels[j]
        assert row.auroc.value is None and row.auprc.value is None and row.auroc.resamples == 0
    defined = [0, 2, 4, 5]
    macro = result.macro["auroc"]
    assert macro.labels == 4 and set(macro.excluded) == {"label 1", "label 3"}
    expected = np.mean([roc_auc_score(targets[:, j], scores[:, j]) for j in defined])
    assert macro.estimate.value == pytest.approx(expected, abs=1e-12)
    rare = result.row("label 4").auroc
    assert 500 < rare.resamples < 750  # resamples that drew recording 17 at least once
    assert macro.partial_resamples == 1000 - rare.resamples
    group = result.macro_over(["label 0", "label 1"])
    assert group.labels == 1 and group.excluded == ("label 1",)
    assert group.estimate.value == pytest.approx(result.row("label 0").auroc.value)
    assert json.loads(json.dumps(result.to_dict()))["undefined"] == result.undefined


def test_thresholds_come_from_validation_only() -> None:
    rng = np.random.default_rng(6)
    labels = ["a", "b"]
    val_targets = (rng.random((300, 2)) < 0.3).astype(int)
    test_targets = (rng.random((300, 2)) < 0.3).astype(int)
    val_scores = val_targets * 1.0 + rng.normal(0, 0.8, (300, 2))
    test_scores = test_targets * 1.0 + rng.normal(0, 0.8, (300, 2)) + 0.7  # shifted on test
    result = evaluate(test_scores, test_targets, labels, validation=(val_scores, val_targets))
    chosen_on_val = choose_thresholds(val_scores, val_targets, labels)
    chosen_on_test = choose_thresholds(test_scores, test_targets, labels)
    assert result.thresholds is not None and result.thresholds_note is None
    for j, row in enumerate(result.thresholds.labels):
        threshold = row.threshold.value
        assert threshold is not None
        assert threshold == chosen_on_val[j].value != chosen_on_test[j].value
        candidates = np.unique(val_scores[:, j])
        f1s = [f1_score(val_targets[:, j], val_scores[:, j] >= t) for t in candidates]
        assert row.threshold.validation_f1 == pytest.approx(max(f1s))
        predicted = test_scores[:, j] >= threshold
        assert row.f1.value == pytest.approx(f1_score(test_targets[:, j], predicted))
        assert row.sensitivity.value == pytest.approx(recall_score(test_targets[:, j], predicted))
        assert row.specificity.value == pytest.approx(
            recall_score(1 - test_targets[:, j], ~predicted)
        )
        assert row.precision.value == pytest.approx(precision_score(test_targets[:, j], predicted))
        low, value, high = interval(row.f1)
        assert low <= value <= high
    assert result.thresholds.validation_recordings == 300

    without = evaluate(test_scores, test_targets, labels)
    assert without.thresholds is None and "never on test" in str(without.thresholds_note)
    assert without.to_dict()["thresholds"] is None


def test_labels_undefined_on_validation_get_no_threshold() -> None:
    scores, targets, labels = simulate(200, 3, seed=7)
    val_scores, val_targets, _ = simulate(100, 3, seed=8)
    val_targets[:, 2] = 0
    result = evaluate(scores, targets, labels, validation=(val_scores, val_targets))
    assert result.thresholds is not None
    row = result.thresholds.labels[2]
    assert row.threshold.value is None
    assert row.threshold.undefined == "no positives in validation"
    assert row.f1.value is None and row.sensitivity.value is None
    assert result.thresholds.macro["f1"].excluded == ("label 2",)
    with pytest.raises(ValueError, match="validation: 2 label columns but 3 labels"):
        evaluate(scores, targets, labels, validation=(val_scores[:, :2], val_targets[:, :2]))


def test_inputs_are_checked() -> None:
    scores, targets, labels = simulate(50, 3, seed=9)
    with pytest.raises(ValueError, match="2 labels"):
        evaluate(scores, targets, labels[:2])
    bad = scores.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="recording 4, label 'label 1'"):
        evaluate(bad, targets, labels)
    with pytest.raises(ValueError, match="0 or 1"):
        evaluate(scores, targets * 2, labels)
    with pytest.raises(ValueError, match="validation: no recordings"):
        evaluate(scores, targets, labels, validation=(scores[:0], targets[:0]))


def test_prediction_files_round_trip_and_recompute_the_same_numbers(tmp_path: Path) -> None:
    scores, targets, labels = simulate(120, 5, seed=10)
    scores = scores.astype(np.float32)
    record_ids = [f"rec{i:04d}" for i in range(120)]
    stem = tmp_path / "run.v1" / "test"
    npz, table = write_predictions(stem, record_ids, labels, scores, targets)
    assert (npz.name, table.name) == ("test.npz", "test.csv")
    tidy = pd.read_csv(table)
    assert list(tidy.columns) == ["record_id", "label", "score", "target"]
    assert len(tidy) == 120 * 5
    settings = BootstrapSettings(resamples=200)
    original = evaluate(scores, targets, labels, bootstrap=settings).to_dict()
    for path in (npz, table, stem):
        back = read_predictions(path)
        assert back.record_ids == record_ids and back.labels == labels
        assert np.array_equal(back.scores.astype(np.float32), scores)
        assert np.array_equal(back.targets, targets)
        again = evaluate(back.scores, back.targets, back.labels, bootstrap=settings)
        assert again.to_dict() == original


def two_conditions() -> tuple[dict[str, EvaluationResult], dict]:
    scores, targets, labels = simulate(250, 6, seed=11)
    targets[:, 5] = 0
    rng = np.random.default_rng(12)
    worse = scores + rng.normal(0, 1.5, scores.shape)
    val_scores, val_targets, _ = simulate(100, 6, seed=13)
    settings = BootstrapSettings(resamples=200)
    conditions = {
        "knowledge views": evaluate(
            scores, targets, labels, validation=(val_scores, val_targets), bootstrap=settings
        ),
        "name view": evaluate(worse, targets, labels, bootstrap=settings),
    }
    data = {"scores": scores, "worse": worse, "targets": targets, "labels": labels}
    return conditions, data


def test_report_has_conditions_groups_flags_and_undefined_labels(tmp_path: Path) -> None:
    conditions, _ = two_conditions()
    flags = {"label 1": "nearest label 'label 2' at cosine 0.97"}
    groups = {
        "seen in pretraining": ["label 0", "label 1", "label 2"],
        "unseen": ["label 3", "label 4", "label 5"],
    }
    json_path, md_path = write_report(
        tmp_path / "ablation", conditions, title="View ablation", flags=flags, groups=groups
    )
    report = json.loads(json_path.read_text())
    assert list(report["conditions"]) == ["knowledge views", "name view"]
    assert report["flags"] == flags
    unseen = report["groups"]["unseen"]["macro_auroc"]["knowledge views"]
    assert unseen["labels"] == 2 and unseen["excluded"] == ["label 5"]
    expected = conditions["knowledge views"].macro_over(groups["unseen"]).estimate.value
    assert unseen["value"] == pytest.approx(expected)
    assert report["conditions"]["knowledge views"]["thresholds"]["labels"][0]["threshold"]
    assert report["conditions"]["name view"]["thresholds"] is None
    markdown = md_path.read_text()
    expected_texts = (
        "# View ablation",
        "knowledge views",
        "name view",
        "seen in pretraining",
        "unseen",
        flags["label 1"],
        "undefined: no positives",
        "not reported",
    )
    for text in expected_texts:
        assert text in markdown
    macro = report["conditions"]["name view"]["macro"]["auroc"]
    assert f"{macro['value']:.3f} [{macro['low']:.3f}, {macro['high']:.3f}]" in markdown


def test_report_refuses_conditions_on_other_data_and_unknown_labels() -> None:
    conditions, data = two_conditions()
    other = evaluate(data["scores"][:200], data["targets"][:200], data["labels"])
    with pytest.raises(ValueError, match="same recordings and labels"):
        report_dict({"a": conditions["name view"], "b": other})
    with pytest.raises(KeyError, match="label 9"):
        report_dict(conditions, flags={"label 9": "?"})
    with pytest.raises(KeyError, match="label 9"):
        report_dict(conditions, groups={"g": ["label 9"]})


def test_plots_are_png_files(tmp_path: Path) -> None:
    conditions, data = two_conditions()
    ids = [str(i) for i in range(len(data["targets"]))]
    write_predictions(tmp_path / "a", ids, data["labels"], data["scores"], data["targets"])
    write_predictions(tmp_path / "b", ids, data["labels"], data["worse"], data["targets"])
    predictions = {
        "knowledge views": read_predictions(tmp_path / "a"),
        "name view": read_predictions(tmp_path / "b"),
    }
    roc = plot_roc_curves(tmp_path / "roc.png", predictions, top_k=3)
    bars = plot_auroc_bars(tmp_path / "auroc.png", conditions)
    chosen = plot_roc_curves(tmp_path / "roc_chosen.png", predictions, labels=["label 5"])
    for path in (roc, bars, chosen):
        content = path.read_bytes()
        assert content.startswith(PNG) and len(content) > 5_000


@pytest.mark.parametrize("decimals", [None, 1])
def test_roc_points_run_through_every_distinct_score_and_enclose_the_auroc(
    decimals: int | None,
) -> None:
    scores, targets, labels = simulate(300, 3, seed=15, decimals=decimals)
    result = evaluate(scores, targets, labels, bootstrap=BootstrapSettings(resamples=0))
    for j, row in enumerate(result.labels):
        fpr, tpr = roc_points(scores[:, j], targets[:, j])
        assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
        assert len(fpr) == len(np.unique(scores[:, j])) + 1
        assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
        assert auc(fpr, tpr) == pytest.approx(row.auroc.value, abs=1e-12)  # trapezoids
    with pytest.raises(ValueError, match="both classes"):
        roc_points(scores[:, 0], np.zeros(len(scores)))


def test_bootstrap_of_sixty_labels_and_two_thousand_recordings_takes_seconds() -> None:
    scores, targets, labels = simulate(2000, 60, seed=14)
    started = time.perf_counter()
    result = evaluate(scores, targets, labels, validation=(scores[:500], targets[:500]))
    elapsed = time.perf_counter() - started
    assert result.bootstrap.resamples == 1000 and not result.undefined
    assert elapsed < 30.0, f"1000 resamples x 60 labels x 2000 recordings took {elapsed:.1f} s"


@pytest.mark.shared_data
def test_real_ptbxl_labels_with_a_linear_probe(shared_data: Path, tmp_path: Path) -> None:
    """Real PTB-XL sample labels (rare ones are single-class on the val split) scored by a
    ridge probe on spectral features: undefined labels, alignment and the report."""
    folder = shared_data / "ptbxl_sample"
    table = pd.read_csv(folder / "labels.csv")
    columns = [c for c in table.columns if c.startswith(("super_class:", "rhythm:"))]
    signals = np.load(folder / "signals_100hz.npy", allow_pickle=False).astype(np.float32)
    spectrum = np.abs(np.fft.rfft(signals, axis=-1))[..., 1:401]
    features = np.log1p(spectrum.reshape(len(signals), 12, 40, 10).mean(-1)).reshape(
        len(signals), -1
    )
    features = (features - features.mean(0)) / features.std(0)
    train = np.flatnonzero(table["split"] == "train")
    fit, val = train[:1200], train[1200:]
    test = np.flatnonzero(table["split"] == "val")
    targets = table[columns].to_numpy(dtype=np.int64)
    design = np.c_[features, np.ones(len(features))]
    gram = design[fit].T @ design[fit] + 10.0 * np.eye(design.shape[1])
    weights = np.linalg.solve(gram, design[fit].T @ targets[fit])
    scores = design @ weights

    result = evaluate(scores[test], targets[test], columns, validation=(scores[val], targets[val]))
    positives = targets[test].sum(0)
    expected_undefined = {c for c, p in zip(columns, positives, strict=True) if p == 0}
    assert expected_undefined and set(result.undefined) == expected_undefined
    assert result.macro["auroc"].labels == len(columns) - len(expected_undefined)
    for j, row in enumerate(result.labels):
        if row.undefined is None:
            expected = roc_auc_score(targets[test, j], scores[test, j])
            assert row.auroc.value == pytest.approx(expected, abs=1e-12)
    low, _, _ = interval(result.macro["auroc"].estimate)
    assert low > 0.5  # label-aligned scores carry signal
    groups = {
        "super classes": [c for c in columns if c.startswith("super_class:")],
        "rhythm": [c for c in columns if c.startswith("rhythm:")],
    }
    json_path, md_path = write_report(tmp_path / "ptbxl", {"ridge probe": result}, groups=groups)
    assert "rhythm:AFIB" in md_path.read_text()
    assert json.loads(json_path.read_text())["groups"]["rhythm"]["labels"] == groups["rhythm"]
