"""The calling contract shared by every built-in set: argv parsing, name refusal, overrides,
config_check messages, info and notifications. Clients are recording stand-ins here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.control_scripts.helpers import (
    EXAMPLES,
    OPERATIONS,
    SCRIPTS,
    TYPES,
    RecordingStandIns,
    contract_args,
    run_script,
)

MANIFESTS = {
    "swarm": EXAMPLES / "web" / "swarm" / "stage",
    "cron": EXAMPLES / "nightly-report" / "cron" / "stage",
    "compose": EXAMPLES / "notes" / "compose" / "stage",
    "k8s": EXAMPLES / "api" / "k8s" / "stage",
    "static_file": EXAMPLES / "docs" / "static_file" / "stage",
}


def test_every_type_has_every_operation_executable():
    for kind in TYPES:
        for op in OPERATIONS:
            path = SCRIPTS / kind / op
            assert path.is_file(), path
            assert os.access(path, os.X_OK), path


BAD_NAMES = ["Web", "web;touch x", "../web", "web name", "-web", "", "a" * 64, "web$(id)", "wéb"]


@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_names_are_refused_by_every_script(kind, bad, stand_ins, tmp_path):
    env = stand_ins.env({"SAMI_STATIC_ROOT": str(tmp_path / "static")})
    for op in OPERATIONS:
        args = contract_args(bad, tag="v1", manifest_dir=MANIFESTS[kind])
        result = run_script(kind, op, args, env=env)
        assert result.returncode == 64, (kind, op, bad, result.stdout, result.stderr)
        message = result.stdout if op == "config_check" else result.stderr
        assert "Deployment name" in message, (kind, op, message)
    assert stand_ins.calls() == [], "no client may be called for a refused name"
    assert not (tmp_path / "static").exists()


@pytest.mark.parametrize("kind", TYPES)
def test_flags_in_any_order_with_equals_and_unknown_flags(kind, stand_ins, tmp_path):
    env = stand_ins.env({"SAMI_URL": "https://api-stage.example.test", "SAMI_STATIC_ROOT": str(tmp_path)})
    args = contract_args("api-stage", tag="v1", manifest_dir=MANIFESTS[kind])
    pairs = [args[i : i + 2] for i in range(0, len(args), 2)]
    shuffled = [part for pair in reversed(pairs) for part in pair]
    shuffled = ["--future-flag", "value", *shuffled, "--another-new-flag", "--name=api-stage"]
    result = run_script(kind, "info", shuffled, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "app,https://api-stage.example.test\n"
    assert "ignoring unknown flag --future-flag" in result.stderr


def test_info_quotes_csv_and_prints_nothing_without_url(tmp_path):
    args = contract_args("web-stage", tag="v1", manifest_dir=MANIFESTS["swarm"])
    env = dict(os.environ, SAMI_URL='https://x.example.test/a,b"c')
    result = run_script("swarm", "info", args, env=env)
    assert result.stdout == 'app,"https://x.example.test/a,b""c"\n'
    env.pop("SAMI_URL")
    assert run_script("swarm", "info", args, env=env).stdout == ""


@pytest.mark.parametrize("kind", TYPES)
def test_notifications_accept_statuses(kind, tmp_path):
    args = [
        *contract_args("web-stage", tag="v1", manifest_dir=MANIFESTS[kind]),
        "--old-status",
        "CreatePending",
        "--new-status",
        "Running",
    ]
    result = run_script(kind, "notifications", args)
    assert result.returncode == 0
    assert "CreatePending -> Running" in result.stderr


@pytest.mark.parametrize(
    ("kind", "deployment_config", "app_config", "expected"),
    [
        ("swarm", {"port": "eighty"}, {}, 'port="eighty" is not a port number'),
        ("swarm", {"port": "70000"}, {}, "is not a port number"),
        ("compose", {"replicas": "two"}, {}, 'replicas="two" is not a whole number'),
        ("swarm", {"stack-file": "missing.yml"}, {}, 'Stack file "missing.yml" was not found'),
        ("swarm", {"stack-file": "../../etc/passwd"}, {}, "must be a path inside the manifest folder"),
        ("cron", {}, {"path": "/tmp"}, 'Override key "path" is reserved'),
        ("swarm", {}, {"docker-host": "tcp://evil"}, "is reserved"),
        ("swarm", {}, {"bad key": "x"}, "may only contain letters"),
        ("compose", {"compose-file": "nope.yml"}, {}, 'Compose file "nope.yml" was not found'),
        ("k8s", {"chart": "nochart"}, {}, 'Helm chart "nochart" was not found'),
        ("k8s", {"values-file": "missing-values.yaml"}, {}, 'values-file "missing-values.yaml" was not found'),
        ("static_file", {"source": "dist"}, {}, 'Static bundle "dist" was not found'),
        ("static_file", {"keep-releases": "0"}, {}, 'keep-releases="0" must be a whole number'),
    ],
)
def test_config_check_prints_actionable_message(
    kind, deployment_config, app_config, expected, stand_ins: RecordingStandIns, tmp_path
):
    env = stand_ins.env({"SAMI_STATIC_ROOT": str(tmp_path)})
    args = contract_args(
        "api-stage",
        tag="v1",
        manifest_dir=MANIFESTS[kind],
        deployment_config=deployment_config,
        app_config=app_config,
    )
    result = run_script(kind, "config_check", args, env=env)
    assert result.returncode != 0
    assert expected in result.stdout, result.stdout
    assert not result.stdout.startswith("sami[")


RESERVED = [
    "PYTHONPATH",
    "pythonpath",
    "python.path",
    "GIT_SSH_COMMAND",
    "git-ssh-command",
    "GCONV_PATH",
    "LOCPATH",
    "NODE_OPTIONS",
    "node.options",
    "ALL_PROXY",
    "all_proxy",
    "Https-Proxy",
    "PERL5OPT",
    "RUBYOPT",
    "CURL_CA_BUNDLE",
    "SSL_CERT_FILE",
    "ld.preload",
    "Bash_Env",
    "Path",
    "Docker-Host",
    "compose.file",
    "helm-driver",
    "kubeconfig",
    "sami.secret.x",
    "image",
    "Tag",
]


@pytest.mark.parametrize("key", RESERVED)
@pytest.mark.parametrize("kind", ["swarm", "compose", "static_file"])
@pytest.mark.parametrize("level", ["app_config", "deployment_config"])
def test_overrides_that_would_hijack_tools_are_refused(kind, key, level, stand_ins, tmp_path):
    env = stand_ins.env({"SAMI_STATIC_ROOT": str(tmp_path)})
    args = contract_args("web-stage", tag="v1", manifest_dir=MANIFESTS[kind], **{level: {key: "."}})
    result = run_script(kind, "config_check", args, env=env)
    assert result.returncode == 64, result.stdout
    assert f'Override key "{key}" is reserved' in result.stdout
    # and every other operation refuses the call before running a tool
    assert run_script(kind, "create", args, env=env).returncode == 64
    assert stand_ins.calls() == []


@pytest.mark.parametrize("key", ["NODE_ENV", "LOG_LEVEL", "app.name", "greeting"])
def test_ordinary_application_names_are_accepted(key, stand_ins, tmp_path):
    args = contract_args("web-stage", tag="v1", manifest_dir=MANIFESTS["swarm"], app_config={key: "x"})
    result = run_script("swarm", "config_check", args, env=stand_ins.env())
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("key", ["Port", "PORT", "port"])
def test_override_checks_see_keys_as_the_tool_will(key, stand_ins, tmp_path):
    """Port=0 becomes PORT=0 for the tool, so it must be checked like port=0."""
    args = contract_args("web-stage", tag="v1", manifest_dir=MANIFESTS["swarm"], deployment_config={key: "0"})
    result = run_script("swarm", "config_check", args, env=stand_ins.env())
    assert result.returncode == 64
    assert 'Override port="0" is not a port number' in result.stdout
    args = contract_args("web-stage", tag="v1", manifest_dir=MANIFESTS["swarm"], app_config={"Replicas": "two"})
    assert 'replicas="two" is not a whole number' in run_script("swarm", "config_check", args).stdout


def test_override_options_match_normalised_keys(stand_ins, tmp_path):
    """An option spelled differently is still the option (here: a stack file that is missing)."""
    config = {"Stack.File": "x.yml"}
    args = contract_args("web-stage", tag="v1", manifest_dir=MANIFESTS["swarm"], deployment_config=config)
    result = run_script("swarm", "config_check", args, env=stand_ins.env())
    assert 'Stack file "x.yml" was not found' in result.stdout


def test_config_check_reports_every_problem_at_once(tmp_path):
    args = contract_args(
        "web-stage",
        tag="bad tag!",
        manifest_dir=tmp_path / "missing",
        deployment_config={"port": "x"},
    )
    result = run_script("swarm", "config_check", args)
    assert result.returncode == 64
    lines = result.stdout.splitlines()
    assert any('Tag "bad tag!" is invalid' in line for line in lines)
    assert any('port="x"' in line for line in lines)
    assert any("does not exist" in line for line in lines)


def test_config_check_static_root_missing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SAMI_STATIC_ROOT"}
    args = contract_args("docs-stage", tag="v1", manifest_dir=MANIFESTS["static_file"])
    result = run_script("static_file", "config_check", args, env=env)
    assert result.returncode == 64
    assert "SAMI_STATIC_ROOT is not set" in result.stdout


@pytest.mark.parametrize("kind", ["swarm", "cron", "compose", "static_file"])
def test_config_check_passes_for_examples(kind, stand_ins, tmp_path):
    env = stand_ins.env({"SAMI_STATIC_ROOT": str(tmp_path)})
    args = contract_args("web-stage", tag="v1", manifest_dir=MANIFESTS[kind], deployment_config={"port": "18080"})
    result = run_script(kind, "config_check", args, env=env)
    assert result.returncode == 0, result.stdout
    assert result.stdout == ""


@pytest.mark.parametrize("kind", ["swarm", "cron", "compose", "static_file"])
def test_config_check_passes_for_a_pull_request_environment(kind, stand_ins, tmp_path):
    """Pull request environments reach the scripts as --environment pull_request (their folder)."""
    env = stand_ins.env({"SAMI_STATIC_ROOT": str(tmp_path)})
    args = contract_args("web-pr-7", tag="v1", manifest_dir=MANIFESTS[kind], environment="pull_request",
                         deployment_config={"port": "18080"})
    result = run_script(kind, "config_check", args, env=env)
    assert result.returncode == 0, result.stdout
    bad = contract_args("web-pr-7", tag="v1", manifest_dir=MANIFESTS[kind], environment="pull-request_x")
    refused = run_script(kind, "config_check", bad, env=env)
    assert refused.returncode == 64 and "Environment name" in refused.stdout


def test_overrides_reach_the_tool_environment_deployment_wins(stand_ins, tmp_path):
    """Overrides become env vars (K upper-cased, . and - to _), deployment config wins; the
    secret stays in the environment and never reaches argv."""
    recorder = tmp_path / "env-recorder"
    recorder.write_text('#!/bin/sh\nif [ "$1" = stack ]; then env > "$ENV_DUMP"; fi\n')
    recorder.chmod(0o755)
    dump = tmp_path / "env.txt"
    env = stand_ins.env(
        {
            "DOCKER": str(recorder),
            "ENV_DUMP": str(dump),
            "SAMI_IMAGE": "local/web:v2",
            "SAMI_SECRET_DB_PASSWORD": "s3cret",
        }
    )
    args = contract_args(
        "web-stage",
        tag="v2",
        manifest_dir=MANIFESTS["swarm"],
        app_config={"log.level": "debug", "feature-x": "on", "greeting": "app"},
        deployment_config={"greeting": "hello, world $(id) `id`", "port": "18123"},
    )
    result = run_script("swarm", "create", args, env=env)
    assert result.returncode == 0, result.stderr
    values = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert values["LOG_LEVEL"] == "debug"
    assert values["FEATURE_X"] == "on"
    assert values["GREETING"] == "hello, world $(id) `id`"
    assert values["PORT"] == "18123"
    assert values["IMAGE"] == "local/web:v2"
    assert values["TAG"] == "v2"
    assert values["SAMI_SECRET_DB_PASSWORD"] == "s3cret"
    assert "s3cret" not in result.stdout + result.stderr


def test_scripts_do_not_touch_the_manifest_dir(stand_ins, tmp_path):
    manifest = tmp_path / "manifest"
    import shutil

    shutil.copytree(MANIFESTS["swarm"], manifest)
    before = {p: p.read_bytes() for p in manifest.rglob("*") if p.is_file()}
    env = stand_ins.env()
    for op in OPERATIONS:
        run_script("swarm", op, contract_args("web-stage", tag="v1", manifest_dir=manifest), env=env)
    after = {p: p.read_bytes() for p in manifest.rglob("*") if p.is_file()}
    assert before == after
    deploys = [c["argv"] for c in stand_ins.calls("docker") if c["argv"][:2] == ["stack", "deploy"]]
    assert deploys[0] == ["stack", "deploy", "--prune", "--with-registry-auth", "-c", "stack.yml", "web-stage"]


def test_compose_calls_with_recording_stand_in(stand_ins, tmp_path):
    """The compose argv; a real compose client runs in test_compose.py where one exists."""
    env = stand_ins.env()
    args = contract_args("notes-stage", tag="v1", manifest_dir=MANIFESTS["compose"])
    for op in ("create", "update", "archive", "unarchive", "cleanup"):
        assert run_script("compose", op, args, env=env).returncode == 0
    calls = [c["argv"] for c in stand_ins.calls("docker-compose")]
    base = ["-p", "notes-stage", "-f", "compose.yml"]
    assert calls == [
        [*base, "up", "-d", "--remove-orphans"],
        [*base, "up", "-d", "--remove-orphans"],
        ["-p", "notes-stage", "stop"],
        [*base, "up", "-d", "--remove-orphans"],
        ["-p", "notes-stage", "down", "-v", "--remove-orphans"],
    ]


def test_compose_cleanup_and_archive_work_without_manifest(stand_ins, tmp_path):
    """The environment's folder (or its compose file) may be gone when it is removed:
    archive and cleanup name the project only, and cleanup may run twice."""
    env = stand_ins.env()
    for manifest in (tmp_path / "gone", tmp_path):  # a missing folder, a folder without compose file
        args = contract_args("notes-stage", tag="v1", manifest_dir=manifest)
        for op in ("archive", "cleanup", "cleanup"):
            result = run_script("compose", op, args, env=env)
            assert result.returncode == 0, (op, result.stdout, result.stderr)
    calls = [c["argv"] for c in stand_ins.calls("docker-compose")]
    assert calls == 2 * [
        ["-p", "notes-stage", "stop"],
        ["-p", "notes-stage", "down", "-v", "--remove-orphans"],
        ["-p", "notes-stage", "down", "-v", "--remove-orphans"],
    ]


def test_compose_cleanup_falls_back_to_labels_when_the_client_needs_a_file(stand_ins, tmp_path):
    """compose v1 cannot work without a compose file: what the project left is then removed
    by its label with docker."""
    label = "label=com.docker.compose.project=notes-stage"
    stand_ins.respond(
        [
            (["-p", "notes-stage"], "Can't find a suitable configuration file", 1),
            (["ps", "-aq", "--filter", label], "c1\nc2\n", 0),
            (["ps", "-q", "--filter", label], "c1\n", 0),
            (["network", "ls", "-q", "--filter", label], "n1\n", 0),
            (["volume", "ls", "-q", "--filter", label], "v1\nv2\n", 0),
        ]
    )
    args = contract_args("notes-stage", tag="v1", manifest_dir=tmp_path / "gone")
    assert run_script("compose", "cleanup", args, env=stand_ins.env()).returncode == 0
    removals = [c["argv"] for c in stand_ins.calls("docker") if "rm" in c["argv"]]
    assert removals == [["rm", "-f", "-v", "c1", "c2"], ["network", "rm", "n1"], ["volume", "rm", "v1", "v2"]]
    stand_ins.reset()
    assert run_script("compose", "archive", args, env=stand_ins.env()).returncode == 0
    assert ["stop", "c1"] in [c["argv"] for c in stand_ins.calls("docker")]


def test_compose_check_from_container_list(stand_ins):
    args = contract_args("notes-stage", tag="v2", manifest_dir=MANIFESTS["compose"])
    env = stand_ins.env()
    listing = ["ps", "-a", "--filter", "label=com.docker.compose.project=notes-stage"]
    stand_ins.respond([(listing, "local/notes:v2|running|notes-stage_notes_1\n", 0)])
    assert run_script("compose", "check", args, env=env).returncode == 0
    stand_ins.respond([(listing, "local/notes:v1|running|notes-stage_notes_1\n", 0)])
    assert run_script("compose", "check", args, env=env).returncode == 3
    stand_ins.respond([(listing, "local/notes:v2|exited|notes-stage_notes_1\n", 0)])
    assert run_script("compose", "check", args, env=env).returncode == 2
    assert run_script("compose", "archive_check", args, env=env).returncode == 0
    stand_ins.respond([(listing, "", 0)])
    assert run_script("compose", "check", args, env=env).returncode == 1


def test_compose_check_ignores_one_shot_and_one_off_containers(stand_ins):
    args = contract_args("notes-stage", tag="v2", manifest_dir=MANIFESTS["compose"])
    env = stand_ins.env()
    listing = ["ps", "-a", "--filter", "label=com.docker.compose.project=notes-stage"]
    web = "local/notes:v2|running|notes-stage_notes_1|Up 2 minutes|False\n"
    migrate_ok = "local/notes:v2|exited|notes-stage_migrate_1|Exited (0) 2 minutes ago|False\n"
    migrate_failed = "local/notes:v2|exited|notes-stage_migrate_1|Exited (1) 2 minutes ago|False\n"
    one_off = "local/notes:v2|exited|notes-stage_notes_run_1|Exited (137) 1 hour ago|True\n"
    stand_ins.respond([(listing, web + migrate_ok + one_off, 0)])
    result = run_script("compose", "check", args, env=env)
    assert result.returncode == 0, result.stderr
    stand_ins.respond([(listing, web + migrate_failed, 0)])
    assert run_script("compose", "check", args, env=env).returncode == 2
    # stopped by archive: nothing runs, even if every container exited with 0
    stopped = web.replace("running", "exited").replace("Up 2 minutes", "Exited (0) 1 second ago")
    stand_ins.respond([(listing, stopped + migrate_ok, 0)])
    assert run_script("compose", "check", args, env=env).returncode == 2


@pytest.mark.parametrize(
    ("running", "expected"),
    [
        ("docker.io/library/notes:v1", 3),
        ("index.docker.io/library/notes:v1", 3),
        ("library/notes:v1", 3),
        ("docker.io/library/notes:v2", 0),
        ("notes:v2@sha256:" + "a" * 64, 0),
        ("registry.example.test/notes:v1", 0),  # another repository: not compared
    ],
)
def test_tag_check_normalises_docker_hub_references(running, expected, stand_ins):
    args = contract_args("notes-stage", tag="v2", manifest_dir=MANIFESTS["compose"])
    listing = ["ps", "-a", "--filter", "label=com.docker.compose.project=notes-stage"]
    stand_ins.respond([(listing, f"{running}|running|notes-stage_notes_1|Up|False\n", 0)])
    result = run_script("compose", "check", args, env=stand_ins.env({"SAMI_IMAGE": "notes:v2"}))
    assert result.returncode == expected, result.stderr


def test_examples_tree_is_complete():
    expected = [
        "web/swarm/stage/stack.yml",
        "web/swarm/production/stack.yml",
        "web/swarm/pull_request/stack.yml",
        "notes/compose/stage/compose.yml",
        "api/k8s/stage/chart/Chart.yaml",
        "api/k8s/pull_request/chart/Chart.yaml",
        "docs/static_file/stage/site/index.html",
        "docs/static_file/pull_request/site/index.html",
        "nightly-report/cron/stage/stack.yml",
    ]
    missing = [p for p in expected if not (EXAMPLES / p).is_file()]
    assert missing == []


def test_readme_documents_every_operation():
    text = (SCRIPTS / "README.md").read_text()
    for op in OPERATIONS:
        assert f"`{op}`" in text
    assert Path(SCRIPTS / "__init__.py").exists()


ROUTER_OPERATIONS = (*OPERATIONS, "switch")


def test_router_set_refuses_bad_names_and_switch_arguments_before_any_client(stand_ins, tmp_path):
    env = stand_ins.env({"SAMI_IMAGE": "local/router:1"})
    config = {"port": "8080", "backend": "127.0.0.1:18081"}
    for op in ROUTER_OPERATIONS:
        path = SCRIPTS / "router" / op
        assert path.is_file() and os.access(path, os.X_OK), path
        for bad in BAD_NAMES:
            result = run_script("router", op, contract_args(bad, tag="1", manifest_dir=tmp_path,
                                                            deployment_config=config), env=env)
            assert result.returncode == 64, (op, bad, result.stderr)
    for colour, backend in [("red", "127.0.0.1:80"), ("", "127.0.0.1:80"), ("green", "127.0.0.1"),
                            ("green", "127.0.0.1:0"), ("green", "127.0.0.1:70000"), ("green", "web;id:80"),
                            ("green", "-web:80"), ("green", "$(id):80"), ("green", ""), ("Blue", "web:80")]:
        args = [*contract_args("shop-entry", tag="1", manifest_dir=tmp_path, deployment_config=config),
                "--colour", colour, "--backend", backend]
        result = run_script("router", "switch", args, env=env)
        assert result.returncode == 64, (colour, backend, result.stderr)
    assert stand_ins.calls() == [], "no client may be called for refused input"


@pytest.mark.parametrize(
    ("deployment_config", "expected"),
    [
        ({"router-image": "local/router:1"}, 'entry-port="": the entry\'s deployment config needs entry-port=<n>'),
        ({"entry-port": "80000", "router-image": "local/router:1"}, 'entry-port="80000"'),
        ({"entry-port": "8080"}, 'router-image="": the entry\'s deployment config needs router-image=IMAGE:TAG'),
        ({"entry-port": "8080", "router-image": "local/router:1;id"}, 'router-image="local/router:1;id"'),
    ],
)
def test_the_swarm_entry_switch_needs_the_routers_port_and_image(deployment_config, expected, stand_ins, tmp_path):
    """The swarm set's switch (the stable entry of a blue-green environment) says what its config lacks
    before it calls any client."""
    env = stand_ins.env({"SAMI_IMAGE": "local/web:2"})
    args = [*contract_args("web-production", tag="2", manifest_dir=tmp_path, deployment_config=deployment_config),
            "--colour", "green", "--backend", "127.0.0.1:18183"]
    result = run_script("swarm", "switch", args, env=env)
    assert result.returncode == 64
    assert expected in result.stderr, result.stderr
    assert stand_ins.calls() == []


@pytest.mark.parametrize(
    ("deployment_config", "expected"),
    [
        ({"backend": "web:80"}, "port is missing"),
        ({"port": "8080"}, "backend is missing"),
        ({"port": "8080", "backend": "web"}, 'backend="web" is not HOST:PORT'),
        ({"port": "8080", "backend": "web:80", "colour": "red"}, 'colour="red" must be blue or green'),
        ({"port": "8080", "backend": "web:80", "bind": "any"}, 'bind="any" is not an IPv4 address'),
        ({"port": "8080", "backend": "web:80", "probe-path": "health"}, 'probe-path="health" is not a path'),
        ({"port": "8080", "backend": "web:80", "switch-timeout": "0"}, "switch-timeout"),
    ],
)
def test_router_config_check_says_what_is_wrong(deployment_config, expected, stand_ins, tmp_path):
    env = stand_ins.env({"SAMI_IMAGE": "local/router:1"})
    result = run_script("router", "config_check", contract_args("shop-entry", tag="1", manifest_dir=tmp_path,
                                                                deployment_config=deployment_config), env=env)
    assert result.returncode == 64
    assert expected in result.stdout, result.stdout


def test_router_stack_updates_start_first_with_a_health_check_and_a_soft_stop(stand_ins, tmp_path):
    import yaml

    args = contract_args("shop-entry", tag="3", manifest_dir=tmp_path,
                         deployment_config={"port": "8080", "bind": "127.0.0.1", "backend": "shop-blue_web:80"})
    # The stand-in docker records the -c stack file's path; it also keeps a copy (the script removes its own).
    capture = tmp_path / "stack.yml"
    env = stand_ins.env({"SAMI_IMAGE": "registry.example.test/router:1", "TMPDIR": str(tmp_path)})
    docker = Path(env["DOCKER"])
    keep = f"\nimport shutil\nshutil.copy(argv[argv.index('-c') + 1], {str(capture)!r})\n"
    docker.write_text(docker.read_text() + keep)
    result = run_script("router", "create", args, env=env)
    assert result.returncode == 0, result.stderr
    (call,) = stand_ins.calls("docker")
    assert call["argv"][:3] == ["stack", "deploy", "--prune"] and call["argv"][-1] == "shop-entry"
    router = yaml.safe_load(capture.read_text())["services"]["router"]
    assert router["image"] == "registry.example.test/router:3"
    assert router["environment"] == {"ROUTER_PORT": "8080", "ROUTER_BIND": "127.0.0.1", "ROUTER_COLOUR": "blue",
                                     "ROUTER_BACKEND": "shop-blue_web:80"}
    assert router["deploy"]["update_config"]["order"] == "start-first"
    assert router["stop_signal"] == "SIGUSR1" and router["stop_grace_period"] == "30s"
    assert router["healthcheck"]["test"][-1] == "http://127.0.0.1:8080/sami-router/healthz"
    assert not list(tmp_path.glob("sami-router-stack.*")), "the temporary stack file is removed"


@pytest.mark.parametrize(
    ("engine", "seed_file", "client"),
    [
        ("postgres", "seed.sql", ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-p", "5433", "-U", "postgres",
                                  "-d", "orders", "-f", "-"]),
        ("redis", "seed.redis", ["redis-cli", "--no-raw", "-p", "5433"]),
    ],
)
def test_third_party_seed_feeds_its_file_to_member_0s_own_client(stand_ins, tmp_path, engine, seed_file, client):
    """The built-in seed: nothing without the file; with it, the engine's client in member 0's container
    (an argv list, the file on stdin); a failure names the file and the client's error."""
    args = contract_args("shop-qa-7", tag="16", manifest_dir=tmp_path, service="shop",
                         deployment_config={"port": "5433", "database": "orders"})
    env = stand_ins.env({"SAMI_IMAGE": f"local/{engine}:16", "SAMI_SECRET_POSTGRES_PASSWORD": "a-long-password"})
    container = ["ps", "-q", "--filter", "label=com.docker.swarm.service.name=shop-qa-7_m0", "--filter",
                 "status=running"]
    stand_ins.respond([(container, "c0ffee\n", 0)])
    nothing = run_script(engine, "seed", args, env=env)
    assert nothing.returncode == 0 and f"no {seed_file} in the manifest folder" in nothing.stdout
    assert stand_ins.calls("docker") == []

    (tmp_path / seed_file).write_text("-- the data a fresh copy starts with\n")
    seeded = run_script(engine, "seed", args, env=env)
    assert seeded.returncode == 0, seeded.stderr
    assert f"seeded shop-qa-7 from {seed_file}" in seeded.stdout
    assert [c["argv"] for c in stand_ins.calls("docker")] == [container, ["exec", "-i", "c0ffee", *client]]

    error = ("(error) ERR unknown command 'NOPE'\n" if engine == "redis"
             else 'psql:<stdin>:1: ERROR:  relation "nope" does not exist\n')
    stand_ins.respond([(container, "c0ffee\n", 0), (["exec"], error, 0 if engine == "redis" else 3)])
    failed = run_script(engine, "seed", args, env=env)
    assert failed.returncode == 1
    assert f"seeding shop-qa-7 from {seed_file} failed" in failed.stderr
    assert ("ERR unknown command 'NOPE'" if engine == "redis" else 'relation "nope" does not exist') in failed.stderr
    assert "a-long-password" not in failed.stderr + failed.stdout

    stand_ins.respond([(container, "", 0)])
    assert "no running container on this node" in run_script(engine, "seed", args, env=env).stderr


def test_third_party_check_fails_when_a_member_has_no_running_container(stand_ins, tmp_path):
    """Swarm may count a member's task as running while its server has already exited (it is restarted in a
    loop): check then fails, naming the member and what its tasks say. A member running on another node is
    not asked from this one."""
    args = contract_args("shop-qa-7", tag="16", manifest_dir=tmp_path, service="shop")
    env = stand_ins.env({"SAMI_IMAGE": "local/postgres:16", "SAMI_SIZE": "1"})
    tasks = ["service", "ps", "--no-trunc", "--format"]
    swarm = [
        (["service", "ls"], "shop-qa-7_m0\n", 0),
        (["service", "inspect", "--format"], "replicated|1|local/postgres:16|||\n", 0),
        ([*tasks, "{{.DesiredState}}|{{.CurrentState}}|{{.Image}}|{{.Error}}"],
         "Running|Running 1 second ago|local/postgres:16|\n", 0),
        (["ps", "-q"], "", 0),
        (["info", "--format", "{{.Name}}"], "node-1\n", 0),
    ]
    stand_ins.respond([*swarm, ([*tasks, "{{.Node}}|{{.CurrentState}}|{{.Error}}"],
                                "node-1|Running 1 second ago|\nnode-1|Failed 6 seconds ago|task: non-zero exit (1)\n",
                                0)])
    failed = run_script("postgres", "check", args, env=env)
    assert failed.returncode == 1, failed.stderr
    assert ("member 0 of shop-qa-7 has no running container: Running 1 second ago; last error: task: non-zero "
            "exit (1)") in failed.stderr, failed.stderr

    stand_ins.respond([*swarm, ([*tasks, "{{.Node}}|{{.CurrentState}}|{{.Error}}"], "", 0)])
    gone = run_script("redis", "check", args, env=env)
    assert gone.returncode == 1 and "member 0 of shop-qa-7 has no running container: no task" in gone.stderr

    stand_ins.respond([*swarm, ([*tasks, "{{.Node}}|{{.CurrentState}}|{{.Error}}"], "node-2|Running 1 minute ago|\n",
                                0)])
    elsewhere = run_script("postgres", "check", args, env=env)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "member 0: runs on node node-2, not asked from this one" in elsewhere.stderr
