"""The runner hub: one session, one generation thread, many peers.

A `Runner` owns the I/O-free `Session`, the `VideoGenerator` and the connected peers. It is the
thin asyncio layer around the session (the websockets pattern: the state machine does no I/O,
this module moves its messages):

- every session call happens on the event loop thread (the session is not thread-safe);
- torch runs on ONE dedicated thread: the loop plans a block (`session.next_block()`), the
  thread runs `gen.generate_block(plan.prompt)`, and the block comes back to the loop through a
  future; the loop never waits on torch, and commands are applied while a block is generated
  (they take effect between blocks);
- replies go to their sender, broadcasts and frames to every peer; a block's frames are queued
  before its `progress`;
- after a `reset` is acknowledged nothing of the old run reaches a peer: the old block's result is
  dropped (`session.is_current`) and old frames still queued for a peer are discarded.

Each peer has a bounded outgoing queue (docs/protocol.md, section 1.2): frames are dropped oldest
first when a peer falls `max_queued_frames` behind (it is told with a `frames_dropped` message),
text messages are never dropped, except a `state` snapshot that a newer one replaces before it was
sent (the newer one is queued last, so a peer always ends with the latest snapshot), and a peer
that lets more than `max_queued_text_chars` of text pile up is disconnected (close code 1008). A
slow peer never slows the others: queueing never waits.

Transports attach peers: `connect_local()` (the in-process `LocalConnection`, `local.py`) and the
websocket server (`server.py`). The hub's pieces each have their module: `frames.py` (`OutFrame`,
a frame encoded at most once for all peers), `peers.py` (`Peer`, the queue and its drop policy),
`torch_thread.py` (`TorchThread`, the one thread that runs torch), `local.py`; this module is the
`Runner` that drives them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from longlive.errors import ErrorCode
from longlive.protocol import (
    DEFAULT_LIMITS,
    ErrorMessage,
    Limits,
    Message,
    Pause,
    Reset,
    State,
    block_frame_headers,
    encode_message,
    is_reply,
)
from longlive.units import block_video_frames

from ..model.generator import FrameLimitReached
from ..model.tokenizer import model_form, model_hint, prompt_warnings
from .frames import OutFrame
from .local import LocalConnection
from .options import DEFAULT_MAX_QUEUED_FRAMES, CloseCode
from .pacing import DEFAULT_LEAD_BLOCKS, PACES, Pacer
from .peers import DEFAULT_MAX_QUEUED_TEXT_CHARS, Peer
from .session import BlockPlan, Session
from .timers import GraceTimers, consume
from .torch_thread import TorchThread

if TYPE_CHECKING:
    from ..model.generator import Block, VideoGenerator
    from ..model.pipeline import Pipeline

__all__ = [  # Peer, OutFrame, LocalConnection: their own modules, named here for the hub's users
    "DEFAULT_MAX_QUEUED_FRAMES",
    "DEFAULT_MAX_QUEUED_TEXT_CHARS",
    "LocalConnection",
    "OutFrame",
    "Peer",
    "Runner",
]

logger = logging.getLogger(__name__)

CLOSE_NORMAL = CloseCode.NORMAL
CLOSE_GOING_AWAY = CloseCode.GOING_AWAY
CLOSE_POLICY = CloseCode.POLICY  # the peer let too much text pile up
CLOSE_TRY_AGAIN_LATER = CloseCode.TRY_AGAIN_LATER  # too many peers
_IDLE = "idle"  # the grace timer's key

#: A `schedule_prompt` whose prompt has at least this many characters is analysed for warnings
#: (`prompt_warnings`: tokenizing it) on the runner's prompt thread, not on the event loop: a
#: 2,000-character prompt can normalize to 36,000 characters (U+FDFA under NFKC) and take tens
#: of milliseconds to tokenize. Shorter ones cost well under a millisecond: analysed in place.
PROMPT_THREAD_CHARS = 64


# ----------------------------------------------------------------------------------------------
# The runner
# ----------------------------------------------------------------------------------------------
class Runner:
    """The hub: one shared session driven for every connected peer.

    ```python
    async with Runner(load_pipeline("tiny")) as runner:
        conn = runner.connect_local()
        print(await conn.recv())            # hello
    ```

    - `limits`: the protocol limits announced in `hello` (`max_frames` is capped by the model);
    - `seed`: the seed of a `start` that has none;
    - `max_peers`: connections beyond it are closed at once (code 1013); None = no limit;
    - `max_queued_frames`, `max_queued_text_chars`: the per-peer queue policy (module docstring);
    - `grace_period`: when the last peer leaves, a running session is paused at once (the block
      being generated completes; nothing more is generated for no one). A peer that connects
      within `grace_period` seconds finds the video paused where it was (it may `resume` or
      `reset`); after it, the session is reset (a new generation, idle, no prompts), so the next
      peer finds a fresh one. None: never reset (the paused video waits for a client forever).
    - `pace`: "fast" (the default here: as fast as the model can) or "realtime" (`serve`'s
      default): start a block only while the video generated ahead of playback, with that block,
      stays within `lead_blocks` blocks (`pacing.Pacer`; docs/protocol.md, section 1.4).
    """

    def __init__(
        self,
        pipe: Pipeline,
        *,
        limits: Limits = DEFAULT_LIMITS,
        seed: int = 0,
        max_peers: int | None = None,
        max_queued_frames: int = DEFAULT_MAX_QUEUED_FRAMES,
        max_queued_text_chars: int = DEFAULT_MAX_QUEUED_TEXT_CHARS,
        grace_period: float | None = None,
        pace: str = "fast",
        lead_blocks: int = DEFAULT_LEAD_BLOCKS,
    ) -> None:
        if pace not in PACES:
            raise ValueError(f"pace must be one of {', '.join(PACES)}, got {pace!r}")
        if lead_blocks < 1:
            raise ValueError("lead_blocks must be >= 1")
        if max_queued_frames < 1:
            raise ValueError("max_queued_frames must be >= 1")
        if max_peers is not None and max_peers < 1:
            raise ValueError("max_peers must be >= 1 (or None)")
        self.pipe = pipe
        cfg = pipe.config
        self.session = Session.for_config(
            cfg,
            max_frames=min(limits.max_frames, cfg.stream.max_latent_frames or limits.max_frames),
            max_message_bytes=limits.max_message_bytes,
            max_prompt_chars=limits.max_prompt_chars,
            max_scheduled_prompts=limits.max_scheduled_prompts,
            max_schedule_chars=limits.max_schedule_chars,
            default_seed=seed,
            prompt_warnings=self._prompt_warnings,
        )
        self.max_peers = max_peers
        self.max_queued_frames = max_queued_frames
        self.max_queued_text_chars = max_queued_text_chars
        self.grace_period = grace_period
        self.pace = pace
        self.lead_blocks = lead_blocks
        s = self.session
        block_frames = block_video_frames(s.frames_per_block, s.frames_per_block, s.temporal_compression)
        self.pacer = Pacer(s.fps, lead_blocks * block_frames if pace == "realtime" else None)
        self.blocks_generated = 0
        self._peers: dict[Peer, None] = {}  # insertion-ordered set
        self._peer_count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: TorchThread | None = None
        self._gen: VideoGenerator | None = None
        self._drive_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._grace = GraceTimers()  # the reset of a session nobody watches (one key: IDLE)
        self._block_in_flight = False
        self._closed = False
        self._prompt_thread: TorchThread | None = None
        self._analysed: tuple[str, list[tuple[str, str]]] | None = None  # for the command at hand

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the generation thread and the generation loop on the running event loop."""
        if self._closed:
            raise RuntimeError("the runner is closed")
        if self._drive_task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = TorchThread("longlive-generation")
        pipe, seed = self.pipe, self.session.default_seed
        self._gen = await self._thread.submit(lambda: pipe.generator(seed))
        self._prompt_thread = TorchThread("longlive-prompts")
        self._drive_task = self._loop.create_task(self._drive(), name="longlive-runner")

    async def close(self, timeout: float = 60.0) -> None:
        """Disconnect every peer (code 1001), stop generating and end the generation thread.

        A block being generated is finished first (torch cannot be interrupted), up to `timeout`.
        """
        if self._closed:
            return
        self._closed = True
        for peer in list(self._peers):
            self.detach(peer, CLOSE_GOING_AWAY, "the runner is shutting down")
        self._grace.cancel_all()
        if self._drive_task is not None:
            self._drive_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drive_task
        if self._prompt_thread is not None:
            self._prompt_thread.stop()  # a daemon thread: it ends after the analysis at hand
        if self._thread is not None:
            try:
                await asyncio.wait_for(self._thread.stop(), timeout)
            except asyncio.TimeoutError:
                logger.warning("the generation thread did not stop within %g s", timeout)
            else:
                self._thread.thread.join(1.0)  # it has returned from its last job: a moment at most

    async def __aenter__(self) -> Runner:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def started(self) -> bool:
        return self._drive_task is not None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def generator(self) -> VideoGenerator:
        """The `VideoGenerator` (only the generation thread may call its methods)."""
        if self._gen is None:
            raise RuntimeError("the runner is not started")
        return self._gen

    @property
    def generation_thread(self) -> threading.Thread | None:
        return self._thread.thread if self._thread is not None else None

    @property
    def generating(self) -> bool:
        """A block is being generated on the generation thread right now."""
        return self._block_in_flight

    @property
    def limits(self) -> Limits:
        return self.session.limits

    @property
    def peers(self) -> list[Peer]:
        return list(self._peers)

    def info(self) -> dict[str, Any]:
        """What `GET /info` shows: the `hello` fields, the model and the runner's load."""
        return {
            **self.session.hello().to_data(),
            "device": str(self.pipe.device),
            "dtype": str(self.pipe.dtype).removeprefix("torch."),
            "clients": len(self._peers),
            "max_clients": self.max_peers,
            "max_queued_frames": self.max_queued_frames,
            "pace": self.pace,
            "lead_frames": self.pacer.lead_frames,
            "phase": self.session.phase,
            "generating": self._block_in_flight,
            "generation": self.session.generation,
            "current_start_frame": self.session.current_start_frame,
            "blocks_generated": self.blocks_generated,
            "version": _version(),
        }

    # --- peers ----------------------------------------------------------------------------------
    def attach(self, name: str | None = None) -> Peer:
        """A new peer, sent `hello` then `state`. Over `max_peers` it comes back already closed."""
        if self._closed:
            raise RuntimeError("the runner is closed")
        if self._drive_task is None:
            raise RuntimeError("the runner is not started: await runner.start() first")
        self._peer_count += 1
        peer = Peer(
            name or f"peer-{self._peer_count}",
            max_queued_frames=self.max_queued_frames,
            max_queued_text_chars=self.max_queued_text_chars,
        )
        if self.max_peers is not None and len(self._peers) >= self.max_peers:
            peer.close(
                CLOSE_TRY_AGAIN_LATER,
                f"too many clients: {len(self._peers)} connected, the limit is {self.max_peers}",
            )
            logger.info("refused %s: %s", peer.name, peer.close_reason)
            return peer
        self._peers[peer] = None
        self._grace.cancel(_IDLE)
        for msg in self.session.on_connect():
            peer.put_text(encode_message(msg), state=isinstance(msg, State))
        logger.info("%s connected (%d clients)", peer.name, len(self._peers))
        return peer

    def detach(self, peer: Peer, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Forget a peer and close it (idempotent)."""
        peer.close(code, reason)
        if peer not in self._peers:
            return
        del self._peers[peer]
        logger.info("%s disconnected (%d clients left)", peer.name, len(self._peers))
        if not self._peers and not self._closed and self._loop is not None:
            self._last_peer_left()

    def connect_local(self) -> LocalConnection:
        """An in-process connection: the same protocol, frames as numpy arrays (no encoding)."""
        self.check_loop()
        return LocalConnection(self, self.attach(f"local-{self._peer_count + 1}"))

    async def receive(self, peer: Peer, text: str) -> None:
        """`receive_text` for a caller on the event loop (the websocket server, local
        connections): a long prompt's analysis (`prompt_warnings`) runs first on the prompt
        thread, one at a time, so that no prompt stalls the event loop (other clients' frames,
        `/health`); the command is then applied as `receive_text` does, in the order sent."""
        prompt = _long_prompt(text, self.limits)
        if prompt is not None and self._prompt_thread is not None and peer in self._peers:
            analysed = await self._prompt_thread.submit(lambda: (prompt, self._analyse(prompt)))
            self._analysed = analysed
            try:
                self.receive_text(peer, text)
            finally:
                self._analysed = None
            return
        self.receive_text(peer, text)

    def receive_text(self, peer: Peer, text: str) -> None:
        """A text message from `peer`: apply it to the session and send out the result."""
        if peer not in self._peers:
            return
        before = self.session.generation
        messages = self.session.handle_text(text)
        if self.session.generation != before:  # a reset: queued frames of the old run are stale
            for p in self._peers:
                p.purge_frames(self.session.generation)
        self._dispatch(messages, sender=peer)
        self._wake.set()

    def receive_binary(self, peer: Peer, data: bytes) -> None:
        """Clients never send binary messages: refused with `unexpected_binary`."""
        if peer not in self._peers:
            return
        self._dispatch(self.session.handle_binary(data), sender=peer)

    # --- output ---------------------------------------------------------------------------------
    def _dispatch(self, messages: Iterable[Message], sender: Peer | None = None) -> None:
        for msg in messages:
            try:
                text = encode_message(msg)
            except (TypeError, ValueError):  # pragma: no cover - the session builds valid messages
                logger.exception("cannot encode %r", msg)
                continue
            if is_reply(msg):
                if sender is not None and sender in self._peers:
                    self._put_text(sender, text)
            else:
                snapshot = isinstance(msg, State)  # a newer one supersedes it while unsent
                for peer in list(self._peers):
                    self._put_text(peer, text, state=snapshot)

    def _put_text(self, peer: Peer, text: str, *, state: bool = False) -> None:
        if not peer.put_text(text, state=state):
            reason = (
                f"client too slow: more than {peer.max_queued_text_chars} characters of messages not read"
            )
            logger.warning("disconnecting %s: %s", peer.name, reason)
            self.detach(peer, CLOSE_POLICY, reason)

    def _send_frames(self, plan: BlockPlan, frames: np.ndarray) -> None:
        frames.flags.writeable = False  # shared by every peer
        peers = list(self._peers)
        headers = block_frame_headers(
            frames,
            block_start_frame=plan.start_frame,
            first_video_frame=plan.first_video_frame,
            generation=plan.generation,
        )
        for header, rgb in zip(headers, frames, strict=True):
            frame = OutFrame(header, rgb)
            for peer in peers:
                peer.put_frame(frame)

    # --- the generation loop (on the event loop) --------------------------------------------
    async def _drive(self) -> None:
        while True:
            self._wake.clear()
            delay = self._pace_delay()
            if delay > 0:  # ahead of playback: wait (a command wakes the loop to look again)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            try:
                plan = self.session.next_block()
            except RuntimeError:  # pragma: no cover - a bug: never spin on it
                logger.exception("the session refused to plan a block")
                self._dispatch(self._internal_error("the runner lost track of the block in progress"))
                continue
            if plan is None:
                await self._wake.wait()
                continue
            if plan.first:
                self.pacer.reset()
            try:
                await self._run_block(plan)
            except Exception as exc:  # a runner bug, not a model fault: the loop must never die
                logger.exception("block %d: the runner failed around the model", plan.start_frame)
                if self.session.in_progress is not None:
                    self._dispatch(self._internal_error(f"the runner failed: {type(exc).__name__}: {exc}"))

    async def _run_block(self, plan: BlockPlan) -> None:
        assert self._thread is not None
        self._block_in_flight = True
        try:
            # Shielded: closing the runner must not abandon a block the thread is still running.
            fut = self._thread.submit(lambda: self._generate(plan))
            fut.add_done_callback(consume)  # read by _run_block, unless the runner closed meanwhile
            block = await asyncio.shield(fut)
        except FrameLimitReached as exc:
            if self.session.is_current(plan):
                self._dispatch(self.session.finished(exc.reason))
            return
        except Exception as exc:
            if self.session.is_current(plan):
                logger.error("block %d failed", plan.start_frame, exc_info=exc)
                self._dispatch(self.session.block_failed(plan, exc))
            return
        finally:
            self._block_in_flight = False
        if not self.session.is_current(plan):
            return  # reset (or ended) while it was generated: nothing of it is sent
        frames = block.frames
        if (
            not isinstance(frames, np.ndarray)
            or frames.ndim != 4
            or frames.shape[0] != plan.num_video_frames
            or frames.shape[3] != 3
            or frames.dtype != np.uint8
        ):
            self._dispatch(
                self.session.block_failed(
                    plan,
                    f"the model returned frames {getattr(frames, 'dtype', '?')} {np.shape(frames)}, "
                    f"expected uint8 [{plan.num_video_frames}, H, W, 3]",
                )
            )
            return
        self.blocks_generated += 1
        self._send_frames(plan, frames)
        self.pacer.block_done(self._clock(), plan.first_video_frame + frames.shape[0])
        self._dispatch(self.session.block_done(plan, frames.shape[0]))

    def _clock(self) -> float:
        return self._loop.time() if self._loop is not None else 0.0

    def _pace_delay(self) -> float:
        """Seconds until the next block may start under the pace (0: now, or nothing to start)."""
        s = self.session
        if not self.pacer.paced or s.phase != "running" or s.current_start_frame == 0:
            return 0.0
        n = block_video_frames(s.current_start_frame, s.frames_per_block, s.temporal_compression)
        return self.pacer.wait(self._clock(), n)

    def _generate(self, plan: BlockPlan) -> Block:
        """On the generation thread: one block of `plan` (a new video starts with its seed)."""
        gen = self.generator
        if not plan.first and gen.current_start_frame != plan.start_frame:
            raise RuntimeError(
                f"the generator is at frame {gen.current_start_frame}, the session expects {plan.start_frame}"
            )
        try:
            if plan.first:
                gen.reset(plan.seed)
            return gen.generate_block(plan.prompt)
        except FrameLimitReached:
            raise
        except BaseException:
            self._recover_generator(gen)
            raise

    def _recover_generator(self, gen: VideoGenerator) -> None:
        """After a model fault: clear the generator's state and give cached GPU memory back."""
        try:
            gen.reset()
        except Exception:
            logger.exception("resetting the generator after a failed block failed too")
        if getattr(self.pipe.device, "type", "cpu") == "cuda":
            import torch

            torch.cuda.empty_cache()

    def _internal_error(self, text: str) -> list[Message]:
        msg = ErrorMessage(message=text, code=ErrorCode.INTERNAL, generation=self.session.generation)
        return [msg, *self.session.finished("error")]

    def _last_peer_left(self) -> None:
        """No one watches: pause at once; reset after `grace_period` (docs/protocol.md, 1.1)."""
        if self.session.phase == "running":
            logger.info(
                "the last client left: pausing at frame %d (reset in %s)",
                self.session.frontier,
                "never" if self.grace_period is None else f"{self.grace_period:g} s",
            )
            self.session.handle(Pause())  # its messages would go to no one
        if self.grace_period is not None and self._loop is not None:
            self._grace.start(_IDLE, self.grace_period, self._on_idle, loop=self._loop)

    @property
    def reset_scheduled(self) -> bool:
        """Whether the grace period's reset of an abandoned session is pending."""
        return _IDLE in self._grace

    def _on_idle(self) -> None:
        """`grace_period` passed with no client: the abandoned session is reset."""
        if self._peers or self._closed:
            return
        if self.session.phase == "idle" and not self.session.schedule:
            return  # already fresh
        logger.info("no client for %g s: resetting the session", self.grace_period or 0)
        self.session.handle(Reset())
        self._wake.set()

    def _prompt_warnings(self, prompt: str) -> list[tuple[str, str]]:
        """`prompt_truncated` and `unknown_words` (docs/protocol.md, section 6.1); analysed
        already on the prompt thread when `receive` got the command."""
        if self._analysed is not None and self._analysed[0] == prompt:
            return self._analysed[1]
        return self._analyse(prompt)

    def _analyse(self, prompt: str) -> list[tuple[str, str]]:
        tokenizer = getattr(getattr(self.pipe, "text_encoder", None), "tokenizer", None)
        if tokenizer is None:
            return []
        try:
            cfg = self.pipe.config
            return prompt_warnings(tokenizer, prompt, hint=model_hint(cfg), form=model_form(cfg))
        except Exception:  # pragma: no cover - a warning must never break scheduling
            logger.exception("checking the prompt for warnings failed")
            return []

    def check_loop(self) -> None:
        """RuntimeError unless called on the event loop the runner was started on."""
        if self._loop is None:
            raise RuntimeError("the runner is not started: await runner.start() first")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self._loop:
            raise RuntimeError("use the runner from the event loop it was started on")


def _long_prompt(text: str, limits: Limits) -> str | None:
    """The prompt of a `schedule_prompt` message, if it is long enough to be analysed off the
    event loop (`PROMPT_THREAD_CHARS`) and short enough to be accepted; None otherwise (the
    session itself parses and checks every message)."""
    if not PROMPT_THREAD_CHARS <= len(text) <= limits.max_message_bytes or "schedule_prompt" not in text:
        return None
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        return None
    data = msg.get("data") if isinstance(msg, dict) and msg.get("type") == "schedule_prompt" else None
    prompt = data.get("new_prompt") if isinstance(data, dict) else None
    if not isinstance(prompt, str) or not PROMPT_THREAD_CHARS <= len(prompt) <= limits.max_prompt_chars:
        return None
    return prompt


def _version() -> str | None:
    try:
        from importlib.metadata import version

        return version("longlive")
    except Exception:  # pragma: no cover - not installed
        return None
