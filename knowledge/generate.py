"""The knowledge-generation job: labels in, validated records (or recorded failures) out.

A label whose diagnosis already has knowledge is skipped without a request. Finished labels
are committed as they arrive, in a worker thread so the event loop keeps requests flowing;
answers that finish together share one transaction. A run killed mid-way keeps what it
committed, holds no half-written record, and a rerun resumes with the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from kb_store.store import KnowledgeBase, Provenance
from knowledge.llm import Generated, GenerationError, KnowledgeClient
from knowledge.names import normalize_name

log = logging.getLogger(__name__)

Outcome = Literal["generated", "skipped", "failed"]
ProgressCallback = Callable[[str, Outcome], None]


@dataclass
class GenerationSummary:
    run_id: int
    generated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def unique_labels(labels: Sequence[str]) -> list[str]:
    """Drop empty labels and repeats that differ only in case, spacing or punctuation."""
    seen: set[str] = set()
    out = []
    for label in labels:
        key = normalize_name(label)
        if key and key not in seen:
            seen.add(key)
            out.append(label.strip())
    return out


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
    started = time.perf_counter()
    labels = unique_labels(labels)
    run_id = kb.start_run(
        "generate",
        {**client.settings.public_params(), "labels": len(labels), "force": force},
    )
    summary = GenerationSummary(run_id=run_id)
    done_before = set() if force else kb.with_knowledge(labels)
    todo = [label for label in labels if label not in done_before]
    for label in labels:
        if label in done_before:
            summary.skipped.append(label)
            _notify(on_progress, label, "skipped")
    contexts = contexts or {}
    finished: asyncio.Queue[tuple[str, Generated | GenerationError]] = asyncio.Queue()

    async def work(label: str) -> None:
        finished.put_nowait(await _attempt(client, label, contexts.get(label)))

    tasks = [asyncio.create_task(work(label)) for label in todo]
    status = "failed"
    try:
        done = 0
        while done < len(todo):
            batch = [await finished.get()]
            while not finished.empty():
                batch.append(finished.get_nowait())
            await asyncio.to_thread(_write, kb, client, batch, run_id, force, summary)
            done += len(batch)
            for label, outcome in batch:
                _notify(
                    on_progress, label, "generated" if isinstance(outcome, Generated) else "failed"
                )
        status = "completed" if summary.ok else "completed_with_failures"
    finally:
        for task in tasks:
            task.cancel()
        usage = client.usage
        summary.requests, summary.retries = usage.requests, usage.retries
        summary.prompt_tokens, summary.completion_tokens = (
            usage.prompt_tokens,
            usage.completion_tokens,
        )
        summary.wall_s = time.perf_counter() - started
        kb.finish_run(run_id, status, summary.as_dict())
    return summary


async def _attempt(
    client: KnowledgeClient, label: str, context: str | None
) -> tuple[str, Generated | GenerationError]:
    try:
        return label, await client.generate(label, context)
    except GenerationError as exc:
        return label, exc


def _write(
    kb: KnowledgeBase,
    client: KnowledgeClient,
    batch: list[tuple[str, Generated | GenerationError]],
    run_id: int,
    force: bool,
    summary: GenerationSummary,
) -> None:
    """Store records and failures of answers that finished together, in one transaction."""
    with kb.transaction():
        for label, outcome in batch:
            if isinstance(outcome, Generated):
                _store(kb, outcome, client, run_id, force)
            else:
                kb.record_failure(
                    label,
                    outcome.attempt,
                    outcome.kind,
                    str(outcome),
                    raw_response=outcome.raw_response,
                    run_id=run_id,
                )
                log.warning("knowledge for %r failed (%s): %s", label, outcome.kind, outcome)
    for label, outcome in batch:
        (summary.generated if isinstance(outcome, Generated) else summary.failed).append(label)


def _store(
    kb: KnowledgeBase, generated: Generated, client: KnowledgeClient, run_id: int, force: bool
) -> None:
    diagnosis = kb.resolve(generated.label)
    provenance = Provenance(
        source="llm",
        provider=client.settings.provider,
        model=client.settings.model,
        prompt_sha256=client.prompts.sha256,
        params=generated.params,
        raw_response=client.redact(generated.raw_response),
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


def _notify(callback: ProgressCallback | None, label: str, outcome: Outcome) -> None:
    if callback is not None:
        callback(label, outcome)
