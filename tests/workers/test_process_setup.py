"""Worker and scheduler processes: what they set up at start, and a database outage they outlive."""

from __future__ import annotations

import logging
import threading
import time

from bot.core.config import settings_from_mapping
from tests.support.servers import free_port
from workers.context import build_context
from workers.queue import InProcessBroker
from workers.scheduler import Scheduler


def test_the_scheduler_keeps_ticking_while_the_database_is_unreachable(tmp_path, caplog):
    settings = settings_from_mapping({
        "mode": "test", "instance_dir": str(tmp_path / "instance"),
        # Nothing listens there: every tick's first query fails.
        "database_url": f"postgresql://sami@127.0.0.1:{free_port()}/sami?connect_timeout=1",
    })
    scheduler = Scheduler(build_context(settings, broker=InProcessBroker()), interval=0.5)
    caplog.set_level(logging.ERROR, logger="workers.scheduler")
    thread = threading.Thread(target=scheduler.run_forever, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while sum("scheduler tick failed" in r.getMessage() for r in caplog.records) < 2:
        assert thread.is_alive(), "the scheduler stopped on a database error"
        assert time.monotonic() < deadline, "the scheduler did not tick twice"
        time.sleep(0.1)
    assert thread.is_alive()
    scheduler.stop()
    thread.join(10)
    assert not thread.is_alive()


def test_a_worker_context_makes_its_instance_folder_and_default_static_root(tmp_path):
    """With PostgreSQL, nothing else creates them, and static_file deployments need the root."""
    instance = tmp_path / "fresh" / "instance"
    settings = settings_from_mapping({"mode": "test", "instance_dir": str(instance),
                                      "database_url": "postgresql://sami@127.0.0.1:1/sami"})
    build_context(settings, broker=InProcessBroker())
    assert (instance / "sites").is_dir()
    elsewhere = tmp_path / "served"
    custom = settings_from_mapping({"mode": "test", "instance_dir": str(instance), "static_root": str(elsewhere),
                                    "database_url": "postgresql://sami@127.0.0.1:1/sami"})
    build_context(custom, broker=InProcessBroker())
    assert not elsewhere.exists()  # an operator's own static root is theirs to provide
