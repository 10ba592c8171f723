"""longlive: real-time, interactive, long video generation with LongLive.

```python
from longlive import Reactor

async with Reactor("ws://127.0.0.1:8765") as reactor:      # or Reactor.local(model="tiny")
    await reactor.schedule_prompt("a red circle moving right on a black background", timestamp=0)
    await reactor.start()
    async for frame in reactor.frames():                     # frame.image: uint8 [H, W, 3]
        ...
```

Frame numbers in commands and messages are the model's latent frames (blocks of 3); see
`latent_to_video_frame` and friends for video frames and seconds. The protocol is specified in
docs/protocol.md. This package never imports torch: `Reactor.local()` imports the runner lazily.
"""

from __future__ import annotations

from ._buffers import MessageStream
from ._client import Reactor
from ._recording import Recording
from ._transport import Transport, WebSocketTransport
from ._types import USE_CLIENT_DEFAULT, Frame, FramePolicy, Status, UseClientDefault
from .errors import (
    CallbackError,
    CommandError,
    CommandTimeoutError,
    ConnectError,
    ConnectionClosedError,
    ErrorCode,
    InvalidStateError,
    LongliveError,
    ProtocolError,
    QueueTimeoutError,
)
from .protocol import (
    PROTOCOL_VERSION,
    Ack,
    CommandErrorMessage,
    CommandResult,
    ErrorMessage,
    FrameHeader,
    FramesDropped,
    GenerationFinished,
    Hello,
    Message,
    PauseResult,
    Progress,
    PromptSwitched,
    PromptWarning,
    Queued,
    RemovePromptResult,
    ResetResult,
    ResumeResult,
    ScheduledPrompt,
    StartResult,
    State,
    UnknownMessage,
)
from .units import (
    block_start,
    block_video_frames,
    latent_to_video_frame,
    next_block_boundary,
    seconds_to_latent_frame,
    seconds_to_video_frame,
    video_frame_to_seconds,
    video_to_latent_frame,
)

__version__ = "0.1.0"

__all__ = [
    "PROTOCOL_VERSION",
    "USE_CLIENT_DEFAULT",
    "Ack",
    "CallbackError",
    "CommandError",
    "CommandErrorMessage",
    "CommandResult",
    "CommandTimeoutError",
    "ConnectError",
    "ConnectionClosedError",
    "ErrorCode",
    "ErrorMessage",
    "Frame",
    "FrameHeader",
    "FramesDropped",
    "FramePolicy",
    "GenerationFinished",
    "Hello",
    "InvalidStateError",
    "LongliveError",
    "Message",
    "MessageStream",
    "PauseResult",
    "Progress",
    "PromptSwitched",
    "PromptWarning",
    "ProtocolError",
    "QueueTimeoutError",
    "Queued",
    "Reactor",
    "Recording",
    "RemovePromptResult",
    "ResetResult",
    "ResumeResult",
    "ScheduledPrompt",
    "StartResult",
    "State",
    "Status",
    "Transport",
    "UnknownMessage",
    "UseClientDefault",
    "WebSocketTransport",
    "__version__",
    "block_start",
    "block_video_frames",
    "latent_to_video_frame",
    "next_block_boundary",
    "seconds_to_latent_frame",
    "seconds_to_video_frame",
    "video_frame_to_seconds",
    "video_to_latent_frame",
]
