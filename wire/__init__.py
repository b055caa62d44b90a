"""Pure wire formats shared by several adapters (no I/O, no asyncio, no settings).

- :mod:`wire.knowlarity`: the Knowlarity Voice Streaming frames (metadata in; playAudio,
  killAudio, transfer, disconnect out), used by the server's Stream Node line and the
  Stream Node simulator.
- :mod:`wire.sse`: the Server-Sent Events parser, used by the Cartesia client and the
  Knowlarity konnect event stream.
"""
