"""The Knowlarity Stream Node's side of ``/voice``: a client that places simulated calls.

- :mod:`streamnode.client`: one simulated call's WebSocket (:class:`StreamNodeClient`) and
  a real-time caller line (:class:`CallerLine`).
- :mod:`streamnode.call`: a whole call from a WAV and its latency report.
- :mod:`streamnode.cli`: ``voice-agent call``.

It speaks only the wire protocol (:mod:`wire.knowlarity`), never the server's internals,
so it works against any deployment, local or behind ngrok.
"""
