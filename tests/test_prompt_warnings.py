"""Prompts the model cannot read are named, never silent: the `unknown_words` warning.

Through the tokenizer, the protocol (a hub on the demo model: the `schedule_prompt` ack), and the
SDK (`ScheduledPrompt.warnings`, logged as a warning). The CLI's line is in tests/test_cli.py and
the page's in tests/test_live_page.py.
"""

from __future__ import annotations

import json
import logging

import pytest

from longlive import Reactor
from longlive_runner import load_pipeline
from longlive_runner.model.tokenizer import prompt_warnings
from longlive_runner.serving.hub import Runner

GOOD = "a red circle moving right on a black background"


@pytest.fixture(scope="module")
def demo_pipe():
    return load_pipeline("demo", device="cpu")


def test_the_tokenizers_name_the_words_they_cannot_read(demo_pipe, tiny_pipe) -> None:
    demo = demo_pipe.text_encoder.tokenizer
    assert demo.unknown_words("a purple elephant") == ["purple", "elephant"]
    assert demo.unknown_words(GOOD) == [] and demo.unknown_words(GOOD.upper()) == []  # lower-cased
    assert demo.unknown_words("a red red fox, a red fox") == ["fox,", "fox"]  # once each, as written
    # Any tokenizer: a piece that maps to <unk> names its whole word (the tiny preset's is
    # SentencePiece-like, with pieces for ASCII only).
    tiny = tiny_pipe.text_encoder.tokenizer
    assert tiny.unknown_words("a purple elephant") == []
    assert tiny.unknown_words("un café à Paris") == ["café", "à"]
    assert prompt_warnings(demo, GOOD) == []
    [(code, message)] = prompt_warnings(demo, "a purple circle", hint="HINT")
    assert code == "unknown_words" and "'purple'" in message and message.endswith("; HINT")


async def test_the_ack_names_the_unknown_words(demo_pipe) -> None:
    async with Runner(demo_pipe) as runner:
        conn = runner.connect_local()
        assert json.loads(await conn.recv())["type"] == "hello"
        await conn.send_text(
            json.dumps(
                {
                    "type": "schedule_prompt",
                    "data": {"new_prompt": "a purple elephant", "timestamp": 0},
                    "id": "1",
                }
            )
        )
        while True:
            msg = json.loads(await conn.recv())
            if msg.get("id") == "1":
                break
        assert msg["type"] == "ack"
        [warning] = msg["data"]["warnings"]
        assert warning["code"] == "unknown_words"
        assert "the model does not know 'purple', 'elephant'" in warning["message"]
        assert (
            "the demo model draws 'a COLOR SHAPE moving DIRECTION on a BACKGROUND background'"
            in warning["message"]
        )
        await conn.send_text(
            json.dumps({"type": "schedule_prompt", "data": {"new_prompt": GOOD, "timestamp": 3}, "id": "2"})
        )
        while True:
            msg = json.loads(await conn.recv())
            if msg.get("id") == "2":
                break
        assert msg["data"]["warnings"] == []
        await conn.close()


async def test_the_sdk_returns_and_logs_the_warning(demo_pipe, caplog) -> None:
    caplog.set_level(logging.INFO, logger="longlive")
    async with Reactor.local(pipeline=demo_pipe) as reactor:
        scheduled = await reactor.schedule_prompt("a purple elephant", 0)
        assert [w.code for w in scheduled.warnings] == ["unknown_words"]
        assert "'purple', 'elephant'" in scheduled.warnings[0].message
        [record] = [r for r in caplog.records if "unknown_words" in r.getMessage()]
        assert record.levelno == logging.WARNING  # shown by Python's default logging, unlike info
        caplog.clear()
        scheduled = await reactor.schedule_prompt(GOOD, 0)
        assert scheduled.warnings == () and not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_rekeyed_prompt_is_a_warning_naming_where_it_takes_effect(tiny_pipe, caplog) -> None:
    """A prompt scheduled in the decided past is moved a block later: the SDK says so (warning,
    effective frame in the message and in the result), never only at info level."""
    caplog.set_level(logging.INFO, logger="longlive")
    async with Reactor.local(pipeline=tiny_pipe) as reactor:
        await reactor.schedule_prompt("a cat", 0)
        await reactor.start(seed=1)
        await reactor.wait_for_frame(3)  # block 0 is out: frame 0 is in the past
        scheduled = await reactor.schedule_prompt("a dog", 0)
        assert scheduled.rekeyed and scheduled.requested_timestamp == 0
        assert scheduled.effective_frame > 0 and scheduled.timestamp == scheduled.effective_frame
        assert scheduled.effective_frame % 3 == 0
        [record] = [r for r in caplog.records if "rekeyed" in r.getMessage()]
        assert record.levelno == logging.WARNING
        assert (
            f"it takes effect at latent frame {scheduled.effective_frame} "
            f"(video frame {scheduled.effective_video_frame}), not 0" in record.getMessage()
        )
        await reactor.reset()
