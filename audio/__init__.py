"""Pure audio helpers: WAV framing, PCM re-chunking and resampling (no I/O, no asyncio).

Submodules are imported explicitly (``from audio.wav import pcm_to_wav``) so that
importing one does not pull in numpy/soxr for the others.
"""
