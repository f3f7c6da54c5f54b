"""The pretraining recipe: the defaults of `ked pretrain` and of the Python API, in one place.

These are the settings behind the README's zero-shot figures (``bench/zero_shot.py``), so a
user who runs ``ked pretrain`` on their own data without tuning flags trains that way. Plain
values only: the command line reads them without importing torch.
"""

from __future__ import annotations

ENCODER = "xresnet1d_small"
"""ECG encoder; ``xresnet1d101`` is the reference's (use it on a GPU with data at scale)."""
VIEWS: tuple[str, ...] = ("name", "summary", "full")
"""Texts trained against: each step draws one view per label, so all of them work as queries."""
CENTER_LABELS = True
"""Centre label vectors on the mean pretraining text (stored in the checkpoint)."""
WHITEN_LABELS: float | None = 0.03
"""Whiten label vectors with the pretraining texts' covariance shrunk by this much towards the
identity (stored in the checkpoint); None: off. Chosen on the PTB-XL sample's validation split
(seed 0; 0.01, 0.03, 0.1 and 0.3 tried): the text encoder's near-duplicate labels move apart."""
MEMBERS = 1
"""ECG towers trained side by side and averaged (``ModelConfig.members``): a deep ensemble."""
POOLING = "mean"
"""ECG features over time: ``mean`` or ``mean+max`` (tried on validation, no gain: see README)."""
AUGMENT = True
"""Shift, gain, baseline wander, noise and lead dropout on training batches."""
EPOCHS = 40
BATCH_SIZE = 64
LR = 3e-3
WEIGHT_DECAY = 0.02
WARMUP_EPOCHS = 1.0
EMA_DECAY: float | None = None
"""Per-step decay of the weight average that is validated and saved; None: the raw weights."""
BCE_WEIGHT = 1.0
CONTRASTIVE_WEIGHT = 1.0
TEMPERATURE = 0.1
TARGET_CHOICES: tuple[str, ...] = ("labels", "reports", "both")
TARGETS = "labels"
"""What pretraining aligns recordings with: ``labels`` (label vectors), ``reports`` (the vectors
of each record's report text, where the dataset has reports) or ``both``."""
REPORT_WEIGHT = 1.0
"""Weight of the report term when training against reports."""
