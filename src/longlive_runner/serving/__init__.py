"""The serving side: the protocol on one end, a `VideoGenerator` on the other.

`session` (the state machine: I/O-free rules), `pacing` (the playback clock), `access` (who may
connect: I/O-free rules), `hub` (`Runner`: the generation thread and the connected peers, in-process
ones included), `server` (the websocket and HTTP server, `serve`), `static/` (the live-view page) and
`cluster/` (a session per client on Ray workers, `cluster`). Only `hub` imports torch (through
`longlive_runner.model.generator`); the others import the model where they load it, so `session`,
`server` and the subcommands load without torch.
"""
