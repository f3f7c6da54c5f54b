"""Label-space diagnostics on real label vectors: the curated pack and the default encoder."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from encoders.evaluation import DEFAULT_THRESHOLD, LabelSpace, compare_views, cosine_similarity
from encoders.text import Embedder, EncoderSpec, LabelMatrix, label_entries, label_matrix
from kb_store.store import KnowledgeBase
from ked.cli import labels_commands
from ked.cli.common import CliState
from tests.conftest import copy_kb
from tests.support.cli import run_ked
from tests.test_cli_knowledge import ked

log = logging.getLogger(__name__)

LBBB, RBBB = "left bundle branch block", "right bundle branch block"
LABELS = [
    LBBB,
    RBBB,
    "complete left bundle branch block",
    "incomplete left bundle branch block",
    "incomplete right bundle branch block",
    "left ventricular hypertrophy",
    "right ventricular hypertrophy",
    "atrial fibrillation",
    "sinus bradycardia",
]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def label_db(tmp_path_factory: pytest.TempPathFactory, embedded_kb: Path) -> Path:
    """A knowledge base with the curated pack (closed again, so the CLI can open it)."""
    path = copy_kb(embedded_kb, tmp_path_factory.mktemp("labels"))
    return path


@pytest.fixture(scope="module")
def matrices(label_db: Path) -> dict[str, LabelMatrix]:
    """Real label matrices (default encoder): the test labels in name and full views, and the
    71 PTB-XL labels as bare names."""
    with KnowledgeBase(label_db) as kb:
        embedder = Embedder(kb, EncoderSpec())
        entries = label_entries(kb, labels=LABELS)
        return {
            "name": label_matrix(embedder, entries, ["name"]),
            "full": label_matrix(embedder, entries, ["full"]),
            "ptbxl name": label_matrix(embedder, label_entries(kb, vocab="ptbxl"), ["name"]),
        }


@pytest.fixture(scope="module")
def spaces(matrices: dict[str, LabelMatrix]) -> dict[str, LabelSpace]:
    return {view: LabelSpace.from_matrix(matrices[view]) for view in ("name", "full")}


def test_similarity_matrix_is_the_cosine_of_the_label_vectors(
    matrices: dict[str, LabelMatrix], spaces: dict[str, LabelSpace]
) -> None:
    vectors = matrices["name"].vectors.astype(np.float64)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    space = spaces["name"]
    assert space.names == LABELS and space.view == "name"
    assert np.allclose(space.similarity, unit @ unit.T, atol=1e-6)
    assert np.allclose(space.similarity, space.similarity.T)
    assert np.allclose(np.diag(space.similarity), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="'b' is all zeros"):
        cosine_similarity(np.array([[1.0, 0.0], [0.0, 0.0]]), ["a", "b"])


def test_pairs_neighbours_and_flags(spaces: dict[str, LabelSpace]) -> None:
    space = spaces["name"]
    pairs = space.pairs()
    assert len(pairs) == len(LABELS) * (len(LABELS) - 1) // 2
    cosines = [p.cosine for p in pairs]
    assert cosines == sorted(cosines, reverse=True)
    assert space.pairs(3) == pairs[:3]
    assert [space.rank(p.first, p.second) for p in pairs[:5]] == [1, 2, 3, 4, 5]
    # Two labels that resolve to one diagnosis have the same text, hence the same vector.
    top = pairs[0]
    assert {top.first, top.second} == {LBBB, "complete left bundle branch block"}
    assert top.same_diagnosis and top.cosine == pytest.approx(1.0, abs=1e-6)
    for pair in space.nearest():
        i = space.names.index(pair.first)
        others = np.delete(space.similarity[i], i)
        assert pair.cosine == pytest.approx(others.max())
    flags = space.flags(DEFAULT_THRESHOLD)
    assert set(flags) == {p.first for p in space.nearest() if p.cosine >= DEFAULT_THRESHOLD}
    assert "(same diagnosis)" in flags[LBBB]


def test_bundle_branch_blocks_as_bare_names_and_in_the_full_view(
    matrices: dict[str, LabelMatrix],
    spaces: dict[str, LabelSpace],
    record_property: Callable[[str, object], None],
) -> None:
    name, full = spaces["name"].cosine(LBBB, RBBB), spaces["full"].cosine(LBBB, RBBB)
    assert 0.95 < name < 0.99  # about 0.965 with all-MiniLM-L6-v2
    i, j = LABELS.index(LBBB), LABELS.index(RBBB)
    vectors = matrices["full"].vectors
    direct = vectors[i] @ vectors[j] / np.linalg.norm(vectors[i]) / np.linalg.norm(vectors[j])
    assert full == pytest.approx(float(direct), abs=1e-6)
    comparison = compare_views(spaces)
    assert comparison.reference == "name"
    pair = next(p for p in comparison.pairs if {p.first, p.second} == {LBBB, RBBB})
    assert pair.cosine == {"name": pytest.approx(name), "full": pytest.approx(full)}
    assert pair.rank["full"] == spaces["full"].rank(LBBB, RBBB)
    record_property("lbbb_rbbb_cosine", {"name": name, "full": full})
    log.info(
        "LBBB/RBBB cosine: name view %.3f (rank %d), full view %.3f (rank %d of %d pairs)",
        name,
        pair.rank["name"],
        full,
        pair.rank["full"],
        len(spaces["full"].pairs()),
    )
    stats = {s.view: s for s in comparison.stats}
    assert stats["name"].reference_pairs_separated is None
    expected = sum(1 for p in comparison.pairs if p.cosine["full"] < DEFAULT_THRESHOLD)
    assert stats["full"].reference_pairs_separated == expected
    # Same-diagnosis pairs stay identical in every view: no knowledge text can separate them.
    same = [p for p in comparison.pairs if p.same_diagnosis]
    assert same and all(p.cosine["full"] == pytest.approx(1.0, abs=1e-6) for p in same)


def test_vocabulary_heatmap_clusters_the_bundle_branch_blocks(
    matrices: dict[str, LabelMatrix], tmp_path: Path
) -> None:
    space = LabelSpace.from_matrix(matrices["ptbxl name"])
    assert len(space.names) == 71
    order = space.cluster_order()
    assert sorted(order) == list(range(71))
    blocks = ("CLBBB", "CRBBB", "ILBBB", "IRBBB")
    positions = sorted(order.index(space.names.index(code)) for code in blocks)
    assert positions == list(range(positions[0], positions[0] + 4))
    path = space.write_heatmap(tmp_path / "ptbxl_name.png")
    content = path.read_bytes()
    assert content.startswith(PNG) and len(content) > 20_000
    assert {"IRBBB", "ILBBB", "CLBBB", "CRBBB"} <= set(space.flags(0.95))


def invoke(db: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(labels_commands.app, list(args), obj=CliState(db=db))
    return result.exit_code, result.output


def test_similarity_command(label_db: Path, spaces: dict[str, LabelSpace], tmp_path: Path) -> None:
    args = [f"--labels={label}" for label in LABELS]
    views = ["--view", "name", "--view", "full"]
    code, output = invoke(
        label_db, "similarity", *args, *views, "--top", "6", "--out", str(tmp_path / "out")
    )
    assert code == 0, output
    cosine = spaces["name"].cosine(LBBB, RBBB)
    assert f"  {cosine:.3f}  {LBBB}  ~  {RBBB}\n" in output
    assert "comparison (reference view name" in output
    assert "[same diagnosis]" in output
    for png in ("similarity_name.png", "similarity_full.png"):
        assert (tmp_path / "out" / png).read_bytes().startswith(PNG)
    report = json.loads((tmp_path / "out" / "label_similarity.json").read_text())
    assert report["views"]["full"]["labels"] == LABELS
    assert report["comparison"] == compare_views(spaces).to_dict()
    assert report["encoder"]["model"]


def test_similarity_command_errors(label_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = invoke(label_db, "similarity", "--labels", LBBB, "--view", "names")
    assert code == 2 and "unknown view 'names'" in output
    code, output = invoke(label_db, "similarity")
    assert code == 2 and "exactly one of --vocab and --labels" in output
    code, _, err = run_ked(capsys, "--db", str(label_db), "labels", "similarity", "--labels", LBBB)
    assert code == 2 and err == "error: compare at least two labels\n"


def test_ked_labels_similarity_subprocess(label_db: Path) -> None:
    labels = ["--labels", LBBB, "--labels", RBBB]
    result = ked(
        "--db", str(label_db), "labels", "similarity", *labels, "--view", "name", check=True
    )
    assert f"{LBBB}" in result.stdout and "comparison" in result.stdout
