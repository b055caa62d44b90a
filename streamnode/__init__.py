"""The Knowlarity Stream Node's side of ``/voice``: a client that places simulated calls.

- :mod:`streamnode.client`: one simulated call's WebSocket (:class:`StreamNodeClient`).
- :mod:`streamnode.caller_line`: the caller's audio on a real-time 20 ms clock.
- :mod:`streamnode.call`: a whole call from a WAV and its latency report.
- :mod:`streamnode.cli`: ``voice-agent call``.

It speaks only the wire protocol (:mod:`wire.knowlarity`), never the server's internals,
so it works against any deployment, local or behind ngrok.
"""
