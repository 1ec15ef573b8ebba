"""The webhook events Sami acts on, each with its handler: the one list the router is built from."""

from __future__ import annotations

from bot.github import conversation, handlers
from bot.github.router import Router


def make_router() -> Router:
    """A router of every event Sami handles (built once by whoever dispatches deliveries)."""
    return (
        Router()
        .add(handlers.pull_request_opened, "pull_request", "opened", "reopened")
        .add(handlers.pull_request_pushed, "pull_request", "synchronize")
        .add(handlers.pull_request_closed, "pull_request", "closed")
        .add(handlers.pull_request_label, "pull_request", "labeled", "unlabeled")
        .add(handlers.checks_changed, "check_suite", "completed")
        .add(handlers.checks_changed, "workflow_run", "completed")
        .add(handlers.checks_changed, "status")
        .add(handlers.push, "push")
        .add(conversation.comment_created, "issue_comment", "created")
    )
