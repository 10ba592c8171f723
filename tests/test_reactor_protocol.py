"""The Reactor front's I/O-free pieces (serving/reactor/): the v1 protobuf codecs, the v0 JSON
framing and the sniffing rule, the hosted model's vocabulary over our session, the OpenAPI
document and the signalling state machine. No WebRTC here (tests/test_reactor_e2e.py has it)."""

from __future__ import annotations

import json

import pytest
from google.protobuf import struct_pb2

from longlive.errors import ErrorCode
from longlive.protocol import DEFAULT_LIMITS, Ack, CommandErrorMessage, State, encode_message
from longlive_runner.serving.reactor import framing, wire
from longlive_runner.serving.reactor.framing import Codec, Command, Framing, FramingError, Platform, TrackVerb
from longlive_runner.serving.reactor.schema import command_capabilities, openapi_document
from longlive_runner.serving.reactor.signalling import (
    ConnState,
    IceServer,
    Signalling,
    SignallingError,
    SignallingLimits,
)
from longlive_runner.serving.reactor.vocabulary import Broadcast, Refusal, Reply, Translator, state_data
from longlive_runner.serving.session import Session

SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"


# --- wire (v1 protobuf) -------------------------------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_data_client_message_field_numbers_are_the_published_ones() -> None:
    # DataClientMessage{request_id=1, kind=2, command=10}; Command{type=1, data=2 (Struct)}
    data = struct_pb2.Struct()
    data.update({"new_prompt": "a red circle", "timestamp": 3})
    command = _field(1, b"schedule_prompt") + _field(2, data.SerializeToString())
    raw = _field(1, b"data_7") + _varint(2 << 3) + _varint(1) + _field(10, command)
    req = wire.decode_data_client(raw)
    assert req.request_id == "data_7"
    assert req.kind is wire.MessageKind.REQUEST
    assert req.command == "schedule_prompt"
    assert req.data == {"new_prompt": "a red circle", "timestamp": 3}  # 3.0 -> 3
    assert isinstance(req.data["timestamp"], int)


def test_data_server_message_round_trip_and_layout() -> None:
    raw = wire.encode_data_server(
        request_id="data_1", kind=wire.MessageKind.RESPONSE, message=("state", {"paused": False, "x": None})
    )
    assert raw.startswith(_field(1, b"data_1") + _varint(2 << 3) + _varint(2))
    assert wire.decode_data_server(raw) == {
        "request_id": "data_1",
        "kind": wire.MessageKind.RESPONSE,
        "type": "state",
        "data": {"paused": False, "x": None},
    }
    err = wire.decode_data_server(
        wire.encode_data_server(request_id="d", kind=wire.MessageKind.RESPONSE, error=("not_paused", "why"))
    )
    assert err["error"] == ("not_paused", "why")
    # an ack: a RESPONSE without payload
    ack = wire.decode_data_server(wire.encode_data_server(request_id="d", kind=wire.MessageKind.RESPONSE))
    assert "type" not in ack and "error" not in ack
    # ModelMessage is field 10 and Error field 40 of DataServerMessage
    assert b"\x52" in raw  # tag of field 10, wire type 2
    assert wire.encode_data_server(kind=wire.MessageKind.RESPONSE, error=("a", "b"))[2:4] == b"\xc2\x02"


def test_control_messages() -> None:
    raw = wire.encode_control_client(payload="resume_track", track="main_video")
    assert raw == _varint(2 << 3) + _varint(3) + _field(17, _field(1, b"main_video"))
    assert wire.decode_control_client(raw).payload == "resume_track"
    assert wire.decode_control_client(wire.encode_control_client(payload="ping")).payload == "ping"
    schema = wire.decode_control_server(
        wire.encode_control_server(
            request_id="c1", kind=wire.MessageKind.RESPONSE, model_schema={"openapi": "3.1.0"}
        )
    )
    assert schema["payload"] == "model_schema" and schema["openapi"] == {"openapi": "3.1.0"}
    ended = wire.decode_control_server(
        wire.encode_control_server(kind=wire.MessageKind.NOTIFICATION, session_ended="bye")
    )
    assert ended["payload"] == "session_ended" and ended["reason"] == "bye"
    with pytest.raises(ValueError):
        wire.encode_control_server(kind=wire.MessageKind.RESPONSE, session_ended="a", publish_track="b")


@pytest.mark.parametrize("junk", [b"\xff\xff\xff", b"\x0a\x99", bytes(range(256)), b"\x52\x05abc"])
def test_junk_binary_is_a_wire_error(junk: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.decode_data_client(junk)


def test_deep_struct_is_refused() -> None:
    deep: dict[str, object] = {}
    cur = deep
    for _ in range(40):
        nxt: dict[str, object] = {}
        cur["a"] = nxt
        cur = nxt
    raw = wire.encode_data_client(request_id="x", command="start", data=deep)
    with pytest.raises(wire.WireError):
        wire.decode_data_client(raw)


def test_normalize_numbers() -> None:
    assert wire.normalize_numbers({"a": 3.0, "b": [1.0, 2.5], "c": True, "d": float("inf")}) == {
        "a": 3,
        "b": [1, 2.5],
        "c": True,
        "d": float("inf"),
    }


# --- framing (v0 JSON, the sniffing rule) ---------------------------------------------------------
def test_sniff() -> None:
    assert framing.sniff('{"scope":"application"}') is Framing.V0
    assert framing.sniff(b"\x08\x01") is Framing.V1


def test_v0_commands_and_runtime_messages() -> None:
    codec = Codec()
    cmd = codec.decode("data", json.dumps({"scope": "application", "data": {"type": "start", "data": {}}}))
    assert codec.framing is Framing.V0
    assert cmd == Command("start", {}, None)
    assert codec.decode(
        "data", '{"type":"schedule_prompt","data":{"new_prompt":"x","timestamp":3.0}}'
    ) == Command("schedule_prompt", {"new_prompt": "x", "timestamp": 3})
    assert codec.decode("data", '{"scope":"runtime","data":{"type":"requestSchema","data":{}}}') == Platform(
        "request_schema"
    )
    verb = codec.decode(
        "control", '{"type":"notification","event":"resume_track","data":{"name":"main_video"}}'
    )
    assert verb == TrackVerb("resume_track", "main_video")
    with pytest.raises(FramingError):
        codec.decode("data", b"\x08\x01")  # binary on a v0 connection
    for bad in ("[]", "not json", '{"scope":"weird","data":{}}', '{"data":{"type":3}}', "NaN"):
        with pytest.raises(FramingError):
            codec.decode("data", bad)


def test_v0_replies() -> None:
    codec = Codec(Framing.V0)
    assert codec.encode_reply(None, None, {}) is None  # fire-and-forget
    label, text = codec.encode_refusal(None, "resume", "not_paused", "the video is not paused")
    assert label == "data"
    assert json.loads(text) == {
        "scope": "application",
        "data": {
            "type": "command_error",
            "data": {"command": "resume", "reason": "the video is not paused", "code": "not_paused"},
        },
    }
    label, text = codec.encode_message("progress", {"current_start_frame": 3})
    assert json.loads(text)["data"] == {"type": "progress", "data": {"current_start_frame": 3}}
    label, text = codec.encode_schema(None, {"openapi": "3.1.0"})
    assert json.loads(text) == {
        "scope": "runtime",
        "data": {"type": "modelSchema", "data": {"openapi": "3.1.0"}},
    }


def test_v1_codec() -> None:
    codec = Codec()
    raw = wire.encode_data_client(request_id="data_1", command="pause", data={})
    assert codec.decode("data", raw) == Command("pause", {}, "data_1")
    assert codec.framing is Framing.V1
    with pytest.raises(FramingError):
        codec.decode("data", '{"type":"start"}')  # text on a v1 connection
    assert codec.decode(
        "control", wire.encode_control_client(payload="pause_track", track="main_video")
    ) == TrackVerb("pause_track", "main_video")
    label, raw_err = codec.encode_refusal("data_1", "pause", "not_running", "idle")
    assert label == "data" and wire.decode_data_server(bytes(raw_err))["error"] == ("not_running", "idle")
    label, raw_schema = codec.encode_schema("c1", {"openapi": "3.1.0"})
    assert label == "control"


def test_message_size_bound() -> None:
    codec = Codec(max_message_bytes=100)
    with pytest.raises(FramingError, match="limit"):
        codec.decode("data", "x" * 101)
    assert codec.framing is None  # an oversized first message picks nothing


# --- vocabulary -----------------------------------------------------------------------------------
def _session() -> Session:
    return Session(height=64, width=64)


def test_commands_go_through_our_session_and_back() -> None:
    s = _session()
    tr = Translator()
    out = []
    for cmd in (
        Command("schedule_prompt", {"new_prompt": "a red circle", "timestamp": 0}, "data_1"),
        Command("start", {"seed": 7}, "data_2"),
        Command("resume", {}, "data_3"),
        Command("get_state", {}, "data_4"),
    ):
        for msg in s.handle_text(tr.command_text(cmd)):
            out.extend(tr.translate(encode_message(msg)))
    replies = [o for o in out if isinstance(o, (Reply, Refusal))]
    assert [r.request_id for r in replies] == ["data_1", "data_2", "data_3", "data_4"]
    assert isinstance(replies[2], Refusal) and replies[2].code == ErrorCode.NOT_PAUSED
    state = replies[3]
    assert isinstance(state, Reply) and state.type == "state"
    assert state.data["current_frame"] == 0 and state.data["paused"] is False
    assert state.data["scheduled_prompts"] == {"0": "a red circle"}
    assert state.data["seed"] == 7
    assert any(isinstance(o, Broadcast) and o.type == "state" for o in out)
    assert tr.pending == 0


def test_refusals_keep_our_error_codes() -> None:
    s = _session()
    tr = Translator()
    cases = {
        "start": (Command("start", {}, "a"), ErrorCode.NO_INITIAL_PROMPT),
        "bad timestamp": (
            Command("schedule_prompt", {"new_prompt": "x", "timestamp": 1.5}, "b"),
            ErrorCode.BAD_FIELD,
        ),
        "missing": (Command("schedule_prompt", {"timestamp": 0}, "c"), ErrorCode.MISSING_FIELD),
    }
    for cmd, code in cases.values():
        (msg,) = s.handle_text(tr.command_text(cmd))
        (refusal,) = tr.translate(encode_message(msg))
        assert isinstance(refusal, Refusal) and refusal.code == code and refusal.request_id == cmd.request_id
    with pytest.raises(Exception) as info:
        tr.command_text(Command("set_shot", {}, "d"))
    assert getattr(info.value, "code", None) == ErrorCode.UNKNOWN_TYPE


def test_outgoing_messages_in_the_hosted_shape() -> None:
    tr = Translator()
    state = State(
        generation=0,
        running=True,
        paused=False,
        current_start_frame=6,
        video_frame=21,
        current_prompt="p",
        scheduled_prompts={0: "p"},
    )
    (b,) = tr.translate_message(state)
    assert isinstance(b, Broadcast) and b.type == "state"
    assert {k: b.data[k] for k in ("current_frame", "current_prompt", "paused", "scheduled_prompts")} == {
        "current_frame": 6,
        "current_prompt": "p",
        "paused": False,
        "scheduled_prompts": {"0": "p"},
    }
    assert state_data(state)["running"] is True
    # an ack or refusal that is not ours is not a reply to anything
    assert tr.translate_message(Ack(command="start", id="zz")) == []
    (r,) = tr.translate_message(CommandErrorMessage(command=None, code="bad_json", reason="x"))
    assert isinstance(r, Refusal) and r.request_id is None


def test_schema_documents_every_command() -> None:
    doc = openapi_document(DEFAULT_LIMITS)
    assert doc["openapi"].startswith("3.")
    names = {c["name"] for c in command_capabilities(DEFAULT_LIMITS)}
    assert {p.rsplit("/", 1)[1] for p in doc["paths"]} == names
    assert {"schedule_prompt", "start", "reset", "pause", "resume", "remove_prompt", "get_state"} == names
    body = doc["paths"]["/commands/schedule_prompt"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["required"] == ["new_prompt", "timestamp"]
    json.dumps(doc)  # JSON-ready (it travels in a Struct)


# --- signalling -----------------------------------------------------------------------------------
def _offer(**extra: object) -> dict[str, object]:
    return {
        "sdp_offer": SDP,
        "track_mapping": [{"mid": "0", "name": "main_video", "kind": "video", "direction": "recvonly"}],
        **extra,
    }


def test_session_and_connection_lifecycle() -> None:
    sig = Signalling(session_id="s1")
    with pytest.raises(SignallingError) as e:
        sig.check_session("s1")
    assert e.value.status == 400  # not started
    sig.start_session()
    sig.check_session("s1")
    with pytest.raises(SignallingError) as e:
        sig.check_session("other")
    assert e.value.status == 404
    d = sig.descriptor(model="longlive", fps=16, commands=[], server_version="1")
    assert d["capabilities"]["tracks"] == [{"name": "main_video", "kind": "video", "direction": "recvonly"}]
    assert d["selected_transport"] == {"protocol": "webrtc", "version": "1.0"} and d["state"] == "ACTIVE"
    cid = sig.register()
    assert cid == 1001
    offer = sig.offer(cid, _offer(), reoffer=False)
    assert offer.tracks[0].mid == "0" and offer.epoch == 1
    assert sig.take_answer(cid) is None  # 202
    assert sig.answered(cid, 1, "v=0 answer")
    assert sig.take_answer(cid) == {"sdp_answer": "v=0 answer", "connection_id": cid}
    assert sig.state(cid) is ConnState.CONNECTED
    with pytest.raises(SignallingError) as e:
        sig.offer(cid, _offer(), reoffer=False)
    assert e.value.status == 409
    again = sig.offer(cid, _offer(), reoffer=True)  # PUT: a reconnect
    assert again.epoch == 2 and not sig.answered(cid, 1, "stale")
    sig.failed(cid, 2, "bad sdp")
    with pytest.raises(SignallingError) as e:
        sig.take_answer(cid)
    assert e.value.status == 409
    sig.closed(cid, 2)  # the peer connection ended: the id stays, for a reconnect
    assert sig.state(cid) is ConnState.REGISTERED
    with pytest.raises(SignallingError) as e:
        sig.take_answer(cid)
    assert e.value.status == 409
    assert sig.offer(cid, _offer(), reoffer=True).epoch == 3
    with pytest.raises(SignallingError) as e:
        sig.take_answer(4242)
    assert e.value.status == 404


def test_flat_route() -> None:
    sig = Signalling()
    sig.start_session()
    offer = sig.offer(None, _offer(), reoffer=False)
    assert offer.flat
    with pytest.raises(SignallingError) as e:
        sig.offer(None, _offer(), reoffer=False)
    assert e.value.status == 409  # the first one's answer is not taken yet
    sig.answered(offer.connection_id, offer.epoch, "v=0 a")
    assert sig.take_answer(None) == {"sdp_answer": "v=0 a", "connection_id": offer.connection_id}
    assert sig.offer(None, _offer(), reoffer=False).connection_id != offer.connection_id


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ([], 400),
        ({}, 400),
        ({"sdp_offer": ""}, 400),
        ({"sdp_offer": "hello"}, 400),
        ({"sdp_offer": "v=0" + "x" * 70_000}, 413),
        ({"sdp_offer": SDP, "track_mapping": "x"}, 400),
        ({"sdp_offer": SDP, "track_mapping": [{"mid": 1}]}, 400),
        (
            {
                "sdp_offer": SDP,
                "track_mapping": [{"mid": "0", "name": "v", "kind": "video", "direction": "x"}] * 9,
            },
            400,
        ),
    ],
)
def test_bad_offers(body: object, status: int) -> None:
    sig = Signalling()
    sig.start_session()
    cid = sig.register()
    with pytest.raises(SignallingError) as e:
        sig.offer(cid, body, reoffer=False)
    assert e.value.status == status
    assert sig.state(cid) is ConnState.REGISTERED


def test_bounds() -> None:
    sig = Signalling(
        limits=SignallingLimits(max_connections=2, max_pending_registrations=3, max_candidates=4)
    )
    sig.start_session()
    ids = [sig.register() for _ in range(10)]
    assert sig.state(ids[0]) is None and sig.state(ids[-1]) is ConnState.REGISTERED  # oldest forgotten
    sig.offer(ids[-1], _offer(), reoffer=False)
    sig.offer(ids[-2], _offer(), reoffer=False)
    with pytest.raises(SignallingError) as e:
        sig.offer(ids[-3], _offer(), reoffer=False)
    assert e.value.status == 503
    cand = {"candidate": "candidate:1 1 udp 1 10.0.0.1 5000 typ host", "sdp_mid": "0", "sdp_mline_index": 0.0}
    got, final, early = sig.candidates(ids[-1], {"candidates": [cand] * 3, "is_final": False})
    assert len(got) == 3 and got[0].sdp_mline_index == 0 and not final and not early
    with pytest.raises(SignallingError) as e:
        sig.candidates(ids[-1], {"candidates": [cand] * 2})
    assert e.value.status == 429
    for bad in (
        {"candidates": "x"},
        {"candidates": [{"candidate": 3}]},
        {"candidates": [{**cand, "sdp_mline_index": -1}]},
        {"candidates": [{"candidate": "c" * 600}]},
    ):
        with pytest.raises(SignallingError):
            sig.candidates(ids[-2], bad)
    with pytest.raises(SignallingError) as e:
        sig.candidates(999_999, {"candidates": []})
    assert e.value.status == 404


def test_early_candidates_are_kept_for_the_offer() -> None:
    sig = Signalling()
    sig.start_session()
    cid = sig.register()
    cand = {"candidate": "candidate:1 1 udp 1 10.0.0.1 5000 typ host", "sdp_mid": "0"}
    _, _, early = sig.candidates(cid, {"candidates": [cand]})
    assert early
    sig.offer(cid, _offer(), reoffer=False)
    assert [c.candidate for c in sig.take_early_candidates(cid)] == [cand["candidate"]]
    assert sig.take_early_candidates(cid) == []


def test_ice_server_specs() -> None:
    assert IceServer.parse("stun:stun.example.org:3478").to_wire() == {"uris": ["stun:stun.example.org:3478"]}
    turn = IceServer.parse("turn:alice:s3cret@turn.example.org:3478?transport=udp")
    assert turn.to_wire() == {
        "uris": ["turn:turn.example.org:3478?transport=udp"],
        "credentials": {"username": "alice", "password": "s3cret"},
    }
    for bad in ("", "http://x", "turn:@host", "stun:"):
        with pytest.raises(ValueError):
            IceServer.parse(bad)
    assert Signalling().ice_servers_payload() == {"ice_servers": []}  # no STUN unless configured
