"""What this front tells a Reactor client about the model: the command list of the session
descriptor (`capabilities.commands`) and the OpenAPI document `requestSchema` answers."""

from __future__ import annotations

from typing import Any

from longlive.protocol import Limits

__all__ = ["command_capabilities", "openapi_document"]


def _commands(limits: Limits) -> list[tuple[str, str, dict[str, Any]]]:
    timestamp = {
        "type": "integer",
        "minimum": 0,
        "maximum": max(limits.max_frames - 1, 0),
        "description": "Latent frame index (3 latent frames per block, 4 video frames each after the first).",
    }
    empty: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
    return [
        (
            "schedule_prompt",
            "Use new_prompt from latent frame `timestamp` on (the same timestamp again overwrites). "
            "A prompt at 0 is needed before start.",
            {
                "type": "object",
                "properties": {
                    "new_prompt": {"type": "string", "minLength": 1, "maxLength": limits.max_prompt_chars},
                    "timestamp": timestamp,
                },
                "required": ["new_prompt", "timestamp"],
            },
        ),
        (
            "start",
            "Start generating (needs a prompt at timestamp 0); `seed` optional.",
            {
                "type": "object",
                "properties": {"seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}},
            },
        ),
        ("pause", "Stop after the block being generated.", empty),
        ("resume", "Continue after pause.", empty),
        ("reset", "Stop, clear every prompt and the frame counter, back to idle.", empty),
        (
            "remove_prompt",
            "Remove the prompt stored at `timestamp`, if it has not taken effect.",
            {"type": "object", "properties": {"timestamp": timestamp}, "required": ["timestamp"]},
        ),
        ("get_state", "Reply with the current state.", empty),
    ]


def command_capabilities(limits: Limits) -> list[dict[str, Any]]:
    """`capabilities.commands` of the session descriptor: [{name, description, schema}]."""
    return [{"name": n, "description": d, "schema": s} for n, d, s in _commands(limits)]


_MESSAGES: dict[str, dict[str, Any]] = {
    "progress": {
        "type": "object",
        "properties": {"current_start_frame": {"type": "integer"}, "video_frame": {"type": "integer"}},
    },
    "state": {
        "type": "object",
        "properties": {
            "current_frame": {"type": "integer"},
            "current_prompt": {"type": ["string", "null"]},
            "paused": {"type": "boolean"},
            "running": {"type": "boolean"},
            "scheduled_prompts": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "event": {
        "type": "object",
        "properties": {
            "event": {"type": "string", "enum": ["prompt_switched", "generation_finished", "error"]},
            "frame": {"type": ["integer", "null"]},
            "message": {"type": "string"},
            "new_prompt": {"type": "string"},
            "previous_prompt": {"type": ["string", "null"]},
        },
    },
    "command_error": {
        "type": "object",
        "properties": {
            "command": {"type": ["string", "null"]},
            "reason": {"type": "string"},
            "code": {"type": "string"},
        },
    },
}


def openapi_document(limits: Limits, *, title: str = "longlive", version: str = "1") -> dict[str, Any]:
    """An OpenAPI 3.1 document of the commands: one `POST /commands/<name>` per command with its
    data as the request body, and the model's messages under `components.schemas`."""
    paths: dict[str, Any] = {}
    for name, description, schema in _commands(limits):
        paths[f"/commands/{name}"] = {
            "post": {
                "operationId": name,
                "summary": description,
                "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
                "responses": {
                    "200": {"description": "accepted"},
                    "400": {"description": "refused (an error code)"},
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": {f"message_{k}": v for k, v in _MESSAGES.items()}},
    }
