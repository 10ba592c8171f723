"""The client API decisions of docs/client-guide.md, section 8, and the typed command results of
`longlive.protocol` they rest on (no runner, no torch: a scripted transport as in test_client.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import typing
from typing import Any

import pytest

import longlive
from _poll import within_turns
from longlive import (
    USE_CLIENT_DEFAULT,
    CommandTimeoutError,
    ConnectionClosedError,
    InvalidStateError,
    PauseResult,
    Progress,
    ProtocolError,
    Reactor,
    RemovePromptResult,
    ResetResult,
    ResumeResult,
    ScheduledPrompt,
    StartResult,
    UseClientDefault,
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
from test_client import FakeTransport, auto_ack, connected, factory, state

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


def test_results_are_frozen_and_exported_at_top_level() -> None:
    result = StartResult(generation=0, seed=1)
    with pytest.raises(AttributeError):
        result.seed = 2  # type: ignore[misc]
    assert ScheduledPrompt is longlive.ScheduledPrompt and PromptWarning is longlive.PromptWarning
    assert json.loads(encode_message(result.to_ack()))["data"] == {
        "command": "start",
        "generation": 0,
        "seed": 1,
    }


# ----------------------------------------------------------------------------------------------
# The per-call default: a public sentinel, typed in the signatures
# ----------------------------------------------------------------------------------------------
def test_per_call_timeouts_default_to_a_public_sentinel() -> None:
    from longlive import _client

    for name in ("send_message", "schedule_prompt", "remove_prompt", "start", "pause", "resume", "reset"):
        method = getattr(Reactor, name)
        hints = typing.get_type_hints(method, vars(_client))
        assert hints["timeout"] == float | None | UseClientDefault, name
        assert typing.get_type_hints(method).keys() >= {"timeout"}  # resolvable from the method alone
    connect_hints = typing.get_type_hints(Reactor.connect, vars(_client))
    assert connect_hints["queue_timeout"] == float | None | UseClientDefault
    assert USE_CLIENT_DEFAULT is UseClientDefault.USE_CLIENT_DEFAULT
    assert repr(USE_CLIENT_DEFAULT) == "USE_CLIENT_DEFAULT"
    assert {"USE_CLIENT_DEFAULT", "UseClientDefault"} <= set(longlive.__all__)


async def test_the_sentinel_means_the_clients_timeout_and_none_means_no_limit() -> None:
    silent = FakeTransport()  # never replies
    reactor, _ = await connected(silent, command_timeout=0.05)
    for call in (reactor.pause(), reactor.pause(timeout=USE_CLIENT_DEFAULT)):
        with pytest.raises(CommandTimeoutError) as info:
            await call
        assert info.value.timeout == 0.05
    with pytest.raises(CommandTimeoutError) as explicit:
        await reactor.pause(timeout=0.01)
    assert explicit.value.timeout == 0.01
    # None: no limit; the reply comes whenever the runner sends it
    unlimited = asyncio.create_task(reactor.pause(timeout=None))
    await within_turns(lambda: len(silent.commands("pause")) == 4, "the fourth pause was sent")
    assert not unlimited.done()
    silent.push("ack", {"command": "pause", "effective_frame": 6}, silent.commands("pause")[-1]["id"])
    silent.push_msg(state(running=True, paused=True))  # a state-changing command returns after it
    assert (await asyncio.wait_for(unlimited, 5)).effective_frame == 6
    await reactor.close()


# ----------------------------------------------------------------------------------------------
# Waiting for the video: no default limit, but never past the connection
# ----------------------------------------------------------------------------------------------
def test_waits_on_the_video_have_no_default_limit() -> None:
    import inspect

    assert inspect.signature(Reactor.wait_for).parameters["timeout"].default is None
    assert inspect.signature(Reactor.wait_for_frame).parameters["timeout"].default is None
    assert inspect.signature(Reactor.start).parameters["timeout"].default is USE_CLIENT_DEFAULT


async def test_a_wait_without_a_connection_fails_at_once() -> None:
    reactor = Reactor(transport_factory=factory(FakeTransport()))
    with pytest.raises(InvalidStateError, match="not connected"):
        await asyncio.wait_for(reactor.wait_for("progress"), 5)
    with pytest.raises(InvalidStateError, match="not connected"):
        await asyncio.wait_for(reactor.wait_for_frame(9), 5)
    reactor, _ = await connected()
    await reactor.close()
    with pytest.raises(InvalidStateError, match="not connected"):
        await asyncio.wait_for(reactor.wait_for("progress"), 5)


async def test_a_pending_wait_ends_with_the_connection() -> None:
    reactor, t = await connected()
    message = asyncio.create_task(reactor.wait_for("generation_finished"))
    frame = asyncio.create_task(reactor.wait_for_frame(99))
    await asyncio.sleep(0)  # one turn: each task registers its wait before its first real await
    t.drop(1011, "runner crashed")
    for waiter in (message, frame):
        with pytest.raises(ConnectionClosedError, match="runner crashed"):
            await asyncio.wait_for(waiter, 5)
    with pytest.raises(ConnectionClosedError, match="runner crashed"):
        await reactor.wait_for("progress")  # a new wait, after the drop
    await reactor.close()
    # and on close()
    reactor, t = await connected()
    pending = asyncio.create_task(reactor.wait_for("progress", lambda p: p.current_start_frame > 90))
    await asyncio.sleep(0)  # the wait is registered
    await reactor.close()
    with pytest.raises(ConnectionClosedError, match="closed by the client"):
        await asyncio.wait_for(pending, 5)


# ----------------------------------------------------------------------------------------------
# frame_policy="block": back-pressure never holds up a reply the consumer is waiting for
# ----------------------------------------------------------------------------------------------
async def test_a_command_inside_a_full_block_frames_loop_completes() -> None:
    reactor, t = await connected(
        FakeTransport(auto_ack), max_buffered_frames=1, frame_policy="block", command_timeout=None
    )
    for i in range(4):
        t.push_frame(i)
    got: list[int] = []
    results: list[PauseResult] = []
    async for frame in reactor.frames():
        got.append(frame.index)
        if frame.index == 0:
            # The buffer is full (frame 1) and the reader holds frame 2, waiting for room; frame 3
            # and then the reply are behind it on the connection.
            await within_turns(
                lambda: reactor.frames_received == 3 and reactor.frames_buffered == 1,
                "the reader waits on the full buffer",
            )
            # Without the fix this waits forever (command_timeout=None): the reply is never read.
            results.append(await asyncio.wait_for(reactor.pause(), 5))
            assert reactor.frames_buffered == 3, "frames 1-3 were kept past the buffer's size"
        if frame.index == 3:
            break
    assert results == [PauseResult(effective_frame=3)] and reactor.state.running
    assert got == [0, 1, 2, 3] and reactor.frames_dropped == 0
    # With no call waiting, back-pressure holds again: the reader stops at one buffered frame.
    for i in range(4, 8):
        t.push_frame(i)
    await within_turns(lambda: reactor.frames_received == 6, "the buffer refilled")
    for _ in range(50):
        await asyncio.sleep(0)
    assert (reactor.frames_received, reactor.frames_buffered) == (6, 1)
    await reactor.close()


async def test_a_wait_for_inside_a_full_block_frames_loop_completes(caplog: pytest.LogCaptureFixture) -> None:
    reactor, t = await connected(max_buffered_frames=1, frame_policy="block")
    for i in range(3):
        t.push_frame(i)
    t.push_msg(Progress(3, 9))
    async for frame in reactor.frames():
        if frame.index == 0:
            await within_turns(lambda: reactor.frames_received == 2, "the reader waits on the full buffer")
            progress = await asyncio.wait_for(reactor.wait_for("progress"), 5)
            assert progress.current_start_frame == 3  # type: ignore[attr-defined]
        if frame.index == 2:
            break
    assert reactor.frames_dropped == 0
    with caplog.at_level(logging.ERROR, logger="longlive"):
        await reactor.close()
    assert not caplog.records


def test_the_runners_acks_are_built_from_the_same_types() -> None:
    """Every ack a session sends decodes into its command's result type, field for field."""
    from longlive.protocol import GetState, Pause, RemovePrompt, Reset, Resume, SchedulePrompt, Start, State
    from longlive_runner.serving.session import Session

    session = Session(default_seed=5)
    commands = [
        SchedulePrompt("a red circle moving right on a black background", 0, id="a"),
        SchedulePrompt("a blue square moving up on a black background", 7, id="b"),
        RemovePrompt(7, id="c"),
        Start(id="d"),
        Pause(id="e"),
        Resume(id="f"),
        GetState(id="g"),
        Reset(id="h"),
    ]
    acks = []
    for command in commands:
        replies = session.handle(command)
        ack = parse_message(encode_message(replies[0]))  # through the wire
        assert isinstance(ack, Ack) and ack.id == command.id, replies[0]
        acks.append(ack)
    decoded = [COMMAND_RESULTS[a.command].from_ack(a) if a.command != "get_state" else a for a in acks]
    assert decoded[0] == ScheduledPrompt(0, 0, 0, 0)
    assert decoded[1] == ScheduledPrompt(7, 7, 9, 33)
    assert decoded[2] == RemovePromptResult(7, "a blue square moving up on a black background")
    assert decoded[3] == StartResult(generation=0, seed=5)
    assert decoded[4] == PauseResult(effective_frame=0)
    assert decoded[5] == ResumeResult(current_start_frame=0)
    assert State.from_data(acks[6].result).seed == 5
    assert decoded[7] == ResetResult(generation=1)
