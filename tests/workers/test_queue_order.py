"""The order of the actions queue on Redis: what an environment run's other components wait behind is
taken before work already waiting; the rest waits its turn."""

from __future__ import annotations

from rq.job import Job

from bot.services.deployments import Context
from bot.services.environments import Queued, hand_to_queue
from workers.queue import RQBroker


def test_what_components_wait_behind_goes_before_waiting_work_most_waited_for_first(redis_client):
    broker = RQBroker(redis_client)
    broker.enqueue_action(1)  # a quick component of an earlier step, still waiting for a worker
    # As a run step returns them: most waited-for first.
    hand_to_queue(Context("sami", "example.test", "sami", broker),
                  [Queued(10, behind=5), Queued(11, behind=2), Queued(12, behind=0), Queued(13, behind=0)])
    assert broker.actions.get_job_ids() == ["10", "11", "1", "12", "13"]
    assert [Job.fetch(job_id, connection=redis_client).args for job_id in broker.actions.get_job_ids()] == \
        [(10,), (11,), (1,), (12,), (13,)]


def test_an_action_put_at_the_front_is_not_queued_twice(redis_client):
    broker = RQBroker(redis_client)
    broker.enqueue_action(10)
    broker.enqueue_action(10, front=True)
    assert broker.actions.get_job_ids() == ["10"]
