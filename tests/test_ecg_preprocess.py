"""Properties of the preprocessing pipeline: rates, lead order, masks, windows, normalisation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import wfdb

from encoders.ecg import ECGRecord, Preprocessing, open_source, sample_data_dir
from encoders.ecg.readers import read_cinc_record
from knowledge.leads import STANDARD_LEADS

RAW = Preprocessing(bandpass_hz=None, normalize="none")


def _record(
    signal: np.ndarray, fs: float, leads: tuple[str, ...] = STANDARD_LEADS, **kwargs: object
) -> ECGRecord:
    return ECGRecord("r1", signal, fs, leads, "mV", (), None, "test.mat", "test", **kwargs)


def _sine(freq: float, fs: float, seconds: float, n_leads: int = 12) -> np.ndarray:
    t = np.arange(round(fs * seconds)) / fs
    return np.tile(np.sin(2 * np.pi * freq * t), (n_leads, 1))


@pytest.mark.parametrize("fs_in", [500.0, 400.0, 250.0, 257.0, 100.0])
def test_resampled_sine_keeps_its_frequency(fs_in: float) -> None:
    out = Preprocessing().apply(_record(_sine(7.0, fs_in, 10.0), fs_in))

    spectrum = np.abs(np.fft.rfft(out.x[0]))
    freqs = np.fft.rfftfreq(out.x.shape[-1], d=1 / 100.0)
    assert out.x.shape == (12, 1000) and out.x.dtype == np.float32
    assert freqs[np.argmax(spectrum)] == pytest.approx(7.0, abs=0.1)


def test_resampling_removes_content_above_the_new_nyquist() -> None:
    signal = _sine(7.0, 500.0, 10.0) + _sine(180.0, 500.0, 10.0)

    out = RAW.apply(_record(signal, 500.0))

    inner = slice(5, -5)  # the polyphase filter's edge transients last a few samples
    np.testing.assert_allclose(out.x[:, inner], _sine(7.0, 100.0, 10.0)[:, inner], atol=0.02)


def test_shuffled_lower_case_leads_come_out_in_standard_order(tmp_path: Path) -> None:
    order = [11, 3, 0, 7, 5, 1, 9, 2, 10, 4, 8, 6]
    names = [STANDARD_LEADS[i].lower() for i in order]
    signal = np.stack([np.full(5000, i + 1.0) + _sine(i + 2.0, 500, 10, 1)[0] for i in order])
    wfdb.wrsamp(
        "shuffled",
        fs=500,
        units=["mV"] * 12,
        sig_name=names,
        p_signal=signal.T,
        fmt=["16"] * 12,
        write_dir=str(tmp_path),
    )

    record = read_cinc_record(tmp_path / "shuffled.hea")
    out = Preprocessing(fs=500.0, bandpass_hz=None, normalize="none").apply(record)

    assert record.leads == tuple(STANDARD_LEADS[i] for i in order)
    for index in range(12):
        expected = np.full(5000, index + 1.0) + _sine(index + 2.0, 500, 10, 1)[0]
        np.testing.assert_allclose(out.x[index], expected, atol=1e-3)


def test_missing_and_all_nan_leads_are_zero_masked_and_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    leads = ("V1", "II", "I", "V2", "V3", "V4", "V5", "V6")  # no III, aVR, aVL, aVF
    signal = np.random.default_rng(0).normal(size=(8, 5000))
    signal[3] = np.nan  # V2 has no finite sample
    record = _record(signal, 500.0, leads)

    with caplog.at_level(logging.WARNING, logger="encoders.ecg.preprocess"):
        out = Preprocessing().apply(record)
        Preprocessing().apply(record)

    missing = {"III", "aVR", "aVL", "aVF", "V2"}
    assert out.lead_mask.tolist() == [lead not in missing for lead in STANDARD_LEADS]
    assert not out.x[~out.lead_mask].any()
    assert np.all(out.x[out.lead_mask].std(axis=-1) > 0.5)
    reports = [r.getMessage() for r in caplog.records if "missing" in r.getMessage()]
    assert reports == [
        "record r1 (test.mat): leads III, aVR, aVL, aVF, V2 missing; zero-filled and masked"
    ]


def test_crop_and_pad_give_the_window_length() -> None:
    long_record = read_cinc_record(sample_data_dir() / "cinc2021" / "A1041.hea")  # 17 s
    short = _record(np.random.default_rng(1).normal(size=(12, 3000)), 500.0)  # 6 s
    prepared = RAW.prepare(long_record)

    start = RAW.apply(long_record).x
    center = Preprocessing(bandpass_hz=None, normalize="none", crop="center").apply(long_record).x
    randomly = Preprocessing(bandpass_hz=None, normalize="none", crop="random")
    draw = randomly.apply(long_record, np.random.default_rng(5)).x
    padded = Preprocessing().apply(short).x

    assert prepared.x.shape == (12, 1700)
    assert start.shape == center.shape == draw.shape == padded.shape == (12, 1000)
    np.testing.assert_array_equal(start, prepared.x[:, :1000])
    np.testing.assert_array_equal(center, prepared.x[:, 350:1350])
    np.testing.assert_array_equal(draw, randomly.apply(long_record, np.random.default_rng(5)).x)
    assert any(
        not np.array_equal(draw, randomly.apply(long_record, np.random.default_rng(s)).x)
        for s in range(3)
    )
    assert not padded[:, 600:].any() and np.all(padded[:, :600].std(axis=-1) > 0.5)
    with pytest.raises(ValueError, match="needs a numpy Generator"):
        randomly.apply(long_record)


def test_zscore_per_lead_and_flat_leads_stay_finite() -> None:
    rng = np.random.default_rng(2)
    signal = rng.normal(loc=3.0, scale=np.arange(1, 13)[:, None] * 0.2, size=(12, 5000))
    signal[4] = 0.7  # a flat lead

    out = Preprocessing(bandpass_hz=None).apply(_record(signal, 500.0)).x

    live = np.arange(12) != 4
    np.testing.assert_allclose(out[live].mean(axis=-1), 0, atol=1e-5)
    np.testing.assert_allclose(out[live].std(axis=-1), 1, atol=1e-3)
    assert np.isfinite(out).all() and np.abs(out[4]).max() < 1e-3


def test_band_pass_removes_baseline_wander_and_is_skipped_for_filtered_input() -> None:
    signal = _sine(0.1, 100.0, 10.0) * 5 + _sine(10.0, 100.0, 10.0)
    keep = Preprocessing(normalize="none")

    filtered = keep.apply(_record(signal, 100.0)).x
    prefiltered = keep.apply(_record(signal, 100.0, bandpass_hz=(0.5, 40.0))).x
    wider = keep.apply(_record(signal, 100.0, bandpass_hz=(0.05, 45.0))).x

    middle = slice(200, 800)  # away from the filter's edge transients
    np.testing.assert_allclose(filtered[:, middle], _sine(10.0, 100.0, 10.0)[:, middle], atol=0.05)
    np.testing.assert_array_equal(prefiltered, signal.astype(np.float32))
    np.testing.assert_allclose(wider, filtered)


def test_nan_gaps_short_interpolated_long_flat() -> None:
    signal = _sine(1.0, 500.0, 10.0) + 2.0
    signal[:, 1000:1020] = np.nan  # 40 ms
    signal[:, 3000:3500] = np.nan  # 1 s

    out = Preprocessing(fs=500.0, bandpass_hz=None, normalize="none").prepare(
        _record(signal, 500.0)
    )

    clean = _sine(1.0, 500.0, 10.0)[0] + 2.0
    assert np.isfinite(out.x).all()
    np.testing.assert_allclose(out.x[0, 1000:1020], clean[1000:1020], atol=0.01)
    np.testing.assert_allclose(out.x[0, 3000:3500], np.nanmedian(signal[0]), atol=1e-6)


def test_settings_round_trip_through_json_and_are_validated() -> None:
    settings = Preprocessing(fs=250.0, window_s=5.0, crop="random", bandpass_hz=(1.0, 30.0))

    restored = Preprocessing.from_dict(json.loads(json.dumps(settings.to_dict())))

    assert restored == settings and restored.n_samples == 1250
    assert Preprocessing.from_dict(Preprocessing(bandpass_hz=None).to_dict()).bandpass_hz is None
    with pytest.raises(ValueError, match="unknown Preprocessing settings"):
        Preprocessing.from_dict({"fs": 100.0, "lowpass": 40})
    with pytest.raises(ValueError, match="fs/2"):
        Preprocessing(fs=50.0)
    with pytest.raises(ValueError, match="crop"):
        Preprocessing(crop="end")  # type: ignore[arg-type]


def test_packaged_sample_through_the_pipeline() -> None:
    source = open_source("sample")
    record = source.read(source.refs()[0])

    out = Preprocessing().apply(record)

    assert out.x.shape == (12, 1000) and out.lead_mask.all()
    assert out.record_id == record.record_id
    np.testing.assert_allclose(out.x.std(axis=-1), 1, atol=1e-3)
