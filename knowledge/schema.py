"""The structured knowledge record of one ECG diagnosis (pydantic v2).

Units are part of the field names: ``_ms`` milliseconds, ``_mv`` millivolts, ``_bpm`` beats
per minute. Field-level validators reject impossible values; clinical consistency across
fields is checked in :mod:`knowledge.consistency`.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from knowledge.consistency import check_consistency
from knowledge.leads import TERRITORY_LEADS, Territory, canonical_lead, sort_leads

SCHEMA_VERSION = 1


def _canonical_lead(value: object) -> object:
    return canonical_lead(value) if isinstance(value, str) else value


Lead = Annotated[str, BeforeValidator(_canonical_lead)]
LeadList = Annotated[list[Lead], AfterValidator(sort_leads)]
Text = Annotated[str, Field(min_length=3), AfterValidator(str.strip)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class _GrowingModel(_Model):
    """A model with fields added after the pack's first records were hashed (``added``)."""

    added: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _without_absent_additions(
        self, handler: SerializerFunctionWrapHandler
    ) -> dict[str, object]:
        """Leave the added fields out while absent or empty, so records without them keep the
        content hash they had before the fields existed (the knowledge base versions a record on
        a new hash)."""
        data: dict[str, object] = handler(self)
        for name in self.added:
            if not getattr(self, name):
                data.pop(name, None)
        return data


class Category(StrEnum):
    RHYTHM = "rhythm"
    CONDUCTION = "conduction"
    MORPHOLOGY = "morphology"
    HYPERTROPHY = "hypertrophy"
    ISCHEMIA = "ischemia"
    INFARCTION = "infarction"
    OTHER = "other"


class ValueRange(_Model):
    """A closed range; either bound may be open (``None``) but not both."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ValueRange:
        if self.min is None and self.max is None:
            raise ValueError("a range needs at least one of min and max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is greater than max {self.max:g}")
        return self

    def bounds_violation(self, low: float, high: float) -> float | None:
        """The first bound outside ``[low, high]``, or ``None`` when both lie inside."""
        for value in (self.min, self.max):
            if value is not None and not low <= value <= high:
                return value
        return None

    def describe(self, unit: str) -> str:
        """Human-readable form, e.g. ``"> 200 ms"``, ``"60-100 bpm"``."""
        if self.min is not None and self.max is not None:
            if self.min == self.max:
                return f"{self.min:g} {unit}"
            return f"{self.min:g}-{self.max:g} {unit}"
        if self.min is not None:
            return f">= {self.min:g} {unit}"
        return f"<= {self.max:g} {unit}"


def _check_bounds(rng: ValueRange | None, low: float, high: float, what: str, unit: str) -> None:
    if rng is None:
        return
    bad = rng.bounds_violation(low, high)
    if bad is not None:
        hint = " (values are in milliseconds, not seconds)" if unit == "ms" and bad < low else ""
        raise ValueError(
            f"{what} of {bad:g} {unit} is outside the physiological range "
            f"{low:g}-{high:g} {unit}{hint}"
        )


class OtherCode(_Model):
    system: Annotated[str, Field(min_length=1)] = Field(description="e.g. ICD-10, AHA, CODE-15")
    code: Annotated[str, Field(min_length=1)]


class Codes(_Model):
    """Terminology codes of the diagnosis."""

    snomed_ct: list[Annotated[str, Field(pattern=r"^\d{6,18}$")]] = Field(
        default_factory=list, description="SNOMED-CT concept ids (digits only)"
    )
    scp_ecg: list[Annotated[str, Field(min_length=1, max_length=16)]] = Field(
        default_factory=list, description="SCP-ECG statement codes, e.g. AFIB, 1AVB, NST_"
    )
    other: list[OtherCode] = Field(default_factory=list, description="codes of other systems")


Regularity = Literal[
    "regular", "regularly irregular", "irregularly irregular", "irregular", "variable"
]
PPresence = Literal["present", "absent", "variable", "hidden"]
PRelation = Literal[
    "1:1", "more P waves than QRS", "AV dissociation", "retrograde", "variable", "not applicable"
]
Direction = Literal[
    "positive", "negative", "upright", "inverted", "biphasic", "elevated", "depressed",
    "isoelectric", "peaked", "flattened", "notched", "slurred", "absent", "discordant",
    "variable", "normal",
]  # fmt: skip


class PWaves(_Model):
    presence: PPresence
    morphology: Text | None = Field(None, description="shape, axis and leads of the P waves")
    relation_to_qrs: PRelation

    @model_validator(mode="after")
    def _relation_matches_presence(self) -> PWaves:
        if self.presence == "absent" and self.relation_to_qrs != "not applicable":
            raise ValueError(
                f"relation_to_qrs is {self.relation_to_qrs!r} but P waves are absent; "
                "use 'not applicable'"
            )
        if self.presence == "present" and self.relation_to_qrs == "not applicable":
            raise ValueError("P waves are present, so their relation to the QRS applies")
        return self


class RhythmFeatures(_GrowingModel):
    """Rate, regularity and atrial activity."""

    added = ("rr_range_ms",)
    rate_bpm: ValueRange | None = Field(None, description="ventricular rate, beats per minute")
    atrial_rate_bpm: ValueRange | None = Field(None, description="atrial rate, per minute")
    regularity: Regularity | None = None
    p_waves: PWaves | None = None
    pr_interval_ms: ValueRange | None = Field(None, description="PR interval, milliseconds")
    atrial_activity: Text | None = Field(None, description="e.g. flutter waves, f waves")
    onset_termination: Text | None = Field(None, description="how it starts and stops")
    rr_range_ms: ValueRange | None = Field(
        None,
        description="longest less shortest RR (P-P) interval of the underlying rhythm, premature "
        "beats and their pauses left out, milliseconds; only when the criteria state one, e.g. "
        "sinus arrhythmia >= 120",
    )

    @field_validator("rate_bpm")
    @classmethod
    def _ventricular_rate(cls, v: ValueRange | None) -> ValueRange | None:
        _check_bounds(v, 10, 350, "ventricular rate", "bpm")
        return v

    @field_validator("atrial_rate_bpm")
    @classmethod
    def _atrial_rate(cls, v: ValueRange | None) -> ValueRange | None:
        _check_bounds(v, 10, 700, "atrial rate", "bpm")
        return v

    @field_validator("pr_interval_ms")
    @classmethod
    def _pr(cls, v: ValueRange | None) -> ValueRange | None:
        _check_bounds(v, 50, 800, "PR interval", "ms")
        return v

    @field_validator("rr_range_ms")
    @classmethod
    def _rr_range(cls, v: ValueRange | None) -> ValueRange | None:
        _check_bounds(v, 0, 3000, "RR range", "ms")
        return v

    @model_validator(mode="after")
    def _pr_needs_p_waves(self) -> RhythmFeatures:
        if self.pr_interval_ms is not None and self.p_waves and self.p_waves.presence == "absent":
            raise ValueError("pr_interval_ms is given but p_waves.presence is 'absent'")
        return self


class WaveFinding(_Model):
    """What one wave or segment looks like in this diagnosis."""

    description: Text
    leads: LeadList = Field(default_factory=list, description="leads where this is seen")
    direction: Direction | None = None
    amplitude_mv: ValueRange | None = Field(None, description="millivolts (1 mm = 0.1 mV)")
    duration_ms: ValueRange | None = Field(None, description="milliseconds")


class QtFinding(_Model):
    description: Text
    qt_ms: ValueRange | None = Field(None, description="QT interval, milliseconds")
    qtc_ms: ValueRange | None = Field(None, description="rate-corrected QT, milliseconds")

    @field_validator("qt_ms", "qtc_ms")
    @classmethod
    def _qt(cls, v: ValueRange | None, info: ValidationInfo) -> ValueRange | None:
        _check_bounds(v, 150, 800, info.field_name or "QT", "ms")
        return v


# (duration bounds in ms, absolute amplitude bound in mV) per wave or segment.
_WAVE_BOUNDS: dict[str, tuple[tuple[float, float], float]] = {
    "p_wave": ((20, 300), 1.0),
    "qrs_complex": ((40, 300), 10.0),
    "st_segment": ((0, 400), 2.0),
    "t_wave": ((50, 500), 3.0),
    "u_wave": ((50, 400), 1.0),
}


VoltageWave = Literal["P", "R", "S", "QRS"]


class VoltageTerm(_Model):
    """One amplitude of a voltage criterion: the largest over ``leads`` counts."""

    wave: VoltageWave = Field(
        description="P: P-wave height; R: tallest upward QRS deflection; S: deepest downward QRS "
        "deflection, as a positive number; QRS: QRS peak to peak"
    )
    leads: LeadList = Field(min_length=1, description="the largest amplitude of these leads")


Sex = Literal["male", "female"]


class VoltageCriterion(_GrowingModel):
    """A named voltage criterion: the sum of its terms' amplitudes lies in ``sum_mv``, e.g.
    Sokolow-Lyon, S in V1 + R in V5 or V6 >= 3.5 mV; ``sex`` for a limit stated for one sex."""

    added = ("sex",)
    name: Text
    terms: list[VoltageTerm] = Field(min_length=1, max_length=4)
    sum_mv: ValueRange = Field(description="millivolts (1 mm = 0.1 mV at standard calibration)")
    sex: Sex | None = Field(
        None,
        description="only for a limit stated for one sex (Cornell: R in aVL + S in V3 > 2.8 mV "
        "in men, > 2.0 mV in women, as two criteria); null: the limit holds for everyone",
    )

    @field_validator("sum_mv")
    @classmethod
    def _millivolts(cls, v: ValueRange) -> ValueRange:
        _check_bounds(v, 0, 10, "voltage criterion", "mV")
        return v


class MorphologyFeatures(_GrowingModel):
    """Features of each wave and segment."""

    added = ("qrs_axis_deg", "voltage_criteria", "pathological_q_leads", "r_prime_leads")
    p_wave: WaveFinding | None = None
    qrs_complex: WaveFinding | None = None
    st_segment: WaveFinding | None = None
    t_wave: WaveFinding | None = None
    u_wave: WaveFinding | None = None
    qt_interval: QtFinding | None = None
    qrs_axis_deg: ValueRange | None = Field(
        None,
        description="frontal-plane QRS axis, degrees from -180 to 180 (lead I at 0, aVF at +90, "
        "aVL at -30); only when the criteria state an axis range, e.g. left axis deviation "
        "-90 to -30",
    )
    voltage_criteria: list[VoltageCriterion] = Field(
        default_factory=list,
        description="amplitude criteria, any one of which suffices (Sokolow-Lyon, Cornell, low "
        "voltage...); only when the criteria state millivolt limits",
    )
    pathological_q_leads: LeadList = Field(
        default_factory=list,
        description="leads showing pathological Q waves (wide, or deep against the R wave, or QS "
        "complexes), for diagnoses defined by them, e.g. an old inferior infarction: II, III, aVF",
    )
    r_prime_leads: LeadList = Field(
        default_factory=list,
        description="leads whose QRS ends in an R' after the S wave (rsr', rsR', rSR' or qR), "
        "for diagnoses defined by it, e.g. right bundle branch block: V1, V2 (either suffices)",
    )

    @field_validator(*_WAVE_BOUNDS)
    @classmethod
    def _physiological(cls, v: WaveFinding | None, info: ValidationInfo) -> WaveFinding | None:
        if v is None:
            return v
        name = info.field_name or ""
        (low, high), amp = _WAVE_BOUNDS[name]
        what = name.replace("_", " ")
        _check_bounds(v.duration_ms, low, high, f"{what} duration", "ms")
        _check_bounds(v.amplitude_mv, -amp, amp, f"{what} amplitude", "mV")
        return v

    @field_validator("qrs_axis_deg")
    @classmethod
    def _axis(cls, v: ValueRange | None) -> ValueRange | None:
        _check_bounds(v, -180, 180, "QRS axis", "degrees")
        return v

    def findings(self) -> dict[str, WaveFinding | QtFinding]:
        """The wave, segment and QT findings that are present, by field name (not the axis)."""
        return {k: v for k, v in self if isinstance(v, WaveFinding | QtFinding)}


class TerritoryFinding(_Model):
    territory: Territory
    leads: LeadList = Field(min_length=1)

    @model_validator(mode="after")
    def _leads_belong(self) -> TerritoryFinding:
        allowed = TERRITORY_LEADS[self.territory]
        stray = [lead for lead in self.leads if lead not in allowed]
        if stray:
            raise ValueError(
                f"leads {', '.join(stray)} do not look at the {self.territory} territory "
                f"({', '.join(sort_leads(allowed))})"
            )
        return self


class Differential(_Model):
    name: Text
    distinguishing_features: Text


class DiagnosisKnowledge(_Model):
    """Structured, validated ECG knowledge for one diagnosis."""

    name: Annotated[str, Field(min_length=2, max_length=120)]
    category: Category
    synonyms: list[Annotated[str, Field(min_length=1, max_length=120)]] = Field(
        default_factory=list, description="abbreviations and alternative names"
    )
    codes: Codes = Field(default_factory=Codes)
    summary: Annotated[str, Field(min_length=40, max_length=1500)] = Field(
        description="one paragraph: what the diagnosis is and how it shows on a 12-lead ECG"
    )
    rhythm: RhythmFeatures | None = None
    morphology: MorphologyFeatures | None = None
    leads: LeadList = Field(default_factory=list, description="leads that show the findings")
    reciprocal_leads: LeadList = Field(default_factory=list)
    territories: list[TerritoryFinding] = Field(default_factory=list)
    criteria: list[Text] = Field(min_length=1, description="diagnostic criteria, in order")
    differentials: list[Differential] = Field(default_factory=list)
    caveats: list[Text] = Field(default_factory=list)

    @field_validator("summary")
    @classmethod
    def _one_paragraph(cls, v: str) -> str:
        if re.search(r"\n\s*\n", v):
            raise ValueError("the summary must be one paragraph (no blank lines)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> DiagnosisKnowledge:
        problems = check_consistency(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def all_names(self) -> list[str]:
        """The canonical name followed by the synonyms."""
        return [self.name, *self.synonyms]


def format_validation_errors(exc: ValidationError) -> list[str]:
    """One ``field.path: reason`` line per pydantic error."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "record"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return lines
