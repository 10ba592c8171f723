"""The I/O-free protocol core: message round trips, validation codes, binary frames, units."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest

import longlive.protocol
from longlive.errors import (
    CommandError,
    CommandTimeoutError,
    ConnectionClosedError,
    ErrorCode,
    InvalidStateError,
    LongliveError,
    ProtocolError,
)
from longlive.protocol import (
    COMMAND_TYPES,
    DEFAULT_LIMITS,
    FRAME_HEADER_SIZE,
    MAX_SEED,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    Ack,
    CommandErrorMessage,
    ErrorMessage,
    FrameHeader,
    FramesDropped,
    GenerationFinished,
    GetState,
    Hello,
    Limits,
    Message,
    Pause,
    Progress,
    PromptSwitched,
    Queued,
    RemovePrompt,
    Reset,
    Resume,
    SchedulePrompt,
    Start,
    State,
    UnknownMessage,
    decode_frame,
    encode_block_frames,
    encode_frame,
    encode_message,
    is_reply,
    parse_message,
    prompt_in_force,
)
from longlive.protocol.runner import hello_for, parse_command, validate_command
from longlive.units import (
    block_start,
    block_video_frames,
    decided_frame,
    frontier_frame,
    latent_to_video_frame,
    next_block_boundary,
    seconds_to_latent_frame,
    seconds_to_video_frame,
    timeline_end,
    video_frame_to_seconds,
    video_to_latent_frame,
)

ALL_MESSAGES: list[Message] = [
    SchedulePrompt("a red fox in snow", 0, id="c1"),
    SchedulePrompt("ünïcödé 🦊", 1024),
    RemovePrompt(9, id="r"),
    Start(),
    Start(seed=1234, id="s"),
    Pause(id="p"),
    Resume(),
    Reset(id="x"),
    GetState(id="g"),
    hello_for(fps=16, height=480, width=832),
    State(
        generation=2,
        running=True,
        paused=False,
        current_start_frame=6,
        video_frame=21,
        finished=None,
        current_prompt="a",
        scheduled_prompts={0: "a", 9: "b", 12: "c"},
        seed=7,
        in_force=0,
    ),
    State(
        generation=0,
        running=False,
        paused=False,
        current_start_frame=1023,
        video_frame=4089,
        finished="max_frames",
    ),
    Progress(current_start_frame=3, video_frame=9, generation=1),
    FramesDropped(count=5, total=12),
    Queued(position=2, queue_length=3),
    PromptSwitched(frame=6, video_frame=21, new_prompt="b", previous_prompt="a", generation=0),
    GenerationFinished(reason="max_frames", current_start_frame=1023, video_frame=4089, generation=3),
    ErrorMessage(message="CUDA out of memory", code="generation_failed", frame=6, generation=1),
    Ack("schedule_prompt", {"timestamp": 3, "effective_frame": 3, "warnings": []}, id="c1"),
    Ack("reset", {"generation": 4}, id="r2"),
    CommandErrorMessage("start", "no_initial_prompt", "schedule a prompt at 0", id="s"),
    CommandErrorMessage(None, "bad_json", "not json"),
]


# --- text messages ------------------------------------------------------------------------------
@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip_every_message(msg: Message) -> None:
    text = encode_message(msg)
    obj = json.loads(text)
    assert obj["type"] == msg.type
    assert isinstance(obj["data"], dict)
    assert ("id" in obj) == (getattr(msg, "id", None) is not None)
    assert parse_message(text) == msg


def test_every_known_type_is_covered_by_the_round_trip() -> None:
    assert {m.type for m in ALL_MESSAGES} == set(MESSAGE_TYPES)


@pytest.mark.parametrize(
    "msg", [m for m in ALL_MESSAGES if m.type in COMMAND_TYPES], ids=lambda m: type(m).__name__
)
def test_commands_round_trip_through_parse_command(msg: Message) -> None:
    assert parse_command(encode_message(msg)) == msg


def test_wire_format_of_schedule_prompt_matches_the_seed() -> None:
    text = encode_message(SchedulePrompt("a cat", 3, id="1"))
    assert json.loads(text) == {
        "type": "schedule_prompt",
        "data": {"new_prompt": "a cat", "timestamp": 3},
        "id": "1",
    }
    # non-ASCII text is sent as UTF-8, not \\u escapes
    assert "🦊" in encode_message(SchedulePrompt("🦊", 0))
    # optional command fields are left out, not sent as null
    assert json.loads(encode_message(Start())) == {"type": "start", "data": {}}


def test_state_keys_are_decimal_strings_on_the_wire_and_ints_in_python() -> None:
    state = State(0, True, False, 3, 9, scheduled_prompts={12: "c", 0: "a", 3: "b"})
    data = json.loads(encode_message(state))["data"]
    assert list(data["scheduled_prompts"]) == ["0", "3", "12"]
    parsed = parse_message(encode_message(state))
    assert isinstance(parsed, State) and parsed.scheduled_prompts == {0: "a", 3: "b", 12: "c"}
    with pytest.raises(ProtocolError) as e:
        parse_message('{"type":"state","data":{"generation":0,"running":true,"paused":false,'
                      '"current_start_frame":0,"video_frame":0,"scheduled_prompts":{"-1":"a"}}}')  # fmt: skip
    assert e.value.code == ErrorCode.BAD_FIELD


def test_state_in_force_is_on_the_wire_and_optional() -> None:
    state = State(0, True, False, 6, 21, scheduled_prompts={0: "a", 4: "b"}, in_force=4)
    assert json.loads(encode_message(state))["data"]["in_force"] == 4
    assert json.loads(encode_message(State(0, False, False, 0, 0)))["data"]["in_force"] is None
    # A runner older than the field leaves it out: None.
    old = parse_message('{"type":"state","data":{"generation":0,"running":true,"paused":false,'
                        '"current_start_frame":3,"video_frame":9,"scheduled_prompts":{"0":"a"}}}')  # fmt: skip
    assert isinstance(old, State) and old.in_force is None


# --- the prompt schedule ---------------------------------------------------------------------------
def test_prompt_in_force_is_the_prompt_at_the_largest_timestamp_not_after_the_block() -> None:
    schedule = {10: "d", 0: "a", 6: "c", 4: "b"}  # any order
    # block 0 -> 0; block 3 -> 0 (4 is inside the block: it waits for block 6, where 6 wins);
    # block 6 -> 6; block 9 -> 6 (10 takes effect at 12); block 12 -> 10
    assert [prompt_in_force(schedule, f) for f in range(15)] == [0] * 6 + [6] * 6 + [10] * 3
    assert prompt_in_force({}, 0) is None
    assert [prompt_in_force({3: "x"}, f) for f in (0, 2, 3, 5)] == [None, None, 3, 3]  # none before the first
    assert prompt_in_force({0: "a", 4: "b"}, 5, frames_per_block=4) == 4  # blocks of 4: 5 is in block 4
    assert prompt_in_force({0: "a", 4: "b"}, 5, frames_per_block=3) == 0
    assert prompt_in_force({0: "a", 4: "b"}, 4, frames_per_block=1) == 4
    last = DEFAULT_LIMITS.max_frames - 1
    assert prompt_in_force({0: "a", last: "z"}, last, frames_per_block=1) == last
    with pytest.raises(ValueError):
        prompt_in_force({0: "a"}, -1)
    with pytest.raises(ValueError):
        prompt_in_force({0: "a"}, 3, frames_per_block=0)


def test_ack_result_is_flattened_and_state_reads_from_get_state_ack() -> None:
    state = State(1, False, False, 0, 0, scheduled_prompts={0: "a"})
    ack = Ack("get_state", state.to_data(), id="g")
    parsed = parse_message(encode_message(ack))
    assert isinstance(parsed, Ack) and parsed.command == "get_state"
    assert State.from_data(parsed.result) == state
    assert json.loads(encode_message(ack))["data"]["command"] == "get_state"


def test_unknown_types_pass_through_and_extra_fields_are_ignored() -> None:
    msg = parse_message('{"type":"scene_cut","data":{"frame":12},"id":"z"}')
    assert msg == UnknownMessage(type="scene_cut", data={"frame": 12}, id="z")
    assert json.loads(encode_message(msg)) == {"type": "scene_cut", "data": {"frame": 12}, "id": "z"}
    progress = parse_message(
        '{"type":"progress","data":{"current_start_frame":3,"video_frame":9,"new":1},"x":2}'
    )
    assert progress == Progress(3, 9)


def test_parse_message_rejects_malformed_known_messages() -> None:
    with pytest.raises(ProtocolError) as e:
        parse_message('{"type":"progress","data":{"current_start_frame":3}}')
    assert e.value.code == ErrorCode.MISSING_FIELD
    with pytest.raises(ProtocolError) as e:
        parse_message('{"type":"progress","data":{"current_start_frame":true,"video_frame":0}}')
    assert e.value.code == ErrorCode.BAD_FIELD
    with pytest.raises(ProtocolError) as e:
        parse_message('{"data":{}}')
    assert e.value.code == ErrorCode.MISSING_FIELD


def test_is_reply() -> None:
    assert is_reply(Ack("start", id="1"))
    assert is_reply(CommandErrorMessage("start", "x", "y", id="1"))
    assert not is_reply(CommandErrorMessage("start", "x", "y"))
    assert not is_reply(Progress(0, 0))


def test_command_error_converts_to_exception() -> None:
    exc = CommandErrorMessage("start", "already_running", "busy", id="7").to_exception()
    assert isinstance(exc, CommandError) and isinstance(exc, LongliveError)
    assert (exc.command, exc.code, exc.reason, exc.id) == ("start", "already_running", "busy", "7")
    assert "already_running" in str(exc)
    back = CommandErrorMessage.from_exception(ProtocolError("bad_json", "no", command=None, id="3"))
    assert back == CommandErrorMessage(None, "bad_json", "no", id="3")


def test_hello_derives_block_sizes_and_limits() -> None:
    hello = hello_for(fps=16, height=64, width=112, limits=Limits(max_frames=30))
    assert (hello.protocol_version, hello.model, hello.pixel_format) == (
        PROTOCOL_VERSION,
        "longlive",
        "rgb24",
    )
    assert (hello.video_frames_first_block, hello.video_frames_per_block) == (9, 12)
    assert hello.limits == Limits(max_frames=30)
    assert hello_for(height=8, width=8, frames_per_block=2).video_frames_first_block == 5


def test_hello_preset_round_trips_and_is_optional() -> None:
    hello = hello_for(height=64, width=64, preset="demo")
    assert parse_message(encode_message(hello)) == hello and hello.preset == "demo"
    # a runner that does not send `preset` (older, or a third-party one) parses to None
    data = hello.to_data()
    del data["preset"]
    older = parse_message(json.dumps({"type": "hello", "data": data}))
    assert isinstance(older, Hello) and older.preset is None and older.height == 64


# --- parse_command: every refusal code --------------------------------------------------------------
def _code(text: str | bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[str, str | None, str | None]:
    with pytest.raises(ProtocolError) as e:
        parse_command(text, limits=limits)
    return e.value.code, e.value.command, e.value.id


def sp(prompt: object = "a cat", timestamp: object = 0, **extra: object) -> str:
    return json.dumps(
        {"type": "schedule_prompt", "data": {"new_prompt": prompt, "timestamp": timestamp}, **extra}
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", ("bad_json", None, None)),
        ("", ("bad_json", None, None)),
        (b"\xff\xfe", ("bad_json", None, None)),
        ('{"type":"start","data":{"seed":NaN}}', ("bad_json", None, None)),
        ("[" * 5000 + "]" * 5000, ("bad_json", None, None)),
        ("[]", ("not_an_object", None, None)),
        ('"start"', ("not_an_object", None, None)),
        ("null", ("not_an_object", None, None)),
        ('{"data":{},"id":"a"}', ("missing_field", None, "a")),
        ('{"type":5,"id":"a"}', ("bad_field", None, "a")),
        ('{"type":"start","id":5}', ("bad_field", "start", None)),
        ('{"type":"start","id":""}', ("bad_field", "start", None)),
        (json.dumps({"type": "start", "id": "x" * 129}), ("bad_field", "start", None)),
        ('{"type":"start","data":[],"id":"a"}', ("bad_field", "start", "a")),
        ('{"type":"progress","data":{},"id":"a"}', ("unknown_type", "progress", "a")),
        ('{"type":"play","id":"a"}', ("unknown_type", "play", "a")),
        (
            '{"type":"schedule_prompt","data":{"timestamp":0},"id":"a"}',
            ("missing_field", "schedule_prompt", "a"),
        ),
        (
            '{"type":"schedule_prompt","data":{"new_prompt":"x"},"id":"a"}',
            ("missing_field", "schedule_prompt", "a"),
        ),
        ('{"type":"remove_prompt","id":"a"}', ("missing_field", "remove_prompt", "a")),
        (sp(timestamp="3", id="a"), ("bad_field", "schedule_prompt", "a")),
        (sp(timestamp=3.0, id="a"), ("bad_field", "schedule_prompt", "a")),
        (sp(timestamp=True, id="a"), ("bad_field", "schedule_prompt", "a")),
        (sp(timestamp=None, id="a"), ("bad_field", "schedule_prompt", "a")),
        (sp(prompt=5, id="a"), ("bad_field", "schedule_prompt", "a")),
        (sp(prompt=["a"], id="a"), ("bad_field", "schedule_prompt", "a")),
        (
            '{"type":"schedule_prompt","data":{"new_prompt":"\\ud800","timestamp":0},"id":"a"}',
            ("bad_field", "schedule_prompt", "a"),
        ),
        (sp(timestamp=-1, id="a"), ("bad_timestamp", "schedule_prompt", "a")),
        (sp(timestamp=DEFAULT_LIMITS.max_frames + 1, id="a"), ("bad_timestamp", "schedule_prompt", "a")),
        (sp(timestamp=10**30, id="a"), ("bad_timestamp", "schedule_prompt", "a")),
        ('{"type":"remove_prompt","data":{"timestamp":-3}}', ("bad_timestamp", "remove_prompt", None)),
        (sp(prompt="", id="a"), ("empty_prompt", "schedule_prompt", "a")),
        (sp(prompt=" \n\t ", id="a"), ("empty_prompt", "schedule_prompt", "a")),
        (sp(prompt="x" * 2001, id="a"), ("prompt_too_long", "schedule_prompt", "a")),
        ('{"type":"start","data":{"seed":-1},"id":"a"}', ("bad_field", "start", "a")),
        (
            json.dumps({"type": "start", "data": {"seed": MAX_SEED + 1}, "id": "a"}),
            ("bad_field", "start", "a"),
        ),
        ('{"type":"start","data":{"seed":"7"},"id":"a"}', ("bad_field", "start", "a")),
        ('{"type":"start","data":{"seed":false},"id":"a"}', ("bad_field", "start", "a")),
    ],
)
def test_parse_command_refusal_codes(text: str | bytes, expected: tuple[str, str | None, str | None]) -> None:
    assert _code(text) == expected


def test_every_refusal_code_is_documented() -> None:
    doc = open(__file__.replace("tests/test_protocol.py", "docs/protocol.md"), encoding="utf-8").read()
    for code in ErrorCode.all():
        assert f"`{code}`" in doc, code


def test_limits_boundaries_are_inclusive() -> None:
    last = DEFAULT_LIMITS.max_frames
    assert parse_command(sp(timestamp=last)) == SchedulePrompt("a cat", last)
    assert parse_command(sp(prompt="x" * 2000)).new_prompt == "x" * 2000
    assert parse_command(json.dumps({"type": "start", "data": {"seed": MAX_SEED}})) == Start(seed=MAX_SEED)
    limits = Limits(max_frames=30, max_prompt_chars=5)
    assert _code(sp(timestamp=31), limits)[0] == "bad_timestamp"
    assert _code(sp(prompt="abcdef"), limits)[0] == "prompt_too_long"
    # prompt length counts characters, not bytes
    assert parse_command(sp(prompt="é" * 5), limits=limits).new_prompt == "é" * 5


def test_message_size_limit_counts_utf8_bytes() -> None:
    limits = Limits(max_message_bytes=200)
    base = sp(prompt="")  # the rest of the message
    fits = sp(prompt="x" * (200 - len(base)))
    assert len(fits.encode()) == 200
    assert parse_command(fits, limits=limits).new_prompt.startswith("x")
    assert _code(sp(prompt="x" * (201 - len(base))), limits)[0] == "message_too_large"
    # 60 characters of 4-byte emoji are 240 bytes: over the limit although 60 + len(base) < 200
    emoji = json.dumps(
        {"type": "schedule_prompt", "data": {"new_prompt": "🦊" * 60, "timestamp": 0}}, ensure_ascii=False
    )
    assert len(emoji) < 200 < len(emoji.encode())
    assert _code(emoji, limits)[0] == "message_too_large"
    assert _code(emoji.encode(), limits)[0] == "message_too_large"
    assert _code("x" * 70000)[0] == "message_too_large"


def test_parse_command_accepts_missing_or_null_data_and_ignores_unknown_keys() -> None:
    assert parse_command('{"type":"reset"}') == Reset()
    assert parse_command('{"type":"pause","data":null,"id":"q"}') == Pause(id="q")
    assert parse_command('{"type":"start","data":{"seed":null,"extra":1},"more":2}') == Start()
    assert parse_command(b'{"type":"get_state","id":"b"}') == GetState(id="b")


def test_validate_command_checks_commands_built_in_code() -> None:
    with pytest.raises(ProtocolError) as e:
        validate_command(SchedulePrompt("a", "3", id="i"))  # type: ignore[arg-type]
    assert (e.value.code, e.value.id) == ("bad_field", "i")
    with pytest.raises(ProtocolError) as e:
        validate_command(RemovePrompt(True))  # type: ignore[arg-type]
    assert e.value.code == "bad_field"
    with pytest.raises(ProtocolError) as e:
        validate_command(SchedulePrompt("a", DEFAULT_LIMITS.max_frames + 1))
    assert e.value.code == "bad_timestamp"
    validate_command(SchedulePrompt("a", 3))


# --- errors ----------------------------------------------------------------------------------------
def test_exception_hierarchy() -> None:
    assert issubclass(ProtocolError, LongliveError)
    assert issubclass(CommandError, LongliveError)
    assert issubclass(ConnectionClosedError, LongliveError)
    assert issubclass(InvalidStateError, LongliveError)
    timeout = CommandTimeoutError("start", 2.5, id="9")
    assert isinstance(timeout, TimeoutError) and isinstance(timeout, LongliveError)
    assert "2.5" in str(timeout)
    closed = ConnectionClosedError(1009, "message too big")
    assert (closed.code, closed.reason) == (1009, "message too big")
    err = ProtocolError("bad_json", "nope", command="start", id="3")
    assert str(err) == "[bad_json] nope"
    again = pickle.loads(pickle.dumps(err))
    assert (again.code, again.reason, again.command, again.id) == ("bad_json", "nope", "start", "3")


# --- binary frames ---------------------------------------------------------------------------------
def _rgb(h: int = 4, w: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_frame_round_trip_and_byte_layout() -> None:
    rgb = _rgb()
    header = FrameHeader(
        video_frame=21,
        block_start_frame=6,
        index_in_block=0,
        frames_in_block=12,
        height=4,
        width=6,
        generation=3,
    )
    data = encode_frame(header, rgb)
    assert isinstance(data, bytes) and len(data) == FRAME_HEADER_SIZE + 4 * 6 * 3 == 28 + 72
    # the documented layout, byte by byte
    assert data[:4] == b"LLVF"
    assert data[4] == 1 and data[5] == 1
    assert struct.unpack_from("<H", data, 6) == (28,)
    assert struct.unpack_from("<IIIHHHH", data, 8) == (3, 21, 6, 0, 12, 4, 6)
    assert data[28:] == rgb.tobytes()
    got_header, pixels = decode_frame(data)
    assert got_header == header
    np.testing.assert_array_equal(pixels, rgb)
    assert pixels.shape == (4, 6, 3) and pixels.dtype == np.uint8
    assert not pixels.flags.writeable  # zero-copy view of bytes
    assert decode_frame(data, copy=True)[1].flags.writeable
    decode_frame(bytearray(data))
    decode_frame(memoryview(data))


def test_frame_encode_accepts_non_contiguous_arrays() -> None:
    big = _rgb(8, 12)
    view = big[::2, ::2]
    data = encode_frame(FrameHeader(0, 0, 0, 9, 4, 6), view)
    np.testing.assert_array_equal(decode_frame(data)[1], view)


def test_frame_decoder_skips_a_longer_header_of_a_later_revision() -> None:
    rgb = _rgb()
    data = bytearray(encode_frame(FrameHeader(1, 0, 1, 9, 4, 6), rgb))
    struct.pack_into("<H", data, 6, 32)
    data[28:28] = b"\x00" * 4
    header, pixels = decode_frame(bytes(data))
    assert header.video_frame == 1
    np.testing.assert_array_equal(pixels, rgb)


def _corrupt(offset: int, fmt: str, value: int) -> bytes:
    data = bytearray(encode_frame(FrameHeader(1, 0, 1, 9, 4, 6), _rgb()))
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"LLVF",
        b"XXXX" + encode_frame(FrameHeader(1, 0, 1, 9, 4, 6), _rgb())[4:],
        _corrupt(4, "<B", 2),  # version
        _corrupt(5, "<B", 2),  # pixel format
        _corrupt(6, "<H", 20),  # header size below the fixed header
        _corrupt(20, "<H", 9),  # index_in_block == frames_in_block
        _corrupt(24, "<H", 5),  # height: size no longer matches
        _corrupt(26, "<H", 0),  # empty image
        encode_frame(FrameHeader(1, 0, 1, 9, 4, 6), _rgb())[:-1],  # truncated
        encode_frame(FrameHeader(1, 0, 1, 9, 4, 6), _rgb()) + b"\x00",  # trailing byte
    ],
)
def test_frame_corruption_is_detected(data: bytes) -> None:
    with pytest.raises(ProtocolError) as e:
        decode_frame(data)
    assert e.value.code == ErrorCode.BAD_FRAME


@pytest.mark.parametrize(
    ("header", "rgb"),
    [
        (FrameHeader(0, 0, 0, 9, 4, 6), _rgb().astype(np.float32)),
        (FrameHeader(0, 0, 0, 9, 4, 6), _rgb()[..., :2]),
        (FrameHeader(0, 0, 0, 9, 5, 6), _rgb()),
        (FrameHeader(0, 0, 9, 9, 4, 6), _rgb()),
        (FrameHeader(-1, 0, 0, 9, 4, 6), _rgb()),
        (FrameHeader(2**32, 0, 0, 9, 4, 6), _rgb()),
        (FrameHeader(0, 0, 0, 9, 4, 6, pixel_format=2), _rgb()),
    ],
)
def test_frame_encoder_rejects_bad_input(header: FrameHeader, rgb: np.ndarray) -> None:
    with pytest.raises(ValueError):
        encode_frame(header, rgb)


def test_encode_block_frames() -> None:
    frames = np.stack([_rgb(seed=i) for i in range(12)])
    messages = list(encode_block_frames(frames, block_start_frame=3, first_video_frame=9, generation=2))
    assert len(messages) == 12
    for i, data in enumerate(messages):
        header, pixels = decode_frame(data)
        assert header == FrameHeader(9 + i, 3, i, 12, 4, 6, 2)
        np.testing.assert_array_equal(pixels, frames[i])


# --- units -----------------------------------------------------------------------------------------
def test_latent_to_video_frame() -> None:
    assert [latent_to_video_frame(f) for f in (0, 1, 2, 3, 6, 9, 1023)] == [0, 1, 5, 9, 21, 33, 4089]
    assert latent_to_video_frame(3, temporal_compression=2) == 5


def test_video_to_latent_frame_inverts_the_mapping() -> None:
    assert [video_to_latent_frame(v) for v in (0, 1, 4, 5, 8, 9, 20, 21)] == [0, 1, 1, 2, 2, 3, 5, 6]
    for f in range(200):
        first = latent_to_video_frame(f)
        assert video_to_latent_frame(first) == f
        # every video frame decoded from latent frame f maps back to f
        count = latent_to_video_frame(f + 1) - first
        assert all(video_to_latent_frame(first + k) == f for k in range(count))


def test_block_video_frames() -> None:
    assert block_video_frames(0) == 9
    assert all(block_video_frames(s) == 12 for s in range(3, 300, 3))
    assert sum(block_video_frames(s) for s in range(0, 1021, 3)) == latent_to_video_frame(1023)


def test_seconds() -> None:
    assert video_frame_to_seconds(9) == 0.5625
    assert seconds_to_video_frame(1.0) == 16
    assert seconds_to_video_frame(0.0624) == 0
    assert seconds_to_video_frame(0.0625) == 1
    assert seconds_to_video_frame(0.3, fps=10) == 3  # no float floor error
    assert all(seconds_to_video_frame(video_frame_to_seconds(v)) == v for v in range(5000))
    assert seconds_to_latent_frame(0.5625) == 3
    assert seconds_to_latent_frame(0.0) == 0
    with pytest.raises(ValueError):
        seconds_to_video_frame(-1.0)
    with pytest.raises(ValueError):
        seconds_to_video_frame(float("nan"))


def test_block_boundaries() -> None:
    assert [next_block_boundary(f) for f in (0, 1, 2, 3, 4, 6, 1022)] == [0, 3, 3, 3, 6, 6, 1023]
    assert [block_start(f) for f in (0, 2, 3, 5, 6)] == [0, 0, 3, 3, 6]
    assert next_block_boundary(5, frames_per_block=4) == 8


def test_units_reject_bad_values() -> None:
    with pytest.raises(ValueError):
        latent_to_video_frame(-1)
    with pytest.raises(TypeError):
        latent_to_video_frame(True)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        video_to_latent_frame(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        next_block_boundary(3, frames_per_block=0)


def test_encode_frame_into_writes_the_same_bytes_into_a_reused_buffer() -> None:
    from longlive.protocol import encode_frame_into

    rng = np.random.default_rng(0)
    buffer = bytearray()
    for h, w in ((4, 6), (4, 6), (8, 2)):  # same size reuses the buffer, another size resizes it
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        header = FrameHeader(7, 3, 1, 12, h, w, 2)
        view = encode_frame_into(header, rgb, buffer)
        assert bytes(view) == encode_frame(header, rgb)
        view.release()
    with pytest.raises(ValueError, match="index_in_block"):
        encode_frame_into(FrameHeader(0, 0, 3, 3, 4, 6), np.zeros((4, 6, 3), np.uint8), buffer)
    held = memoryview(buffer)  # a live view: the buffer cannot be resized
    with pytest.raises(BufferError):
        encode_frame_into(FrameHeader(0, 0, 0, 1, 2, 2), np.zeros((2, 2, 3), np.uint8), buffer)
    held.release()


def test_frontier_and_decided_frames() -> None:
    assert [frontier_frame(csf, busy) for csf, busy in ((0, False), (0, True), (9, False), (9, True))] == [
        0,
        3,
        9,
        12,
    ]
    assert [decided_frame(p, True) for p in (0, 3, 12)] == [0, 0, 9]
    assert decided_frame(12, False) == -1  # nothing is decided before start
    assert (
        frontier_frame(8, True, frames_per_block=4) == 12 and decided_frame(12, True, frames_per_block=4) == 8
    )
    with pytest.raises(ValueError):
        frontier_frame(-1, False)
    with pytest.raises(ValueError):
        decided_frame(3, True, frames_per_block=0)


def test_timeline_end_covers_the_next_blocks_and_the_last_prompt() -> None:
    assert timeline_end(0, 0) == 48  # 16 blocks at least
    assert timeline_end(60, 0) == 84  # 8 blocks past the next one
    assert timeline_end(0, 100) == 114  # 4 blocks past the last prompt, rounded up to a block (112 -> 114)
    assert timeline_end(60, 0, max_frames=70) == 70
    assert timeline_end(0, 0, frames_per_block=4) == 64


def test_each_field_is_read_by_its_declared_codec() -> None:
    from longlive.protocol.codecs import FRAME_MAP, INT, FieldError, optional, wire_fields

    assert [(f.name, f.required) for f in wire_fields(SchedulePrompt)] == [
        ("new_prompt", True),
        ("timestamp", True),
    ]
    assert "raw" not in {f.name for f in wire_fields(longlive.protocol.ScheduledPrompt)}  # not a wire field
    assert INT.decode(3) == 3 and optional(INT).decode(None) is None
    for bad in (True, 1.0, "1"):
        with pytest.raises(FieldError):
            INT.decode(bad)
    assert FRAME_MAP.encode({9: "b", 0: "a"}) == {"0": "a", "9": "b"}
    assert FRAME_MAP.decode({"0": "a"}) == {0: "a"}
    with pytest.raises(ProtocolError, match=r"data.timestamp must be an integer, got bool"):
        parse_command('{"type": "remove_prompt", "data": {"timestamp": true}}')
    with pytest.raises(ProtocolError, match=r"data.seed must be an integer or null, got str"):
        parse_command('{"type": "start", "data": {"seed": "1"}}')


def test_a_checked_frame_encodes_without_a_second_check() -> None:
    from longlive.protocol import check_frame

    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    header = FrameHeader(5, 3, 0, 12, 2, 3, generation=1)
    check_frame(header, rgb)
    assert encode_frame(header, rgb, check=False) == encode_frame(header, rgb)
    with pytest.raises(ValueError):
        check_frame(FrameHeader(5, 3, 12, 12, 2, 3), rgb)  # index_in_block >= frames_in_block
