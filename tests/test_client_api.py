"""The client API decisions of docs/client-guide.md, section 8, and the typed command results of
`longlive.protocol` they rest on (no runner, no torch: a scripted transport as in test_client.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

import longlive
from longlive import (
    PauseResult,
    ProtocolError,
    RemovePromptResult,
    ResetResult,
    ResumeResult,
    ScheduledPrompt,
    StartResult,
)
from longlive.protocol import (
    COMMAND_RESULTS,
    Ack,
    CommandResult,
    PromptWarning,
    encode_envelope,
    encode_message,
    parse_message,
)

# ----------------------------------------------------------------------------------------------
# Typed command results: one definition for both sides, the wire unchanged
# ----------------------------------------------------------------------------------------------
#: Each command's ack data exactly as docs/protocol.md (section 6.1) writes it, in its order.
WIRE: list[tuple[CommandResult, dict[str, Any]]] = [
    (
        ScheduledPrompt(12, 10, 12, 45, "a red circle", (PromptWarning("rekeyed", "moved to 12"),)),
        {
            "timestamp": 12,
            "requested_timestamp": 10,
            "effective_frame": 12,
            "effective_video_frame": 45,
            "replaced_prompt": "a red circle",
            "warnings": [{"code": "rekeyed", "message": "moved to 12"}],
        },
    ),
    (RemovePromptResult(9, "a blue square"), {"timestamp": 9, "removed_prompt": "a blue square"}),
    (StartResult(generation=2, seed=7), {"generation": 2, "seed": 7}),
    (PauseResult(effective_frame=12), {"effective_frame": 12}),
    (ResumeResult(current_start_frame=12), {"current_start_frame": 12}),
    (ResetResult(generation=3), {"generation": 3}),
]


@pytest.mark.parametrize(("result", "data"), WIRE, ids=lambda v: getattr(v, "command", ""))
def test_a_result_encodes_to_the_documented_ack_and_back(result: CommandResult, data: dict[str, Any]) -> None:
    text = encode_message(result.to_ack("c7"))
    # byte for byte the ack the runner sent before the types existed: {"command", **fields}
    assert text == encode_envelope("ack", {"command": result.command, **data}, "c7")
    ack = parse_message(text)
    assert isinstance(ack, Ack) and ack.id == "c7"
    assert type(result).from_ack(ack) == result


def test_every_command_but_get_state_has_a_result_type() -> None:
    assert sorted(COMMAND_RESULTS) == [
        "pause",
        "remove_prompt",
        "reset",
        "resume",
        "schedule_prompt",
        "start",
    ]
    assert {type(r) for r, _ in WIRE} == set(COMMAND_RESULTS.values())
    assert all(name in longlive.__all__ for name in (c.__name__ for c in COMMAND_RESULTS.values()))


def test_a_malformed_ack_is_a_protocol_error_with_its_id() -> None:
    with pytest.raises(ProtocolError) as missing:
        StartResult.from_ack(Ack("start", {"seed": 0}, "c3"))
    assert (missing.value.code, missing.value.id) == ("missing_field", "c3")
    assert "generation" in str(missing.value)
    with pytest.raises(ProtocolError) as wrong:
        PauseResult.from_data({"effective_frame": "twelve"})
    assert wrong.value.code == "bad_field"
    with pytest.raises(ProtocolError, match="does not carry"):
        ResetResult.from_ack(Ack("start", {"generation": 1, "seed": 0}))
    with pytest.raises(ProtocolError) as warnings:
        ScheduledPrompt.from_data({**WIRE[0][1], "warnings": ["rekeyed"]})
    assert warnings.value.code == "bad_field"


def test_fields_of_a_newer_runner_are_ignored_and_kept_raw() -> None:
    assert StartResult.from_data({"generation": 1, "seed": 5, "device": "cuda:1"}) == StartResult(1, 5)
    scheduled = ScheduledPrompt.from_data({**WIRE[0][1], "command": "schedule_prompt", "eta_s": 0.5})
    assert scheduled == WIRE[0][0] and scheduled.rekeyed
    assert scheduled.raw["eta_s"] == 0.5 and "command" not in scheduled.raw
    # optional fields may be absent: the prompt replaced nothing, no warning
    bare = {k: v for k, v in WIRE[0][1].items() if k not in ("replaced_prompt", "warnings")}
    assert ScheduledPrompt.from_data(bare) == ScheduledPrompt(12, 10, 12, 45)


def test_results_are_frozen_and_the_old_names_still_import() -> None:
    result = StartResult(generation=0, seed=1)
    with pytest.raises(AttributeError):
        result.seed = 2  # type: ignore[misc]
    from longlive._types import PromptWarning as OldWarning
    from longlive._types import ScheduledPrompt as OldScheduled

    assert OldScheduled is ScheduledPrompt is longlive.ScheduledPrompt
    assert OldWarning is PromptWarning is longlive.PromptWarning
    assert ScheduledPrompt.from_result(WIRE[0][1]) == WIRE[0][0]
    assert json.loads(encode_message(result.to_ack()))["data"] == {
        "command": "start",
        "generation": 0,
        "seed": 1,
    }
