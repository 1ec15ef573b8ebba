"""The OpenAPI 3.1 description of Sami's HTTP API, served at ``GET /api/v1/openapi.json``.

Written by hand next to the routes and kept honest by tests: one fails when a Flask route under
/api/v1 or /deployment_request is missing here (or this names a route the app does not have),
and schemathesis checks a real server's answers against it. Whoever adds an /api/v1 route adds
its operation to ``PATHS`` in the same change.
"""

from __future__ import annotations

import copy
import functools
import itertools
import re

import jsonschema
from flask import Blueprint, jsonify

from bot import __version__

bp = Blueprint("openapi", __name__)

NAME = {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,62}$"}
ISO_TIME = {"type": ["string", "null"], "format": "date-time"}
TEXT_OR_NULL = {"type": ["string", "null"]}
FORCE = {"type": "boolean", "description": "let an internal third-party service shrink (its update script gets "
                                          "--force); without it a shrink is refused (409) naming both sizes"}
COMPONENT_DATA = {"type": ["string", "null"],
                  "description": "a clone's or a preview's third-party service: empty, seeded or seed failed: <why> "
                                 "(internal, provisioned fresh), shared (external); null otherwise"}
OVERRIDES_IN = {"type": "object", "description": "KEY: value; a value is text or a whole number, null removes "
                "the override", "additionalProperties": {"type": ["string", "integer", "null"]}}
OVERRIDES_OUT = {"type": "object", "additionalProperties": {"type": "string"}}

SCHEMAS: dict[str, dict] = {
    "Error": {
        "type": "object", "required": ["error", "status"],
        "description": "Every error answer: a message a person can act on, the HTTP status, sometimes details.",
        "properties": {"error": {"type": "string"}, "status": {"type": "integer"},
                       "state": {"type": "string", "description": "the deployment's state (409 answers)"},
                       "pinned": {"type": "object", "description": "a 409 because a rollback pinned the "
                                  "deployment: its Pin (for an environment: the pins of its pinned components "
                                  "by deployment name)"},
                       "unpin": {"type": "object", "description": "a 409 because a rollback of a blue-green "
                                 "release pinned the environment: how to unpin it (cli, page, api)"}},
    },
    "Pin": {
        "type": ["object", "null"],
        "description": "A rollback pinned the deployment (null: it is not pinned): CI requests, pushes to the "
                       "deployments repo and whole-environment deploys that would change it are refused (409) "
                       "until it is unpinned (POST .../unpin, sami unpin, the page's Unpin button, /sami unpin) "
                       "or a new release is made",
        "required": ["by", "at", "action_id", "reason", "unpin"],
        "properties": {"by": {"type": "string"}, "at": ISO_TIME, "action_id": {"type": ["integer", "null"]},
                       "reason": TEXT_OR_NULL,
                       "unpin": {"type": "object", "description": "how to unpin: cli, page, api, comment",
                                 "additionalProperties": {"type": "string"}}},
    },
    "Accepted": {
        "type": "object", "required": ["deployment", "action_id", "kind", "state", "status_url"],
        "properties": {
            "deployment": {"type": "string"}, "action_id": {"type": "integer"},
            "kind": {"type": "string", "enum": ["create", "update", "archive", "restore", "cleanup"]},
            "state": {"$ref": "#/components/schemas/DeploymentState"},
            "status_url": {"type": "string", "description": "GET it to follow the action"},
            "rollback_to": {"$ref": "#/components/schemas/RollbackConfig"},
        },
    },
    "RollbackConfig": {
        "type": "object", "required": ["action_id", "tag", "image"],
        "description": "a rollback's target: the succeeded create or update whose configuration it goes back to",
        "properties": {"action_id": {"type": "integer"}, "tag": TEXT_OR_NULL, "image": TEXT_OR_NULL},
    },
    "RollbackTarget": {
        "type": "object", "required": ["deployment", "action_id", "tag", "image"],
        "properties": {"deployment": {"type": "string"}, "action_id": {"type": "integer"}, "tag": TEXT_OR_NULL,
                       "image": TEXT_OR_NULL},
    },
    "DeploymentState": {"type": "string", "enum": ["CreatePending", "UpdatePending", "ArchivePending",
                                                   "CleanupPending", "Running", "Failure", "Archived",
                                                   "CleanupFailed", "Removed"]},
    "ActionState": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "timed_out",
                                               "cancelled", "superseded"]},
    "DeploymentRequest": {
        "type": "object", "required": ["service", "environment"], "additionalProperties": False,
        "description": "Create a deployment of a service in an environment, or update it (tag, image, overrides).",
        "properties": {
            "service": {"type": "string"}, "environment": {"type": "string"},
            "tag": {"type": "string"}, "image": {"type": "string"},
            "ref": {"type": "string"}, "sha": {"type": "string", "pattern": "^[0-9a-f]{7,64}$"},
            "pull_request": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
            "repository": {"type": "string", "description": "owner/name"},
            "overrides": {"type": "object", "additionalProperties": False,
                          "properties": {"app": OVERRIDES_IN, "deployment": OVERRIDES_IN}},
            "unpin": {"type": "boolean", "description": "the deployment is pinned (a rollback pinned it): unpin it "
                      "and deploy this; without it a pinned deployment's request is a 409 naming the pin"},
            "force": FORCE,
        },
    },
    "Deployment": {
        "type": "object",
        "required": ["name", "service", "environment", "type", "state", "failure_reason", "tag", "image",
                     "overrides", "links", "source", "created_at", "updated_at"],
        "properties": {
            "name": {"type": "string"}, "service": {"type": "string"}, "environment": {"type": "string"},
            "type": {"type": "string"}, "state": {"$ref": "#/components/schemas/DeploymentState"},
            "failure_reason": TEXT_OR_NULL, "status_message": TEXT_OR_NULL,
            "tag": TEXT_OR_NULL, "image": TEXT_OR_NULL,
            "overrides": {"type": "object", "required": ["app", "deployment"],
                          "properties": {"app": OVERRIDES_OUT, "deployment": OVERRIDES_OUT}},
            "links": {"type": "array", "items": {"type": "object", "required": ["name", "url"],
                                                 "properties": {"name": {"type": "string"},
                                                                "url": {"type": "string"}}}},
            "source": {"type": "object", "properties": {
                "repository": TEXT_OR_NULL, "pull_request": {"type": ["integer", "null"]},
                "ref": TEXT_OR_NULL, "sha": TEXT_OR_NULL}},
            "created_at": ISO_TIME, "updated_at": ISO_TIME, "status_changed_at": ISO_TIME,
            "checked_at": ISO_TIME, "archived_at": ISO_TIME,
            "last_deploy": {
                "type": ["object", "null"],
                "description": "the last create, update, restore or rollback and how it ended (null: none yet); "
                               "a Running deployment whose last deploy failed still runs what ran before",
                "required": ["action_id", "kind", "state", "tag", "finished_at"],
                "properties": {"action_id": {"type": "integer"}, "kind": {"type": "string"},
                               "state": {"$ref": "#/components/schemas/ActionState"}, "tag": TEXT_OR_NULL,
                               "finished_at": ISO_TIME}},
            "drift": {"$ref": "#/components/schemas/Drift"},
            "pin": {"$ref": "#/components/schemas/Pin"},
        },
    },
    "Drift": {
        "type": "object", "description": "Whether the target runs what Sami deployed, from the report of its check: "
        "unknown (its control script reports nothing, or nothing was deployed), in_sync, or drifted (with what "
        "differs: only images, replicas and the overrides Sami passed are compared). Drift is not a state: a "
        "drifted deployment keeps its state; POST .../reconcile puts the deployed config back.",
        "required": ["status", "differences", "summary", "since"],
        "properties": {
            "status": {"type": "string", "enum": ["unknown", "in_sync", "drifted"]},
            "differences": {"type": "array", "items": {"type": "object", "required": ["component", "field"],
                            "properties": {"component": TEXT_OR_NULL, "field": {"type": "string"},
                                           "deployed": {}, "running": {}, "text": {"type": "string"}}}},
            "summary": {"type": "string"}, "since": ISO_TIME,
        },
    },
    "ConfigView": {
        "type": ["object", "null"], "description": "A config of the deployment and the action it comes from; "
        "secrets by name only",
        "required": ["action_id", "kind", "state", "tag", "image", "overrides", "secrets", "at"],
        "properties": {
            "action_id": {"type": ["integer", "null"]}, "kind": TEXT_OR_NULL, "state": TEXT_OR_NULL,
            "tag": TEXT_OR_NULL, "image": TEXT_OR_NULL,
            "overrides": {"type": "object", "properties": {"app": OVERRIDES_OUT, "deployment": OVERRIDES_OUT}},
            "secrets": {"type": "array", "items": {"type": "string"}}, "at": ISO_TIME,
        },
    },
    "Running": {
        "type": ["object", "null"], "description": "What the target reported running at its last check (null: "
        "its control script reports nothing)",
        "required": ["components", "at"],
        "properties": {
            "components": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"}, "image": TEXT_OR_NULL, "tag": TEXT_OR_NULL,
                "replicas": {"type": ["integer", "null"]}, "running": {"type": ["integer", "null"]}}}},
            "at": ISO_TIME,
        },
    },
    "Action": {
        "type": "object", "required": ["id", "deployment", "kind", "state", "requested_by", "origin", "config",
                                       "steps"],
        "properties": {
            "id": {"type": "integer"}, "deployment": {"type": "string"}, "kind": {"type": "string"},
            "state": {"$ref": "#/components/schemas/ActionState"},
            "requested_by": TEXT_OR_NULL, "origin": TEXT_OR_NULL, "delivery_id": TEXT_OR_NULL,
            "config": {"type": ["object", "null"]}, "exit_code": {"type": ["integer", "null"]},
            "error": TEXT_OR_NULL, "created_at": ISO_TIME, "started_at": ISO_TIME, "finished_at": ISO_TIME,
            "duration_ms": {"type": ["integer", "null"]},
            "cancel_requested_at": ISO_TIME, "cancel_requested_by": TEXT_OR_NULL,
            "log": {"type": ["string", "null"], "description": "admin tokens only; secret values masked"},
            "log_truncated": {"type": ["boolean", "null"]},
            "steps": {"type": "array", "items": {"$ref": "#/components/schemas/ActionStep"}},
        },
    },
    "ActionStep": {
        "type": "object", "description": "One control-script call of the action (config_check, create, check, ...), "
        "in the order they ran. A check run again until it passes is one step of several attempts.",
        "required": ["operation", "started_at", "finished_at", "exit_code", "timed_out", "duration_seconds",
                     "attempts"],
        "properties": {
            "operation": {"type": "string", "description": "the control script's name"},
            "started_at": {"type": "string", "format": "date-time"}, "finished_at": ISO_TIME,
            "exit_code": {"type": ["integer", "null"], "description": "null while it runs, and when it ended "
                          "without one: stopped by its timeout (timed_out), by a cancel, or it could not start"},
            "timed_out": {"type": "boolean"},
            "duration_seconds": {"type": ["number", "null"], "description": "null while it runs"},
            "attempts": {"type": "integer", "minimum": 1, "description": "calls of the script this step stands for"},
        },
    },
    "DeploymentList": {
        "type": "object", "required": ["deployments", "next_cursor"],
        "properties": {"deployments": {"type": "array", "items": {"$ref": "#/components/schemas/Deployment"}},
                       "next_cursor": TEXT_OR_NULL},
    },
    "ActionList": {
        "type": "object", "required": ["actions", "next_cursor"],
        "properties": {"actions": {"type": "array", "items": {"$ref": "#/components/schemas/Action"}},
                       "next_cursor": TEXT_OR_NULL},
    },
    "DeploymentDetail": {
        "type": "object", "required": ["deployment", "requested", "deployed", "running", "actions"],
        "properties": {"deployment": {"$ref": "#/components/schemas/Deployment"},
                       "requested": {"$ref": "#/components/schemas/ConfigView",
                                     "description": "the latest accepted create, update or restore"},
                       "deployed": {"$ref": "#/components/schemas/ConfigView",
                                    "description": "the last one that succeeded: what the deployment runs"},
                       "running": {"$ref": "#/components/schemas/Running"},
                       "actions": {"type": "array", "items": {"$ref": "#/components/schemas/Action"}}},
    },
    "ActionLog": {
        "type": "object", "required": ["action_id", "state", "offset", "log", "finished", "truncated", "steps"],
        "properties": {"action_id": {"type": "integer"}, "state": {"$ref": "#/components/schemas/ActionState"},
                       "offset": {"type": "integer", "description": "pass it as ?offset= to get what comes next"},
                       "log": {"type": "string"}, "finished": {"type": "boolean"},
                       "truncated": {"type": ["boolean", "null"]},
                       "steps": {"type": "array", "items": {"$ref": "#/components/schemas/ActionStep"}}},
    },
    "Services": {
        "type": "object", "required": ["sha", "manifests", "errors"],
        "properties": {
            "sha": TEXT_OR_NULL,
            "manifests": {"type": "array", "items": {"type": "object", "properties": {
                "service": {"type": "string"}, "environment": {"type": "string"}, "type": {"type": "string"},
                "path": {"type": "string"}, "pr_deploy": {"type": "string"}}}},
            "errors": {"type": "array", "items": {"type": "object", "properties": {
                "path": {"type": "string"}, "line": {"type": ["integer", "null"]},
                "column": {"type": ["integer", "null"]}, "field": TEXT_OR_NULL, "message": {"type": "string"}}}},
        },
    },
    "DeliveryList": {
        "type": "object", "required": ["deliveries", "next_cursor"],
        "properties": {"next_cursor": TEXT_OR_NULL, "deliveries": {"type": "array", "items": {
            "type": "object", "required": ["id", "delivery_id", "event", "status"],
            "properties": {"id": {"type": "integer"}, "delivery_id": {"type": "string"}, "event": {"type": "string"},
                           "action": TEXT_OR_NULL, "repository": TEXT_OR_NULL, "sender": TEXT_OR_NULL,
                           "status": {"type": "string"}, "outcome": TEXT_OR_NULL,
                           "attempts": {"type": ["integer", "null"]}, "received_at": ISO_TIME,
                           "processed_at": ISO_TIME}}}},
    },
    "OutboxList": {
        "type": "object", "required": ["outbox"],
        "properties": {"outbox": {"type": "array", "items": {
            "type": "object", "required": ["id", "key", "kind", "repository", "state", "attempts"],
            "properties": {"id": {"type": "integer"}, "key": {"type": "string"}, "kind": {"type": "string", "enum": [
                "comment", "reaction", "reply", "deployment", "deployment_status", "inactive", "commit_status",
                "commit_status_validation"]},
                           "repository": {"type": "string"}, "pull_request": {"type": ["integer", "null"]},
                           "deployment_id": {"type": ["integer", "null"]}, "action_id": {"type": ["integer", "null"]},
                           "state": {"type": "string", "enum": ["pending", "delivering", "delivered", "skipped",
                                                               "failed"]},
                           "attempts": {"type": "integer"}, "due_at": ISO_TIME, "last_error": TEXT_OR_NULL,
                           "result": {"type": ["object", "null"]}, "created_at": ISO_TIME,
                           "delivered_at": ISO_TIME}}}},
    },
    "Deleted": {"type": "object", "required": ["deleted"], "properties": {"deleted": {"type": "string"}}},
    "EnvironmentList": {
        "type": "object", "required": ["environments"],
        "properties": {"environments": {"type": "array", "items": {
            "type": "object", "required": ["name", "template", "components", "problem"],
            "properties": {"name": {"type": "string"}, "template": TEXT_OR_NULL,
                           "components": {"type": "array", "items": {"type": "string"}},
                           "problem": {"type": ["string", "null"], "description": "why it cannot be ordered"}}}}},
    },
    "Environment": {
        "type": "object", "required": ["environment", "template", "target", "waves", "components", "last_run"],
        "description": "An environment now: its components in deploy order (waves) with state, version, endpoint.",
        "properties": {
            "environment": {"type": "string"},
            "template": {"type": "string", "description": "the environment whose manifests it deploys with"},
            "target": TEXT_OR_NULL,
            "waves": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
            "components": {"type": "array", "items": {
                "type": "object", "required": ["service", "deployment", "wave", "depends_on", "kind", "state"],
                "properties": {"service": {"type": "string"}, "deployment": {"type": "string"},
                               "wave": {"type": "integer"},
                               "depends_on": {"type": "array", "items": {"type": "string"}},
                               "kind": {"type": "string", "enum": ["application", "third_party"]},
                               "mode": {"type": ["string", "null"], "enum": ["internal", "external", None]},
                               "state": {"type": ["string", "null"]}, "tag": TEXT_OR_NULL, "image": TEXT_OR_NULL,
                               "endpoint": TEXT_OR_NULL, "url": TEXT_OR_NULL, "status_message": TEXT_OR_NULL,
                               "pin": {"$ref": "#/components/schemas/Pin"},
                               "data": COMPONENT_DATA}}},
            "last_run": {"oneOf": [{"$ref": "#/components/schemas/EnvironmentRun"}, {"type": "null"}]},
        },
    },
    "EnvironmentRun": {
        "type": "object", "required": ["id", "environment", "operation", "state", "components"],
        "description": "A whole-environment operation: one action per component, in dependency order (reverse "
                       "order for archive and cleanup); a failed component stops those after it.",
        "properties": {
            "id": {"type": "integer"}, "environment": {"type": "string"},
            "operation": {"type": "string", "enum": ["deploy", "archive", "restore", "cleanup"]},
            "state": {"type": "string", "enum": ["running", "succeeded", "failed"]},
            "requested_by": {"type": "string"}, "origin": {"type": "string"},
            "snapshot_id": {"type": ["integer", "null"]}, "manifest_sha": TEXT_OR_NULL, "message": TEXT_OR_NULL,
            "created_at": ISO_TIME, "finished_at": ISO_TIME,
            "components": {"type": "array", "items": {
                "type": "object", "required": ["service", "deployment", "wave", "after", "action_id", "status"],
                "properties": {"service": {"type": "string"}, "deployment": {"type": "string"},
                               "wave": {"type": "integer"},
                               "after": {"type": "array", "items": {"type": "string"},
                                         "description": "the components it waits for"},
                               "action_id": {"type": ["integer", "null"]},
                               "status": {"type": "string", "enum": ["waiting", "queued", "succeeded", "failed",
                                                                     "skipped"]},
                               "message": TEXT_OR_NULL, "data": COMPONENT_DATA}}},
        },
    },
    "Cloned": {
        "type": "object", "required": ["environment", "data", "run"],
        "properties": {"environment": {"type": "string"},
                       "data": {"type": "object", "additionalProperties": {"type": "string"},
                                "description": "per component: empty (provisioned fresh, no data copied), seeded "
                                               "(fresh, then its seed runs once it is up), shared (an external "
                                               "endpoint), or application"},
                       "run": {"$ref": "#/components/schemas/EnvironmentRun"}},
    },
    "Release": {
        "type": "object", "required": ["id", "environment", "kind", "state", "from_colour", "to_colour"],
        "description": "a release into the idle colour, or a switch of the entry (release or rollback)",
        "properties": {
            "id": {"type": "integer"}, "environment": {"type": "string"},
            "kind": {"type": "string", "enum": ["release", "rollback"]},
            "state": {"type": "string", "enum": ["deploying", "awaiting", "switching", "live", "replaced", "failed",
                                                 "superseded"]},
            "state_words": {"type": "string"},
            "from_colour": {"type": ["string", "null"], "enum": ["blue", "green", None]},
            "to_colour": {"type": "string", "enum": ["blue", "green"]},
            "snapshot_id": {"type": ["integer", "null"]}, "run_id": {"type": ["integer", "null"]},
            "archive_run_id": {"type": ["integer", "null"]}, "versions": OVERRIDES_OUT,
            "requested_by": {"type": "string"}, "switched_by": TEXT_OR_NULL, "origin": {"type": "string"},
            "message": TEXT_OR_NULL, "created_at": ISO_TIME, "switched_at": ISO_TIME,
            "previous_archived_at": ISO_TIME}},
    "Colour": {
        "type": "object", "required": ["colour", "environment", "entry_deployment"],
        "properties": {"colour": {"type": "string"}, "environment": {"type": "string"},
                       "entry_deployment": {"type": "string"}, "tag": TEXT_OR_NULL, "preview_url": TEXT_OR_NULL,
                       "states": {"type": "array", "items": {"type": "string"}}}},
    "Releases": {
        "type": "object", "required": ["environment", "entry", "live", "idle", "awaiting_release", "releases"],
        "properties": {
            "environment": {"type": "string"}, "entry": {"type": "string"}, "entry_deployment": {"type": "string"},
            "keep_previous": {"type": "integer", "description": "seconds"},
            "release_approvers": {"type": "array", "items": {"type": "string"},
                                  "description": "who may release: GitHub logins, team:ORG/SLUG (the members of "
                                                 "a GitHub team), token:NAME; empty: whoever may deploy"},
            "pinned": {"type": "array", "description": "the colours' deployments a rollback pinned (each with its "
                       "pin and its name as deployment): changes are refused until sami env unpin or a release "
                       "switched live", "items": {"type": "object"}},
            "live": {"anyOf": [{"$ref": "#/components/schemas/Colour"}, {"type": "null"}]},
            "idle": {"$ref": "#/components/schemas/Colour"},
            "previous": {"type": ["object", "null"]},
            "pending": {"anyOf": [{"$ref": "#/components/schemas/Release"}, {"type": "null"}]},
            "awaiting_release": {"type": "boolean"},
            "history": {"type": "array", "items": {"$ref": "#/components/schemas/Release"}},
            "releases": {"type": "array", "items": {"$ref": "#/components/schemas/Release"}}}},
    "Snapshot": {
        "type": "object", "required": ["name", "environment", "manifest_sha", "components"],
        "properties": {
            "name": {"type": "string"}, "environment": {"type": "string"}, "manifest_sha": TEXT_OR_NULL,
            "created_by": TEXT_OR_NULL, "created_at": ISO_TIME,
            "components": {"type": "array", "description": "in deploy order; secrets by name only", "items": {
                "type": "object", "required": ["service", "deployment", "tag", "image"],
                "properties": {"service": {"type": "string"}, "deployment": {"type": "string"},
                               "kind": {"type": "string"}, "mode": TEXT_OR_NULL, "wave": {"type": "integer"},
                               "depends_on": {"type": "array", "items": {"type": "string"}},
                               "tag": TEXT_OR_NULL, "image": TEXT_OR_NULL,
                               "app_overrides": OVERRIDES_OUT, "deployment_overrides": OVERRIDES_OUT,
                               "secrets": {"type": "array", "items": {"type": "string"}}}}},
        },
    },
    "SnapshotList": {
        "type": "object", "required": ["snapshots"],
        "properties": {"snapshots": {"type": "array", "items": {"$ref": "#/components/schemas/Snapshot"}}},
    },
    "EnvironmentDiff": {
        "type": "object", "required": ["left", "right", "only_left", "only_right", "changed", "same"],
        "properties": {
            "left": {"type": "string"}, "right": {"type": "string"},
            "only_left": {"type": "array", "items": {"type": "string"}},
            "only_right": {"type": "array", "items": {"type": "string"}},
            "same": {"type": "array", "items": {"type": "string"}},
            "changed": {"type": "array", "items": {
                "type": "object", "required": ["service", "changes"],
                "properties": {"service": {"type": "string"}, "changes": {
                    "type": "object", "description": "field: {left, right} for tag, image, app_overrides, "
                                                     "deployment_overrides, secrets (names only)"}}}},
        },
    },
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema_name: str, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema_name)}}}


def _errors(*statuses: int) -> dict:
    """Error answers an operation can give (every authenticated one can answer 401, and 400 for a query
    parameter it does not know)."""
    statuses = tuple(sorted({400, 414, *statuses}))
    descriptions = {400: "the request is invalid (the message says what to change)",
                    401: "no valid token (send Authorization: Bearer <token>)",
                    403: "the token's scopes do not allow this (the message names the missing scope); it may "
                         "read the deployment or action, or the request names none",
                    404: "no such deployment or action, or one the token may neither read nor do this to: both "
                         "are answered alike, so an answer never confirms what lies outside a token's scope",
                    409: "the deployment's state does not allow this now, the action already ended, or the name is "
                         "taken (by a deployment the token may not read: only 'is not available')",
                    413: "the body is too large", 414: "the request line (path and query) is too long",
                    503: "the deployments repo cannot be read right now"}
    return {str(status): _json("Error", descriptions[status]) for status in (401, *statuses)}


NAME_PARAM = {"name": "name", "in": "path", "required": True, "schema": NAME,
              "description": "the deployment's name, e.g. web-stage or web-pr-12", "example": "web-stage"}
ACTION_PARAM = {"name": "action_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0},
                "example": 1}
LIMIT_PARAM = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200},
               "description": "page size (default 50)"}
CURSOR_PARAM = {"name": "cursor", "in": "query", "schema": {"type": "string", "minLength": 1},
                "description": "the next_cursor of the previous page"}
ENVIRONMENT_PARAM = {"name": "name", "in": "path", "required": True,
                     "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,62}$"},
                     "description": "the environment, e.g. stage or qa-7", "example": "stage"}
SNAPSHOT_PARAM = {"name": "snapshot_name", "in": "path", "required": True,
                  "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,99}$"}, "example": "stage-1"}
DEPLOYMENT_REQUEST = {"required": True, "content": {"application/json": {"schema": _ref("DeploymentRequest")}}}


def _deployment_request_op(operation_id: str) -> dict:
    return {
        "operationId": operation_id, "tags": ["deployments"],
        "summary": "Create or update a deployment (needs the deploy scope on its service and environment)",
        "requestBody": DEPLOYMENT_REQUEST,
        "responses": {"202": _json("Accepted", "accepted: the action is recorded and queued"),
                      **_errors(400, 403, 409, 413, 503)},
    }


def _environment_operation(kind: str, summary: str) -> dict:
    body = {"type": "object", "additionalProperties": False, "properties": {}}
    if kind == "deploy":
        body["properties"] = {
            "versions": {"type": "object", "additionalProperties": {"type": "string"},
                         "description": "SERVICE: tag (or image) for components; the others keep theirs"},
            "snapshot": {"type": "string", "description": "deploy exactly this snapshot"},
            "force": FORCE}
    if kind == "cleanup":
        body["properties"] = {"delete_data": {"type": "boolean", "description": "remove internal third-party "
                                              "services' data volumes too (kept by default, and the run says so)"}}
    return {
        "operationId": f"{kind}Environment", "tags": ["environments"], "summary": summary,
        "parameters": [ENVIRONMENT_PARAM],
        "requestBody": {"required": False, "content": {"application/json": {"schema": body}}},
        "responses": {"202": _json("EnvironmentRun", "accepted: the run is recorded, its first components queued"),
                      **_errors(400, 403, 404, 409, 413, 503)},
    }


def _operation(kind: str, summary: str) -> dict:
    return {
        "operationId": f"{kind}Deployment", "tags": ["deployments"], "summary": summary,
        "parameters": [NAME_PARAM],
        "responses": {"202": _json("Accepted", "accepted: the action is recorded and queued"),
                      **_errors(400, 403, 404, 409, 503)},
    }


PATHS: dict[str, dict] = {
    "/deployment_request": {"post": _deployment_request_op("requestDeployment")},
    "/api/v1/openapi.json": {"get": {
        "operationId": "openapi", "tags": ["meta"], "summary": "This document", "security": [],
        "responses": {"200": {"description": "the OpenAPI 3.1 document",
                              "content": {"application/json": {"schema": {"type": "object"}}}}},
    }},
    "/api/v1/deployments": {
        "get": {
            "operationId": "listDeployments", "tags": ["deployments"],
            "summary": "Deployments the token may read (read scope)",
            "parameters": [
                {"name": "state", "in": "query", "schema": {"type": "array", "items": _ref("DeploymentState")},
                 "style": "form", "explode": True, "description": "repeatable; without it, Removed ones are left out"},
                {"name": "service", "in": "query", "style": "form", "explode": True, "description": "repeatable",
                 "schema": {"type": "array", "items": {"type": "string", "minLength": 1}}},
                {"name": "environment", "in": "query", "style": "form", "explode": True, "description": "repeatable",
                 "schema": {"type": "array", "items": {"type": "string", "minLength": 1}}},
                {"name": "pull_request", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                     "maximum": 2**31 - 1}},
                {"name": "repository", "in": "query", "schema": {"type": "string", "minLength": 1},
                 "description": "the source repository, owner/name"},
                {"name": "q", "in": "query", "schema": {"type": "string", "minLength": 1},
                 "description": "text in the name or tag"},
                {"name": "sort", "in": "query",
                 "schema": {"type": "string", "enum": ["name", "-updated", "state", "attention"]}},
                LIMIT_PARAM, CURSOR_PARAM,
                {"name": "all", "in": "query", "schema": {"type": "string", "enum": ["1", "true"]},
                 "description": "include Removed deployments"},
            ],
            "responses": {"200": _json("DeploymentList", "the deployments"), **_errors(400, 403)},
        },
        "post": _deployment_request_op("createOrUpdateDeployment"),
    },
    "/api/v1/deployments/{name}": {
        "get": {
            "operationId": "showDeployment", "tags": ["deployments"],
            "summary": "One deployment and its latest actions (read scope)", "parameters": [NAME_PARAM],
            "responses": {"200": _json("DeploymentDetail", "the deployment"), **_errors(400, 403, 404)},
        },
        "delete": {
            "operationId": "deleteDeployment", "tags": ["deployments"],
            "summary": "Forget a deployment whose cleanup failed (admin)", "parameters": [NAME_PARAM],
            "responses": {"200": _json("Deleted", "deleted"), **_errors(400, 403, 404, 409)},
        },
    },
    "/api/v1/deployments/{name}/archive": {"post": _operation(
        "archive", "Archive a live deployment: scale it to zero, keep its data (archive scope)")},
    "/api/v1/deployments/{name}/restore": {"post": _operation(
        "restore", "Restore an archived deployment with its last tag and overrides (restore scope)")},
    "/api/v1/deployments/{name}/cleanup": {"post": _operation(
        "cleanup", "Remove an archived deployment and what it owns (cleanup scope)")},
    "/api/v1/deployments/{name}/rollback": {"get": {
        "operationId": "rollbackTarget", "tags": ["deployments"],
        "summary": "Where a rollback would go now: the action whose tag/image and overrides it would restore "
                   "(action_id's, or the previous good config); changes nothing (read scope)",
        "parameters": [NAME_PARAM, {"name": "action_id", "in": "query", "required": False,
                                    "schema": {"type": "integer", "minimum": 1}}],
        "responses": {"200": _json("RollbackTarget", "the configuration a rollback would go back to"),
                      **_errors(400, 403, 404, 409)},
    }, "post": {
        "operationId": "rollbackDeployment", "tags": ["deployments"],
        "summary": "Update a deployment back to the tag/image and overrides of an earlier succeeded create or "
                   "update: action_id's, or by default the previous good config (deploy scope)",
        "parameters": [NAME_PARAM],
        "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False,
            "properties": {"action_id": {"type": "integer", "minimum": 1,
                                         "description": "the succeeded create or update to go back to"}}}}}},
        "responses": {"202": _json("Accepted", "accepted: an update action with that config is queued"),
                      **_errors(403, 404, 409, 413, 503)},
    }},
    "/api/v1/deployments/{name}/reconcile": {"post": {
        "operationId": "reconcileDeployment", "tags": ["deployments"],
        "summary": "Put back what Sami deployed: an update to the config of the last succeeded create, update or "
                   "restore, e.g. after an image was changed by hand on the target (drift); deploy scope",
        "parameters": [NAME_PARAM],
        "responses": {"202": _json("Accepted", "accepted: an update action with the deployed config is queued"),
                      **_errors(400, 403, 404, 409, 503)},
    }},
    "/api/v1/deployments/{name}/unpin": {"post": {
        "operationId": "unpinDeployment", "tags": ["deployments"],
        "summary": "Clear the pin a rollback put on a deployment: CI requests and pushes to the deployments repo "
                   "change it again (deploy scope); 409 when it is not pinned",
        "parameters": [NAME_PARAM],
        "responses": {"200": _json("Deployment", "unpinned: the deployment, its pin null"),
                      **_errors(403, 404, 409, 503)},
    }},
    "/api/v1/deployments/{name}/clone": {"post": {
        "operationId": "cloneDeployment", "tags": ["deployments"],
        "summary": "Create a deployment with this one's service, tag/image and overrides in another environment "
                   "(named <service>-<environment>) and/or under another name (deploy scope there, read here)",
        "parameters": [NAME_PARAM],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False, "minProperties": 1,
            "properties": {"environment": {"type": "string"}, "name": NAME}}}}},
        "responses": {"202": _json("Accepted", "accepted: the clone's create action is queued"),
                      **_errors(403, 404, 409, 413, 503)},
    }},
    "/api/v1/deployments/{name}/actions": {"get": {
        "operationId": "listDeploymentActions", "tags": ["actions"],
        "summary": "A deployment's actions, newest first (read scope)",
        "parameters": [NAME_PARAM, LIMIT_PARAM,
                       {"name": "cursor", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                        "description": "the next_cursor of the previous page"}],
        "responses": {"200": _json("ActionList", "one page of actions"), **_errors(403, 404)},
    }},
    "/api/v1/actions/{action_id}/cancel": {"post": {
        "operationId": "cancelAction", "tags": ["actions"],
        "summary": "Cancel a queued action (it never runs), or stop a running one: its script's process group "
                   "gets TERM, then KILL, and it ends cancelled, its deployment in Failure (reason cancelled). "
                   "Needs the scope of the action's kind (deploy for create and update)",
        "parameters": [ACTION_PARAM],
        "responses": {"200": _json("Action", "the action: cancelled, or still running with cancel_requested_at"),
                      **_errors(403, 404, 409)},
    }},
    "/api/v1/actions/{action_id}": {"get": {
        "operationId": "showAction", "tags": ["actions"],
        "summary": "One action's state (read scope); its log for admin tokens", "parameters": [ACTION_PARAM],
        "responses": {"200": _json("Action", "the action"), **_errors(400, 403, 404)},
    }},
    "/api/v1/actions/{action_id}/log": {"get": {
        "operationId": "actionLog", "tags": ["actions"],
        "summary": "An action's captured output, secrets masked (admin); ?offset= follows a running one",
        "parameters": [ACTION_PARAM, {"name": "offset", "in": "query",
                                      "schema": {"type": "integer", "minimum": 0}}],
        "responses": {"200": _json("ActionLog", "the log from offset on"), **_errors(400, 403, 404)},
    }},
    "/api/v1/deliveries": {"get": {
        "operationId": "listDeliveries", "tags": ["deliveries"],
        "summary": "Recent GitHub deliveries and what each caused, newest first (read on every service, or admin)",
        "parameters": [{"name": "event", "in": "query", "schema": {"type": "string", "pattern": "^[a-z_]{1,64}$"}},
                       {"name": "status", "in": "query", "schema": {"type": "string", "enum": [
                           "received", "processing", "processed", "ignored", "failed", "retrying"]}},
                       LIMIT_PARAM, CURSOR_PARAM],
        "responses": {"200": _json("DeliveryList", "the deliveries"), **_errors(403)},
    }},
    "/api/v1/outbox": {"get": {
        "operationId": "listOutbox", "tags": ["github"],
        "summary": "GitHub side effects (comments, reactions, Deployments, statuses) and their delivery, newest "
                   "first (admin)",
        "parameters": [{"name": "state", "in": "query", "schema": {"type": "string", "enum": [
                           "pending", "delivering", "delivered", "skipped", "failed"]}},
                       {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}}],
        "responses": {"200": _json("OutboxList", "the outbox rows"), **_errors(400, 403)},
    }},
    "/api/v1/environments": {"get": {
        "operationId": "listEnvironments", "tags": ["environments"],
        "summary": "The environments of the deployments repo and those Sami cloned (read scope)",
        "responses": {"200": _json("EnvironmentList", "the environments"), **_errors(403, 503)},
    }},
    "/api/v1/environments/{name}": {"get": {
        "operationId": "showEnvironment", "tags": ["environments"],
        "summary": "An environment's components in deploy order with state, version and endpoint, and its last "
                   "run (read scope on each component)",
        "parameters": [ENVIRONMENT_PARAM],
        "responses": {"200": _json("Environment", "the environment"), **_errors(403, 404, 503)},
    }},
    "/api/v1/environments/{name}/deploy": {"post": _environment_operation(
        "deploy", "Deploy every component in dependency order, independent ones in parallel (deploy scope)")},
    "/api/v1/environments/{name}/archive": {"post": _environment_operation(
        "archive", "Archive every component in reverse dependency order, keeping data (archive scope)")},
    "/api/v1/environments/{name}/restore": {"post": _environment_operation(
        "restore", "Restore every archived component in dependency order, what it uses first (restore scope)")},
    "/api/v1/environments/{name}/cleanup": {"post": _environment_operation(
        "cleanup", "Clean up every archived component in reverse dependency order (cleanup scope)")},
    "/api/v1/environments/{name}/unpin": {"post": {
        "operationId": "unpinEnvironment", "tags": ["environments"],
        "summary": "Unpin every pinned component of the environment (a snapshot deploy pinned them): CI requests, "
                   "pushes and environment deploys change them again (deploy scope on every component); 409 when "
                   "none is pinned",
        "parameters": [ENVIRONMENT_PARAM],
        "responses": {"200": {"description": "the deployments unpinned", "content": {"application/json": {
            "schema": {"type": "object", "required": ["environment", "unpinned"],
                       "properties": {"environment": {"type": "string"},
                                      "unpinned": {"type": "array", "items": {"type": "string"}}}}}}},
                      **_errors(403, 404, 409, 503)},
    }},
    "/api/v1/environments/{name}/clone": {"post": {
        "operationId": "cloneEnvironment", "tags": ["environments"],
        "summary": "Deploy every component again as environment 'name': same versions and overrides, new "
                   "deployment names; internal third-party services fresh (no data copied), external ones shared "
                   "(read here, deploy scope there)",
        "parameters": [ENVIRONMENT_PARAM],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False, "required": ["name"],
            "properties": {"name": {"type": "string"}}}}}},
        "responses": {"202": _json("Cloned", "accepted: the clone's run is recorded"),
                      **_errors(400, 403, 404, 409, 413, 503)},
    }},
    "/api/v1/environments/{name}/runs/{run_id}": {"get": {
        "operationId": "showEnvironmentRun", "tags": ["environments"], "summary": "One run, component by component",
        "parameters": [ENVIRONMENT_PARAM, {"name": "run_id", "in": "path", "required": True,
                                           "schema": {"type": "integer", "minimum": 0}}],
        "responses": {"200": _json("EnvironmentRun", "the run"), **_errors(403, 404, 503)},
    }},
    "/api/v1/environments/{name}/diff": {"get": {
        "operationId": "diffEnvironment", "tags": ["environments"],
        "summary": "Versions and overrides that differ from another environment or a snapshot (read scope)",
        "parameters": [ENVIRONMENT_PARAM, {"name": "with", "in": "query", "required": True,
                                           "schema": {"type": "string", "minLength": 1},
                                           "description": "another environment, or snapshot:NAME"}],
        "responses": {"200": _json("EnvironmentDiff", "the differences"), **_errors(403, 404, 503)},
    }},
    "/api/v1/environments/{name}/releases": {"get": {
        "operationId": "listReleases", "tags": ["environments"],
        "summary": "Blue-green: live and idle colour, what awaits release, who may release, and every release and "
                   "rollback, newest first (read scope)",
        "parameters": [ENVIRONMENT_PARAM],
        "responses": {"200": _json("Releases", "the releases"), **_errors(400, 403, 404, 503)},
    }},
    "/api/v1/environments/{name}/releases/{release_id}": {"get": {
        "operationId": "showRelease", "tags": ["environments"], "summary": "One release or rollback (read scope)",
        "parameters": [ENVIRONMENT_PARAM, {"name": "release_id", "in": "path", "required": True,
                                           "schema": {"type": "integer", "minimum": 0}}],
        "responses": {"200": _json("Release", "the release"), **_errors(403, 404, 503)},
    }},
    "/api/v1/environments/{name}/release": {"post": {
        "operationId": "prepareRelease", "tags": ["environments"],
        "summary": "Deploy a release into the idle colour for QA: a snapshot, or versions (the others keep what "
                   "the live colour runs) (deploy scope)",
        "parameters": [ENVIRONMENT_PARAM],
        "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False,
            "properties": {"versions": {"type": "object", "additionalProperties": {"type": "string"}},
                           "snapshot": {"type": "string"}}}}}},
        "responses": {"202": _json("Release", "accepted: the idle colour is being deployed"),
                      **_errors(400, 403, 404, 409, 413, 503)},
    }},
    "/api/v1/environments/{name}/release/switch": {"post": {
        "operationId": "switchRelease", "tags": ["environments"],
        "summary": "Switch the entry to the colour awaiting release (deploy scope; release_approvers only)",
        "parameters": [ENVIRONMENT_PARAM],
        "responses": {"202": _json("Release", "accepted: the entry's switch is queued"),
                      **_errors(400, 403, 404, 409, 503)},
    }},
    "/api/v1/environments/{name}/rollback": {"post": {
        "operationId": "rollbackRelease", "tags": ["environments"],
        "summary": "Switch the entry back to the previous colour, still running (deploy scope; release_approvers "
                   "only)",
        "parameters": [ENVIRONMENT_PARAM],
        "responses": {"202": _json("Release", "accepted: the entry's switch back is queued"),
                      **_errors(400, 403, 404, 409, 503)},
    }},
    "/api/v1/environments/{name}/snapshots": {
        "get": {
            "operationId": "listSnapshots", "tags": ["environments"], "summary": "The environment's snapshots",
            "parameters": [ENVIRONMENT_PARAM],
            "responses": {"200": _json("SnapshotList", "newest first"), **_errors(403, 404, 503)},
        },
        "post": {
            "operationId": "createSnapshot", "tags": ["environments"],
            "summary": "Snapshot every component's version, overrides (secret names only), deploy order and the "
                       "deployments-repo commit (deploy scope)",
            "parameters": [ENVIRONMENT_PARAM],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False,
                "properties": {"name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,99}$"}}}}}},
            "responses": {"201": _json("Snapshot", "the snapshot"), **_errors(400, 403, 404, 409, 413, 503)},
        },
    },
    "/api/v1/snapshots/{snapshot_name}": {"get": {
        "operationId": "showSnapshot", "tags": ["environments"], "summary": "One snapshot (read scope)",
        "parameters": [SNAPSHOT_PARAM],
        "responses": {"200": _json("Snapshot", "the snapshot"), **_errors(403, 404)},
    }},
    "/api/v1/snapshots/{snapshot_name}/export": {"get": {
        "operationId": "exportSnapshot", "tags": ["environments"], "summary": "One snapshot as YAML (read scope)",
        "parameters": [SNAPSHOT_PARAM],
        "responses": {"200": {"description": "the snapshot as a YAML document",
                              "content": {"application/yaml": {"schema": {"type": "string"}}}},
                      **_errors(403, 404)},
    }},
    "/api/v1/services": {"get": {
        "operationId": "listServices", "tags": ["services"],
        "summary": "Services and environments the deployments repo defines, and its manifest errors (read scope)",
        "responses": {"200": _json("Services", "the manifests and their errors"), **_errors(400, 403, 503)},
    }},
}


def _optional_may_be_null(document: dict) -> dict:
    """Every optional property of a request body may be null, which the API reads as absent (bodies.body_field):
    the document says so, so that a client that sends ``"force": null`` finds it described."""
    schemas = document["components"]["schemas"]
    for operations in document["paths"].values():
        for operation in operations.values():
            content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            schema = content.get("schema", {})
            if "$ref" in schema:
                schema = schemas[schema["$ref"].rsplit("/", 1)[-1]]
            required = set(schema.get("required", ()))
            for name, prop in schema.get("properties", {}).items():
                kinds = prop.get("type")
                if name in required or kinds is None:
                    continue
                kinds = [kinds] if isinstance(kinds, str) else list(kinds)
                if "null" not in kinds:
                    prop["type"] = [*kinds, "null"]
    return document


@functools.cache
def _document(version: str) -> dict:
    return _optional_may_be_null(copy.deepcopy({
        "openapi": "3.1.0",
        "info": {"title": "Sami", "version": version,
                 "description": "Sami's HTTP API for CI, the CLI and the status page. Send a token as "
                                "'Authorization: Bearer <token>' (create one with `sami token create`). "
                                "Errors are JSON: {\"error\": message, \"status\": code}."},
        "servers": [{"url": "/"}],
        "security": [{"bearerToken": []}],
        "components": {
            "securitySchemes": {"bearerToken": {"type": "http", "scheme": "bearer",
                                                "description": "a Sami API token (sami_<id>_<secret>)"}},
            "schemas": SCHEMAS,
        },
        "paths": PATHS,
    }))


def spec() -> dict:
    """The whole document, a copy of one built once."""
    return copy.deepcopy(_document(__version__))


# <converter(args):name> or <name> in a Flask rule
_ARGUMENT_RE = re.compile(r"<(?:(?P<converter>\w+)(?:\((?P<args>[^)]*)\))?:)?(?P<name>\w+)>")


def path_of(rule: str, view_args: dict | None = None) -> str:
    """The document's path for a Flask rule: ``<int:id>`` is ``{id}``; an ``any(...)`` argument is the
    literal it matched (the document describes each choice as a path of its own)."""

    def replace(match: re.Match) -> str:
        if match["converter"] == "any" and view_args is not None:
            return str(view_args[match["name"]])
        return "{" + match["name"] + "}"

    return _ARGUMENT_RE.sub(replace, rule)


def rule_paths(rule: str) -> list[str]:
    """Every document path a Flask rule stands for (one per choice of an ``any(...)`` argument)."""
    pieces: list[list[str]] = []
    position = 0
    for match in _ARGUMENT_RE.finditer(rule):
        pieces.append([rule[position:match.start()]])
        if match["converter"] == "any":
            pieces.append([choice.strip().strip("'\"") for choice in match["args"].split(",")])
        else:
            pieces.append(["{" + match["name"] + "}"])
        position = match.end()
    pieces.append([rule[position:]])
    return ["".join(parts) for parts in itertools.product(*pieces)]


@functools.cache
def _query_parameters() -> dict[tuple[str, str], dict[str, dict]]:
    return {(method.upper(), path): {p["name"]: p["schema"] for p in operation.get("parameters", [])
                                     if p["in"] == "query"}
            for path, item in PATHS.items() for method, operation in item.items()}


def query_parameters(method: str, path: str) -> dict[str, dict] | None:
    """The query parameters the document declares for an operation and their schemas (None: the
    operation is not described)."""
    return _query_parameters().get((method.upper(), path))


def query_problem(name: str, schema: dict, values: list[str]) -> str | None:
    """What is wrong with a query parameter's values by its schema (None: nothing). A parameter is
    given once unless its schema is an array; whole numbers are read from their text."""
    if schema.get("type") == "array":
        item_schema = schema["items"]
    elif len(values) > 1:
        return f"query parameter {name!r} is given {len(values)} times; give it once"
    else:
        item_schema = schema
    for text in values:
        value: object = text
        if item_schema.get("type") == "integer":
            if not re.fullmatch(r"-?[0-9]{1,18}", text):
                return f"query parameter {name!r} must be a whole number, not {text[:40]!r}"
            value = int(text)
        error = jsonschema.exceptions.best_match(_validator(item_schema).iter_errors(value))
        if error is not None:
            if error.validator == "enum" or "$ref" in item_schema:
                choices = item_schema.get("enum") or _resolve(item_schema).get("enum", [])
                return f"query parameter {name!r} cannot be {text[:40]!r} (choose from: {', '.join(choices)})"
            return f"query parameter {name!r}: {error.message}"
    return None


def _resolve(schema: dict) -> dict:
    if "$ref" in schema:
        return SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _validator(schema: dict) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_resolve(schema))


@bp.get("/api/v1/openapi.json")
def openapi_json():
    """The document; no token needed (it describes the API, not its data)."""
    return jsonify(spec())
