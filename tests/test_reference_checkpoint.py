"""Loading ECGFM-KED's released checkpoint layout into ked's modules.

The reference's source modules are re-created in *their* layout (``tests/support/
reference_layout.py``), randomly initialised, saved in the released dict layout, loaded with
ked's loader and compared output for output.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from encoders.models import (
    LabelAdapter,
    ReferenceCheckpointError,
    create_ecg_encoder,
    load_reference_checkpoint,
)
from tests.support.reference_layout import (
    RefConvLayer,
    ReferenceModules,
    RefResBlock,
    RefTQN,
    save_reference_checkpoint,
)


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> ReferenceModules:
    """Reference modules and the checkpoint file saved from them in the released layout."""
    return save_reference_checkpoint(tmp_path_factory.mktemp("reference") / "best_valid_all.pt")


def test_released_layout_loads_with_identical_outputs(released: ReferenceModules) -> None:
    loaded = load_reference_checkpoint(released.path)
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
        expected_features = released.ecg_model(ecgs)
        features = loaded.encoder(ecgs)
        torch.testing.assert_close(features, expected_features)
        tokens = features.transpose(1, 2)
        torch.testing.assert_close(
            loaded.decoder(labels, tokens), released.tqn(tokens, labels), rtol=1e-4, atol=1e-5
        )
        adapter = LabelAdapter(768, residual=False)
        assert loaded.label_adapter_state is not None and loaded.text_tower_state is not None
        assert "pooler.dense.weight" in loaded.text_tower_state  # bert_model.* without prefix
        adapter.load_state_dict(loaded.label_adapter_state)
        torch.testing.assert_close(adapter(labels), released.mlp_embed(labels))


def _save(path: Path, **entries: object) -> Path:
    torch.save(entries, path)
    return path


def _stem_state() -> dict[str, torch.Tensor]:
    """A valid slice of the reference's ecg_model: the first stem layer."""
    return {key: value for key, value in RefConvLayer(12, 32, 5, 2).state_dict().items()}


def _decoder_state(num_layers: int = 1) -> dict[str, torch.Tensor]:
    return RefTQN(num_layers).state_dict()


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
    block = RefResBlock(64, 64, stride=1)
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
