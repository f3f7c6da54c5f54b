"""Projection, label adapter, cosine scoring head and the label-query decoder."""

from __future__ import annotations

import math

import pytest
import torch

from encoders.models import CosineScoringHead, LabelAdapter, LabelQueryDecoder, Projection
from encoders.models.ked_model import KedModel, ModelConfig


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_projection_linear_and_mlp() -> None:
    linear = Projection(768, 384)
    mlp = Projection(768, 384, hidden_dim=1024, dropout=0.1)
    x = torch.randn(4, 768)
    assert linear(x).shape == (4, 384)
    assert mlp(x).shape == (4, 384)
    assert _n_params(linear) == 768 * 384 + 384
    assert _n_params(mlp) == 768 * 1024 + 1024 + 1024 * 384 + 384


def test_label_adapter_disabled_is_identity_without_parameters() -> None:
    adapter = LabelAdapter(384, enabled=False)
    vectors = torch.randn(7, 384)
    assert adapter(vectors) is vectors
    assert _n_params(adapter) == 0


def test_residual_label_adapter_starts_at_identity_and_trains() -> None:
    torch.manual_seed(0)
    adapter = LabelAdapter(384)
    vectors = torch.randn(7, 384)
    torch.testing.assert_close(adapter(vectors), vectors, rtol=0, atol=0)
    target = torch.randn(7, 384)
    optimizer = torch.optim.SGD(adapter.parameters(), lr=0.1)
    loss = (adapter(vectors) - target).square().mean()
    loss.backward()
    optimizer.step()
    assert not torch.equal(adapter(vectors), vectors)


def test_reference_form_label_adapter() -> None:
    adapter = LabelAdapter(768, residual=False)
    linears = [
        name for name, module in adapter.mlp.named_children() if module._get_name() == "Linear"
    ]
    assert linears == ["0", "2", "4"]
    vectors = torch.randn(5, 768)
    out = adapter(vectors)
    assert out.shape == (5, 768)
    assert not torch.allclose(out, vectors)


def test_cosine_head_shape_and_initial_values() -> None:
    head = CosineScoringHead()
    assert math.isclose(float(head.logit_scale.detach().exp()), 1 / 0.07, rel_tol=1e-6)
    assert head.bias.item() == -10.0
    ecg, labels = torch.randn(4, 384), torch.randn(9, 384)
    scores = head(ecg, labels)
    assert scores.shape == (4, 9)
    cosine = torch.nn.functional.cosine_similarity(ecg[:, None], labels[None], dim=-1)
    torch.testing.assert_close(scores, cosine / 0.07 - 10.0)
    # Sigmoid starts low for multi-label data.
    probabilities = scores.detach().sigmoid()
    assert probabilities.max().item() < 0.99 and probabilities.mean().item() < 0.05


def test_cosine_head_scores_do_not_depend_on_the_other_labels() -> None:
    head = CosineScoringHead()
    ecg, labels = torch.randn(3, 64), torch.randn(10, 64)
    full = head(ecg, labels)
    subset = [7, 2, 5]
    torch.testing.assert_close(head(ecg, labels[subset]), full[:, subset])
    torch.testing.assert_close(head(ecg, labels[[4]]), full[:, [4]])


def test_cosine_head_clamps_the_temperature_and_checks_dims() -> None:
    head = CosineScoringHead(init_bias=0.0)
    with torch.no_grad():
        head.logit_scale.fill_(10.0)
    ecg = torch.randn(1, 8)
    torch.testing.assert_close(head(ecg, ecg), torch.tensor([[100.0]]))
    with pytest.raises(ValueError, match=r"dim 8 .* dim 6"):
        head(ecg, torch.randn(2, 6))
    with pytest.raises(ValueError, match="exceeds"):
        CosineScoringHead(init_logit_scale=5.0)


def test_decoder_parameter_count_matches_the_reference() -> None:
    decoder = LabelQueryDecoder()
    # Reference TQN: 45,708,547 = these 45,708,546 plus its unused scalar logit_scale.
    assert _n_params(decoder) == 45_708_546
    assert len(decoder.decoder.layers) == 7
    projected = LabelQueryDecoder(label_dim=384, ecg_dim=256, num_layers=1)
    assert _n_params(projected) - _n_params(LabelQueryDecoder(num_layers=1)) == (
        384 * 768 + 768 + 256 * 768 + 768
    )


def test_decoder_shapes_and_scores() -> None:
    torch.manual_seed(0)
    decoder = LabelQueryDecoder(d_model=64, num_layers=2, ffn_dim=96, label_dim=32, ecg_dim=48)
    decoder.eval()
    queries, tokens = torch.randn(5, 32), torch.randn(3, 20, 48)
    logits = decoder(queries, tokens)
    assert logits.shape == (3, 5, 2)
    scores = decoder.scores(queries, tokens)
    assert scores.shape == (3, 5)
    torch.testing.assert_close(scores, logits.softmax(-1)[..., 1])
    assert bool(((scores > 0) & (scores < 1)).all())
    with pytest.raises(ValueError, match=r"\(labels, 32\)"):
        decoder(torch.randn(5, 64), tokens)
    with pytest.raises(ValueError, match=r"\(batch, tokens, 48\)"):
        decoder(queries, torch.randn(3, 48, 20))


def test_decoder_score_depends_on_the_other_labels() -> None:
    """Labels self-attend, so the same label scores differently among different companions."""
    torch.manual_seed(0)
    decoder = LabelQueryDecoder(d_model=64, num_layers=2, ffn_dim=96).eval()
    labels, tokens = torch.randn(6, 64), torch.randn(2, 16, 64)
    with torch.no_grad():
        alone = decoder(labels[[0]], tokens)[:, 0]
        with_some = decoder(labels[[0, 1, 2]], tokens)[:, 0]
        with_others = decoder(labels[[0, 3, 4, 5]], tokens)[:, 0]
        again = decoder(labels[[0, 1, 2]], tokens)[:, 0]
    torch.testing.assert_close(again, with_some, rtol=0, atol=0)  # eval mode is deterministic
    assert (alone - with_some).abs().max() > 1e-4
    assert (with_some - with_others).abs().max() > 1e-4


def test_decoder_trains_end_to_end() -> None:
    torch.manual_seed(0)
    decoder = LabelQueryDecoder(d_model=32, num_layers=1, ffn_dim=64, label_dim=16, ecg_dim=8)
    queries = torch.randn(4, 16, requires_grad=True)
    logits = decoder(queries, torch.randn(2, 10, 8))
    torch.nn.functional.cross_entropy(logits.reshape(-1, 2), torch.tensor([0, 1] * 4)).backward()
    assert queries.grad is not None and queries.grad.abs().sum() > 0
    assert decoder.token_proj.weight.grad.abs().sum() > 0


def test_mean_and_max_pooling_feeds_both_to_the_projection() -> None:
    torch.manual_seed(0)
    model = KedModel(ModelConfig(encoder="xresnet1d_small", pooling="mean+max")).eval()
    x = torch.randn(2, 12, 1000)
    features = model.features(x)
    pooled = model.pool(features)
    torch.testing.assert_close(pooled[:, :256], features.mean(-1))
    torch.testing.assert_close(pooled[:, 256:], features.amax(-1))
    assert model.embed(x).shape == (2, 384)
    assert model(x, torch.randn(3, 384)).logits.shape == (2, 3)
    with pytest.raises(ValueError, match="pooling"):
        KedModel(ModelConfig(encoder="xresnet1d_small", pooling="max"))  # type: ignore[arg-type]
