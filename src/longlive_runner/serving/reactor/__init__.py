"""Reactor's own clients against this runner: the local-mode HTTP routes, WebRTC signalling,
both data-channel framings and the `main_video` track (docs/reactor-clients.md).

Needs the `webrtc` extra (aiortc, protobuf). I/O-free modules: `wire` (v1 protobuf), `framing`
(v0 JSON, the sniffing rule, one codec per connection), `vocabulary` (the hosted model's
commands and messages over our protocol), `schema` (the commands' OpenAPI document),
`signalling` (the session descriptor and the connection registry). With I/O: `media` (aiortc:
peer connections, channels, the paced video track), `front` (`ReactorFront`: one runner's
Reactor session), `routes` (the HTTP handlers on `serving.http.HttpFront`).
"""

__all__ = ["MISSING_EXTRA", "available"]

MISSING_EXTRA = (
    "the Reactor WebRTC front needs the `webrtc` extra: pip install 'longlive[webrtc]' (aiortc, protobuf)"
)


def available() -> bool:
    """True when aiortc and protobuf can be imported (the `webrtc` extra is installed)."""
    try:
        import aiortc  # noqa: F401
        import google.protobuf  # noqa: F401
    except ImportError:
        return False
    return True
