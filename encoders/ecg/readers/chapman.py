"""Chapman-Shaoxing (Zheng et al., Scientific Data 2020): ``.mat`` files with ``val`` of shape
(5000, 12) in microvolts at 500 Hz, and ``Diagnostics.xlsx`` (``Rhythm`` and space-separated
``Beat`` codes, keyed by ``FileName``).

Codes map to SNOMED-CT through `CHAPMAN_RHYTHM` and `CHAPMAN_BEAT`. Source of the tables: the
code definitions of Zheng et al. 2020 (their Tables 1 and 2), matched to the concepts of the
PhysioNet/CinC 2021 mappings (``dx_mapping_scored.csv`` / ``dx_mapping_unscored.csv``); the
challenge's ``Chapman_Shaoxing`` counts agree with the code counts of ``Diagnostics.xlsx``
(e.g. LVHV 1314 vs 1295, TWC 1906 vs 1876). In Chapman ``AF`` is atrial *flutter* and ``AFIB``
atrial fibrillation. Two choices by the code's meaning, where the challenge merged codes into
LBBB: ``LFBBB`` (left front bundle branch block) is left anterior fascicular block and
``LBBBB`` (left back bundle branch block) left posterior fascicular block. Codes without a
SNOMED-CT equivalent stay plain names (`CHAPMAN_NAMES`), or the raw code when its meaning is not
documented (``LRRI``, ``JPS``); ``NONE`` means no beat finding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from encoders.ecg.readers.base import (
    ECGSource,
    RecordRef,
    load_mat,
    mat_array,
    parse_age,
    parse_sex,
    read_table,
    row_for,
)
from encoders.ecg.record import MIN_DURATION_S, ECGReadError, ECGRecord
from knowledge.leads import STANDARD_LEADS

CHAPMAN_FS = 500.0
_MICROVOLT_TO_MILLIVOLT = 1e-3

CHAPMAN_RHYTHM = {
    "SB": "SNOMED:426177001",  # sinus bradycardia
    "SR": "SNOMED:426783006",  # sinus rhythm
    "AFIB": "SNOMED:164889003",  # atrial fibrillation
    "ST": "SNOMED:427084000",  # sinus tachycardia
    "AF": "SNOMED:164890007",  # atrial flutter
    "SA": "SNOMED:427393009",  # sinus arrhythmia
    "SVT": "SNOMED:426761007",  # supraventricular tachycardia
    "AT": "SNOMED:713422000",  # atrial tachycardia
    "AVNRT": "SNOMED:251166008",  # atrioventricular node reentrant tachycardia
    "AVRT": "SNOMED:233897008",  # atrioventricular reentrant tachycardia
    "SAAWR": "SNOMED:17366009",  # sinus atrium to atrial wandering rhythm
}

CHAPMAN_BEAT = {
    "1AVB": "SNOMED:270492004",  # 1st degree AV block
    "2AVB": "SNOMED:195042002",  # 2nd degree AV block
    "2AVB1": "SNOMED:54016002",  # 2nd degree AV block type I (Wenckebach)
    "2AVB2": "SNOMED:426183003",  # 2nd degree AV block type II (Mobitz II)
    "3AVB": "SNOMED:27885002",  # complete heart block
    "ABI": "SNOMED:251173003",  # atrial bigeminy
    "ALS": "SNOMED:39732003",  # axis left shift: left axis deviation
    "APB": "SNOMED:284470004",  # atrial premature beat
    "AQW": "SNOMED:164917005",  # abnormal Q wave
    "ARS": "SNOMED:47665007",  # axis right shift: right axis deviation
    "AVB": "SNOMED:233917008",  # AV block
    "CCR": "SNOMED:251199005",  # counterclockwise rotation
    "CR": "SNOMED:251198002",  # clockwise rotation
    "ERV": "SNOMED:428417006",  # early repolarization of the ventricles
    "FQRS": "SNOMED:164942001",  # fQRS wave
    "IDC": "SNOMED:698252002",  # interior differences conduction: nonspecific IVCD
    "IVB": "SNOMED:698252002",  # intraventricular block: nonspecific IVCD
    "JEB": "SNOMED:426995002",  # junctional escape beat
    "JPT": "SNOMED:251164006",  # junctional premature beat
    "LBBB": "SNOMED:164909002",  # left bundle branch block
    "LFBBB": "SNOMED:445118002",  # left front bundle branch block: left anterior fascicular
    "LBBBB": "SNOMED:445211001",  # left back bundle branch block: left posterior fascicular
    "LVH": "SNOMED:164873001",  # left ventricular hypertrophy
    "LVHV": "SNOMED:55827005",  # left ventricle high voltage
    "LVQRSAL": "SNOMED:251146004",  # low QRS voltage in all leads
    "LVQRSCL": "SNOMED:251146004",  # low QRS voltage in chest leads
    "LVQRSLL": "SNOMED:251146004",  # low QRS voltage in limb leads
    "MI": "SNOMED:164865005",  # myocardial infarction
    "MIBW": "SNOMED:164865005",  # myocardial infarction in the back wall
    "MIFW": "SNOMED:54329005",  # myocardial infarction in the front wall: anterior MI
    "MILW": "SNOMED:164865005",  # myocardial infarction in the lower wall
    "MISW": "SNOMED:164865005",  # myocardial infarction in the side wall
    "PRIE": "SNOMED:164947007",  # PR interval extension
    "PWC": "SNOMED:164912004",  # P wave change
    "QTIE": "SNOMED:111975006",  # QT interval extension
    "RAH": "SNOMED:446358003",  # right atrial hypertrophy
    "RAHV": "SNOMED:67751000119106",  # right atrial high voltage
    "RBBB": "SNOMED:59118001",  # right bundle branch block
    "RVH": "SNOMED:89792004",  # right ventricular hypertrophy
    "STDD": "SNOMED:429622005",  # ST drop down: ST depression
    "STE": "SNOMED:164931005",  # ST extension: ST elevation
    "STTC": "SNOMED:428750005",  # ST-T change: nonspecific ST-T abnormality
    "STTU": "SNOMED:164931005",  # ST tilt up: ST elevation
    "TWC": "SNOMED:164934002",  # T wave change: T wave abnormal
    "TWO": "SNOMED:59931005",  # T wave opposite: T wave inversion
    "UW": "SNOMED:164937009",  # U wave: U wave abnormal
    "VB": "SNOMED:11157007",  # ventricular bigeminy
    "VEB": "SNOMED:75532003",  # ventricular escape beat
    "VET": "SNOMED:251180001",  # ventricular escape trigeminy: ventricular trigeminy
    "VFW": "SNOMED:13640000",  # ventricular fusion wave: fusion beats
    "VPB": "SNOMED:17338001",  # ventricular premature beat
    "VPE": "SNOMED:195060002",  # ventricular preexcitation
    "WPW": "SNOMED:74390002",  # Wolff-Parkinson-White pattern
}

CHAPMAN_NAMES = {"WAVN": "wandering in the atrioventricular node"}

_NO_FINDING = "NONE"


def chapman_labels(rhythm: str, beat: str) -> tuple[str, ...]:
    """Label strings of one ``Diagnostics.xlsx`` row (rhythm first, then beat codes)."""
    labels = [CHAPMAN_RHYTHM.get(rhythm.strip(), CHAPMAN_NAMES.get(rhythm.strip(), rhythm.strip()))]
    for code in beat.split():
        if code != _NO_FINDING:
            labels.append(CHAPMAN_BEAT.get(code, CHAPMAN_NAMES.get(code, code)))
    return tuple(dict.fromkeys(label for label in labels if label))


def read_chapman_mat(path: Path) -> np.ndarray:
    """The (12, N) signal in mV of one Chapman ``.mat`` file (``val``: (N, 12) in microvolts)."""
    val = mat_array(load_mat(path), "val", path)
    if val.ndim != 2 or val.shape[1] != len(STANDARD_LEADS):
        raise ECGReadError(path, f"'val' must have shape (samples, 12), got {val.shape}")
    return val.T.astype(np.float64) * _MICROVOLT_TO_MILLIVOLT


class ChapmanSource(ECGSource):
    """A folder (searched recursively) of Chapman ``.mat`` files and its ``Diagnostics.xlsx``.

    Chapman has one ECG per patient and no patient id column; splits are record-level.
    """

    kind = "chapman"
    layout = "Chapman .mat files ('val' (5000, 12), 500 Hz, microvolts) + Diagnostics.xlsx"

    def __init__(
        self, root: str | Path, *, min_duration_s: float = MIN_DURATION_S, spec: str | None = None
    ) -> None:
        super().__init__(root, min_duration_s=min_duration_s, spec=spec)
        self.diagnostics_path = self.root / "Diagnostics.xlsx"
        table = read_table(self.diagnostics_path, ("FileName", "Rhythm", "Beat"))
        table.index = table["FileName"].astype(str).str.strip()
        self.table = table

    @classmethod
    def looks_like(cls, path: Path) -> bool:
        return (path / "Diagnostics.xlsx").is_file()

    def refs(self) -> list[RecordRef]:
        return [RecordRef(mat.stem, mat) for mat in sorted(self.root.rglob("*.mat"))]

    def files(self, ref: RecordRef) -> tuple[Path, ...]:
        return (ref.path, self.diagnostics_path)

    def _read(self, ref: RecordRef) -> ECGRecord:
        row = row_for(self.table, ref.record_id, path=ref.path, table_path=self.diagnostics_path)
        rhythm, beat = str(row["Rhythm"]), str(row["Beat"])
        return ECGRecord(
            record_id=ref.record_id,
            signal=read_chapman_mat(ref.path),
            fs=CHAPMAN_FS,
            leads=STANDARD_LEADS,
            units="mV",
            labels=chapman_labels(rhythm, beat),
            patient_id=None,
            source=str(ref.path),
            dataset=self.kind,
            meta={
                "age": parse_age(row.get("PatientAge")),
                "sex": parse_sex(row.get("Gender")),
                "rhythm": rhythm,
                "beat": beat,
            },
        )
