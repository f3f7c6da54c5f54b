"""Explanations: integrated gradients, lead importance, time regions, knowledge match, plot."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from torch import nn

from encoders.ecg import Preprocessing, open_source
from encoders.explain import (
    ScoreFn,
    explain,
    integrated_gradients,
    match_knowledge,
    plot_explanation,
    time_regions,
)
from encoders.models.ked_model import KedModel, ModelConfig
from knowledge.curated import load_pack
from knowledge.leads import STANDARD_LEADS

FS = 100.0
T = 1000
V1, AVL, II = (STANDARD_LEADS.index(lead) for lead in ("V1", "aVL", "II"))
# (lead, start s, end s, weight) of each synthetic label's linear functional.
WINDOWS = {
    0: [(V1, 3.0, 3.6, 1.0)],
    1: [(AVL, 7.0, 7.5, 1.0)],
    2: [(V1, 3.0, 3.6, 1.0), (II, 5.0, 5.5, 0.6)],
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class WindowModel(nn.Module):
    """Logit ``c`` = ``2 tanh(<w_c, x> / 10) + 0.5``: ``w_c`` a Hann bump on the lead windows
    of `WINDOWS`, so each label depends only on known samples of known leads."""

    def __init__(self) -> None:
        super().__init__()
        weights = torch.zeros(len(WINDOWS), len(STANDARD_LEADS), T)
        for label, parts in WINDOWS.items():
            for lead, start, end, weight in parts:
                a, b = round(start * FS), round(end * FS)
                weights[label, lead, a:b] = weight * torch.hann_window(b - a, periodic=False)
        self.register_buffer("weights", weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * torch.tanh(torch.einsum("blt,clt->bc", x, self.weights) / 10) + 0.5


LABELS = ("SCP:NORM", "SCP:CRBBB", "SCP:CLBBB", "SCP:AFIB")


@pytest.fixture(scope="module")
def sample() -> tuple[torch.Tensor, torch.Tensor]:
    """The packaged PTB-XL sample, preprocessed: windows (400, 12, 1000) and targets (400, 4)."""
    records = list(open_source("sample").iter_records())
    preprocessing = Preprocessing()
    x = torch.from_numpy(np.stack([preprocessing.apply(record).x for record in records]))
    y = torch.tensor([[label in r.labels for label in LABELS] for r in records])
    return x, y.float()


@pytest.fixture(scope="module")
def trained(sample: tuple[torch.Tensor, torch.Tensor]) -> ScoreFn:
    """A small real ked model trained for 30 steps on the sample against random label vectors."""
    x, y = sample
    torch.manual_seed(0)
    model = KedModel(ModelConfig(encoder="xresnet1d_small", text_dim=64))
    vectors = nn.functional.normalize(torch.randn(len(LABELS), 64), dim=-1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(30):
        batch = torch.randint(0, len(x), (32,))
        logits = model(x[batch], vectors).logits
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return lambda signals: model(signals, vectors).logits


@pytest.fixture(scope="module")
def ecg(sample: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """One real preprocessed record (12, 1000)."""
    return sample[0][0]


def _window(label: int) -> tuple[float, float]:
    _, start, end, _ = WINDOWS[label][0]
    return start, end


@pytest.mark.parametrize(("label", "lead"), [(0, "V1"), (1, "aVL")])
def test_model_of_one_lead_window_is_explained_by_that_lead_and_window(
    ecg: torch.Tensor, label: int, lead: str
) -> None:
    ex = explain(WindowModel().eval(), ecg, label, f"label {label}")
    assert ex.ranking[0] == lead
    assert ex.lead_importance[lead] == pytest.approx(1.0)
    start, end = _window(label)
    margin = 0.08  # the envelope's smoothing width
    top = ex.regions[0]
    assert start - margin <= top.start_s < top.end_s <= end + margin
    assert top.lead_names[0] == lead
    assert top.share > 0.25
    for region in ex.regions:  # all attribution lies in the window
        assert start - margin <= region.start_s < region.end_s <= end + margin


def test_shapes_and_ranges(ecg: torch.Tensor) -> None:
    saliency = integrated_gradients(WindowModel().eval(), ecg.numpy(), 2, n_steps=16)
    assert saliency.attribution.shape == (12, T)
    assert saliency.attribution.dtype == np.float32
    assert saliency.lead_importance.shape == (12,)
    assert saliency.lead_importance.sum() == pytest.approx(1.0)
    assert (saliency.lead_importance >= 0).all()
    assert saliency.baseline_logit == pytest.approx(0.5)  # 2 tanh(0) + 0.5
    change = saliency.logit - saliency.baseline_logit
    assert saliency.lead_contribution.sum() == pytest.approx(change, abs=1e-3)
    ex = explain(WindowModel().eval(), ecg, 2, "two windows", n_regions=5)
    assert set(ex.lead_importance) == set(STANDARD_LEADS)
    assert ex.ranking[:2] == ("V1", "II") or ex.ranking[:2] == ("II", "V1")
    assert 0 < ex.probability < 1
    assert ex.probability == pytest.approx(float(torch.sigmoid(torch.tensor(ex.logit))))
    assert 1 <= len(ex.regions) <= 5
    for region in ex.regions:
        assert 0 <= region.start_s < region.end_s <= T / FS
        assert 0 < region.share <= 1
        assert 1 <= len(region.leads) <= 3
    assert sum(region.share for region in ex.regions) <= 1 + 1e-9
    spans = sorted((r.start_s, r.end_s) for r in ex.regions)
    assert all(a[1] <= b[0] for a, b in pairwise(spans))  # regions do not overlap


def test_integrated_gradients_is_complete(ecg: torch.Tensor, trained: ScoreFn) -> None:
    """Attributions add up to logit(x) - logit(baseline): to 0.1% for the smooth synthetic model,
    to 3% for the ReLU network, whose gradient jumps along the path."""
    cases = ((WindowModel().eval(), 2, 1e-3), (trained, LABELS.index("SCP:CRBBB"), 0.03))
    for model, label, tolerance in cases:
        for baseline in ("zero", "smoothed"):
            saliency = integrated_gradients(model, ecg, label, baseline=baseline, n_steps=128)
            change = saliency.logit - saliency.baseline_logit
            assert abs(change) > 0.05
            assert abs(saliency.delta) <= tolerance * abs(change) + 1e-4, (model, baseline)
            with torch.no_grad():
                assert saliency.logit == pytest.approx(float(model(ecg[None])[0, label]), abs=1e-4)


def test_lead_mask_gives_missing_leads_zero_importance(ecg: torch.Tensor) -> None:
    mask = np.ones(12, dtype=bool)
    mask[V1] = False
    assert ecg[V1].abs().sum() > 0  # the masked lead holds a signal, which must be ignored
    record = load_pack().resolve("SCP:CRBBB")
    ex = explain(WindowModel().eval(), ecg, 2, "two windows", record=record, lead_mask=mask)
    assert ex.lead_importance["V1"] == 0.0
    assert ex.lead_contribution["V1"] == 0.0
    assert not ex.attribution[V1].any()
    assert ex.missing_leads == ("V1",)
    assert "V1" not in ex.ranking and ex.ranking[0] == "II"
    assert all("V1" not in region.lead_names for region in ex.regions)
    assert abs(ex.completeness_error) < 0.01
    assert ex.knowledge is not None and "V1" in ex.knowledge.missing_named_leads
    assert "V1" not in ex.knowledge.top_leads
    assert "Missing leads (no importance): V1" in ex.text()
    as_ints = integrated_gradients(WindowModel().eval(), ecg, 2, lead_mask=mask.astype(int))
    np.testing.assert_array_equal(as_ints.attribution, ex.attribution)


def test_text_and_dict_mention_criteria_and_leads(ecg: torch.Tensor) -> None:
    record = load_pack().resolve("SCP:CRBBB")
    assert record is not None and "V1" in record.leads
    ex = explain(WindowModel().eval(), ecg, 0, "complete right bundle branch block", record=record)
    match = ex.knowledge
    assert match is not None and match.top_leads[0] == "V1" and "V1" in match.common_leads
    assert match.named_share == pytest.approx(
        sum(ex.lead_importance[lead] for lead in match.named_leads)
    )
    assert match.named_share == pytest.approx(1.0)
    assert match.even_share == pytest.approx(len(match.named_leads) / 12)
    text = ex.text()
    assert text.startswith("complete right bundle branch block: probability")
    for criterion in record.criteria:
        assert criterion in text
    assert f"names {', '.join(match.named_leads)}" in text
    assert f"most important leads were {', '.join(match.top_leads)}" in text
    assert f"1. {ex.regions[0].start_s:.2f}-{ex.regions[0].end_s:.2f} s" in text
    assert "mostly V1" in text
    data = json.loads(json.dumps(ex.to_dict()))
    assert "attribution" not in data
    assert data["knowledge"]["criteria"] == list(record.criteria)
    assert data["ranking"][0] == "V1"
    assert data["regions"][0]["leads"][0][0] == "V1"


def test_match_knowledge_sets_record_leads_against_the_ranking() -> None:
    record = load_pack().resolve("SCP:IMI")
    assert record is not None
    importance = dict.fromkeys(STANDARD_LEADS, 0.05)
    importance.update({"III": 0.2, "aVF": 0.15, "II": 0.1, "aVL": 0.1})
    ranking = tuple(sorted(STANDARD_LEADS, key=lambda lead: -importance[lead]))
    match = match_knowledge(record, importance, ranking)
    assert match.named_leads == ("II", "III", "aVF")
    assert match.top_leads == ("III", "aVF", "II")
    assert match.common_leads == ("III", "aVF", "II")
    assert match.named_share == pytest.approx(0.45)
    assert match.even_share == pytest.approx(0.25)
    groups = {group.name: group for group in match.groups}
    assert groups["inferior territory"].common == ("III", "aVF", "II")
    assert groups["reciprocal changes"].leads == ("I", "aVL")
    assert groups["reciprocal changes"].common == ()
    wider = match_knowledge(record, importance, ranking, top_leads=4)
    assert {g.name: g for g in wider.groups}["reciprocal changes"].common == ("aVL",)


def test_time_regions_of_two_separate_bumps() -> None:
    attribution = np.zeros((12, T), dtype=np.float32)
    attribution[V1, 200:230] = 2.0  # larger bump first
    attribution[II, 600:640] = -1.0
    attribution[AVL, 600:640] = -0.5
    regions = time_regions(attribution, FS, k=3)
    assert len(regions) == 2  # nothing else reaches a quarter of the highest peak
    first, second = regions
    assert first.lead_names == ("V1",) and first.contribution == pytest.approx(60.0)
    assert 1.95 <= first.start_s <= 2.0 and 2.3 <= first.end_s <= 2.35
    assert second.lead_names == ("II",) and second.contribution == pytest.approx(-60.0)
    assert second.leads[0][1] == pytest.approx(2 / 3)
    assert first.share + second.share == pytest.approx(1.0, abs=0.02)
    assert time_regions(np.zeros((12, T)), FS) == ()


def test_clear_errors(ecg: torch.Tensor) -> None:
    model = WindowModel().eval()
    with pytest.raises(ValueError, match=r"shape \(12, T\).*\(1000, 12\)"):
        explain(model, ecg.T, 0, "x")
    with pytest.raises(ValueError, match="shape"):
        explain(model, ecg[None], 0, "x")
    with pytest.raises(IndexError, match="label_index 3 is out of range for 3 labels"):
        explain(model, ecg, 3, "x")
    with pytest.raises(IndexError, match=">= 0"):
        explain(model, ecg, -1, "x")
    bad = ecg.clone()
    bad[0, 5] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        explain(model, bad, 0, "x")
    with pytest.raises(ValueError, match="training mode"):
        explain(WindowModel(), ecg, 0, "x")
    with pytest.raises(ValueError, match=r"lead_mask must have shape \(12,\)"):
        explain(model, ecg, 0, "x", lead_mask=np.ones(8, dtype=bool))
    with pytest.raises(ValueError, match="every lead missing"):
        explain(model, ecg, 0, "x", lead_mask=np.zeros(12, dtype=bool))
    with pytest.raises(ValueError, match="baseline"):
        explain(model, ecg, 0, "x", baseline="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"logits of shape \(16, C\)"):
        explain(lambda x: model(x)[:, 0], ecg, 0, "x")
    with pytest.raises(ValueError, match="differentiably"):
        explain(lambda x: model(x).detach(), ecg, 0, "x")


def test_plot_writes_a_png(ecg: torch.Tensor, tmp_path: Path) -> None:
    mask = np.ones(12, dtype=bool)
    mask[STANDARD_LEADS.index("V4")] = False
    record = load_pack().resolve("SCP:CRBBB")
    ex = explain(WindowModel().eval(), ecg, 2, "two windows", record=record, lead_mask=mask)
    out = plot_explanation(ex, ecg, tmp_path / "ex.png", fs=100)
    assert out == tmp_path / "ex.png"
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert out.stat().st_size > 20_000
    height, width = imread(out).shape[:2]
    assert (width, height) == (1400, 1700)
    with pytest.raises(ValueError, match="500 samples"):
        plot_explanation(ex, ecg[:, :500], tmp_path / "short.png")
    with pytest.raises(ValueError, match="fs=500"):
        plot_explanation(ex, ecg, tmp_path / "fs.png", fs=500)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_explanation(ex, ecg, tmp_path / "no" / "ex.png")


def test_end_to_end_on_a_trained_model_and_a_sample_record(
    sample: tuple[torch.Tensor, torch.Tensor], trained: ScoreFn, tmp_path: Path
) -> None:
    x, y = sample
    label = LABELS.index("SCP:CRBBB")
    index = int(torch.nonzero(y[:, label])[0])
    ecg = x[index]
    record = load_pack().resolve("SCP:CRBBB")
    ex = explain(trained, ecg, label, "complete right bundle branch block", record=record)
    assert abs(ex.completeness_error) <= 0.03 * abs(ex.logit - ex.baseline_logit) + 1e-3
    assert sum(ex.lead_importance.values()) == pytest.approx(1.0)
    assert len(ex.ranking) == 12 and ex.regions
    assert ex.knowledge is not None and len(ex.knowledge.top_leads) == 3
    text = ex.text()
    assert record is not None and record.criteria[0] in text and ex.ranking[0] in text
    json.dumps(ex.to_dict())
    out = plot_explanation(ex, ecg, tmp_path / "crbbb.png")
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 20_000


def test_top_region_is_where_flattening_moves_a_trained_model_most(
    sample: tuple[torch.Tensor, torch.Tensor], trained: ScoreFn
) -> None:
    """Faithfulness over the sample's CRBBB records: flattening (zeroing) the top region moves
    the logit more than flattening most windows of the same length elsewhere. A region picked
    at random would beat the median of 10 random windows about half the time."""
    x, y = sample
    label = LABELS.index("SCP:CRBBB")
    indices = torch.nonzero(y[:, label])[:, 0].tolist()
    rng = np.random.default_rng(0)
    wins = 0
    for index in indices:
        ecg = x[index]
        region = explain(trained, ecg, label, "CRBBB", n_steps=32).regions[0]
        a, b = round(region.start_s * FS), round(region.end_s * FS)
        flattened = ecg.repeat(11, 1, 1)
        flattened[0, :, a:b] = 0
        for row, start in enumerate(rng.integers(0, T - (b - a), 10), 1):
            flattened[row, :, start : start + b - a] = 0
        with torch.no_grad():
            change = (trained(flattened)[:, label] - trained(ecg[None])[0, label]).abs()
        wins += bool(change[0] > change[1:].median())
    assert len(indices) >= 10
    assert wins >= 0.75 * len(indices), f"{wins} of {len(indices)}"
