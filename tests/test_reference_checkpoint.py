"""Loading ECGFM-KED's released checkpoint layout into ked's modules.

The reference's source modules are re-created here in *their* layout (fastai-style numeric
``nn.Sequential`` with ``convs``/``convpath``/``idpath`` blocks; a DETR-style pre-norm decoder
with ``decoder.layers``, ``decoder_norm`` shared as ``decoder.norm``, ``mlp_head``), randomly
initialised, saved in the released dict layout, loaded with ked's loader and compared output for
output.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from encoders.models import (
    LabelAdapter,
    ReferenceCheckpointError,
    create_ecg_encoder,
    load_reference_checkpoint,
)

# --- the reference's modules, in the reference's layout -------------------------------------


class _RefConvLayer(nn.Sequential):
    """fastai ConvLayer (bn_1st): conv without bias, BN, optional ReLU."""

    def __init__(self, ni: int, nf: int, ks: int, stride: int = 1, act: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv1d(ni, nf, ks, stride=stride, padding=(ks - 1) // 2, bias=False),
            nn.BatchNorm1d(nf),
        ]
        if act:
            layers.append(nn.ReLU())
        super().__init__(*layers)


class _RefResBlock(nn.Module):
    """fastai ResBlock (expansion 4): ``convs`` also reachable as ``convpath.0``; ``idpath``."""

    def __init__(self, ni: int, nh: int, stride: int, ks: int = 5) -> None:
        super().__init__()
        ni, nf = ni * 4, nh * 4
        self.convs = nn.Sequential(
            _RefConvLayer(ni, nh, 1),
            _RefConvLayer(nh, nh, ks, stride=stride),
            _RefConvLayer(nh, nf, 1, act=False),
        )
        self.convpath = nn.Sequential(self.convs)
        idpath: list[nn.Module] = []
        if ni != nf:
            idpath.append(_RefConvLayer(ni, nf, 1, act=False))
        if stride != 1:
            idpath.insert(0, nn.AvgPool1d(2, ceil_mode=True))
        self.idpath = nn.Sequential(*idpath)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convpath(x) + self.idpath(x))


def _reference_xresnet1d101() -> nn.Sequential:
    sizes = [64 // 4, 64, 128, 128, 192]
    stages = [
        nn.Sequential(
            *(
                _RefResBlock(
                    sizes[i] if j == 0 else sizes[i + 1],
                    sizes[i + 1],
                    stride=2 if i > 0 and j == 0 else 1,
                )
                for j in range(count)
            )
        )
        for i, count in enumerate([3, 4, 23, 3])
    ]
    stem = [_RefConvLayer(12, 32, 5, 2), _RefConvLayer(32, 32, 5), _RefConvLayer(32, 64, 5)]
    return nn.Sequential(*stem, nn.MaxPool1d(3, stride=2, padding=1), *stages)


class _RefDecoderLayer(nn.Module):
    """DETR's TransformerDecoderLayer, pre-norm path, sequence-first tensors."""

    def __init__(self, d: int = 768, heads: int = 4, ffn: int = 1024, dropout: float = 0.1) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d, heads, dropout=dropout)
        self.linear1 = nn.Linear(d, ffn)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn, d)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        tgt2 = self.norm1(tgt)
        tgt = tgt + self.dropout1(self.self_attn(tgt2, tgt2, value=tgt2)[0])
        tgt2 = self.norm2(tgt)
        tgt = tgt + self.dropout2(self.multihead_attn(tgt2, memory, value=memory)[0])
        tgt2 = self.norm3(tgt)
        return tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(tgt2)))))


class _RefTransformerDecoder(nn.Module):
    def __init__(self, layer: nn.Module, num_layers: int, norm: nn.Module) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = norm

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            tgt = layer(tgt, memory)
        return self.norm(tgt)


class _RefTQN(nn.Module):
    """The reference's TQNModel: ``decoder_norm`` normalises inputs and is the decoder's norm."""

    def __init__(self, num_layers: int = 7) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        self.decoder_norm = nn.LayerNorm(768)
        self.decoder = _RefTransformerDecoder(_RefDecoderLayer(), num_layers, self.decoder_norm)
        self.dropout_feas = nn.Dropout(0.1)
        self.mlp_head = nn.Sequential(nn.Linear(768, 2048), nn.GELU(), nn.Linear(2048, 2))

    def forward(self, ecg_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        batch = ecg_features.shape[0]
        ecg = self.decoder_norm(ecg_features.transpose(0, 1))
        text = self.decoder_norm(text_features.unsqueeze(1).repeat(1, batch, 1))
        features = self.dropout_feas(self.decoder(text, ecg)).transpose(0, 1)
        return self.mlp_head(features)


def _randomise_norms(module: nn.Module) -> None:
    """Non-trivial BN/LN affine parameters and BN statistics, so a wrong mapping shows."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (nn.BatchNorm1d, nn.LayerNorm)):
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.normal_(std=0.1)
            if isinstance(layer, nn.BatchNorm1d):
                layer.running_mean.normal_(std=0.1)
                layer.running_var.uniform_(0.5, 2.0)
                layer.num_batches_tracked.fill_(1234)


def _reference_text_encoder_state(mlp_embed: nn.Sequential) -> dict[str, torch.Tensor]:
    state = {f"mlp_embed.{key}": value for key, value in mlp_embed.state_dict().items()}
    state["bert_model.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    state["bert_model.embeddings.word_embeddings.weight"] = torch.randn(32, 768)
    state["bert_model.encoder.layer.11.output.dense.weight"] = torch.randn(768, 64)
    state["bert_model.pooler.dense.weight"] = torch.randn(768, 768)
    state["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return state


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Reference modules and the checkpoint file saved from them in the released layout."""
    torch.manual_seed(0)
    ecg_model, tqn = _reference_xresnet1d101(), _RefTQN()
    _randomise_norms(ecg_model)
    _randomise_norms(tqn)
    mlp_embed = nn.Sequential(
        nn.Linear(768, 768), nn.GELU(), nn.Linear(768, 768), nn.GELU(), nn.Linear(768, 768)
    )
    params = [*ecg_model.parameters(), *tqn.parameters()]
    optimizer = torch.optim.AdamW(params[:2], lr=5e-5)
    path = tmp_path_factory.mktemp("reference") / "best_valid_all.pt"
    torch.save(
        {
            "ecg_model": ecg_model.state_dict(),
            "model": tqn.state_dict(),
            "text_encoder": _reference_text_encoder_state(mlp_embed),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": {"t_initial": 10, "warmup_t": 1, "last_epoch": 3},
            "config": {"ecg_model_name": "xresnet1d_101", "tqn_model_layers": 7, "lr": 5e-5},
            "epoch": 3,
        },
        path,
    )
    return {"path": path, "ecg_model": ecg_model.eval(), "tqn": tqn.eval(), "mlp": mlp_embed}


def test_released_layout_loads_with_identical_outputs(released: dict[str, object]) -> None:
    loaded = load_reference_checkpoint(released["path"])
    report = loaded.report
    assert report.missing_keys == []
    assert report.unexpected_keys == []
    assert report.epoch == 3
    assert report.config["tqn_model_layers"] == 7
    assert {"text_encoder", "optimizer", "lr_scheduler"} <= set(report.skipped)
    # 33 blocks x 3 conv layers x (conv weight + 5 BN entries) aliased as convpath.0.*
    assert report.skipped["ecg_model convpath.0.*"].startswith(f"{33 * 3 * 6} tensors")
    assert "2.6593" in report.skipped["model logit_scale"]  # log(1/0.07), unused
    assert "model decoder.norm.*" in report.skipped
    assert len(loaded.decoder.decoder.layers) == 7
    assert loaded.encoder.architecture == {"name": "xresnet1d101", "kwargs": {}}

    torch.manual_seed(1)
    ecgs, labels = torch.randn(3, 12, 1000), torch.randn(5, 768)
    with torch.no_grad():
        expected_features = released["ecg_model"](ecgs)
        features = loaded.encoder(ecgs)
        torch.testing.assert_close(features, expected_features)
        tokens = features.transpose(1, 2)
        torch.testing.assert_close(
            loaded.decoder(labels, tokens), released["tqn"](tokens, labels), rtol=1e-4, atol=1e-5
        )
        adapter = LabelAdapter(768, residual=False)
        adapter.load_state_dict(loaded.label_adapter_state)
        torch.testing.assert_close(adapter(labels), released["mlp"](labels))


def _save(path: Path, **entries: object) -> Path:
    torch.save(entries, path)
    return path


def _stem_state() -> dict[str, torch.Tensor]:
    """A valid slice of the reference's ecg_model: the first stem layer."""
    return {key: value for key, value in _RefConvLayer(12, 32, 5, 2).state_dict().items()}


def _decoder_state(num_layers: int = 1) -> dict[str, torch.Tensor]:
    return _RefTQN(num_layers).state_dict()


def test_partial_checkpoint_fails_strict_and_is_reported_otherwise(tmp_path: Path) -> None:
    ecg_model = {f"0.{key}": value for key, value in _stem_state().items()}
    ecg_model["8.weight"] = torch.zeros(5, 768)  # a classification head ked does not have
    path = _save(tmp_path / "partial.pt", ecg_model=ecg_model, model=_decoder_state(1))
    with pytest.raises(ReferenceCheckpointError, match=r"partial\.pt: strict load failed"):
        load_reference_checkpoint(path)
    report = load_reference_checkpoint(path, strict=False).report
    assert report.unexpected_keys == ["ecg_model.8.weight"]
    assert "encoder.stages.3.2.convs.2.bn.weight" in report.missing_keys
    assert not any(key.startswith("encoder.stem.0.") for key in report.missing_keys)
    assert not any(key.startswith("decoder.") for key in report.missing_keys)
    assert report.epoch is None


def test_refuses_a_plain_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save(create_ecg_encoder("xresnet1d_small").state_dict(), path)
    with pytest.raises(ReferenceCheckpointError, match=r"plain\.pt: looks like a plain state_dict"):
        load_reference_checkpoint(path)


def test_refuses_missing_entries_and_other_models(tmp_path: Path) -> None:
    path = _save(tmp_path / "decoder_only.pt", model=_decoder_state(1), epoch=1)
    with pytest.raises(ReferenceCheckpointError, match=r"decoder_only\.pt: no 'ecg_model' entry"):
        load_reference_checkpoint(path)
    path = _save(
        tmp_path / "wang.pt",
        ecg_model={"0.0.weight": torch.zeros(1)},
        model=_decoder_state(1),
        config={"ecg_model_name": "resnet1d_wang"},
    )
    with pytest.raises(ReferenceCheckpointError, match="'resnet1d_wang'"):
        load_reference_checkpoint(path)
    path = _save(
        tmp_path / "other.pt",
        ecg_model={"first_block_conv.conv.weight": torch.zeros(768, 12, 5)},
        model=_decoder_state(1),
    )
    with pytest.raises(ReferenceCheckpointError, match="no xresnet1d keys"):
        load_reference_checkpoint(path)
    ecg_model = {f"0.{key}": value for key, value in _stem_state().items()}
    path = _save(tmp_path / "no_tqn.pt", ecg_model=ecg_model, model={"fc.weight": torch.ones(2)})
    with pytest.raises(ReferenceCheckpointError, match=r"no 'decoder\.layers\.\*' keys"):
        load_reference_checkpoint(path)


def test_refuses_shapes_that_do_not_fit(tmp_path: Path) -> None:
    ecg_model = {f"0.{key}": value for key, value in _stem_state().items()}
    ecg_model["0.0.weight"] = torch.randn(32, 12, 7)  # kernel 7, not 5
    path = _save(tmp_path / "k7.pt", ecg_model=ecg_model, model=_decoder_state(1))
    with pytest.raises(ReferenceCheckpointError, match=r"0\.0\.weight \(32, 12, 7\) -> stem"):
        load_reference_checkpoint(path)
    old_head = _decoder_state(1)
    old_head["mlp_head.0.weight"] = torch.randn(5, 768)  # an earlier TQN: Linear(768, classes)
    ecg_model = {f"0.{key}": value for key, value in _stem_state().items()}
    path = _save(tmp_path / "old_head.pt", ecg_model=ecg_model, model=old_head)
    with pytest.raises(ReferenceCheckpointError, match=r"mlp_head\.0\.weight \(5, 768\)"):
        load_reference_checkpoint(path)


def test_refuses_an_alias_that_differs_from_its_original(tmp_path: Path) -> None:
    block = _RefResBlock(64, 64, stride=1)
    ecg_model = {f"4.0.{key}": value.clone() for key, value in block.state_dict().items()}
    ecg_model["4.0.convpath.0.1.0.weight"] += 1.0
    path = _save(tmp_path / "alias.pt", ecg_model=ecg_model, model=_decoder_state(1))
    with pytest.raises(ReferenceCheckpointError, match=r"convpath\.0\.1\.0\.weight' differs"):
        load_reference_checkpoint(path)
    decoder = _decoder_state(1)
    decoder["decoder.norm.weight"] = decoder["decoder.norm.weight"] + 1.0
    path = _save(tmp_path / "norm.pt", ecg_model={"0.0.weight": torch.zeros(1)}, model=decoder)
    with pytest.raises(ReferenceCheckpointError, match=r"'decoder\.norm\.weight' differs"):
        load_reference_checkpoint(path)


class _Unsafe:
    """An arbitrary object: weights_only loading must refuse to unpickle it."""


def test_refuses_unreadable_and_unsafe_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ReferenceCheckpointError, match=r"junk\.pt: cannot be read"):
        load_reference_checkpoint(junk)
    unsafe = _save(tmp_path / "unsafe.pt", ecg_model={}, model={}, config=_Unsafe())
    with pytest.raises(ReferenceCheckpointError, match=r"unsafe\.pt: cannot be read"):
        load_reference_checkpoint(unsafe)
    with pytest.raises(FileNotFoundError, match=r"absent\.pt"):
        load_reference_checkpoint(tmp_path / "absent.pt")
