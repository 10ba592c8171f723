"""The serving side: the protocol on one end, a `VideoGenerator` on the other.

`session` (the state machine: I/O-free rules), `pacing` (the playback clock), `access` (who may
connect: I/O-free rules), `hub` (`Runner`: the generation thread and the connected peers, in-process
ones included), `server` (the websocket and HTTP server, `serve`), `static/` (the live-view page) and
`cluster/` (a session per client on Ray workers, `cluster`). Nothing here imports torch at import
time; the model is imported from `longlive_runner.model` where it is loaded.
"""
