"""ECG data: readers for the public datasets, one preprocessing pipeline, manifests, datasets.

source = open_source("cinc2021:/data/cinc")      # or a bare path, or "sample"
manifest = Manifest.open(source.spec, "cinc.parquet").with_splits(seed=0)
data = ECGDataset(manifest.split("train"), Preprocessing(crop="random"), labels, label_of)
"""

from __future__ import annotations

from encoders.ecg.dataset import ECGDataset, measure_throughput, multi_hot
from encoders.ecg.manifest import Manifest
from encoders.ecg.preprocess import PreprocessedECG, Preprocessing
from encoders.ecg.readers import ECGSource, RecordRef, SkippedRecord
from encoders.ecg.record import MIN_DURATION_S, MIN_FS_HZ, ECGReadError, ECGRecord
from encoders.ecg.sources import (
    SOURCE_TYPES,
    detect_format,
    open_source,
    sample_data_dir,
    sample_source,
)
from encoders.ecg.splits import assign_splits, ptbxl_fold_split, seeded_split

__all__ = [
    "MIN_DURATION_S",
    "MIN_FS_HZ",
    "SOURCE_TYPES",
    "ECGDataset",
    "ECGReadError",
    "ECGRecord",
    "ECGSource",
    "Manifest",
    "PreprocessedECG",
    "Preprocessing",
    "RecordRef",
    "SkippedRecord",
    "assign_splits",
    "detect_format",
    "measure_throughput",
    "multi_hot",
    "open_source",
    "ptbxl_fold_split",
    "sample_data_dir",
    "sample_source",
    "seeded_split",
]
