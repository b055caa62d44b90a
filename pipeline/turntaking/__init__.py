"""Turn-taking decisions, pure and on virtual time (no asyncio, no sockets, no clock reads).

- :mod:`~pipeline.turntaking.words`: normalised words; backchannel or content; what a
  backchannel means while the bot is silent.
- :mod:`~pipeline.turntaking.barge_in`: the two-stage barge-in decider (pause, then resume
  or interrupt) fed with VAD onsets/offsets, STT words and the bot's state.
- :mod:`~pipeline.turntaking.pacer`: just-in-time playout: send audio only a bounded lead
  ahead of what the caller is hearing, with pause and resume.
- :mod:`~pipeline.turntaking.preemptive`: the guard for starting a reply on a stable
  interim transcript before the final arrives.

Every class takes the time as an argument (``at``/``now``, seconds on any monotonic
clock), so the call session drives them from its injected clock and tests from plain
numbers.
"""
