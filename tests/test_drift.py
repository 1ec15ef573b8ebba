"""The report of what runs and its comparison with what Sami deployed: only what Sami sets counts."""

from __future__ import annotations

import json

import pytest

from bot.services.drift import compare, describe, image_repository, parse_report, same_image, summary

DEPLOYED = {"tag": "abc", "image": "local/web:abc", "app_overrides": {"LOG_LEVEL": "info"},
            "deployment_overrides": {"port": "18081"}}


def report(*components: dict) -> dict:
    return parse_report(json.dumps({"running": list(components)}))


def web(**changes) -> dict:
    return {"name": "web-stage_web", "image": "local/web:abc", "replicas": 2, "running": 2,
            "env": {"PORT": "18081", "LOG_LEVEL": "info"}, **changes}


def db(**changes) -> dict:
    return {"name": "web-stage_db", "image": "postgres:15", "replicas": 1, "running": 1, **changes}


BASELINE = report(web(), db())


def test_the_report_is_the_last_json_line_with_running_and_is_normalised():
    out = "\n".join(["checking...", '{"other": 1}', json.dumps({"running": [{"name": "a", "image": "x:1"}]}),
                     "not json {", json.dumps({"running": [{"name": "b", "image": "r.io/x:2@sha256:" + "0" * 64,
                                                            "replicas": "3", "running": True}]}), "done"])
    assert parse_report(out) == {"components": [{"name": "b", "image": "r.io/x:2", "tag": "2", "replicas": 3,
                                                 "running": None, "env": {}}]}


@pytest.mark.parametrize("out", ["", "ok\n", '{"running": "web"}', '{"running": [1, 2]',
                                 '["running"]'])
def test_no_report_is_none_or_empty(out):
    parsed = parse_report(out)
    assert parsed is None


def test_an_empty_running_list_is_a_report_of_nothing():
    assert parse_report('{"running": []}') == {"components": []}


def test_components_without_a_name_are_dropped():
    assert parse_report('{"running": [{"image": "x:1"}, {"name": "a", "tag": "v1"}]}')["components"] == [
        {"name": "a", "image": None, "tag": "v1", "replicas": None, "running": None, "env": {}}]


def test_what_sami_deployed_is_in_sync():
    assert compare(DEPLOYED, BASELINE, report(web(), db())) == []


def test_what_other_controllers_change_is_not_drift():
    # Tasks lost or starting (health, judged by check), fields Sami does not set, a component added
    # beside the stack, env entries of overrides Sami did not pass: none of it is drift.
    current = report(web(running=0, labels={"team": "x"}, env={"PORT": "18081", "EXTRA": "1"}), db(running=1),
                     {"name": "web-stage_sidecar", "image": "other:1", "replicas": 5})
    assert compare(DEPLOYED, BASELINE, current) == []


def test_an_image_changed_by_hand_is_drift_naming_the_images():
    differences = compare(DEPLOYED, BASELINE, report(web(image="local/web:hand"), db()))
    assert differences == [{"component": "web-stage_web", "field": "image", "deployed": "local/web:abc",
                            "running": "local/web:hand"}]
    assert describe(differences[0]) == "web-stage_web: image local/web:hand (deployed local/web:abc)"


def test_another_component_s_image_changed_is_drift_too():
    differences = compare(DEPLOYED, BASELINE, report(web(), db(image="postgres:16")))
    assert [(d["component"], d["field"]) for d in differences] == [("web-stage_db", "image")]


def test_digests_and_docker_hub_prefixes_are_the_same_image():
    current = report(web(image="docker.io/library/local/web:abc@sha256:" + "1" * 64),
                     db(image="docker.io/library/postgres:15"))
    assert compare(DEPLOYED, BASELINE, current) == []
    assert same_image("web", "docker.io/library/web:latest")
    assert image_repository("index.docker.io/library/web:1") == "web"
    assert image_repository("registry:5000/team/web:1") == "registry:5000/team/web"


def test_replicas_lost_is_drift():
    differences = compare(DEPLOYED, BASELINE, report(web(replicas=0, running=0), db()))
    assert differences == [{"component": "web-stage_web", "field": "replicas", "deployed": 2, "running": 0}]


def test_a_passed_override_changed_on_the_target_is_drift():
    differences = compare(DEPLOYED, BASELINE, report(web(env={"PORT": "9999", "LOG_LEVEL": "info"}), db()))
    assert differences == [{"component": "web-stage_web", "field": "env PORT", "deployed": "18081",
                            "running": "9999"}]


def test_a_removed_component_and_a_removed_stack_are_drift():
    assert compare(DEPLOYED, BASELINE, report(web())) == [
        {"component": "web-stage_db", "field": "present", "deployed": "running", "running": "gone"}]
    gone = compare(DEPLOYED, BASELINE, report())
    assert gone == [{"component": None, "field": "present", "deployed": "2 component(s)", "running": "nothing"}]
    assert summary(gone) == "the deployment: nothing (deployed 2 component(s))"


def test_without_a_baseline_the_deployed_config_is_compared():
    # Deployed before its script reported: the components of the deployed image's repository must run it,
    # and others (a database) are not judged.
    assert compare(DEPLOYED, None, report(web(), db(image="postgres:16"))) == []
    assert [d["field"] for d in compare(DEPLOYED, None, report(web(image="local/web:hand"), db()))] == ["image"]
    nobody = compare(DEPLOYED, None, report(db()))
    assert nobody == [{"component": None, "field": "image", "deployed": "local/web:abc",
                       "running": "no component runs it"}]


def test_without_a_baseline_the_replicas_override_is_compared_when_passed():
    config = {**DEPLOYED, "deployment_overrides": {"replicas": "3"}}
    assert [d["field"] for d in compare(config, None, report(web(replicas=2)))] == ["replicas"]
    assert compare(DEPLOYED, None, report(web(replicas=7))) == []


def test_a_target_known_by_its_tag_static_files():
    config = {"tag": "v2", "image": None}
    baseline = report({"name": "current", "tag": "v2"})
    assert compare(config, baseline, report({"name": "current", "tag": "v2"})) == []
    assert compare(config, baseline, report({"name": "current", "tag": "v1"})) == [
        {"component": "current", "field": "tag", "deployed": "v2", "running": "v1"}]
    assert compare(config, None, report({"name": "current", "tag": "v1"}))[0]["field"] == "tag"


def test_the_summary_names_the_first_differences_and_counts_the_rest():
    differences = [{"component": f"c{i}", "field": "image", "deployed": "a:1", "running": "a:2"} for i in range(5)]
    assert summary(differences) == ("c0: image a:2 (deployed a:1); c1: image a:2 (deployed a:1); "
                                    "c2: image a:2 (deployed a:1); and 2 more")
    assert summary([]) == "" and summary(None) == ""
