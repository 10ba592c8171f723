"""The session state machine, driven without threads or sockets."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from longlive.protocol import (
    DEFAULT_LIMITS,
    Ack,
    CommandErrorMessage,
    ErrorMessage,
    GenerationFinished,
    GetState,
    Hello,
    Message,
    Pause,
    Progress,
    PromptSwitched,
    RemovePrompt,
    Reset,
    Resume,
    SchedulePrompt,
    Start,
    State,
    encode_message,
    is_reply,
    parse_message,
    prompt_in_force,
)
from longlive_runner.serving.session import BlockPlan, Session


# --- helpers -----------------------------------------------------------------------------------------
def reply(out: list[Message]) -> Message:
    replies = [m for m in out if is_reply(m)]
    assert len(replies) == 1, out
    return replies[0]


def ack(out: list[Message]) -> Ack:
    r = reply(out)
    assert isinstance(r, Ack), r
    return r


def refusal(out: list[Message]) -> str:
    r = reply(out)
    assert isinstance(r, CommandErrorMessage), r
    assert out == [r]  # a refusal changes nothing: no broadcasts
    return r.code


def types(out: list[Message]) -> list[str]:
    return [m.type for m in out]


def schedule(s: Session, prompt: str, t: int, id: str = "s") -> Ack:
    return ack(s.handle(SchedulePrompt(prompt, t, id=id)))


def started(prompt: str = "p0", **kwargs: int) -> Session:
    s = Session(**kwargs)
    schedule(s, prompt, 0)
    ack(s.handle(Start(id="go")))
    return s


def run_block(s: Session) -> tuple[BlockPlan, list[Message]]:
    plan = s.next_block()
    assert plan is not None
    return plan, s.block_done(plan, plan.num_video_frames)


# --- connect, start --------------------------------------------------------------------------------------
def test_on_connect_sends_hello_then_state() -> None:
    s = Session(max_frames=30, height=64, width=112)
    hello, state = s.on_connect()
    assert isinstance(hello, Hello) and isinstance(state, State)
    assert (hello.model, hello.height, hello.width, hello.max_frames, hello.fps) == (
        "longlive",
        64,
        112,
        30,
        16,
    )
    assert (hello.video_frames_first_block, hello.video_frames_per_block) == (9, 12)
    assert state.idle and state.scheduled_prompts == {} and state.generation == 0


def test_for_config_reads_the_pipeline_config() -> None:
    from longlive_runner.model.config import get_preset

    s = Session.for_config(get_preset("tiny"), max_scheduled_prompts=4)
    assert (s.height, s.width, s.max_frames, s.frames_per_block) == (64, 112, DEFAULT_LIMITS.max_frames, 3)
    capped = dataclasses.replace(get_preset("tiny").stream, max_latent_frames=30)
    assert Session.for_config(dataclasses.replace(get_preset("tiny"), stream=capped)).max_frames == 30
    assert s.limits.max_scheduled_prompts == 4


def test_start_requires_a_prompt_at_zero() -> None:
    s = Session()
    assert refusal(s.handle(Start(id="1"))) == "no_initial_prompt"
    schedule(s, "later", 3)
    assert refusal(s.handle(Start(id="1"))) == "no_initial_prompt"
    schedule(s, "first", 0)
    out = s.handle(Start(id="1"))
    assert types(out) == ["ack", "progress", "state"]
    assert ack(out).result == {"generation": 0, "seed": 0}
    assert out[1] == Progress(current_start_frame=0, video_frame=0, generation=0)
    assert s.phase == "running" and s.seed == 0


def test_start_refused_while_running_or_paused_and_seed_is_kept() -> None:
    s = Session(default_seed=5)
    schedule(s, "a", 0)
    assert ack(s.handle(Start(seed=42, id="1"))).result["seed"] == 42
    assert refusal(s.handle(Start(id="2"))) == "already_running"
    s.handle(Pause())
    assert refusal(s.handle(Start(id="3"))) == "already_running"
    plan = s.next_block()
    assert plan is None
    s.handle(Resume())
    plan = s.next_block()
    assert plan is not None and plan.seed == 42 and plan.first
    s.handle(Reset())
    schedule(s, "a", 0)
    s.handle(Start())
    assert s.seed == 5


# --- blocks and progress --------------------------------------------------------------------------------
def test_blocks_progress_in_latent_frames_with_video_frame_counts() -> None:
    s = started()
    plans = []
    for expected_start, expected_video in [(0, 9), (3, 12), (6, 12)]:
        plan, out = run_block(s)
        plans.append(plan)
        assert plan.start_frame == expected_start and plan.num_video_frames == expected_video
        assert types(out) == ["progress", "state"]
    assert [p.first_video_frame for p in plans] == [0, 9, 21]
    assert s.progress() == Progress(9, 33, 0)
    state = s.state()
    assert (state.current_start_frame, state.video_frame, state.current_prompt) == (9, 33, "p0")


def test_next_block_is_none_when_idle_and_refuses_a_second_plan() -> None:
    s = Session()
    assert s.next_block() is None
    schedule(s, "a", 0)
    assert s.next_block() is None  # scheduled but not started
    s.handle(Start())
    plan = s.next_block()
    assert plan is not None
    with pytest.raises(RuntimeError):
        s.next_block()
    with pytest.raises(ValueError):
        s.block_done(plan, 12)  # the first block decodes to 9 video frames
    assert s.in_progress == plan and s.is_current(plan)


def test_max_frames_finishes_the_video() -> None:
    s = started(max_frames=10)  # blocks 0, 3, 6 fit; block 9 would need frames 9..11
    run_block(s)
    run_block(s)
    plan, out = run_block(s)
    assert plan.start_frame == 6
    assert types(out) == ["progress", "generation_finished", "state"]
    assert out[1] == GenerationFinished(
        reason="max_frames", current_start_frame=9, video_frame=33, generation=0
    )
    assert s.phase == "finished" and s.finish_reason == "max_frames" and s.next_block() is None
    assert out[2].finished == "max_frames" and not out[2].running  # type: ignore[attr-defined]
    for cmd in (
        Start(id="1"),
        Pause(id="1"),
        Resume(id="1"),
        SchedulePrompt("b", 9, id="1"),
        RemovePrompt(0, id="1"),
        SchedulePrompt("b", 12, id="1"),  # past max_frames: the video ended, not a bad timestamp
        RemovePrompt(12, id="1"),
    ):
        assert refusal(s.handle(cmd)) == "finished"
    error = reply(s.handle(SchedulePrompt("b", 12, id="1")))
    assert "the video ended (max_frames) at frame 9; call reset() to start a new one" == error.reason  # type: ignore[attr-defined]
    assert ack(s.handle(GetState(id="g"))).result["finished"] == "max_frames"
    ack(s.handle(Reset(id="r")))
    assert s.phase == "idle" and s.schedule == {}


def test_by_default_the_video_does_not_end() -> None:
    """No length cap: 2,000 blocks (6,000 latent frames, past LongLive's 1024 RoPE positions) and
    the session still plans the next one; only a user limit ends a video."""
    s = started()
    for _ in range(2000):
        plan = s.next_block()
        assert plan is not None
        out = s.block_done(plan, plan.num_video_frames)
        assert not any(isinstance(m, GenerationFinished) for m in out)
    assert s.current_start_frame == 6000 and s.finish_reason is None and s.next_block() is not None


def test_user_limit_of_1024_ends_at_1023() -> None:
    s = started(max_frames=1024)
    n = 0
    while (plan := s.next_block()) is not None:
        out = s.block_done(plan, plan.num_video_frames)
        n += 1
    assert n == 341 and plan is None
    assert s.current_start_frame == 1023 and s.finish_reason == "max_frames"
    assert isinstance(out[-2], GenerationFinished) and out[-2].video_frame == 4089


def test_finished_called_by_the_runner() -> None:
    s = started()
    plan = s.next_block()
    assert plan is not None
    out = s.finished("max_frames")
    assert types(out) == ["generation_finished", "state"]
    assert s.block_done(plan, 9) == []  # the session no longer waits for that block
    assert s.finished("max_frames") == []


# --- schedule and effective frames ---------------------------------------------------------------------
def test_schedule_overwrites_the_same_timestamp() -> None:
    s = Session()
    assert schedule(s, "a", 6).result["replaced_prompt"] is None
    out = s.handle(SchedulePrompt("b", 6, id="2"))
    assert types(out) == ["ack", "state"]
    assert ack(out).result["replaced_prompt"] == "a"
    assert s.schedule == {6: "b"}
    assert out[1].scheduled_prompts == {6: "b"}  # type: ignore[attr-defined]


def test_effective_frame_of_non_aligned_timestamps_before_start() -> None:
    s = Session()
    result = schedule(s, "x", 4).result
    assert result == {
        "timestamp": 4,
        "requested_timestamp": 4,
        "effective_frame": 6,
        "effective_video_frame": 21,
        "replaced_prompt": None,
        "warnings": [],
    }
    assert schedule(s, "a", 0).result["effective_frame"] == 0
    s.handle(Start())
    prompts = [run_block(s)[0].prompt for _ in range(3)]
    assert prompts == ["a", "a", "x"]


def test_superseded_warning() -> None:
    s = Session()
    schedule(s, "five", 5)
    warnings = schedule(s, "four", 4).result["warnings"]
    assert [w["code"] for w in warnings] == ["superseded"]
    assert "frame 5" in warnings[0]["message"]


def test_state_says_which_prompt_is_in_force() -> None:
    s = Session()
    for prompt, t in (("a", 0), ("b", 4), ("c", 7)):
        schedule(s, prompt, t)
    assert s.state().in_force is None  # idle: nothing is in force
    ack(s.handle(Start(id="go")))
    assert s.state().in_force == 0  # from start on, block 0's prompt
    seen = []
    for _ in range(4):
        plan, out = run_block(s)
        state = out[-1]
        assert isinstance(state, State)
        # the prompt that generated the block just done, as the protocol's rule says
        assert state.in_force == prompt_in_force(state.scheduled_prompts, plan.start_frame)
        assert state.scheduled_prompts[state.in_force] == plan.prompt == state.current_prompt
        assert parse_message(encode_message(state)) == state
        seen.append(state.in_force)
    assert seen == [0, 0, 4, 7]
    assert s.finished("max_frames")[-1].in_force == 7  # type: ignore[attr-defined]  # still, once ended
    assert reply(s.handle(GetState(id="g"))).result["in_force"] == 7  # type: ignore[attr-defined]
    assert s.handle(Reset())[-1].in_force is None  # type: ignore[attr-defined]


def test_live_schedule_in_the_future_is_kept_and_past_is_rekeyed() -> None:
    s = started("a")
    run_block(s)  # block 0 done: current_start_frame 3
    plan = s.next_block()  # block 3 in progress
    assert plan is not None and plan.start_frame == 3
    assert (s.frontier, s.decided) == (6, 3)
    # the hosted service's advice: current_start_frame + 3
    r = schedule(s, "b", 6).result
    assert (r["timestamp"], r["effective_frame"], r["warnings"]) == (6, 6, [])
    # non-aligned but in the future: stored as sent, effective at the next boundary
    r = schedule(s, "c", 5).result
    assert (r["timestamp"], r["effective_frame"]) == (5, 6)
    assert [w["code"] for w in r["warnings"]] == ["superseded"]
    # in the decided past: re-keyed to P=6, overwriting "b"
    r = schedule(s, "d", 1).result
    assert (r["timestamp"], r["requested_timestamp"], r["effective_frame"], r["replaced_prompt"]) == (
        6,
        1,
        6,
        "b",
    )
    assert [w["code"] for w in r["warnings"]] == ["rekeyed"]
    r = schedule(s, "e", 3).result  # the block being generated: also re-keyed
    assert (r["timestamp"], r["effective_frame"]) == (6, 6)
    assert s.schedule == {0: "a", 5: "c", 6: "e"}
    s.block_done(plan, 12)
    nxt, out = run_block(s)
    assert (nxt.start_frame, nxt.prompt, nxt.switched, nxt.previous_prompt) == (6, "e", True, "a")


def test_state_carries_frontier_and_decided() -> None:
    s = Session(max_frames=9)
    assert (s.state().frontier, s.state().decided) == (0, -1)  # idle: nothing decided
    schedule(s, "a", 0)
    out = s.handle(Start(id="go"))
    assert (out[-1].frontier, out[-1].decided) == (3, 0)  # type: ignore[attr-defined]  # block 0 about to begin
    plan = s.next_block()
    assert plan is not None
    # running, block 0 in progress: the session's own P and D (the re-key rule) agree with `state`
    assert (s.state().frontier, s.state().decided) == (s.frontier, s.decided) == (3, 0)
    out = s.block_done(plan, plan.num_video_frames)
    state = out[-1]
    assert isinstance(state, State) and state.current_start_frame == 3
    # between blocks: the runner begins block 3 right after this state, so a client counts it
    assert (state.frontier, state.decided) == (6, 3) and (s.frontier, s.decided) == (3, 0)
    s.next_block()
    assert (s.frontier, s.decided) == (state.frontier, state.decided)
    s.handle(Pause())  # paused while block 3 is generated: it still completes
    assert (s.state().frontier, s.state().decided) == (6, 3)
    plan = s.in_progress
    assert plan is not None
    out = s.block_done(plan, plan.num_video_frames)
    assert (out[-1].frontier, out[-1].decided) == (6, 3)  # type: ignore[attr-defined]  # paused: nothing begins
    s.handle(Resume())
    plan = s.next_block()
    assert plan is not None
    out = s.block_done(plan, plan.num_video_frames)  # frame 9 + 3 > 9: finished
    assert isinstance(out[-1], State) and out[-1].finished == "max_frames"
    assert (out[-1].frontier, out[-1].decided) == (9, 6)  # a finished video keeps its decided past
    wire = parse_message(encode_message(out[-1]))
    assert isinstance(wire, State) and (wire.frontier, wire.decided) == (9, 6)
    assert (s.handle(Reset())[-1].frontier, s.state().decided) == (0, -1)  # type: ignore[attr-defined]


def test_rekey_while_paused_and_at_start() -> None:
    s = started("a")
    r = schedule(s, "a2", 0).result  # started, block 0 not planned yet: 0 is still P
    assert (r["timestamp"], r["effective_frame"], r["warnings"]) == (0, 0, [])
    run_block(s)
    run_block(s)  # current_start_frame 6
    s.handle(Pause())
    assert (s.frontier, s.decided) == (6, 3)
    r = schedule(s, "b", 3).result
    assert (r["timestamp"], r["effective_frame"]) == (6, 6)
    r = schedule(s, "c", 4).result
    assert (r["timestamp"], r["effective_frame"]) == (4, 6)


def test_beyond_max_frames_warning_and_prompt_warnings_hook() -> None:
    s = Session(
        max_frames=10,
        prompt_warnings=lambda p: [("prompt_truncated", "too many tokens")] if len(p) > 5 else [],
    )
    assert [w["code"] for w in schedule(s, "a", 7).result["warnings"]] == ["beyond_max_frames"]
    assert schedule(s, "b", 6).result["warnings"] == []
    assert [w["code"] for w in schedule(s, "longer prompt", 0).result["warnings"]] == ["prompt_truncated"]


def test_too_many_prompts_counts_only_pending_prompts() -> None:
    s = Session(max_scheduled_prompts=3)
    for t in (0, 3, 6):
        schedule(s, f"p{t}", t)
    assert refusal(s.handle(SchedulePrompt("x", 9, id="1"))) == "too_many_prompts"
    schedule(s, "overwrite", 6)  # overwriting does not add one
    s.handle(Start())
    run_block(s)
    run_block(s)  # blocks 0 and 3 done: prompts at 0 and 3 are applied
    schedule(s, "x", 9)
    schedule(s, "y", 12)
    assert refusal(s.handle(SchedulePrompt("z", 15, id="1"))) == "too_many_prompts"


def test_prompt_switched_at_the_right_block() -> None:
    s = Session()
    schedule(s, "a", 0)
    schedule(s, "b", 9)
    schedule(s, "b", 12)  # same text again: no switch
    schedule(s, "c", 13)  # not aligned: first used by block 15
    s.handle(Start())
    switches = {}
    for _ in range(7):
        plan, out = run_block(s)
        sw = [m for m in out if isinstance(m, PromptSwitched)]
        assert plan.switched == bool(sw)
        if sw:
            assert types(out)[0] == "prompt_switched"
            switches[plan.start_frame] = sw[0]
    assert sorted(switches) == [9, 15]
    assert switches[9] == PromptSwitched(
        frame=9, video_frame=33, new_prompt="b", previous_prompt="a", generation=0
    )
    assert switches[15].previous_prompt == "b" and switches[15].new_prompt == "c"


# --- remove_prompt ---------------------------------------------------------------------------------------
def test_remove_prompt_cases() -> None:
    s = Session()
    schedule(s, "a", 0)
    schedule(s, "b", 6)
    assert refusal(s.handle(RemovePrompt(3, id="1"))) == "no_such_prompt"
    out = s.handle(RemovePrompt(0, id="1"))  # nothing is applied before start
    assert types(out) == ["ack", "state"]
    assert ack(out).result == {"timestamp": 0, "removed_prompt": "a"}
    assert refusal(s.handle(Start(id="2"))) == "no_initial_prompt"
    schedule(s, "a", 0)
    s.handle(Start())
    assert refusal(s.handle(RemovePrompt(0, id="1"))) == "already_applied"  # in force from start on
    schedule(s, "c", 9)
    run_block(s)
    plan = s.next_block()  # block 3 in progress: decided up to 3
    assert plan is not None
    ack(s.handle(RemovePrompt(9, id="1")))
    ack(s.handle(RemovePrompt(6, id="1")))  # block 6 is not decided yet
    schedule(s, "b", 6)
    s.block_done(plan, 12)
    run_block(s)  # block 6 generated with "b"
    assert refusal(s.handle(RemovePrompt(6, id="1"))) == "already_applied"
    assert s.schedule == {0: "a", 6: "b"}


# --- pause / resume --------------------------------------------------------------------------------------
def test_pause_takes_effect_after_the_block_in_progress() -> None:
    s = started()
    assert refusal(s.handle(Resume(id="1"))) == "not_paused"
    plan = s.next_block()
    assert plan is not None
    out = s.handle(Pause(id="p"))
    assert types(out) == ["ack", "state"] and ack(out).result == {"effective_frame": 3}
    assert refusal(s.handle(Pause(id="1"))) == "already_paused"
    out = s.block_done(plan, 9)  # the block in progress still completes and reports progress
    assert types(out) == ["progress", "state"]
    assert out[1].paused and out[1].running  # type: ignore[attr-defined]
    assert s.next_block() is None and s.phase == "paused"
    out = s.handle(Resume(id="r"))
    assert ack(out).result == {"current_start_frame": 3}
    nxt = s.next_block()
    assert nxt is not None and nxt.start_frame == 3


def test_pause_and_resume_refused_when_idle() -> None:
    s = Session()
    assert refusal(s.handle(Pause(id="1"))) == "not_running"
    assert refusal(s.handle(Resume(id="1"))) == "not_running"


# --- reset and generations ------------------------------------------------------------------------------------
def test_reset_bumps_the_generation_and_drops_stale_results() -> None:
    s = started()
    run_block(s)
    plan = s.next_block()
    assert plan is not None and plan.generation == 0
    out = s.handle(Reset(id="r"))
    assert types(out) == ["ack", "generation_finished", "state"]
    assert ack(out).result == {"generation": 1}
    assert out[1] == GenerationFinished(reason="reset", current_start_frame=3, video_frame=9, generation=0)
    state = out[2]
    assert isinstance(state, State) and state.idle and state.generation == 1
    assert (state.current_start_frame, state.scheduled_prompts, state.current_prompt) == (0, {}, None)
    # a new run starts before the old block comes back: its results must not leak
    schedule(s, "new", 0)
    s.handle(Start())
    assert not s.is_current(plan)
    assert s.block_done(plan, 12) == []
    assert s.block_failed(plan, RuntimeError("late")) == []
    fresh, out = run_block(s)
    assert (fresh.generation, fresh.start_frame, fresh.prompt) == (1, 0, "new")
    assert out[0] == Progress(3, 9, 1)


def test_reset_when_idle_still_clears_and_bumps() -> None:
    s = Session()
    schedule(s, "a", 0)
    out = s.handle(Reset())
    assert types(out) == ["state"]  # no id: no ack; nothing was running: no generation_finished
    assert s.generation == 1 and s.schedule == {}


def test_block_failed_finishes_with_error_and_reset_recovers() -> None:
    s = started()
    plan = s.next_block()
    assert plan is not None
    out = s.block_failed(plan, RuntimeError("CUDA out of memory"))
    assert types(out) == ["error", "generation_finished", "state"]
    err = out[0]
    assert isinstance(err, ErrorMessage)
    assert (err.code, err.frame, err.generation) == ("generation_failed", 0, 0)
    assert "CUDA out of memory" in err.message and "RuntimeError" in err.message
    assert s.phase == "finished" and s.finish_reason == "error"
    assert refusal(s.handle(Start(id="1"))) == "finished"
    s.handle(Reset())
    schedule(s, "a", 0)
    ack(s.handle(Start(id="1")))
    assert s.next_block() is not None


# --- fire-and-forget and text entry point --------------------------------------------------------------
def test_fire_and_forget_refusal_is_broadcast_without_id() -> None:
    s = Session()
    out = s.handle(Start())
    assert out == [CommandErrorMessage("start", "no_initial_prompt", out[0].reason)]  # type: ignore[attr-defined]
    assert not is_reply(out[0])
    # success without id: no ack, only the broadcasts
    out = s.handle(SchedulePrompt("a", 0))
    assert types(out) == ["state"]
    assert types(s.handle(GetState())) == ["state"]


def test_handle_text_replies_with_the_id_even_for_bad_input() -> None:
    s = Session()
    out = s.handle_text('{"type":"schedule_prompt","data":{"new_prompt":"","timestamp":0},"id":"q"}')
    assert out == [CommandErrorMessage("schedule_prompt", "empty_prompt", out[0].reason, id="q")]  # type: ignore[attr-defined]
    out = s.handle_text("{oops")
    assert len(out) == 1 and out[0].code == "bad_json" and out[0].id is None  # type: ignore[attr-defined]
    out = s.handle_text('{"type":"schedule_prompt","data":{"new_prompt":"a","timestamp":0},"id":"ok"}')
    assert types(out) == ["ack", "state"] and out[0].id == "ok"  # type: ignore[attr-defined]
    assert s.handle_binary(b"\x00")[0].code == "unexpected_binary"  # type: ignore[attr-defined]
    # timestamps above this session's max_frames are refused at parse time
    small = Session(max_frames=30)
    out = small.handle_text('{"type":"schedule_prompt","data":{"new_prompt":"a","timestamp":31},"id":"t"}')
    assert out[0].code == "bad_timestamp"  # type: ignore[attr-defined]


def test_handle_validates_commands_built_in_code() -> None:
    s = Session(max_frames=30)
    assert refusal(s.handle(SchedulePrompt("a", 31, id="1"))) == "bad_timestamp"
    assert refusal(s.handle(SchedulePrompt("a", True, id="1"))) == "bad_field"  # type: ignore[arg-type]


def test_handle_text_turns_bugs_into_internal_errors(caplog: pytest.LogCaptureFixture) -> None:
    def broken(prompt: str) -> list[tuple[str, str]]:
        raise KeyError("boom")

    s = Session(prompt_warnings=broken)
    out = s.handle_text('{"type":"schedule_prompt","data":{"new_prompt":"a","timestamp":0},"id":"i"}')
    assert len(out) == 1 and out[0].code == "internal" and out[0].id == "i"  # type: ignore[attr-defined]
    assert "session failed" in caplog.text


def test_get_state_ack_carries_the_state() -> None:
    s = started("a")
    schedule(s, "b", 9)
    run_block(s)
    result = ack(s.handle(GetState(id="g"))).result
    assert State.from_data(result) == s.state()
    assert result["scheduled_prompts"] == {"0": "a", "9": "b"}


def test_every_outgoing_message_encodes_and_parses_back() -> None:
    s = Session(max_frames=12)
    msgs: list[Message] = [*s.on_connect()]
    msgs += s.handle_text('{"type":"schedule_prompt","data":{"new_prompt":"a","timestamp":0},"id":"1"}')
    msgs += s.handle_text('{"type":"schedule_prompt","data":{"new_prompt":"b","timestamp":5},"id":"2"}')
    msgs += s.handle_text('{"type":"start","id":"3"}')
    while (plan := s.next_block()) is not None:
        msgs += s.block_done(plan, plan.num_video_frames)
    msgs += s.handle_text('{"type":"get_state","id":"4"}')
    msgs += s.handle_text('{"type":"reset","id":"5"}')
    for m in msgs:
        text = encode_message(m)
        json.loads(text)
        assert parse_message(text) == m
    assert {m.type for m in msgs} >= {
        "hello",
        "state",
        "ack",
        "progress",
        "prompt_switched",
        "generation_finished",
    }


# --- the frame-exact schedule invariant ----------------------------------------------------------------
@pytest.mark.parametrize("seed", range(20))
def test_final_schedule_reproduces_every_block_prompt(seed: int) -> None:
    """Random live commands: for every generated block starting at s, the final schedule's prompt
    at the largest timestamp <= s is the prompt the block was generated with."""
    rng = random.Random(seed)
    s = Session(max_frames=90, max_scheduled_prompts=8)
    schedule(s, "p-init", 0)
    s.handle(Start())
    generated: list[tuple[int, str]] = []
    plan: BlockPlan | None = None
    counter = 0
    while s.phase != "finished":
        r = rng.random()
        if r < 0.35:
            counter += 1
            t = max(0, s.current_start_frame + rng.randint(-8, 10))
            s.handle(SchedulePrompt(f"p{counter}", min(t, 90), id="x"))
        elif r < 0.5:
            keys = list(s.schedule)
            s.handle(RemovePrompt(rng.choice(keys), id="x"))
        elif r < 0.55:
            s.handle(Pause() if not s.paused else Resume())
        elif plan is None:
            plan = s.next_block()
        else:
            generated.append((plan.start_frame, plan.prompt))
            s.block_done(plan, plan.num_video_frames)
            plan = None
    final = s.schedule
    assert [g[0] for g in generated] == list(range(0, 88, 3))
    for start, prompt in generated:
        key = max(k for k in final if k <= start)
        assert final[key] == prompt, (start, final)


def test_a_command_is_validated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import longlive.protocol.runner as runner_side

    calls: list[str] = []
    check = runner_side.check_values

    def counting(cmd: object, limits: object = DEFAULT_LIMITS) -> None:
        calls.append(cmd.type)  # type: ignore[attr-defined]
        check(cmd, limits)  # type: ignore[arg-type]

    monkeypatch.setattr(runner_side, "check_values", counting)
    s = Session()
    ack(s.handle_text(encode_message(SchedulePrompt("a", 0, id="1"))))  # parse_command checks it
    ack(s.handle(Start(id="2")))  # built in code: handle checks it
    assert calls == ["schedule_prompt", "start"]
