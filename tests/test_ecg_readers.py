"""Readers on every real sample format, the packaged sample, and corrupt or mislabelled input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import wfdb

from encoders.ecg import (
    ECGReadError,
    ECGRecord,
    SkippedRecord,
    detect_format,
    open_source,
    sample_data_dir,
)
from encoders.ecg.readers import (
    ChapmanSource,
    CinCSource,
    CODE15Source,
    CPSC2018Source,
    PTBXLArraySource,
    PTBXLSource,
    read_cinc_record,
)
from encoders.ecg.readers.code15 import trim_zero_padding
from knowledge.leads import STANDARD_LEADS

PACKAGED_CINC = sample_data_dir() / "cinc2021"


def _adc_to_mv(header: Path) -> np.ndarray:
    """The physical signal of a CinC .mat record computed by hand from the header's gains."""
    lines = [line.split() for line in header.read_text().splitlines()[1:13]]
    gain = np.array([float(line[2].split("(")[0].split("/")[0]) for line in lines])
    baseline = np.array(
        [float(line[2].split("(")[1].split(")")[0]) if "(" in line[2] else 0.0 for line in lines]
    )
    val = scipy.io.loadmat(header.with_suffix(".mat"))["val"].astype(np.float64)
    return (val - baseline[:, None]) / gain[:, None]


def _copy_record(stem: str, folder: Path, new_stem: str | None = None) -> Path:
    """Copy a packaged CinC record into ``folder`` (renamed when ``new_stem`` is given)."""
    new_stem = new_stem or stem
    text = (PACKAGED_CINC / f"{stem}.hea").read_text().replace(stem, new_stem)
    (folder / f"{new_stem}.hea").write_text(text)
    shutil.copyfile(PACKAGED_CINC / f"{stem}.mat", folder / f"{new_stem}.mat")
    return folder / f"{new_stem}.hea"


# --- packaged sample (no shared data needed) -------------------------------------------------


def test_packaged_ptbxl_sample_reads_with_official_scp_labels() -> None:
    source = open_source("sample")
    records = list(source.iter_records())
    table = pd.read_csv(sample_data_dir() / "ptbxl_400_labels.csv")

    assert source.spec == "sample"
    assert len(records) == 400
    assert {r.signal.shape for r in records} == {(12, 1000)}
    assert {(r.fs, r.units, r.leads) for r in records} == {(100.0, "z-score", STANDARD_LEADS)}
    assert sum(r.meta["split"] == "val" for r in records) == 183
    nst = [r for r, flag in zip(records, table["form:NST"], strict=True) if flag]
    assert nst and all("SCP:NST_" in r.labels for r in nst)
    assert not any("SCP:NST" in r.labels for r in records)
    sr_records = {r.record_id for r in records if "SCP:SR" in r.labels}
    assert sr_records == {str(i) for i in table.loc[table["rhythm:SR"] == 1, "ecg_id"]}
    # A sub-class of one statement is that statement; a class or a group of statements is the
    # diagnosis it names (inferior MI in any territory, myocardial infarction).
    norm = {str(i) for i in table.loc[table["sub_class:NORM"] == 1, "ecg_id"]}
    assert norm and norm == {r.record_id for r in records if "SCP:NORM" in r.labels}
    assert any("IMI" in r.meta["sub_class"] for r in records)
    for column, label in (
        ("sub_class:IMI", "SCP:IMI"),
        ("super_class:MI", "myocardial infarction"),
        ("super_class:CD", "conduction disturbance"),
    ):
        flagged = {str(i) for i in table.loc[table[column] == 1, "ecg_id"]}
        assert flagged and flagged == {r.record_id for r in records if label in r.labels}
    assert any("NORM" in r.meta["super_class"] for r in records)


def test_packaged_cinc_records_match_header_gains() -> None:
    records = {r.record_id: r for r in CinCSource(PACKAGED_CINC).iter_records()}

    a1041, hr = records["A1041"], records["HR06002"]
    assert a1041.labels == ("SNOMED:164889003", "SNOMED:164909002")
    assert hr.labels == ("SNOMED:426177001", "SNOMED:426783006", "SNOMED:713426002")
    assert (a1041.fs, a1041.n_samples, a1041.units) == (500.0, 8500, "mV")
    assert a1041.meta["origin"] == "CPSC 2018" and hr.meta["origin"] == "PTB-XL"
    for record in (a1041, hr):  # HR06002 writes its units "mv"
        expected = _adc_to_mv(Path(record.source))
        np.testing.assert_allclose(record.signal, expected, rtol=1e-5, atol=1e-6)


def test_header_naming_the_record_with_extension_is_read(tmp_path: Path) -> None:
    """The Georgia quirk: line 1 says ``E00271.mat 12 500 5000`` instead of ``E00271 ...``."""
    header = _copy_record("HR06002", tmp_path)
    lines = header.read_text().splitlines()
    lines[0] = lines[0].replace("HR06002", "HR06002.mat", 1)
    header.write_text("\n".join(lines) + "\n")

    record = read_cinc_record(header)

    original = read_cinc_record(PACKAGED_CINC / "HR06002.hea")
    np.testing.assert_array_equal(record.signal, original.signal)
    assert record.labels == original.labels


def test_header_naming_an_unknown_lead_is_refused(tmp_path: Path) -> None:
    header = _copy_record("HR06002", tmp_path)
    header.write_text(header.read_text().replace(" V6\n", " V7\n"))

    with pytest.raises(ECGReadError, match="V7") as info:
        read_cinc_record(header)
    assert str(header) in str(info.value)


def test_truncated_wfdb_signal_file_is_refused(tmp_path: Path) -> None:
    header = _copy_record("A1041", tmp_path)
    mat = header.with_suffix(".mat")
    mat.write_bytes(mat.read_bytes()[:5000])

    with pytest.raises(ECGReadError, match="A1041"):
        read_cinc_record(header)


@pytest.mark.parametrize("rate", ["abc", "-500", "0", "nan"])
def test_malformed_header_sampling_rate_is_an_error_naming_the_file(
    tmp_path: Path, rate: str
) -> None:
    header = _copy_record("A1041", tmp_path)
    lines = header.read_text().splitlines()
    fields = lines[0].split()
    fields[2] = rate
    header.write_text("\n".join([" ".join(fields), *lines[1:]]) + "\n")

    with pytest.raises(ECGReadError, match=f"sampling rate '{rate}' on the header") as info:
        read_cinc_record(header)
    assert info.value.path == str(header)
    skipped: list[SkippedRecord] = []
    assert list(CinCSource(tmp_path).iter_records(skipped)) == []
    assert [(s.record_id, s.path) for s in skipped] == [("A1041", str(header))]


def test_header_rate_with_a_counter_frequency_is_read(tmp_path: Path) -> None:
    header = _copy_record("A1041", tmp_path)
    header.write_text(header.read_text().replace(" 500 8500 ", " 500/1000(0) 8500 ", 1))
    assert read_cinc_record(header).fs == 500.0


def test_missing_header_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ECGReadError, match="header not found"):
        read_cinc_record(tmp_path / "absent.hea")


def test_rates_that_cannot_hold_an_ecg_are_refused(tmp_path: Path) -> None:
    signal = np.sin(np.linspace(0, 60, 300))[:, None] * np.ones((1, 12))
    wfdb.wrsamp(
        "slow",
        fs=25,
        units=["mV"] * 12,
        sig_name=list(STANDARD_LEADS),
        p_signal=signal,
        fmt=["16"] * 12,
        write_dir=str(tmp_path),
    )

    with pytest.raises(ECGReadError, match="25 Hz is below the minimum") as info:
        read_cinc_record(tmp_path / "slow.hea")
    assert "slow.hea" in str(info.value)
    for rate in (0.0, float("nan"), -100.0):
        with pytest.raises(ECGReadError, match="invalid sampling rate"):
            ECGRecord("r", np.ones((1, 1000)), rate, ("I",), "mV", (), None, "x.mat", "test")


def test_array_whose_declared_rate_contradicts_its_shape_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "signals_500hz.npy", np.zeros((2, 12, 1000), np.float16))
    pd.DataFrame({"ecg_id": [1, 2], "split": ["train", "val"]}).to_csv(
        tmp_path / "labels.csv", index=False
    )

    with pytest.raises(ECGReadError, match="500 Hz contradicts 1000 samples") as info:
        PTBXLArraySource(tmp_path)
    assert "signals_500hz.npy" in str(info.value)
    with pytest.raises(ECGReadError, match="fs=100 Hz contradicts the file name"):
        PTBXLArraySource(tmp_path, fs=100)


# --- CPSC-style folders written in the test: corrupt records ----------------------------------


def _write_cpsc(folder: Path, records: dict[str, np.ndarray]) -> None:
    folder.mkdir(exist_ok=True)
    for name, data in records.items():
        scipy.io.savemat(
            folder / f"{name}.mat", {"ECG": {"sex": "Female", "age": 61, "data": data}}
        )
    pd.DataFrame(
        {
            "patient_id": range(len(records)),
            "filename": list(records),
            "AFIB": [1] * len(records),
            "STD": [0] * len(records),
        }
    ).to_csv(folder / "labels.csv", index=False)


def test_cpsc_corrupt_records_are_reported_and_skipped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    good = rng.normal(size=(12, 5000))
    _write_cpsc(
        tmp_path,
        {
            "A0001": good,
            "A0002": np.full((12, 5000), np.nan),
            "A0003": good[:, :1000],
            "A0004": good[:11],
            "A0005": good,
            "A0006": good,
        },
    )
    truncated = tmp_path / "A0006.mat"
    truncated.write_bytes(truncated.read_bytes()[:20000])

    skipped: list[SkippedRecord] = []
    records = list(CPSC2018Source(tmp_path).iter_records(skipped))

    assert [r.record_id for r in records] == ["A0001", "A0005"]
    np.testing.assert_allclose(records[0].signal, good.astype(np.float32))
    assert records[0].labels == ("SNOMED:164889003",)
    assert records[0].meta == {"age": 61.0, "sex": "female"}
    reasons = {s.record_id: (Path(s.path).name, s.reason) for s in skipped}
    assert reasons["A0002"] == (
        "A0002.mat",
        "record A0002: signal has no finite value (all NaN or infinite)",
    )
    assert "shorter than the minimum of 5 s" in reasons["A0003"][1]
    assert "shape (12, samples)" in reasons["A0004"][1]
    assert reasons["A0006"][0] == "A0006.mat" and "unreadable MATLAB file" in reasons["A0006"][1]


def test_unknown_layout_lists_the_formats(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an ECG")

    with pytest.raises(ECGReadError, match="unrecognised dataset layout") as info:
        open_source(tmp_path)
    for kind in ("cinc2021", "ptbxl-array", "ptbxl", "cpsc2018", "chapman", "code15"):
        assert f"{kind}:" in str(info.value)
    with pytest.raises(ValueError, match="unknown dataset kind 'mitbih'"):
        open_source("mitbih:/nowhere")


# --- PTB-XL official layout, built in the test with wfdb.wrsamp ------------------------------


PTBXL_NAMES = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
PTBXL_ROWS = (  # ecg_id, strat_fold, scp_codes
    (1, 3, "{'NORM': 100.0, 'SR': 0.0}"),
    (2, 9, "{'NST_': 50.0, 'AFIB': 0.0}"),
    (3, 10, "{'IMI': 80.0}"),
)


def _write_ptbxl(root: Path) -> dict[str, np.ndarray]:
    """Three records in PTB-XL's official layout at 100 and 500 Hz; returns the signals."""
    rng = np.random.default_rng(1)
    rows, signals = [], {}
    for ecg_id, fold, codes in PTBXL_ROWS:
        for rate, suffix in ((100, "lr"), (500, "hr")):
            directory = root / f"records{rate}" / "00000"
            directory.mkdir(parents=True, exist_ok=True)
            signal = rng.normal(scale=0.5, size=(10 * rate, 12)).round(3)
            wfdb.wrsamp(
                f"{ecg_id:05d}_{suffix}",
                fs=rate,
                units=["mV"] * 12,
                sig_name=PTBXL_NAMES,
                p_signal=signal,
                fmt=["16"] * 12,
                adc_gain=[1000.0] * 12,
                baseline=[0] * 12,
                write_dir=str(directory),
            )
            signals[f"{ecg_id}_{rate}"] = signal.T
        rows.append(
            {
                "ecg_id": ecg_id,
                "patient_id": 15700.0 + ecg_id % 2,
                "age": 50,
                "sex": 1,
                "scp_codes": codes,
                "strat_fold": fold,
                "filename_lr": f"records100/00000/{ecg_id:05d}_lr",
                "filename_hr": f"records500/00000/{ecg_id:05d}_hr",
            }
        )
    pd.DataFrame(rows).to_csv(root / "ptbxl_database.csv", index=False)
    return signals


def test_ptbxl_official_layout(tmp_path: Path) -> None:
    signals = _write_ptbxl(tmp_path)

    assert detect_format(tmp_path) is PTBXLSource
    records = {r.record_id: r for r in open_source(tmp_path).iter_records()}
    high = {r.record_id: r for r in open_source(f"ptbxl-hr:{tmp_path}").iter_records()}

    assert [records[i].labels for i in "123"] == [
        ("SCP:NORM", "SCP:SR"),
        ("SCP:NST_", "SCP:AFIB", "ST/T change"),
        ("SCP:IMI", "myocardial infarction"),
    ]
    assert [records[i].meta["split"] for i in "123"] == ["train", "val", "test"]
    assert [records[i].patient_id for i in "123"] == ["15701", "15700", "15701"]
    assert records["2"].meta["scp_likelihood"] == {"NST_": 50.0, "AFIB": 0.0}
    assert records["1"].meta["sex"] == "female"
    assert records["1"].leads == STANDARD_LEADS
    assert (records["1"].fs, records["1"].n_samples, high["1"].fs, high["1"].n_samples) == (
        100.0,
        1000,
        500.0,
        5000,
    )
    np.testing.assert_allclose(records["3"].signal, signals["3_100"], atol=1e-3)
    np.testing.assert_allclose(high["2"].signal, signals["2_500"], atol=1e-3)


# --- the shared samples -----------------------------------------------------------------------


@pytest.mark.shared_data
def test_cinc2021_shared_sample(shared_data: Path) -> None:
    folder = shared_data / "cinc2021"
    skipped: list[SkippedRecord] = []
    records = {r.record_id: r for r in open_source(folder).iter_records(skipped)}

    assert len(records) == 156 and not skipped
    assert {r.meta["origin"] for r in records.values()} == {
        "CPSC 2018",
        "Georgia",
        "PTB-XL",
        "Chapman-Shaoxing and Ningbo",
    }
    assert records["E07500"].labels == ("SNOMED:67741000119109", "SNOMED:426177001")
    assert records["E07500"].meta["age"] == 78.0  # "# Age: 78", with a space after '#'
    np.testing.assert_allclose(
        records["E00271"].signal, _adc_to_mv(folder / "E00271.hea"), rtol=1e-5, atol=1e-6
    )


@pytest.mark.shared_data
def test_ptbxl_array_shared_sample(shared_data: Path) -> None:
    source = open_source(shared_data / "ptbxl_sample")
    refs = source.refs()
    record = source.read(refs[0])
    table = pd.read_csv(shared_data / "ptbxl_sample" / "labels.csv")

    assert isinstance(source, PTBXLArraySource)
    assert isinstance(source.signals, np.memmap)
    assert len(refs) == 1625
    assert record.record_id == str(table["ecg_id"][0]) and record.signal.shape == (12, 1000)
    assert record.bandpass_hz == (0.5, 40.0)
    splits = [source.read(ref).meta["split"] for ref in refs[::25]]
    assert set(splits) == {"train", "val"}


@pytest.mark.shared_data
def test_cpsc2018_shared_sample(shared_data: Path) -> None:
    source = open_source(shared_data / "cpsc2018_sample")
    records = {r.record_id: r for r in source.iter_records()}

    assert isinstance(source, CPSC2018Source) and len(records) == 10
    assert records["A1980"].labels == ("SNOMED:284470004",)  # PAC
    assert records["A1986"].labels == ("SNOMED:713427006",)  # CRBBB
    assert records["A1980"].meta == {"age": 52.0, "sex": "male"}
    assert records["A1980"].patient_id == "4283"
    assert {r.fs for r in records.values()} == {500.0}
    assert max(r.duration_s for r in records.values()) > 10


@pytest.mark.shared_data
def test_chapman_shared_sample(shared_data: Path) -> None:
    folder = shared_data / "chapman_sample"
    source = open_source(folder)
    records = {r.record_id: r for r in source.iter_records()}
    flutter = records["MUSE_20180111_155542_84000"]
    st_rbbb = records["MUSE_20180111_155115_19000"]

    assert isinstance(source, ChapmanSource) and len(records) == 35
    assert flutter.labels == ("SNOMED:164890007",)  # Chapman "AF" is atrial flutter
    assert st_rbbb.labels == ("SNOMED:427084000", "SNOMED:164917005", "SNOMED:59118001")
    val = scipy.io.loadmat(folder / "MUSE_20180111_155115_19000.mat")["val"]
    np.testing.assert_allclose(st_rbbb.signal, val.T / 1000, rtol=1e-6)
    assert st_rbbb.meta["sex"] == "male" and st_rbbb.units == "mV"


@pytest.mark.shared_data
def test_code15_shared_sample(shared_data: Path) -> None:
    folder = shared_data / "code15_sample"
    source = open_source(folder)
    records = {r.record_id: r for r in source.iter_records()}
    first = records["code_15_438277"]  # idx 0: 1dAVb, patient 185323

    assert isinstance(source, CODE15Source) and len(records) == 10
    assert first.labels == ("SNOMED:270492004",)
    assert first.patient_id == "185323" and first.fs == 400.0
    assert {r.n_samples for r in records.values()} == {2934, 4096}
    feats = scipy.io.loadmat(folder / "org" / "code_15_438277.mat")["feats"]
    padded = np.pad(feats, ((0, 0), (50, 70)))
    np.testing.assert_array_equal(trim_zero_padding(padded), feats)
