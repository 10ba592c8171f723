"""Prompts the model cannot read are named, never silent: the `unknown_words` warning.

Through the tokenizer, the protocol (a hub on the demo model: the `schedule_prompt` ack), and the
SDK (`ScheduledPrompt.warnings`, logged as a warning). The CLI's line is in tests/test_cli.py and
the page's in tests/test_live_page.py.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from longlive import Reactor
from longlive_runner import load_pipeline
from longlive_runner.model.tokenizer import TextTokenizer, prompt_warnings
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
        warning, form = msg["data"]["warnings"]
        assert (warning["code"], form["code"]) == ("unknown_words", "prompt_form")
        assert "it has no COLOR, SHAPE, DIRECTION or BACKGROUND" in form["message"]
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
        assert [w.code for w in scheduled.warnings] == ["unknown_words", "prompt_form"]
        assert "'purple', 'elephant'" in scheduled.warnings[0].message
        [record] = [r for r in caplog.records if "unknown_words" in r.getMessage()]
        assert record.levelno == logging.WARNING  # shown by Python's default logging, unlike info
        [record] = [r for r in caplog.records if "prompt_form" in r.getMessage()]
        assert record.levelno == logging.WARNING
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


def test_a_prompt_of_unknown_pieces_is_analysed_in_linear_time(demo_pipe, tiny_pipe) -> None:
    """U+FDFA normalizes (NFKC) to 18 characters in 4 words: 2,000 of them are 8,000 (demo) or
    12,002 (tiny) unknown pieces in one written word. Each piece is looked up, not its word
    rescanned (that cost 2.8 s per prompt), and the warning names a bounded excerpt."""
    for tokenizer in (demo_pipe.text_encoder.tokenizer, tiny_pipe.text_encoder.tokenizer):
        for prompt in ("\ufdfa" * 2000, "\ufdfa " * 1000, " ".join(f"w{i}" for i in range(600))[:2000]):
            best = min(_timed(tokenizer, prompt) for _ in range(3))
            assert best < 0.25, (prompt[:10], best)  # about 20 ms on 2 busy cores
            warnings = dict(prompt_warnings(tokenizer, prompt))
            assert len(warnings.get("unknown_words", "")) < 600
        analysis = tokenizer.analyze("\ufdfa" * 2000)
        assert analysis.tokens == tokenizer.count_tokens("\ufdfa" * 2000) > 6000
        assert analysis.unknown_words == ["\ufdfa" * 2000]  # the whole word, as written
    message = dict(
        prompt_warnings(tiny_pipe.text_encoder.tokenizer, " ".join(f"\u00e9{i}" for i in range(20)))
    )
    assert (
        "'\u00e90', '\u00e91', '\u00e92', '\u00e93', '\u00e94', '\u00e95', '\u00e96', '\u00e97' and 12 more:"
        in message["unknown_words"]
    )


async def test_long_prompts_are_analysed_off_the_event_loop(demo_pipe, monkeypatch) -> None:
    """The hub tokenizes a long prompt on its prompt thread (the event loop only waits for it),
    a short one in place; either way the ack carries the warnings, in the order sent."""
    threads: list[str] = []
    analyse = Runner._analyse

    def spy(self: Runner, prompt: str) -> list[tuple[str, str]]:
        threads.append(threading.current_thread().name)
        return analyse(self, prompt)

    monkeypatch.setattr(Runner, "_analyse", spy)
    async with Runner(demo_pipe) as runner:
        conn = runner.connect_local()
        assert json.loads(await conn.recv())["type"] == "hello"
        long_bad = "a purple elephant " + "red " * 12  # 66 characters, 16 tokens: not cut
        for i, prompt in enumerate((long_bad, "a purple elephant")):
            await conn.send_text(
                json.dumps(
                    {
                        "type": "schedule_prompt",
                        "data": {"new_prompt": prompt, "timestamp": 3 * i},
                        "id": f"{i}",
                    }
                )
            )
        acks = []
        while len(acks) < 2:
            msg = json.loads(await conn.recv())
            if msg.get("id") in ("0", "1"):
                acks.append(msg)
        assert [a["id"] for a in acks] == ["0", "1"]
        for ack in acks:
            assert [w["code"] for w in ack["data"]["warnings"]] == ["unknown_words", "prompt_form"]
            assert "'purple', 'elephant'" in ack["data"]["warnings"][0]["message"]
        assert threads[0] == "longlive-prompts" and threads[1] == threading.current_thread().name
        await conn.close()


def _timed(tokenizer: TextTokenizer, prompt: str) -> float:
    start = time.perf_counter()
    prompt_warnings(tokenizer, prompt)
    return time.perf_counter() - start


def test_prompts_out_of_the_demo_form_are_warned_naming_what_is_missing(demo_pipe, tiny_pipe) -> None:
    """`a blue square` has only known words, yet the demo model, trained on one form, draws a
    blotchy shape-shifting video from it: the warning names the parts it lacks and the form."""
    from longlive_runner.model.tokenizer import model_form, model_hint

    demo = demo_pipe.text_encoder.tokenizer
    form, hint = model_form(demo_pipe.config), model_hint(demo_pipe.config)
    assert form is not None and model_form(tiny_pipe.config) is None  # other models: open vocabulary

    def warned(prompt: str) -> dict[str, str]:
        return dict(prompt_warnings(demo, prompt, hint=hint, form=form))

    for good in (GOOD, "An orange triangle moving DOWN on a dark green background"):
        assert warned(good) == {}
    cases = {
        "a blue square": (
            "it has no DIRECTION or BACKGROUND",
            "a blue square moving right on a black background",
        ),
        "a green triangle moving up": (
            "it has no BACKGROUND",
            "a green triangle moving up on a black background",
        ),
        "a cyan circle moving left on a dark green background please": (
            "out of the form's order",
            "a cyan circle moving left on a dark green background",
        ),
        "a red square on a navy background moving down": (
            "out of the form's order",
            "a red square moving down on a navy background",
        ),
    }
    for prompt, (what, rewritten) in cases.items():
        got = warned(prompt)
        assert list(got) == ["prompt_form"] or "unknown_words" in got, (prompt, got)
        message = got["prompt_form"]
        assert what in message and f"in the form: {rewritten!r}" in message, message
        if "unknown_words" not in got:  # the form and its words, once
            assert (
                "the demo model draws 'a COLOR SHAPE moving DIRECTION on a BACKGROUND background'" in message
            )
