"""The knowledge-generation job: labels in, validated records (or recorded failures) out.

Every requested label is accounted for in the summary: stored, already present (no request
sent), a duplicate of an earlier label, failed with a reason, or interrupted. Blank labels
are refused before anything is sent.

Labels are worked on by ``concurrency`` workers, each taking one label through its first
answer and its repairs before the next, so a record is committed as soon as it validates
(rather than after every other label's first attempt). Finished labels are written in a
worker thread so the event loop keeps requests flowing; answers that finish together share
one transaction. A run killed mid-way keeps what it committed, holds no half-written record,
and a rerun resumes with the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from kb_store.store import Diagnosis, KnowledgeBase, Provenance
from ked.errors import UserError
from knowledge.llm import Generated, GenerationError, KnowledgeClient, LLMSettings
from knowledge.names import normalize_name

log = logging.getLogger(__name__)

Status = Literal["stored", "present", "duplicate", "failed", "interrupted"]
ProgressCallback = Callable[[str, Status], None]
Outcome = tuple[str, Generated | GenerationError]


class LabelError(UserError, ValueError):
    """A requested label cannot name a diagnosis (empty, spaces or punctuation only)."""


@dataclass(frozen=True)
class LabelResult:
    """What became of one requested label; ``detail`` names the diagnosis or the reason."""

    label: str
    status: Status
    detail: str = ""


@dataclass
class GenerationSummary:
    run_id: int
    results: list[LabelResult] = field(default_factory=list)  # in the order requested
    output_mode: str = ""
    mode_changes: list[str] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0

    def labels(self, status: Status) -> list[str]:
        return [r.label for r in self.results if r.status == status]

    @property
    def generated(self) -> list[str]:
        return self.labels("stored")

    @property
    def skipped(self) -> list[str]:
        return self.labels("present")

    @property
    def failed(self) -> list[str]:
        return self.labels("failed")

    @property
    def ok(self) -> bool:
        return all(r.status in ("stored", "present", "duplicate") for r in self.results)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def check_labels(labels: Sequence[str]) -> None:
    """Raise :class:`LabelError` naming every label without a letter or digit."""
    blank = [repr(label) for label in labels if not normalize_name(label)]
    if blank:
        raise LabelError(
            f"blank label{'s' if len(blank) > 1 else ''} {', '.join(blank)}: "
            "a label must name a diagnosis (letters or digits, any script)"
        )


def first_occurrences(labels: Sequence[str]) -> tuple[list[str], dict[int, str]]:
    """Labels once each (stripped), and the position of each repeat with the label it repeats.

    A repeat has the same name key as an earlier label (it differs at most in case, spacing
    or punctuation).
    """
    first_by_key: dict[str, str] = {}
    repeats: dict[int, str] = {}
    for position, label in enumerate(labels):
        key = normalize_name(label)
        if key in first_by_key:
            repeats[position] = first_by_key[key]
        else:
            first_by_key[key] = label.strip()
    return list(first_by_key.values()), repeats


def known_names(
    kb: KnowledgeBase,
    labels: Sequence[str],
    resolved: dict[str, Diagnosis | None] | None = None,
) -> dict[str, list[str]]:
    """The stored names of the diagnosis each label resolves to: a record for a known
    diagnosis may carry any of them."""
    resolved = resolved if resolved is not None else kb.resolve_many(labels)
    return {
        label: [alias for alias, _ in kb.aliases(diagnosis.id)]
        for label in labels
        if (diagnosis := resolved[label]) is not None
    }


async def generate_knowledge(
    kb: KnowledgeBase,
    client: KnowledgeClient,
    labels: Sequence[str],
    *,
    force: bool = False,
    contexts: dict[str, str] | None = None,
    on_progress: ProgressCallback | None = None,
) -> GenerationSummary:
    """Generate and store knowledge for ``labels``; failures are recorded, not raised."""
    check_labels(labels)
    started = time.perf_counter()
    firsts, repeats = first_occurrences(labels)
    run_id = kb.start_run(
        "generate",
        {**client.settings.public_params(), "labels": len(labels), "force": force},
    )
    results: dict[str, LabelResult] = {}
    resolved = kb.resolve_many(firsts)
    present = set() if force else kb.with_knowledge(firsts)
    for label in firsts:
        if label in present:
            diagnosis = resolved[label]
            results[label] = LabelResult(label, "present", diagnosis.name if diagnosis else "")
    for position in repeats:
        _notify(on_progress, labels[position], "duplicate")
    for result in results.values():
        _notify(on_progress, result.label, result.status)
    todo = [label for label in firsts if label not in present]
    known = known_names(kb, todo, resolved)
    contexts = contexts or {}
    finished: asyncio.Queue[Outcome] = asyncio.Queue()
    pending = iter(todo)

    async def worker() -> None:
        for label in pending:
            outcome = await _attempt(client, label, contexts.get(label), known.get(label, []))
            finished.put_nowait(outcome)

    workers = [
        asyncio.create_task(worker()) for _ in range(min(client.settings.concurrency, len(todo)))
    ]
    write: asyncio.Future[dict[str, LabelResult]] | None = None
    status = "failed"
    try:
        done = 0
        while done < len(todo):
            batch = [await finished.get()]
            while not finished.empty():
                batch.append(finished.get_nowait())
            write = asyncio.ensure_future(
                asyncio.to_thread(_write, kb, client, batch, run_id, force)
            )
            written = await asyncio.shield(write)  # cancelled or not, the batch lands whole
            write = None
            results.update(written)
            done += len(batch)
            for label, result in written.items():
                _notify(on_progress, label, result.status)
        failed = any(r.status == "failed" for r in results.values())
        status = "completed_with_failures" if failed else "completed"
    except asyncio.CancelledError:
        status = "interrupted"
        raise
    finally:
        for task in workers:
            task.cancel()
        if write is not None:
            await asyncio.wait([write])
            if not write.cancelled() and write.exception() is None:
                results.update(write.result())
        account = [
            LabelResult(label, "duplicate", f"same as {repeats[i]!r}")
            if i in repeats
            else results.get(label.strip(), LabelResult(label.strip(), "interrupted"))
            for i, label in enumerate(labels)
        ]
        summary = _summary(run_id, client, account, time.perf_counter() - started)
        kb.finish_run(run_id, status, summary.as_dict())
    return summary


def _summary(
    run_id: int, client: KnowledgeClient, account: list[LabelResult], wall_s: float
) -> GenerationSummary:
    usage = client.usage
    return GenerationSummary(
        run_id=run_id,
        results=account,
        output_mode=client.mode.value,
        mode_changes=list(client.mode_changes),
        requests=usage.requests,
        retries=usage.retries,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        wall_s=wall_s,
    )


async def _attempt(
    client: KnowledgeClient, label: str, context: str | None, known_names: list[str]
) -> Outcome:
    try:
        return label, await client.generate(label, context, known_names=known_names)
    except GenerationError as exc:
        return label, exc


def _write(
    kb: KnowledgeBase,
    client: KnowledgeClient,
    batch: list[Outcome],
    run_id: int,
    force: bool,
) -> dict[str, LabelResult]:
    """Store records and failures of answers that finished together, in one transaction."""
    written: dict[str, LabelResult] = {}
    with kb.transaction():
        for label, outcome in batch:
            if isinstance(outcome, Generated):
                written[label] = store_generated(
                    kb, outcome, client.settings, client.prompts.sha256, run_id, force
                )
                continue
            kb.record_failure(
                label,
                outcome.attempt,
                outcome.kind,
                str(outcome),
                raw_response=outcome.raw_response,
                run_id=run_id,
            )
            log.warning("knowledge for %r failed (%s): %s", label, outcome.kind, outcome)
            written[label] = LabelResult(label, "failed", f"{outcome.kind}: {outcome}")
    return written


def store_generated(
    kb: KnowledgeBase,
    generated: Generated,
    settings: LLMSettings,
    prompt_sha256: str,
    run_id: int,
    force: bool = False,
) -> LabelResult:
    """Store a validated record as the next version of the diagnosis its label names."""
    diagnosis = kb.resolve(generated.label)
    provenance = Provenance(
        source="llm",
        provider=settings.provider,
        model=settings.model,
        prompt_sha256=prompt_sha256,
        params=generated.params,
        raw_response=generated.raw_response,
    )
    result = kb.add_knowledge(
        generated.record,
        provenance,
        diagnosis_id=diagnosis.id if diagnosis else None,
        labels=[generated.label],
        run_id=run_id,
        force=force,
    )
    log.info("stored %s v%d for %r", result.diagnosis.name, result.version, generated.label)
    return LabelResult(generated.label, "stored", f"{result.diagnosis.name} v{result.version}")


def _notify(callback: ProgressCallback | None, label: str, status: Status) -> None:
    if callback is not None:
        callback(label, status)
