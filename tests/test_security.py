"""No file that ked reads is unpickled: shards are safetensors, every loader refuses code."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from encoders.text import Embedder, EncoderSpec
from encoders.text.shards import Shard, ShardError, read_shard, write_shard
from kb_store.store import KnowledgeBase
from tests.conftest import REPO
from tests.support.cli import run_ked
from tests.support.unsafe import Payload

SKIPPED_DIRS = {".venv", ".git", "build", "dist", "node_modules", "ked-demo"}
PICKLERS = {"pickle", "cPickle", "dill", "joblib", "cloudpickle"}


def _malicious_shard(path: Path, marker: Path, fingerprint: str) -> Path:
    """An old-style .npz shard whose every member unpickles ``_Payload`` when read."""
    payload = np.array([Payload(marker)], dtype=object)
    with path.open("wb") as fh:
        np.savez(
            fh,
            fingerprint=payload,
            texts=payload,
            vectors=np.zeros((1, 4), np.float32),
            encoder=np.array(fingerprint),
        )
    return path


@pytest.mark.parametrize("name", ["shard.npz", "shard.safetensors"])
def test_ingest_refuses_a_pickle_bearing_shard_and_runs_nothing(
    kb_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    with KnowledgeBase(kb_copy, read_only=True) as kb:
        fingerprint = Embedder(kb, EncoderSpec()).fingerprint
    marker = tmp_path / "code-ran"
    shard = _malicious_shard(tmp_path / name, marker, fingerprint)

    code, _, err = run_ked(capsys, "--db", str(kb_copy), "embed", "--ingest", str(shard))

    assert not marker.exists(), "loading the shard ran code from it"
    assert code == 2
    assert err.strip().splitlines() == [err.strip()] and err.startswith(f"error: {shard}: ")
    assert "not a safetensors shard" in err
    with KnowledgeBase(kb_copy, read_only=True) as kb:
        assert kb.con.execute("SELECT count(*) FROM embeddings").fetchone() == (0,)


def test_shard_round_trip_and_inconsistent_shards_are_refused(tmp_path: Path) -> None:
    shard = Shard(["a", "b"], np.eye(2, 3, dtype=np.float32), "f" * 64, {"model": "m"})
    path = tmp_path / "s.safetensors"
    write_shard(path, shard)
    back = read_shard(path)
    assert (back.texts, back.fingerprint, back.encoder) == (["a", "b"], "f" * 64, {"model": "m"})
    np.testing.assert_array_equal(back.vectors, shard.vectors)

    write_shard(path, Shard(["a"], np.eye(2, 3, dtype=np.float32), "f" * 64, {}))
    with pytest.raises(ShardError, match=r"s\.safetensors: 1 texts but vectors of shape \(2, 3\)"):
        read_shard(path)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ShardError, match="not a safetensors shard"):
        read_shard(path)


def _keyword_is(call: ast.Call, name: str, value: bool) -> bool:
    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
        for k in call.keywords
    )


def _unsafe_loads(path: Path) -> list[str]:
    """Calls in ``path`` that could unpickle a file's contents."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        call = f"{owner}.{node.func.attr}"
        unsafe = (
            (call in {"np.load", "numpy.load"} and not _keyword_is(node, "allow_pickle", False))
            or (call == "torch.load" and not _keyword_is(node, "weights_only", True))
            or (owner in PICKLERS and node.func.attr in {"load", "loads"})
            or node.func.attr == "read_pickle"
        )
        if unsafe:
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {call}")
    return found


def test_no_loader_in_the_tree_can_unpickle() -> None:
    files = [
        path
        for path in REPO.rglob("*.py")
        if not SKIPPED_DIRS.intersection(path.relative_to(REPO).parts)
    ]
    unsafe = [call for path in files for call in _unsafe_loads(path)]
    assert not unsafe, "pass allow_pickle=False / weights_only=True, never unpickle:\n" + "\n".join(
        unsafe
    )
