"""One webhook delivery followed through Sami's JSON log lines by its id: a `/sami deploy` comment
(GitHub's example issue_comment payload), signed and posted to the webhook, processed by an RQ
worker, its action run by the probe control scripts, and its answers sent through the outbox to
Prism serving GitHub's API description. Every line of that work names the delivery; the action's
lines name the action and its deployment too."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
from collections.abc import Iterator

from sqlalchemy import select

from bot.core.logs import configure_logging
from bot.core.models import Action, Deployment, OutboxRow
from tests.github import test_conversation as conversation
from tests.github.conftest import token_client
from tests.github.test_conversation import NUMBER, comment_payload, send_outbox
from tests.github.webhook_fixtures import post
from tests.pipeline import conftest as pipeline

probe_repo, record, settings = pipeline.probe_repo, pipeline.record, pipeline.settings
worker_ctx, work = pipeline.worker_ctx, pipeline.work
test_config = conversation.test_config  # the conversation tests' deployments repo and public URL

# Where the work of a delivery logs: its receipt, its processing, its action's run, its outbox sends.
RECEIPT, PROCESSING, ACTION_RUN, OUTBOX_SEND = "bot.web.webhooks", "workers.deliveries", "workers.jobs", \
    "workers.outbox"


@contextlib.contextmanager
def json_logs(settings) -> Iterator[list[dict]]:
    """Sami's logging configured as a `SAMI_LOG_FORMAT=json` process has it; yields the lines logged
    inside, parsed, once the block ends."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    lines: list[dict] = []
    configure_logging(dataclasses.replace(settings, log_format="json", log_level="info"))
    stream = io.StringIO()
    root.handlers[0].setStream(stream)
    try:
        yield lines
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        lines.extend(json.loads(line) for line in stream.getvalue().splitlines())


def test_a_deliverys_lines_carry_its_id_from_receipt_to_its_last_github_call(client, db_session, settings,
                                                                            worker_ctx, work, github_mock):
    worker_ctx.github = token_client(github_mock.url)
    delivery = "follow-me-1"
    with json_logs(settings) as lines:
        assert post(client, "issue_comment", comment_payload("/sami deploy"), delivery=delivery).status_code == 202
        work()  # the delivery's job, then the action it queued
        send_outbox(db_session, worker_ctx, work)

    name = f"probe-pr-{NUMBER}"
    deployment = db_session.scalars(select(Deployment).where(Deployment.name == name)).one()
    [action] = db_session.scalars(select(Action).where(Action.deployment_id == deployment.id)).all()
    assert action.delivery_id == delivery
    sent = db_session.scalars(select(OutboxRow).where(OutboxRow.action_id == action.id)).all()
    assert sent and all(row.delivery_id == delivery for row in sent)

    # Only this delivery's work ran: every line of those stages is about it.
    stages = (RECEIPT, PROCESSING, ACTION_RUN, OUTBOX_SEND)
    followed = [line for line in lines if line["logger"] in stages or line["logger"].startswith("bot.github.")]
    unnamed = [line for line in followed if line.get("delivery_id") != delivery]
    assert not unnamed, "lines that do not name the delivery:\n" + "\n".join(map(json.dumps, unnamed))
    by_stage = {stage: [line["message"] for line in followed if line["logger"] == stage] for stage in stages}
    assert any("recorded" in message for message in by_stage[RECEIPT]), by_stage
    assert any(f"delivery {delivery} (issue_comment.created)" in message for message in by_stage[PROCESSING]), \
        by_stage
    assert any(message.startswith(f"running create of {name}") for message in by_stage[ACTION_RUN]), by_stage
    assert any("delivered" in message for message in by_stage[OUTBOX_SEND]), by_stage

    # The action's lines name the action and its deployment; so do the sends of its rows.
    run = [line for line in followed if line["logger"] == ACTION_RUN]
    assert all((line.get("action_id"), line.get("deployment")) == (action.id, name) for line in run), run
    sends = [line for line in followed if line["logger"] == OUTBOX_SEND and line.get("action_id") == action.id]
    assert sends and all(line.get("deployment") == name for line in sends), sends
