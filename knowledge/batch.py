"""Knowledge generation through the OpenAI Batch API: prepare, submit, status, repair.

``prepare_batch`` writes the request JSONL (and its state, see :mod:`knowledge.batch_files`)
for the labels that have no knowledge yet; ``submit_batch`` uploads it and creates the batch
on any OpenAI-compatible server; ``batch_status`` asks how it is doing;
:func:`knowledge.batch_collect.collect_batch` stores the answers; ``prepare_repair`` writes a
follow-up batch: the online path's repair turn for each invalid answer, and the request
again for each one never answered.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import openai

from kb_store.store import KnowledgeBase
from knowledge.batch_collect import collected_outcomes
from knowledge.batch_files import (
    ENDPOINT,
    BatchFileError,
    BatchItem,
    BatchState,
    Prepared,
    SubmittedBatch,
    first_request,
    load_state,
    read_requests,
    request_line,
    write_batch,
)
from knowledge.batch_server import FINISHED, BatchServer, batch_client, retrieve
from knowledge.generate import check_labels, first_occurrences
from knowledge.llm import LLMSettings, chat_messages, chat_request, server_name
from knowledge.llm_errors import OutputMode
from knowledge.prompting import KnowledgePrompts
from knowledge.vocab import load_vocabulary

log = logging.getLogger(__name__)

COMPLETION_WINDOW: Final = "24h"


@dataclass(frozen=True)
class BatchStatus:
    id: str
    status: str
    total: int
    completed: int
    failed: int
    errors: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True)
class RepairPlan:
    """A follow-up batch: ``state`` is None when there was nothing to send again."""

    state: BatchState | None
    repairs: list[str]  # labels whose invalid answer is sent back with its errors
    resent: list[str]  # labels whose request is sent again (never answered)
    given_up: list[str]  # invalid after the last repair allowed (max_repairs)
    not_retried: list[str]  # refused, or rejected by the server: sending again won't help
    not_collected: list[str]  # no collected outcome yet: collect first


def vocabulary_labels(name: str) -> tuple[list[str], dict[str, str]]:
    """A vocabulary's labels and, where it says more than the label, its description and
    code as the prompt's context."""
    labels, contexts = [], {}
    for entry in load_vocabulary(name).labels:
        labels.append(entry.label)
        notes = [entry.description] if entry.description not in ("", entry.label) else []
        notes += [f"code {entry.query}"] if entry.query != entry.label else []
        if notes:
            contexts[entry.label] = "; ".join(notes)
    return labels, contexts


def prepare_batch(
    kb: KnowledgeBase,
    labels: Sequence[str],
    requests: Path,
    settings: LLMSettings,
    *,
    mode: OutputMode = OutputMode.JSON_SCHEMA,
    contexts: dict[str, str] | None = None,
    force: bool = False,
) -> Prepared:
    """Write one request per label without knowledge (all of them with ``force``)."""
    check_labels(labels)
    firsts, repeats = first_occurrences(labels)
    present = set() if force else kb.with_knowledge(firsts)
    prompts = KnowledgePrompts(variant=settings.prompt)
    lines = []
    for label in firsts:
        if label in present:
            continue
        context = (contexts or {}).get(label)
        cid, line = request_line(label, first_request(settings, prompts, mode, label, context))
        lines.append((BatchItem(cid, label, context), line))
    duplicates = [labels[position] for position in repeats]
    skipped = [label for label in firsts if label in present]
    if not lines:
        return Prepared(None, skipped, duplicates)
    return Prepared(write_batch(requests, settings, prompts, mode, lines), skipped, duplicates)


async def submit_batch(requests: Path, server: BatchServer) -> SubmittedBatch:
    """Upload the request file and create a batch from it.

    A file is submitted once; again only after its batch failed (nothing of it ran). The
    upload is remembered before the batch is created, so a rerun after a crash in between
    neither uploads twice nor creates a second batch from the upload (it finds the first
    among the server's batches).
    """
    state = load_state(requests)
    state.check_requests()
    async with batch_client(server) as client:
        if state.batches:
            latest = state.batches[-1]
            await retrieve(client, state, latest)
            if latest.status != "failed":
                raise BatchFileError(
                    f"{requests} was submitted as batch {latest.id} ({latest.status}); collect "
                    "it, and send what is missing with 'ked knowledge batch repair'"
                )
        batch = None
        if state.uploaded_file_id is None:
            upload = await client.files.create(
                file=(requests.name, requests.read_bytes(), "application/jsonl"), purpose="batch"
            )
            state.uploaded_file_id = upload.id
            state.save()
            log.info("uploaded %s as %s", requests, upload.id)
        else:  # uploaded by a run that stopped: did it create the batch too?
            batch = await _created_from(client, state.uploaded_file_id)
        if batch is None:  # never retried: after a lost answer a retry would make a second
            # batch; a rerun of submit finds the first one instead
            batch = await client.with_options(max_retries=0).batches.create(
                input_file_id=state.uploaded_file_id,
                endpoint=ENDPOINT,
                completion_window=COMPLETION_WINDOW,
                metadata={"ked_requests": requests.name, "ked_sha256": state.requests_sha256[:16]},
            )
    submitted = SubmittedBatch(
        batch.id, batch.input_file_id, server_name(server.base_url), batch.status
    )
    state.batches.append(submitted)
    state.uploaded_file_id = None
    state.save()
    log.info("created batch %s from %s", batch.id, requests)
    return submitted


async def _created_from(client: openai.AsyncOpenAI, input_file_id: str) -> Any:
    """The server's batch made from ``input_file_id``, if there is one."""
    async for batch in client.batches.list(limit=100):
        if batch.input_file_id == input_file_id:
            log.info("batch %s was created before the last submit stopped", batch.id)
            return batch
    return None


async def batch_status(
    requests: Path, server: BatchServer, batch_id: str | None = None
) -> BatchStatus:
    """The server's word on a batch of this file (the latest by default); kept in the state."""
    state = load_state(requests)
    async with batch_client(server) as client:
        batch = await retrieve(client, state, state.batch(batch_id))
    counts = batch.request_counts
    errors = [f"{e.code}: {e.message}" for e in (getattr(batch.errors, "data", None) or [])]
    return BatchStatus(
        batch.id,
        batch.status,
        counts.total if counts else 0,
        counts.completed if counts else 0,
        counts.failed if counts else 0,
        errors,
    )


def prepare_repair(kb: KnowledgeBase, requests: Path, out: Path) -> RepairPlan:
    """Write the follow-up batch of ``requests`` to ``out`` from what its collections hold:
    repair turns (the online path's, with the answer and its errors) for invalid answers
    within ``max_repairs``, and the same request again for those never answered."""
    state = load_state(requests)
    if out.resolve() == requests.resolve():
        raise BatchFileError(f"{out}: the repair batch needs a file of its own")
    outcomes = _latest_outcomes(kb, state)
    bodies = read_requests(requests)
    llm = state.llm_settings()
    prompts = KnowledgePrompts(variant=llm.prompt)
    mode = OutputMode(state.output_mode)
    answers: dict[int, dict[str, str | None]] = {}
    lines: list[tuple[BatchItem, str]] = []
    plan = RepairPlan(None, [], [], [], [], [])
    for item in state.items:
        outcome = outcomes.get(item.custom_id)
        if outcome is None:
            plan.not_collected.append(item.label)
        elif outcome["status"] == "unanswered":
            cid, line = request_line(item.label, bodies[item.custom_id])
            lines.append((BatchItem(cid, item.label, item.context, item.attempt), line))
            plan.resent.append(item.label)
        elif outcome["status"] == "failed":
            plan.not_retried.append(item.label)
        elif outcome["status"] == "invalid" and item.attempt > llm.max_repairs:
            plan.given_up.append(item.label)
        elif outcome["status"] == "invalid":
            run_id = outcome["run_id"]
            if run_id not in answers:
                answers[run_id] = {f.label: f.raw_response for f in kb.failures(run_id)}
            repair = prompts.repair(
                item.label,
                outcome["errors"],
                truncated=outcome["kind"] == "truncated",
                max_tokens=llm.max_tokens,
            )
            answer = answers[run_id].get(item.label) or ""
            messages = chat_messages(
                prompts.system, prompts.user(item.label, item.context), repair, answer
            )
            cid, line = request_line(item.label, chat_request(llm, prompts, messages, mode))
            lines.append((BatchItem(cid, item.label, item.context, item.attempt + 1), line))
            plan.repairs.append(item.label)
    if not lines:
        return plan
    return replace(plan, state=write_batch(out, llm, prompts, mode, lines))


def _latest_outcomes(kb: KnowledgeBase, state: BatchState) -> dict[str, dict[str, Any]]:
    """Each request's outcome in the latest collection that holds it (a stored one wins)."""
    latest: dict[str, dict[str, Any]] = {}
    by_batch = collected_outcomes(kb, [b.id for b in state.batches])
    for batch in state.batches:
        for cid, outcome in by_batch[batch.id].items():
            if latest.get(cid, {}).get("status") != "stored":
                latest[cid] = outcome
    return latest
