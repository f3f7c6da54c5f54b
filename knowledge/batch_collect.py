"""Collecting a finished batch into the knowledge base.

The output and error files are downloaded and every answer is judged exactly as the online
path judges it (:func:`knowledge.llm.judge_answer`: schema, and about the diagnosis asked
for). Valid records are stored with provenance naming the batch and the ``custom_id``;
everything else is recorded as a failure with its reason: ``invalid`` answers (a repair
batch can send them back), ``unanswered`` requests (expired, cancelled, failed batch,
server errors: a repair batch sends them again) and ``failed`` ones (refusals, rejected
requests).

What was collected lives in the knowledge base itself: one ``batch-collect`` run per
collection, written in the same transaction as its records and failures, with the outcome
of each ``custom_id`` in its summary. A crash leaves all of it or none of it, and a second
collection of the same batch skips what a run already holds, so nothing is stored twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from kb_store.store import KnowledgeBase
from ked.errors import UserError
from knowledge.batch_files import BatchItem, BatchState
from knowledge.batch_server import FINISHED, BatchServer, batch_client, retrieve
from knowledge.generate import known_names, store_generated
from knowledge.llm import Generated, LLMSettings, Rejection, judge_answer
from knowledge.llm_errors import OutputMode, transient_status
from knowledge.redaction import Redactor

log = logging.getLogger(__name__)

RUN_KIND = "batch-collect"
_DETAIL_ERRORS = 10

ItemStatus = Literal["stored", "invalid", "unanswered", "failed", "collected"]


class BatchNotFinishedError(UserError, RuntimeError):
    """The batch has not finished: there is nothing to collect yet."""


@dataclass(frozen=True)
class ItemOutcome:
    """What became of one request. ``collected``: an earlier collection holds it."""

    custom_id: str
    label: str
    status: ItemStatus
    kind: str = ""  # the failure kind (invalid_output, batch_expired, refusal ...)
    detail: str = ""
    errors: list[str] = field(default_factory=list)  # an invalid answer's, for the repair


@dataclass
class CollectSummary:
    batch_id: str
    batch_status: str
    run_id: int | None  # None when nothing new was collected
    outcomes: list[ItemOutcome] = field(default_factory=list)
    unknown_ids: list[str] = field(default_factory=list)  # output lines not in the file
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def count(self, status: ItemStatus) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def ok(self) -> bool:
        """Every request of this collection stored (or collected before)."""
        return all(o.status in ("stored", "collected") for o in self.outcomes)


@dataclass(frozen=True)
class _Answered:
    outcome: ItemOutcome
    generated: Generated | None = None
    raw_response: str | None = None
    attempt: int = 1


def collected_outcomes(
    kb: KnowledgeBase, batch_ids: Iterable[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """The outcome of each ``custom_id`` collected from these batches, by batch id, with the
    ``run_id`` of the collection that holds it."""
    wanted = set(batch_ids)
    found: dict[str, dict[str, dict[str, Any]]] = {batch_id: {} for batch_id in wanted}
    for run in kb.runs():
        if run["kind"] != RUN_KIND or run["status"] != "completed":
            continue
        summary = run["summary"]
        summary = json.loads(summary) if isinstance(summary, str) else summary
        if summary.get("batch_id") in wanted:
            for cid, outcome in summary["outcomes"].items():
                found[summary["batch_id"]][cid] = {**outcome, "run_id": run["id"]}
    return found


async def collect_batch(
    kb: KnowledgeBase, state: BatchState, server: BatchServer, batch_id: str | None = None
) -> CollectSummary:
    """Download a finished batch's answers and store them (see the module docstring)."""
    llm = server.settings(state)
    async with batch_client(server) as client:
        batch = await retrieve(client, state, state.batch(batch_id))
        if batch.status not in FINISHED:
            raise BatchNotFinishedError(
                f"batch {batch.id} is {batch.status}: collect it when it has finished "
                "('ked knowledge batch status' tells)"
            )
        lines = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                content = await client.files.content(file_id)
                lines.update(_parse_lines(content.text))
    done = collected_outcomes(kb, [batch.id])[batch.id]
    summary = CollectSummary(batch.id, batch.status, None)
    summary.outcomes = [
        ItemOutcome(item.custom_id, item.label, "collected", detail=f"run {outcome['run_id']}")
        for item in state.items
        if (outcome := done.get(item.custom_id)) is not None
    ]
    summary.unknown_ids = sorted(cid for cid in lines if state.item(cid) is None)
    for cid in summary.unknown_ids:
        log.warning("batch %s answered %r, which %s does not hold", batch.id, cid, state.path)
    todo = [item for item in state.items if item.custom_id not in done]
    if not todo:
        log.info("batch %s: everything was collected before; nothing stored", batch.id)
        return summary
    judge = _Judge(state, llm, server.redact, batch)
    known = known_names(kb, [item.label for item in todo])
    answered = [judge(item, lines.get(item.custom_id), known.get(item.label, [])) for item in todo]
    summary.prompt_tokens, summary.completion_tokens = judge.prompt_tokens, judge.completion_tokens
    with kb.transaction():
        summary.run_id = kb.start_run(
            RUN_KIND, {**llm.public_params(), "batch_id": batch.id, "requests": state.path.name}
        )
        summary.outcomes += [_write(kb, llm, state, a, summary.run_id) for a in answered]
        kb.finish_run(summary.run_id, "completed", _run_summary(summary))
    return summary


def _parse_lines(text: str) -> dict[str, dict[str, Any]]:
    lines = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            lines[row["custom_id"]] = row
        except (ValueError, KeyError, TypeError):
            log.warning("batch file line %d is not a batch answer: %.80s", n, line)
    return lines


class _Judge:
    """Judges answer lines as the online path judges answers."""

    def __init__(
        self,
        state: BatchState,
        llm: LLMSettings,
        redact: Redactor,
        batch: Any,
    ) -> None:
        self.state, self.llm, self.redact, self.batch = state, llm, redact, batch
        self.mode = OutputMode(state.output_mode)
        self.prompt_tokens = self.completion_tokens = 0

    def __call__(self, item: BatchItem, line: dict[str, Any] | None, known: list[str]) -> _Answered:
        outcome = self._unanswered(item, line)
        if outcome is not None:
            return _Answered(outcome, attempt=item.attempt)
        assert line is not None
        body = line["response"]["body"]
        usage = body.get("usage") or {}
        self.prompt_tokens += usage.get("prompt_tokens") or 0
        self.completion_tokens += usage.get("completion_tokens") or 0
        choices = body.get("choices") or []
        if not choices:
            failed = ItemOutcome(item.custom_id, item.label, "failed", "invalid_output")
            return _Answered(
                replace(failed, detail="the server returned no choices"), attempt=item.attempt
            )
        message, finish = choices[0].get("message") or {}, choices[0].get("finish_reason")
        refusal = message.get("refusal")
        if refusal or finish == "content_filter":
            reason = self.redact(f"the model refused: {refusal or 'content filter'}")
            failed = ItemOutcome(item.custom_id, item.label, "failed", "refusal", reason)
            raw = self.redact(refusal) if refusal else None
            return _Answered(failed, raw_response=raw, attempt=item.attempt)
        text = message.get("content") or ""
        verdict = judge_answer(
            text, item.label, known, truncated=finish == "length", max_tokens=self.llm.max_tokens
        )
        raw = self.redact(text)
        if isinstance(verdict, Rejection):
            invalid = ItemOutcome(
                item.custom_id, item.label, "invalid", verdict.kind, errors=verdict.errors
            )
            detail = "; ".join(verdict.errors[:_DETAIL_ERRORS])
            return _Answered(
                replace(invalid, detail=detail), raw_response=raw, attempt=item.attempt
            )
        params = {
            **self.state.params,
            **self.llm.public_params(),
            "repairs": item.attempt - 1,
            "batch_id": self.batch.id,
            "custom_id": item.custom_id,
        }
        generated = Generated(item.label, verdict, raw, self.mode, item.attempt - 1, params)
        stored = ItemOutcome(item.custom_id, item.label, "stored")
        return _Answered(stored, generated, attempt=item.attempt)

    def _unanswered(self, item: BatchItem, line: dict[str, Any] | None) -> ItemOutcome | None:
        """The outcome of a request without an answer to judge; None when it has one."""
        cid, label = item.custom_id, item.label
        if line is None:
            reason = f"no answer: the batch {self.batch.status}"
            errors = getattr(self.batch.errors, "data", None) or []
            if errors:
                reason += " (" + "; ".join(str(e.message) for e in errors[:3]) + ")"
            return ItemOutcome(cid, label, "unanswered", f"batch_{self.batch.status}", reason)
        if line.get("error"):
            error = line["error"]
            kind = str(error.get("code") or "batch_error")
            return ItemOutcome(cid, label, "unanswered", kind, str(error.get("message", "")))
        response = line.get("response") or {}
        code = int(response.get("status_code") or 0)
        if code == 200:
            return None
        body = response.get("body") or {}
        message = (body.get("error") or {}).get("message") or json.dumps(body)[:300]
        kind = "server_error" if code >= 500 else f"http_{code}"
        status: ItemStatus = "unanswered" if transient_status(code) else "failed"
        return ItemOutcome(cid, label, status, kind, self.redact(f"HTTP {code}: {message}"))


def _write(
    kb: KnowledgeBase, llm: LLMSettings, state: BatchState, answered: _Answered, run_id: int
) -> ItemOutcome:
    outcome = answered.outcome
    if answered.generated is not None:
        result = store_generated(kb, answered.generated, llm, state.prompt_sha256, run_id)
        return replace(outcome, detail=result.detail)
    kb.record_failure(
        outcome.label,
        answered.attempt,
        outcome.kind,
        outcome.detail,
        raw_response=answered.raw_response,
        run_id=run_id,
    )
    log.warning("batch answer for %r: %s (%s)", outcome.label, outcome.status, outcome.kind)
    return outcome


def _run_summary(summary: CollectSummary) -> dict[str, Any]:
    new = [o for o in summary.outcomes if o.status != "collected"]
    counts = {s: summary.count(s) for s in ("stored", "invalid", "unanswered", "failed")}
    return {
        "batch_id": summary.batch_id,
        "batch_status": summary.batch_status,
        "counts": counts,
        "prompt_tokens": summary.prompt_tokens,
        "completion_tokens": summary.completion_tokens,
        "unknown_ids": summary.unknown_ids,
        "outcomes": {
            o.custom_id: {k: v for k, v in asdict(o).items() if k != "custom_id"} for o in new
        },
    }
