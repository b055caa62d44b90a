"""The call pipeline: STT -> LLM -> TTS, independent of any one vendor."""
