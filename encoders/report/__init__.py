"""A browsable, self-contained HTML report: knowledge, label space, evaluation, explanations.

site = write_site(
    Path("site"),
    kb=kb,
    evaluation=read_evaluation(Path("eval")),         # a `ked eval --out` folder
    explanations=read_explanations(Path("explain")),  # a `ked explain --out` folder
    label_space=label_spaces(kb, ["full"], vocab="ptbxl").spaces["full"],
)

- :func:`write_site` -> :class:`Site`: static pages with inline CSS, images as ``data:`` URIs,
  relative links only and no script (`encoders.report.site`).
- :func:`read_evaluation`, :func:`read_explanations`: the outputs of ``ked eval`` and
  ``ked explain``, read as written (`encoders.report.inputs`).
The heatmap's label space comes from `encoders.inference.label_spaces.label_spaces`, as for
``ked labels similarity``.
"""

from __future__ import annotations

from encoders.report.inputs import (
    EvaluationInput,
    ExplanationInput,
    ReportInputError,
    read_evaluation,
    read_explanations,
)
from encoders.report.site import Site, write_site

__all__ = [
    "EvaluationInput",
    "ExplanationInput",
    "ReportInputError",
    "Site",
    "read_evaluation",
    "read_explanations",
    "write_site",
]
