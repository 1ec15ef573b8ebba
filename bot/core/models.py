"""The records Sami keeps in its database: deployments, actions and their steps, deliveries, API tokens, the
GitHub outbox."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy import text as sa_text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from bot.core.lifecycle import ActionState, DeploymentState, FailureReason

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer, "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC timestamp on every database (SQLite returns naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given; use datetime.now(UTC)")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def _enum(cls):
    # Stored as the values ("Running", "queued"), checked by a constraint where the database can.
    return Enum(
        cls,
        name=cls.__name__.lower(),
        values_callable=lambda e: [m.value for m in e],
        native_enum=False,
        create_constraint=True,
        length=32,
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Deployment(Base):
    """One instance of a service in an environment, e.g. ``web-stage`` or ``web-pr-42``."""

    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    service: Mapped[str] = mapped_column(String(63))
    environment: Mapped[str] = mapped_column(String(63))
    type: Mapped[str] = mapped_column(String(32))
    state: Mapped[DeploymentState] = mapped_column(_enum(DeploymentState))
    failure_reason: Mapped[FailureReason | None] = mapped_column(_enum(FailureReason))
    status_message: Mapped[str | None] = mapped_column(Text)
    tag: Mapped[str | None] = mapped_column(String(255))
    image: Mapped[str | None] = mapped_column(String(512))
    # Override values as given; values of keys named as secrets are never stored here.
    app_overrides: Mapped[dict[str, Any]] = mapped_column(default=dict)
    deployment_overrides: Mapped[dict[str, Any]] = mapped_column(default=dict)
    links: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    source_repo: Mapped[str | None] = mapped_column(String(255))
    pull_request: Mapped[int | None] = mapped_column(Integer)
    ref: Mapped[str | None] = mapped_column(String(255))
    sha: Mapped[str | None] = mapped_column(String(64))
    manifest_sha: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The last real change (a state change, which every request makes too); bot.core.states sets it,
    # so a periodic check (checked_at), a lease renewal or a heartbeat leaves it as it is.
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    checked_at: Mapped[datetime | None]
    # Periodic checks in a row that could not start; the next one waits until check_retry_at.
    check_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    check_retry_at: Mapped[datetime | None]
    archived_at: Mapped[datetime | None]
    # What the target reported running at the last check that reported it ({"components": [...]}; see
    # bot.services.drift), when, and how it differs from what Sami deployed: None = no verdict (the
    # control script reports nothing), [] = in sync, else one record per difference since drift_since.
    running: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    running_at: Mapped[datetime | None]
    drift: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    drift_since: Mapped[datetime | None]
    # Who may run scripts on this deployment now (one worker at a time), until when.
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None]
    # Optimistic lock: a concurrent writer of the same row fails instead of overwriting.
    version: Mapped[int] = mapped_column(Integer, default=1)
    # What other components of its environment may reference as ${service.output}: its endpoint
    # (a third-party service's, from its manifest's template or its ``info`` output), url, host, port.
    outputs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The environment whose manifests it is deployed with, when not its own (a clone of an environment:
    # web-qa-7 deploys with web's stage manifest).
    manifest_environment: Mapped[str | None] = mapped_column(String(63))
    # A rollback pins the deployment (bot.services.pins): while pinned_by is set, CI requests and pushes
    # to the deployments repo that would change it are refused. Who pinned it, when, by which action
    # (no foreign key: the pin outlives a pruned action) and why ("rollback to v1 (...)").
    pinned_by: Mapped[str | None] = mapped_column(String(255))
    pinned_at: Mapped[datetime | None]
    pinned_action_id: Mapped[int | None] = mapped_column(BigId)
    pin_reason: Mapped[str | None] = mapped_column(String(500))

    actions: Mapped[list[Action]] = relationship(
        back_populates="deployment", order_by="Action.id", cascade="all, delete-orphan"
    )

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        Index(None, "state"),
        Index(None, "service", "environment"),
        Index(None, "source_repo", "pull_request"),
        Index(None, "checked_at"),
        Index(None, "lease_expires_at"),
    )

    def __repr__(self) -> str:
        return f"<Deployment {self.name} {self.state}>"


class Action(Base):
    """One requested operation on a deployment, with its log; its id is the RQ job id."""

    __tablename__ = "actions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[ActionState] = mapped_column(_enum(ActionState), default=ActionState.QUEUED)
    requested_by: Mapped[str] = mapped_column(String(255))
    origin: Mapped[str] = mapped_column(String(32))
    delivery_id: Mapped[str | None] = mapped_column(String(64))
    # What the script ran with: tag, image, overrides (secret values masked), manifest sha.
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # What the target reported running when this action's check passed: the baseline drift is measured
    # against while this is the deployment's last succeeded deploy (None: the script reports nothing).
    running: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    # Captured output, up to a megabyte: deferred, so that loading actions (lists, the row locked
    # while a request is decided) does not load their logs; read where it is shown.
    log: Mapped[str] = mapped_column(Text, default="", deferred=True)
    log_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(255))
    # The process group of the running script, so a reaper on the worker's host can stop it.
    script_pgid: Mapped[int | None] = mapped_column(Integer)
    # Tries that could not start (the deployments repo was unreadable). retry_at: the action does not
    # start before then (the next try, or the end of a pushed update's wait for newer pushes).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    retry_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    script_started_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    # A cancel asked for while the action runs: its worker sees it on its next tick and stops the
    # script (it may run on another host, so the request goes through the database).
    cancel_requested_at: Mapped[datetime | None]
    cancel_requested_by: Mapped[str | None] = mapped_column(String(255))

    deployment: Mapped[Deployment] = relationship(back_populates="actions")
    # Its control-script calls in the order they ran; the database deletes them with the action.
    steps: Mapped[list[ActionStep]] = relationship(
        back_populates="action", order_by="ActionStep.position", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        Index(None, "deployment_id", "created_at"),
        Index(None, "state", "heartbeat_at"),
        Index(None, "delivery_id"),
    )

    def __repr__(self) -> str:
        return f"<Action {self.id} {self.kind} {self.state}>"


class ActionStep(Base):
    """One control-script call of an action (config_check, create, check, ...), as a CI job's step.

    ``exit_code`` is None while the script runs, and after it when it had none: it was stopped by
    its timeout (``timed_out``), by a cancel, or could not start. A check run again until it passes
    (or its status timeout ends) is one step: ``attempts`` calls, the last one's exit code.
    """

    __tablename__ = "action_steps"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("actions.id", ondelete="CASCADE"))
    # 1, 2, 3, ... within the action.
    position: Mapped[int] = mapped_column(Integer)
    operation: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    exit_code: Mapped[int | None] = mapped_column(Integer)
    timed_out: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    action: Mapped[Action] = relationship(back_populates="steps")

    __table_args__ = (UniqueConstraint("action_id", "position"),)

    @property
    def duration_seconds(self) -> float | None:
        """How long it ran, once it ended."""
        if self.finished_at is None or self.started_at is None:
            return None
        return round(max(0.0, (self.finished_at - self.started_at).total_seconds()), 3)

    def __repr__(self) -> str:
        return f"<ActionStep {self.action_id}.{self.position} {self.operation} {self.exit_code}>"


class DeliveryStatus(enum.StrEnum):
    """Where a webhook delivery is: received, then processed or ignored, failed, or retrying later."""

    RECEIVED = "received"
    PROCESSING = "processing"
    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"
    RETRYING = "retrying"


class Delivery(Base):
    """A GitHub webhook delivery as received; the delivery id makes redeliveries harmless."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(64), unique=True)
    event: Mapped[str] = mapped_column(String(64))
    action: Mapped[str | None] = mapped_column(String(64))
    repository: Mapped[str | None] = mapped_column(String(255))
    installation_id: Mapped[int | None] = mapped_column(BigInteger)
    sender: Mapped[str | None] = mapped_column(String(255))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[DeliveryStatus] = mapped_column(_enum(DeliveryStatus), default=DeliveryStatus.RECEIVED)
    # What processing did ("created web-pr-3", "ignored: ...", "failed: KeyError: ...").
    outcome: Mapped[str | None] = mapped_column(Text)
    # Tries so far; a handler that asks to be tried again waits until retry_at.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    retry_at: Mapped[datetime | None]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    processed_at: Mapped[datetime | None]

    __table_args__ = (Index(None, "received_at"), Index(None, "status"))

    def __repr__(self) -> str:
        return f"<Delivery {self.delivery_id} {self.event}.{self.action} {self.status}>"


class ApiToken(Base):
    """An API credential: the secret is stored as a SHA-256 hash, looked up by its public id."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_id: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    # {"services": [...] | ["*"], "environments": [...], "actions": [...], "admin": bool}
    scopes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class OutboxState(enum.StrEnum):
    """Where a GitHub side effect is: waiting (or waiting again after a failed try), being sent, done."""

    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    # Not sent, and never will be: nothing to say any more (text unchanged), no credentials, or refused.
    SKIPPED = "skipped"
    FAILED = "failed"


class OutboxRow(Base):
    """One GitHub side effect (a comment, reaction, Deployment, status), written in the transaction of
    the state change that causes it and delivered later by a job, with retries; see bot.outbox."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # Idempotency: one row per effect ("deployment:17"); an insert of a key already there does nothing.
    key: Mapped[str] = mapped_column(String(255), unique=True)
    # Rows rendering the latest state of one thing ("comment:o/r#3"): while one waits, no other is added.
    coalesce_key: Mapped[str | None] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    repository: Mapped[str] = mapped_column(String(255))
    pull_request: Mapped[int | None] = mapped_column(Integer)
    deployment_id: Mapped[int | None] = mapped_column(BigInteger)
    action_id: Mapped[int | None] = mapped_column(BigInteger)
    # The webhook delivery that caused it (None for CI's and people's requests, and the scheduler's).
    delivery_id: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[OutboxState] = mapped_column(_enum(OutboxState), default=OutboxState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    due_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    # What GitHub gave back that later rows need (the comment's or the Deployment's id), or why skipped.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        Index(None, "state", "due_at"),
        Index(None, "repository", "pull_request"),
        Index(None, "action_id"),
        Index(None, "delivery_id"),
        # At most one waiting row per coalesce key (PostgreSQL and SQLite both have partial indexes).
        Index("uq_outbox_pending_coalesce_key", "coalesce_key", unique=True,
              postgresql_where=sa_text("state = 'pending'"), sqlite_where=sa_text("state = 'pending'")),
    )

    def __repr__(self) -> str:
        return f"<OutboxRow {self.id} {self.key} {self.state}>"


class PullRequestRecord(Base):
    """What Sami remembers of a pull request for its conversation on GitHub: the sticky comment's id,
    the head commit, a fork's approval, and the last `/sami` command."""

    __tablename__ = "github_pull_requests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    repository: Mapped[str] = mapped_column(String(255))
    number: Mapped[int] = mapped_column(Integer)
    head_sha: Mapped[str | None] = mapped_column(String(64))
    fork: Mapped[bool] = mapped_column(Boolean, default=False)
    # A fork's head commit a writer approved with `/sami deploy` (an approval holds for that sha only).
    approved_sha: Mapped[str | None] = mapped_column(String(64))
    approved_by: Mapped[str | None] = mapped_column(String(255))
    comment_id: Mapped[int | None] = mapped_column(BigInteger)
    # SHA-256 of the sticky comment's body as last sent: the same text is not sent again.
    comment_digest: Mapped[str | None] = mapped_column(String(64))
    # {"text", "author", "result"} of the last command, shown in the sticky comment.
    last_command: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # require_checks: {"sha", "state" (success, pending, failure), "summary", "services"} of the head commit.
    checks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (UniqueConstraint("repository", "number"),)


class EnvironmentRecord(Base):
    """An environment Sami made itself (a clone): its name, and the environment whose manifests and
    topology its components are deployed with."""

    __tablename__ = "environments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    template: Mapped[str] = mapped_column(String(63))
    clone_of: Mapped[str | None] = mapped_column(String(63))
    created_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # A pull request's preview (preview_of): the pull request, whose sticky comment lists its components.
    pull_request_repository: Mapped[str | None] = mapped_column(String(140))
    pull_request_number: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("ix_environments_pull_request", "pull_request_repository", "pull_request_number"),)


class EnvironmentSnapshot(Base):
    """A template of an environment: every component's image and tag, overrides (secret names, never
    values), deploy order, and the deployments-repo commit it was taken at."""

    __tablename__ = "environment_snapshots"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    environment: Mapped[str] = mapped_column(String(63))
    manifest_sha: Mapped[str | None] = mapped_column(String(64))
    # [{"service", "deployment", "kind", "mode", "wave", "depends_on", "tag", "image", "app_overrides",
    #   "deployment_overrides", "secrets"}] in deploy order.
    components: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index(None, "environment"),)


class EnvironmentRun(Base):
    """A whole-environment operation (deploy, archive, restore, cleanup): one action per component,
    started in dependency order (reverse order to take an environment down); see
    bot.services.environments."""

    __tablename__ = "environment_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    environment: Mapped[str] = mapped_column(String(63))
    operation: Mapped[str] = mapped_column(String(32))
    # running, succeeded, failed
    state: Mapped[str] = mapped_column(String(32))
    requested_by: Mapped[str] = mapped_column(String(255))
    origin: Mapped[str] = mapped_column(String(32))
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("environment_snapshots.id", ondelete="SET NULL"))
    manifest_sha: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    components: Mapped[list[EnvironmentRunComponent]] = relationship(
        back_populates="run", order_by="EnvironmentRunComponent.id",
        cascade="all, delete-orphan", passive_deletes=True)

    __table_args__ = (Index(None, "environment", "created_at"), Index(None, "state"))


class EnvironmentRunComponent(Base):
    """One component of a run: its deployment, the components it waits for, its action and status
    (waiting, queued, succeeded, failed, skipped)."""

    __tablename__ = "environment_run_components"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("environment_runs.id", ondelete="CASCADE"))
    service: Mapped[str] = mapped_column(String(63))
    deployment: Mapped[str] = mapped_column(String(63))
    wave: Mapped[int] = mapped_column(Integer)
    # The services of the same run that must succeed before this one is queued.
    after: Mapped[list[str]] = mapped_column(JSON, default=list)
    # What a deploy asks for: {"tag", "image", "app_overrides", "deployment_overrides", "template"}.
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    action_id: Mapped[int | None] = mapped_column(ForeignKey("actions.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(32))
    message: Mapped[str | None] = mapped_column(Text)
    # A clone's or a preview's third-party service: "empty", "seeded", "seed failed: <why>" (internal,
    # provisioned fresh) or "shared" (external); None for applications and for other runs.
    data: Mapped[str | None] = mapped_column(String(1000))

    run: Mapped[EnvironmentRun] = relationship(back_populates="components")

    __table_args__ = (UniqueConstraint("run_id", "service"), Index(None, "action_id"))


class Release(Base):
    """A blue-green step of an environment (bot.services.releases): a release deployed into the idle
    colour and switched to, or a rollback to the previous colour; who asked, when, which snapshot,
    from which colour to which, and its state (RELEASE_TRANSITIONS in bot.core.lifecycle)."""

    __tablename__ = "releases"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    environment: Mapped[str] = mapped_column(String(63))
    # release, rollback
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    from_colour: Mapped[str | None] = mapped_column(String(8))
    to_colour: Mapped[str] = mapped_column(String(8))
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("environment_snapshots.id", ondelete="SET NULL"))
    # The environment run that deployed the colour (a release), and the one that archived the colour it
    # replaced once keep_previous had passed.
    run_id: Mapped[int | None] = mapped_column(ForeignKey("environment_runs.id", ondelete="SET NULL"))
    archive_run_id: Mapped[int | None] = mapped_column(ForeignKey("environment_runs.id", ondelete="SET NULL"))
    versions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    requested_by: Mapped[str] = mapped_column(String(255))
    origin: Mapped[str] = mapped_column(String(32))
    switched_by: Mapped[str | None] = mapped_column(String(255))
    # The pull request a comment command came from: its sticky comment shows the release.
    source_repo: Mapped[str | None] = mapped_column(String(255))
    pull_request: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    switched_at: Mapped[datetime | None]
    previous_archived_at: Mapped[datetime | None]

    __table_args__ = (Index(None, "environment", "id"), Index(None, "state"))
