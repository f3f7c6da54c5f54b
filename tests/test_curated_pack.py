"""The curated pack: valid, complete for every vocabulary, idempotent to import, and right."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kb_store.store import KnowledgeBase
from knowledge.curated import PACK_DIR, CuratedPack, import_pack, load_pack
from knowledge.names import normalize_name
from knowledge.schema import DiagnosisKnowledge
from knowledge.views import render_view
from knowledge.vocab import list_vocabularies, load_vocabulary


@pytest.fixture(scope="module")
def pack() -> CuratedPack:
    return load_pack()


def record(pack: CuratedPack, name: str) -> DiagnosisKnowledge:
    found = pack.resolve(name)
    assert found is not None, name
    return found


def test_every_record_validates_and_names_are_unique(pack: CuratedPack) -> None:
    assert len(pack.records) == 214
    names = [normalize_name(r.name) for r in pack.records]
    assert len(set(names)) == len(names)
    assert pack.index  # building the index raises on any alias naming two records


def test_every_vocabulary_label_resolves_to_curated_knowledge(
    pack: CuratedPack, db_path: Path
) -> None:
    with KnowledgeBase(db_path) as kb:
        result = import_pack(kb, pack=pack)
        assert len(result.added) == len(pack.records)
        for vocab in list_vocabularies():
            labels = load_vocabulary(vocab).labels
            resolved = kb.resolve_many([label.query for label in labels])
            missing = [label.label for label in labels if resolved[label.query] is None]
            assert not missing, f"{vocab}: {missing}"
            for diagnosis in {d for d in resolved.values() if d is not None}:
                current = kb.current(diagnosis.id)
                assert current is not None and current.provenance.source == "curated"
                assert current.provenance.pack_version == pack.version


def test_shared_diagnoses_across_vocabularies(pack: CuratedPack) -> None:
    af = {record(pack, q).name for q in ("SCP:AFIB", "SNOMED:164889003", "atrial fibrillation")}
    assert af == {"atrial fibrillation"}
    # PTB-XL's SCP code AMI (anterior MI) and CinC's abbreviation AMI (acute MI) stay apart
    assert record(pack, "SCP:AMI").name == "anterior myocardial infarction"
    assert record(pack, "AMI").name == "acute myocardial infarction"


def test_records_carry_specific_content(pack: CuratedPack) -> None:
    for r in pack.records:
        assert len(r.criteria) >= 2, r.name
        assert r.differentials, r.name
        assert len(r.summary.split()) >= 25, r.name
    for view in ("summary", "full"):
        texts = [render_view(r, view) for r in pack.records]
        assert len(set(texts)) == len(texts), f"two records share a {view} view"


def test_facts_a_cardiologist_checks_first(pack: CuratedPack) -> None:
    first_degree = record(pack, "first degree AV block")
    assert first_degree.rhythm and first_degree.rhythm.pr_interval_ms
    assert (first_degree.rhythm.pr_interval_ms.min or 0) >= 200

    lbbb = record(pack, "complete left bundle branch block")
    assert lbbb.morphology and lbbb.morphology.qrs_complex
    qrs = lbbb.morphology.qrs_complex
    assert qrs.duration_ms and (qrs.duration_ms.min or 0) >= 120
    text = render_view(lbbb, "full").lower()
    assert "notched" in text or "slurred" in text
    assert {"I", "aVL", "V5", "V6"} <= set(lbbb.leads)

    rbbb = record(pack, "RBBB")
    assert rbbb.morphology and rbbb.morphology.qrs_complex
    assert (rbbb.morphology.qrs_complex.duration_ms.min or 0) >= 120  # type: ignore[union-attr]
    assert "rsr" in render_view(rbbb, "full").lower()

    brady = record(pack, "sinus bradycardia")
    assert brady.rhythm and brady.rhythm.rate_bpm and (brady.rhythm.rate_bpm.max or 99) <= 60
    tachy = record(pack, "sinus tachycardia")
    assert tachy.rhythm and tachy.rhythm.rate_bpm and (tachy.rhythm.rate_bpm.min or 0) >= 100

    inferior = record(pack, "inferior myocardial infarction")
    assert {"II", "III", "aVF"} <= set(inferior.leads)
    assert any(t.territory == "inferior" for t in inferior.territories)

    af = record(pack, "atrial fibrillation")
    assert af.rhythm and af.rhythm.regularity == "irregularly irregular"
    assert af.rhythm.p_waves and af.rhythm.p_waves.presence == "absent"
    # A fixed conduction ratio is regular, variable block irregular: no single number judges it.
    flutter = record(pack, "atrial flutter")
    assert flutter.rhythm and flutter.rhythm.regularity == "variable"

    lqt = record(pack, "prolonged QT interval")
    assert lqt.morphology and lqt.morphology.qt_interval and lqt.morphology.qt_interval.qtc_ms
    assert (lqt.morphology.qt_interval.qtc_ms.min or 0) >= 440


def test_everyday_wordings_reach_their_records(pack: CuratedPack) -> None:
    """Phrases a clinician types as a query find the record, not just its name's vector."""
    expected = {
        "Wolff-Parkinson-White": "Wolff-Parkinson-White pattern",
        "pacemaker": "paced rhythm",
        "ventricular pacing": "ventricular pacing pattern",
        "STEMI": "acute ST segment elevation myocardial infarction",
        "left atrial enlargement": "left atrial abnormality",
        "ventricular premature beats": "premature ventricular contraction",
        "nonspecific ST-T changes": "non-specific ST-T abnormality",
    }
    for query, name in expected.items():
        assert record(pack, query).name == name, query


def test_ptbxl_diagnostic_groups(pack: CuratedPack) -> None:
    sttc = record(pack, "STTC")
    assert sttc.name == "ST/T change" and record(pack, "ST-T change") is sttc
    assert sttc.morphology and sttc.morphology.st_segment and sttc.morphology.t_wave
    assert sttc.morphology.qt_interval
    text = render_view(sttc, "full").lower()
    assert "inver" in text and "flat" in text and "qtc" in text

    cd = record(pack, "conduction disturbance")
    criteria = " ".join(cd.criteria)
    assert "PR interval > 200 ms" in criteria and "PR < 120 ms" in criteria
    assert "QRS >= 120 ms" in criteria and "110-119 ms" in criteria
    assert "delta wave" in criteria
    # CinC's CD is cardiac dysrhythmia: the abbreviation stays with it
    assert record(pack, "CD").name == "cardiac dysrhythmia"

    left = record(pack, "LAFB/LPFB")
    assert left.name == "left fascicular block"
    criteria = " ".join(left.criteria)
    assert "-45 to -90 degrees" in criteria and "+90 to +180 degrees" in criteria
    assert "qR in aVL" in criteria and "rS in I and aVL" in criteria
    assert left.morphology and left.morphology.qrs_complex
    assert (left.morphology.qrs_complex.duration_ms.max or 999) < 120  # type: ignore[union-attr]
    assert {"I", "aVL", "II", "III", "aVF"} <= set(left.leads)
    # the pooled sub-class does not take over its two statements
    assert record(pack, "SCP:LAFB").name == "left anterior fascicular block"
    assert record(pack, "LPFB").name == "left posterior fascicular block"


def assert_views_leave_out(
    pack: CuratedPack, field: str, empty: object, part: str = "morphology"
) -> None:
    """No view renders the ``part`` (morphology or rhythm) ``field`` (emptied to ``empty``), so
    the label vectors of trained checkpoints stay valid when the pack gains it."""
    for r in pack.records:
        features = getattr(r, part)
        if features is not None and getattr(features, field):
            bare = features.model_copy(update={field: empty})
            for view in ("full", "morphology", "summary", "rhythm", "name"):
                assert render_view(r, view) == render_view(r.model_copy(update={part: bare}), view)


def test_axis_ranges_where_the_criteria_define_the_axis(pack: CuratedPack) -> None:
    def axis(name: str) -> tuple[float | None, float | None] | None:
        found = record(pack, name).morphology
        rng = found.qrs_axis_deg if found is not None else None
        return (rng.min, rng.max) if rng is not None else None

    assert axis("left axis deviation") == (-90, -30)
    assert axis("LAFB") == axis("marked left axis deviation") == (-90, -45)
    assert axis("right axis deviation") == axis("LPFB") == (90, 180)
    assert axis("normal ECG") == (-30, 90)
    # an axis that is only often shifted, or one of two alternatives, is not stored
    for name in ("RVH", "LVH", "inferior myocardial infarction", "LAFB/LPFB", "indeterminate axis"):
        assert axis(name) is None, name
    # a record without an axis serialises as before the field existed: same content hash, so
    # importing this pack over an older one versions only the records that gained an axis
    afib = record(pack, "atrial fibrillation").model_dump(mode="json")
    assert afib["morphology"] is not None and "qrs_axis_deg" not in afib["morphology"]
    assert_views_leave_out(pack, "qrs_axis_deg", None)


def test_voltage_criteria_where_the_criteria_state_millivolt_limits(pack: CuratedPack) -> None:
    def criteria(name: str) -> dict[str, tuple[float | None, float | None]]:
        found = record(pack, name).morphology
        assert found is not None
        return {c.name: (c.sum_mv.min, c.sum_mv.max) for c in found.voltage_criteria}

    lvh = criteria("LVH")
    assert lvh["Sokolow-Lyon"] == (3.5, None) and lvh["R in aVL"] == (1.1, None)
    assert set(lvh) < set(criteria("VCLVH"))
    assert criteria("low QRS voltages") == {
        "low voltage in the limb leads": (None, 0.5),
        "low voltage in the precordial leads": (None, 1.0),
    }
    assert criteria("right atrial abnormality")["P in II, III or aVF"] == (0.25, None)
    # criteria that mix voltage with other signs are not reduced to their voltage part
    for name in ("hypertrophy", "left atrial abnormality", "SEHYP", "normal ECG"):
        assert criteria(name) == {}, name
    assert_views_leave_out(pack, "voltage_criteria", [])


def test_pathological_q_leads_where_the_criteria_are_q_waves(pack: CuratedPack) -> None:
    def q_leads(name: str) -> list[str]:
        found = record(pack, name).morphology
        return found.pathological_q_leads if found is not None else []

    assert q_leads("IMI") == q_leads("old inferior myocardial infarction") == ["II", "III", "aVF"]
    assert q_leads("ASMI") == ["V1", "V2", "V3", "V4"]
    assert q_leads("LMI") == ["I", "aVL", "V5", "V6"]
    # acute infarction, posterior infarction (no Q waves in the 12 leads) and septal
    # hypertrophy (narrow, non-pathological Q waves) state none
    for name in ("acute myocardial infarction", "PMI", "SEHYP", "myocardial infarction"):
        assert q_leads(name) == [], name
    assert_views_leave_out(pack, "pathological_q_leads", [])


def test_r_prime_leads_where_the_criteria_are_an_rsr_prime(pack: CuratedPack) -> None:
    def r_prime_leads(name: str) -> list[str]:
        found = record(pack, name).morphology
        return found.r_prime_leads if found is not None else []

    assert r_prime_leads("CRBBB") == r_prime_leads("IRBBB") == ["V1", "V2"]
    assert r_prime_leads("rSr' pattern in V1 lead") == ["V1"]
    # either bundle branch block, and the Brugada pattern's pseudo-r', state none
    for name in ("bundle branch block", "left bundle branch block", "Brugada pattern"):
        assert r_prime_leads(name) == [], name
    lbbb = record(pack, "left bundle branch block").model_dump(mode="json")
    assert lbbb["morphology"] is not None and "r_prime_leads" not in lbbb["morphology"]
    assert_views_leave_out(pack, "r_prime_leads", [])


def test_rr_ranges_where_the_criteria_bound_the_p_p_intervals(pack: CuratedPack) -> None:
    def rr_range(name: str) -> tuple[float | None, float | None] | None:
        found = record(pack, name).rhythm
        rng = found.rr_range_ms if found is not None else None
        return (rng.min, rng.max) if rng is not None else None

    assert rr_range("sinus rhythm") == (None, 160) and rr_range("SARRH") == (120, None)
    # a normal ECG allows mild respiratory sinus arrhythmia; other rhythms state no range
    for name in ("normal ECG", "sinus tachycardia", "PVC", "atrial fibrillation"):
        assert rr_range(name) is None, name
    afib = record(pack, "atrial fibrillation").model_dump(mode="json")
    assert afib["rhythm"] is not None and "rr_range_ms" not in afib["rhythm"]
    assert_views_leave_out(pack, "rr_range_ms", None, part="rhythm")


def test_reimport_writes_nothing_and_a_newer_pack_versions_only_what_changed(
    pack: CuratedPack, db_path: Path, tmp_path: Path
) -> None:
    with KnowledgeBase(db_path) as kb:
        import_pack(kb, vocabulary="ptbxl", pack=pack)
        count = kb.con.execute("SELECT count(*) FROM knowledge").fetchone()
        runs = len(list(kb.runs()))
        again = import_pack(kb, vocabulary="ptbxl", pack=pack)
        assert again.added == () and again.unchanged > 0
        assert kb.con.execute("SELECT count(*) FROM knowledge").fetchone() == count
        assert len(list(kb.runs())) == runs

    newer = tmp_path / "pack"
    shutil.copytree(PACK_DIR, newer)
    manifest = json.loads((newer / "pack.json").read_text())
    manifest["version"] = "9999.1.0"
    (newer / "pack.json").write_text(json.dumps(manifest))
    changed = record(pack, "SCP:AFIB").name
    for path in (newer / "records").glob("*.json"):
        records = json.loads(path.read_text())
        for raw in records:
            if raw["name"] == changed:
                raw["caveats"] = [*raw["caveats"], "A caveat added in the newer pack."]
                path.write_text(json.dumps(records))

    with KnowledgeBase(db_path) as kb:
        result = import_pack(kb, pack=load_pack(newer))
        assert changed in result.added
        diagnosis = kb.resolve(changed)
        assert diagnosis is not None
        history = kb.history(diagnosis.id)
        assert [h.provenance.pack_version for h in history] == [pack.version, "9999.1.0"]
        versioned = kb.con.execute(
            "SELECT count(*) FROM (SELECT diagnosis_id FROM knowledge GROUP BY diagnosis_id "
            "HAVING count(*) > 1)"
        ).fetchone()
        assert versioned == (1,)  # only the changed record got a new version
