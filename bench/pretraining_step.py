"""Benchmark: one pretraining step of ked (cached label vectors) vs the reference (text tower).

Both sides train xresnet1d101 on the same batch of real PTB-XL records against the 105
MIMIC-IV-ECG labels of ECGFM-KED, with ked's model (``--head cosine`` or ``decoder``),
``AlignmentLoss`` and AdamW (lr 5e-5, weight decay 0.02): forward, loss, backward, AdamW step.
Targets come from the records' SCP statements through the knowledge base (curated pack).

- ked: the label vectors are read from the embedding cache (all-MiniLM-L6-v2, 384-d, each
  label's ``name`` view), zero-padded to 768 so that the projection and the head have the
  reference's width (padding keeps every cosine); no text encoder runs.
- reference: every step re-encodes the 105 bare label names, padded to 256 tokens, with
  gradients, through a randomly initialised BERT-base with Bio_ClinicalBERT's configuration
  (``pooler_output``) and a 3-layer MLP 768->768; encoder layers 0-10 are frozen, but the
  embeddings, layer 11 and the pooler train, so the backward runs through all 12 layers. Texts
  are tokenised with the packaged MiniLM WordPiece tokenizer (Bio_ClinicalBERT's own cannot be
  downloaded here); ids past BERT-cased's 28,996 become [UNK]. The reference also re-encodes the
  batch's report texts each step; they are left out, so its cost here is an underestimate.

One backward through the tower for 105 x 256 tokens holds about 30 GB of activations on CPU, so
the tower runs in chunks of ``--text-chunk`` texts: a chunk's forward, then its backward with
that chunk's rows of the loss gradient. That is the arithmetic of the single backward
(parameter gradients accumulate over chunks) with one chunk's activations alive; the label
vectors the ECG side sees are the ones the tower produced in the previous step.

Timings: median of ``--steps`` steps after one warm-up step (the reference's warm-up encodes
only the first chunk), ked and reference steps alternating. The step is split into the ECG side
(model forward, loss, backward), the text tower (forward and backward) and the AdamW update.

    python bench/pretraining_step.py [--batch-size 32] [--head cosine] [--steps 2] [--text-chunk 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, BertConfig, BertModel

from encoders.datasets import record_label_strings, target_labels
from encoders.ecg import ECGDataset, Manifest, Preprocessing
from encoders.models.ked_model import KedModel, ModelConfig
from encoders.text import Embedder, EncoderSpec, LabelEntry, label_entries, label_matrix
from encoders.training.losses import AlignmentLoss
from kb_store.store import KnowledgeBase
from knowledge.curated import import_pack

VOCAB = "mimiciv-ked"
VIEW = "name"
REFERENCE_DIM = 768
TEXT_TOKENS = 256
LR, WEIGHT_DECAY = 5e-5, 0.02
REPO = Path(__file__).resolve().parents[1]
SHARED_PTBXL = (
    Path(os.environ.get("KED_SHARED_DATA", REPO.parent / "shared" / "data")) / "ptbxl_sample"
)


def ptbxl_spec() -> str:
    """The shared 1,625-record PTB-XL sample, or the packaged 400-record one when it is absent."""
    if SHARED_PTBXL.is_dir():
        return f"ptbxl-array:{SHARED_PTBXL}"
    print(f"{SHARED_PTBXL} not found: using the packaged 400-record PTB-XL sample instead")
    return "sample"


def knowledge_base(folder: str | Path) -> KnowledgeBase:
    """A fresh knowledge base in ``folder`` holding the curated pack."""
    kb = KnowledgeBase(Path(folder) / "bench.duckdb")
    import_pack(kb)
    return kb


def cached_label_vectors(kb: KnowledgeBase) -> tuple[list[LabelEntry], torch.Tensor]:
    """The 105 reference labels and their (105, 384) vectors, read from the embedding cache.

    The first ``label_matrix`` call embeds the labels into the cache (what ``ked embed`` does);
    the second is what training does: it reads them and refuses to run the text encoder.
    """
    entries = label_entries(kb, vocab=VOCAB)
    embedder = Embedder(kb, EncoderSpec())
    label_matrix(embedder, entries, [VIEW])
    return entries, label_matrix(embedder, entries, [VIEW], embed_missing=False).tensor()


def labelled_dataset(
    kb: KnowledgeBase, entries: list[LabelEntry], manifest: Manifest, **dataset_options: Any
) -> ECGDataset:
    """The records of ``manifest`` with targets over ``entries`` (SCP statements via the KB).

    ``dataset_options`` go to `ECGDataset` (``cache``, ``cache_workers``).
    """
    mapping = target_labels(kb, entries, record_label_strings(manifest))
    labels = [entry.label for entry in entries]
    return ECGDataset(manifest, Preprocessing(), labels, mapping.get, **dataset_options)


class Trainer:
    """A ked model, ``AlignmentLoss`` and AdamW over the model and any ``extra`` parameters."""

    def __init__(self, model: KedModel, extra: Iterable[nn.Parameter] = ()) -> None:
        self.model = model.train()
        self.loss = AlignmentLoss()
        params = [p for p in [*model.parameters(), *extra] if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)

    def backward(self, x: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor) -> None:
        """Model forward, loss and backward for one batch."""
        out = self.model(x, labels)
        terms = self.loss(out.logits, out.ecg_embeddings, out.label_embeddings, targets)
        terms["loss"].backward()

    def update(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def step(
        self, x: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, float]:
        """One training step against fixed ``labels``; seconds of each part."""
        started = time.perf_counter()
        self.backward(x, targets, labels)
        ecg_done = time.perf_counter()
        self.update()
        return {"ecg": ecg_done - started, "text": 0.0, "optim": time.perf_counter() - ecg_done}


def bio_clinical_bert_config() -> BertConfig:
    """Bio_ClinicalBERT's architecture (BERT-base, cased vocabulary), written out: no download."""
    return BertConfig(
        vocab_size=28996,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
    )


class TextTower(nn.Module):
    """The reference's text side: BERT ``pooler_output`` -> Linear-GELU-Linear-GELU-Linear.

    Encoder layers 0-10 are frozen; the embeddings, layer 11, the pooler and the MLP train.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.bert = BertModel(config)
        for layer in self.bert.encoder.layer[:-1]:
            layer.requires_grad_(False)
        dim = config.hidden_size
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim)
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.bert(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return self.mlp(pooled)


def tokenize(texts: list[str], vocab_size: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Token ids and attention masks padded to 256, and how many ids were mapped to [UNK]."""
    tokenizer = AutoTokenizer.from_pretrained(str(EncoderSpec().model_path()))
    encoded = tokenizer(
        texts, padding="max_length", truncation=True, max_length=TEXT_TOKENS, return_tensors="pt"
    )
    ids = encoded["input_ids"]
    outside = ids >= vocab_size
    return (
        ids.masked_fill(outside, tokenizer.unk_token_id),
        encoded["attention_mask"],
        int(outside.sum()),
    )


class ReferenceTrainer:
    """The reference's step: the text tower re-encodes every label text, with gradients."""

    def __init__(
        self,
        model: KedModel,
        tower: TextTower,
        tokens: tuple[torch.Tensor, torch.Tensor],
        chunk: int,
        initial_labels: torch.Tensor,
    ) -> None:
        self.trainer = Trainer(model, tower.parameters())
        self.tower = tower.train()
        self.ids, self.mask = tokens
        self.chunk = chunk
        self.labels = initial_labels.clone()

    def step(
        self, x: torch.Tensor, targets: torch.Tensor, texts: int | None = None
    ) -> dict[str, float]:
        """One step, encoding the first ``texts`` label texts (all by default)."""
        started = time.perf_counter()
        labels = self.labels.detach().requires_grad_()
        self.trainer.backward(x, targets, labels)
        ecg_done = time.perf_counter()
        assert labels.grad is not None
        encoded = self.labels.clone()
        for start in range(0, texts or len(self.ids), self.chunk):
            rows = slice(start, start + self.chunk)
            vectors = self.tower(self.ids[rows], self.mask[rows])
            vectors.backward(labels.grad[rows])
            encoded[rows] = vectors.detach()
        text_done = time.perf_counter()
        self.trainer.update()
        self.labels = encoded
        return {
            "ecg": ecg_done - started,
            "text": text_done - ecg_done,
            "optim": time.perf_counter() - text_done,
        }


def _params(module: nn.Module, *, trainable: bool = False) -> float:
    """Millions of (trainable) parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--head", choices=["cosine", "decoder"], default="cosine")
    parser.add_argument("--steps", type=int, default=2, help="measured steps after a warm-up")
    parser.add_argument("--text-chunk", type=int, default=15, help="texts per tower chunk")
    args = parser.parse_args()
    torch.manual_seed(0)
    spec = ptbxl_spec()
    with tempfile.TemporaryDirectory() as tmp, knowledge_base(tmp) as kb:
        entries, cached = cached_label_vectors(kb)
        dataset = labelled_dataset(kb, entries, Manifest.scan(spec).ok)
    x, _, targets = next(iter(DataLoader(dataset, batch_size=args.batch_size)))
    labels = F.pad(cached, (0, REFERENCE_DIM - cached.shape[1]))
    config = ModelConfig(encoder="xresnet1d101", text_dim=REFERENCE_DIM, head=args.head)
    ked = Trainer(KedModel(config))
    reference_model = KedModel(config)
    reference_model.load_state_dict(ked.model.state_dict())
    tower = TextTower(bio_clinical_bert_config())
    ids, mask, unknown = tokenize([e.label for e in entries], tower.bert.config.vocab_size)
    reference = ReferenceTrainer(reference_model, tower, (ids, mask), args.text_chunk, labels)

    print(
        f"{len(x)} real records of {spec} ({int(targets.sum())} positives), {len(entries)} labels, "
        f"xresnet1d101, head {args.head}, torch threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"ked: label vectors {tuple(cached.shape)} from the cache ({EncoderSpec().model}, "
        f"'{VIEW}' view), zero-padded to {tuple(labels.shape)}; model {_params(ked.model):.1f} M"
    )
    print(
        f"reference: {len(ids)} texts x {ids.shape[1]} tokens ({int(mask.sum())} real, "
        f"{unknown} ids -> [UNK]) through BERT-base {_params(tower.bert):.1f} M params "
        f"({_params(tower.bert, trainable=True):.1f} M trainable) + MLP "
        f"{_params(tower.mlp):.1f} M, in chunks of {args.text_chunk}"
    )
    ked.step(x, targets, labels)
    reference.step(x, targets, texts=args.text_chunk)
    times: dict[str, list[dict[str, float]]] = {"ked": [], "reference": []}
    for step in range(args.steps):
        times["ked"].append(ked.step(x, targets, labels))
        times["reference"].append(reference.step(x, targets))
        print(
            f"step {step + 1}: ked {sum(times['ked'][-1].values()):.2f} s, "
            f"reference {sum(times['reference'][-1].values()):.2f} s"
        )

    print(f"\nmedian of {args.steps} steps after a warm-up")
    print(f"{'side':<10} {'step s':>8} {'ecg s':>8} {'text s':>8} {'optim s':>8} {'rec/s':>7}")
    medians = {}
    for side, rows in times.items():
        part = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        medians[side] = statistics.median(sum(row.values()) for row in rows)
        print(
            f"{side:<10} {medians[side]:8.2f} {part['ecg']:8.2f} {part['text']:8.2f} "
            f"{part['optim']:8.2f} {len(x) / medians[side]:7.2f}"
        )
    text = statistics.median(row["text"] / sum(row.values()) for row in times["reference"])
    print(f"reference / ked step: {medians['reference'] / medians['ked']:.1f}x")
    print(f"text tower share of the reference step: {100 * text:.1f}%")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
