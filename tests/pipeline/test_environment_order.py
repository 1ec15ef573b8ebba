"""The order of a whole-environment run, as a property on PostgreSQL: on any acyclic graph, a
component is queued only once everything it depends on has succeeded, in whatever order the
workers finish; and the components that fail stop exactly those that depend on them."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from bot import outbox
from bot.core.models import Action, Deployment, EnvironmentRun
from bot.core.states import ActionState, DeploymentState, claim_action, transition, transition_action
from bot.manifests import DeploymentsRepo, load_deployments_repo
from bot.services import environments
from bot.services.deployments import Context

NAMES = itertools.count()


@st.composite
def graphs(draw):
    """An acyclic graph: node i may depend only on nodes before it; and the nodes that would fail."""
    size = draw(st.integers(min_value=1, max_value=7))
    graph = {f"s{i}": {f"s{j}" for j in range(i) if draw(st.booleans())} for i in range(size)}
    failing = draw(st.sets(st.sampled_from(sorted(graph))))
    return graph, failing


def expected_statuses(graph: dict[str, set[str]], failing: set[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for node in sorted(graph, key=lambda n: int(n[1:])):  # dependencies come first
        if any(result[d] in ("failed", "skipped") for d in graph[node]):
            result[node] = "skipped"
        else:
            result[node] = "failed" if node in failing else "succeeded"
    return result


def settle(session, action_id: int, ok: bool, repo: DeploymentsRepo, ctx: Context) -> None:
    """What a worker does when a component's action ends: record it and advance the run, in one transaction."""
    claim_action(session, action_id, "worker-1", datetime.now(UTC))
    session.expire_all()
    action = session.get(Action, action_id)
    transition_action(action, ActionState.SUCCEEDED if ok else ActionState.FAILED)
    deployment = session.get(Deployment, action.deployment_id)
    transition(deployment, DeploymentState.RUNNING if ok else DeploymentState.FAILURE)
    environments.action_settled(session, action, lambda sha: repo, ctx)
    outbox.commit(session)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=graphs(), data=st.data())
def test_components_are_queued_after_their_dependencies_and_failures_skip_their_dependents(
        drawn, data, db_session, probe_repo):
    graph, failing = drawn
    name = f"h{next(NAMES)}"
    base = load_deployments_repo(probe_repo).find("probe", "stage")
    repo = DeploymentsRepo(root=probe_repo, sha=None, errors=(), manifests=tuple(
        dataclasses.replace(base, service_name=s, environment=name, depends_on=tuple(sorted(deps)),
                            path=f"services/{s}/swarm/{name}/sami.yaml", directory=f"services/{s}/swarm/{name}")
        for s, deps in graph.items()))
    ctx = Context("sami", "example.test", "sami", broker=None)
    run = environments.start_run(db_session, repo, name, "deploy", ctx, requested_by="test", origin="cli",
                                 versions=dict.fromkeys(graph, "v1"))
    run_id = run.id
    while True:
        db_session.expire_all()
        run = db_session.get(EnvironmentRun, run_id)
        status = {c.service: c.status for c in run.components}
        for component in run.components:
            if component.status in ("queued", "succeeded", "failed"):
                # Queued (or done) only after every dependency succeeded.
                assert all(status[d] == "succeeded" for d in graph[component.service]), (component.service, status)
        queued = sorted(c.service for c in run.components if c.status == "queued")
        if not queued:
            break
        # Workers finish in any order.
        done = data.draw(st.sampled_from(queued))
        action_id = next(c.action_id for c in run.components if c.service == done)
        settle(db_session, action_id, done not in failing, repo, ctx)
    assert status == expected_statuses(graph, failing)
    assert run.state == ("succeeded" if set(status.values()) == {"succeeded"} else "failed")
    # Nothing that was skipped ever ran.
    skipped = [f"{s}-{name}" for s, st_ in status.items() if st_ == "skipped"]
    assert not db_session.scalars(select(Action).join(Deployment).where(Deployment.name.in_(skipped))).all()
