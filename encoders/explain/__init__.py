"""Explanations of a diagnosis score: which leads and time windows of a recording drove it.

ex = explain(score_fn, x, label_index, "inferior myocardial infarction", record=knowledge)
print(ex.text())
plot_explanation(ex, x, "imi.png")

- :func:`explain` -> :class:`Explanation` (``text()``, ``to_dict()``): integrated gradients
  (:func:`integrated_gradients`, :class:`Saliency`), per-lead importance, time regions
  (:func:`time_regions`, :class:`Region`), and the diagnosis's knowledge record set against the
  most important leads (:func:`match_knowledge`, :class:`KnowledgeMatch`).
- :func:`plot_explanation`: a 12-lead PNG of the explanation.
"""

from __future__ import annotations

from encoders.explain.explanation import Explanation, explain
from encoders.explain.knowledge_match import KnowledgeMatch, LeadGroup, match_knowledge
from encoders.explain.plot import plot_explanation
from encoders.explain.regions import Region, time_regions
from encoders.explain.saliency import Saliency, ScoreFn, integrated_gradients

__all__ = [
    "Explanation",
    "KnowledgeMatch",
    "LeadGroup",
    "Region",
    "Saliency",
    "ScoreFn",
    "explain",
    "integrated_gradients",
    "match_knowledge",
    "plot_explanation",
    "time_regions",
]
