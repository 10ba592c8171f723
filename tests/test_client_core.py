"""The client's I/O-free core (`longlive._core.ClientCore`), driven with plain calls: no asyncio,
no socket. What `Reactor` builds its replies, state mirror and waits on."""

from __future__ import annotations

import numpy as np
import pytest

from longlive._core import ALL_TYPES, ClientCore, ConnectionCore
from longlive._types import Frame
from longlive.errors import CommandError, ConnectionClosedError, InvalidStateError, ProtocolError
from longlive.protocol import (
    Ack,
    CommandErrorMessage,
    FrameHeader,
    FramesDropped,
    Progress,
    Queued,
    State,
    encode_message,
)
from longlive.protocol.runner import hello_for


def state(csf: int = 0, generation: int = 0, finished: str | None = None, running: bool = True) -> str:
    return encode_message(
        State(generation, running, False, csf, 0 if csf == 0 else 1 + 4 * (csf - 1), finished=finished)
    )


def greeted(core: ClientCore) -> ConnectionCore:
    conn = ConnectionCore()
    core.receive_text(conn, encode_message(hello_for(height=2, width=3)))
    assert not conn.ready
    core.receive_text(conn, state())
    assert conn.ready
    return conn


def frame(generation: int, video_frame: int = 0) -> tuple[FrameHeader, np.ndarray]:
    return FrameHeader(video_frame, 0, 0, 9, 2, 3, generation), np.zeros((2, 3, 3), np.uint8)


def test_a_state_changing_command_returns_with_the_state_after_its_ack() -> None:
    core = ClientCore()
    conn = greeted(core)
    reply = core.start_request(conn, "start")
    assert reply.id == "c1" and core.waiting(conn)
    core.receive_text(conn, encode_message(Ack("start", {"generation": 0, "seed": 7}, reply.id)))
    assert not reply.done() and reply.ack == {"generation": 0, "seed": 7}  # acked, the state not yet
    core.receive_text(conn, state(0))
    assert reply.done() and reply.result() == {"generation": 0, "seed": 7}
    core.end_request(conn, reply)
    assert not core.waiting(conn)
    # get_state's ack carries the state: no state broadcast follows, it resolves at once
    ask = core.start_request(conn, "get_state")
    assert ask.id == "c2"
    core.receive_text(conn, encode_message(Ack("get_state", {"generation": 0}, ask.id)))
    assert ask.result() == {"generation": 0}


def test_a_refusal_fails_the_request_and_a_reply_to_no_one_is_ignored() -> None:
    core = ClientCore()
    conn = greeted(core)
    reply = core.start_request(conn, "pause")
    core.receive_text(conn, encode_message(CommandErrorMessage("pause", "not_running", "no video", "c99")))
    assert not reply.done()
    core.receive_text(conn, encode_message(CommandErrorMessage("pause", "not_running", "no video", reply.id)))
    with pytest.raises(CommandError) as refused:
        reply.result()
    assert refused.value.code == "not_running"


def test_a_closed_connection_fails_its_requests_but_returns_what_was_acked() -> None:
    core = ClientCore()
    conn = greeted(core)
    acked, waiting = core.start_request(conn, "reset"), core.start_request(conn, "pause")
    core.receive_text(conn, encode_message(Ack("reset", {"generation": 1}, acked.id)))
    core.connection_closed(conn, ConnectionClosedError(1006, "gone"))
    assert acked.result() == {"generation": 1}  # applied: only the state after it was missed
    with pytest.raises(ConnectionClosedError):
        waiting.result()
    assert not conn.pending


def test_a_reset_makes_older_frames_stale_and_ends_the_waits_for_the_old_video() -> None:
    purged: list[bool] = []
    buffered = [Frame.from_header(*frame(0), 16)]

    def purge(drop: object) -> int:
        dropped = [f for f in buffered if drop(f)]  # type: ignore[operator]
        purged.append(bool(dropped))
        return len(dropped)

    core = ClientCore(purge=purge)
    conn = greeted(core)
    assert core.receive_frame(*frame(0)) is not None and core.frames_received == 1
    at_30 = core.wait_for_frame(30)
    reply = core.start_request(conn, "reset")
    core.receive_text(conn, encode_message(Ack("reset", {"generation": 1}, reply.id)))
    assert core.generation == 1 and purged == [True] and core.frames_stale == 1
    with pytest.raises(InvalidStateError, match="reset"):
        at_30.result()
    assert core.receive_frame(*frame(0)) is None and core.frames_stale == 2  # an old frame, late
    core.receive_text(conn, encode_message(Progress(3, 9, generation=0)))  # old progress: ignored
    assert core.current_start_frame == 0


def test_frame_waits_resolve_on_progress_and_fail_when_the_video_ends() -> None:
    core = ClientCore()
    conn = greeted(core)
    at_3, at_9 = core.wait_for_frame(3), core.wait_for_frame(9)
    core.receive_text(conn, encode_message(Progress(3, 9)))
    assert at_3.result() == 3 and not at_9.done()
    core.receive_text(conn, state(6, finished="max_frames", running=False))
    with pytest.raises(InvalidStateError, match="ended"):
        at_9.result()
    assert core.frame_waiters == []


def test_message_waits_match_type_and_predicate_and_can_be_given_up() -> None:
    core = ClientCore()
    conn = greeted(core)
    big = core.wait_for_message("progress", lambda m: m.current_start_frame >= 6)
    anything = core.wait_for_message(ALL_TYPES)
    broken = core.wait_for_message("progress", lambda m: 1 / 0 > 0)
    given_up = core.wait_for_message("state")
    core.stop_waiting(given_up)
    core.receive_text(conn, encode_message(Progress(3, 9)))
    assert not big.done() and isinstance(anything.result(), Progress)
    assert isinstance(broken.error, ZeroDivisionError)
    core.receive_text(conn, encode_message(Progress(6, 21)))
    assert big.result().current_start_frame == 6  # type: ignore[attr-defined]
    assert core.message_waiters == []  # all answered; the one given up was forgotten at once
    late = core.wait_for_message("state")
    core.fail_waits(ConnectionClosedError(1001, "going away"))
    with pytest.raises(ConnectionClosedError):
        late.result()


def test_the_queue_and_the_first_state_of_a_connection() -> None:
    core = ClientCore()
    conn = ConnectionCore()
    core.receive_text(conn, encode_message(Queued(2, 5)))
    assert conn.queued and conn.queue_changed and (core.queue_position, core.queue_length) == (2, 5)
    conn.queue_changed = False
    core.receive_text(conn, encode_message(hello_for(height=2, width=3)))
    assert conn.queue_changed and core.queue_position is None  # out of the queue
    core.generation = 4  # what an earlier connection saw
    core.receive_text(conn, state(0, generation=2))
    assert core.generation == 2 and core.state is not None  # a new connection: the runner's view wins
    core.receive_text(conn, state(3, generation=1))  # then an older generation is ignored
    assert core.current_start_frame == 0
    core.receive_text(conn, encode_message(FramesDropped(3, 3)))
    assert core.frames_dropped_by_runner == 3
    with pytest.raises(ProtocolError):
        core.receive_text(conn, "not json")
