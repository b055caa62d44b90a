"""One phone call, split by job.

- :mod:`pipeline.call.session`: the call's tasks and its life, start to hang-up.
- :mod:`pipeline.call.state`: the one call state and its allowed transitions.
- :mod:`pipeline.call.listening`: caller speech into utterances; where barge-in is decided.
- :mod:`pipeline.call.reply`: one reply (LLM -> sentences -> TTS -> line), with retries.
- :mod:`pipeline.call.ending`: goodbye, hand-off, and the silence / call-length limits.
- :mod:`pipeline.call.feed`: the call events it publishes (:mod:`pipeline.events`).
- :mod:`pipeline.call.providers`: what a call is built from (one provider per stage).
- :mod:`pipeline.call.turn`: one turn and what became of it.
"""
