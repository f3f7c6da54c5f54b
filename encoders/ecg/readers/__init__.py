"""One reader per on-disk ECG format; each source lists its records and reads them one by one."""

from __future__ import annotations

from encoders.ecg.readers.base import ECGSource, RecordRef, SkippedRecord
from encoders.ecg.readers.chapman import ChapmanSource, read_chapman_mat
from encoders.ecg.readers.code15 import CODE15Source
from encoders.ecg.readers.cpsc2018 import CPSC2018Source, read_cpsc2018_mat
from encoders.ecg.readers.mimic_iv_ecg import MIMICIVECGSource
from encoders.ecg.readers.physionet import CinCSource, read_cinc_record, read_wfdb_signal
from encoders.ecg.readers.ptbxl import PTBXLArraySource, PTBXLHighRateSource, PTBXLSource

__all__ = [
    "CODE15Source",
    "CPSC2018Source",
    "ChapmanSource",
    "CinCSource",
    "ECGSource",
    "MIMICIVECGSource",
    "PTBXLArraySource",
    "PTBXLHighRateSource",
    "PTBXLSource",
    "RecordRef",
    "SkippedRecord",
    "read_chapman_mat",
    "read_cinc_record",
    "read_cpsc2018_mat",
    "read_wfdb_signal",
]
