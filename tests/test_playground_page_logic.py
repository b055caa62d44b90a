"""The playground's pure modules (resampler, VAD, WAV parser, turn rows) in real Chromium.

They run as the page runs them: ES modules imported by a blank page at an origin of the
test's own (Playwright serves ``server/web/`` under it), no server needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser import chromium

RESAMPLE_JS = """async ([inRate, outRate, hz]) => {
  const { Resampler } = await import('/playground/resampler.js');
  const r = new Resampler(inRate, outRate);
  const seconds = 1, n = inRate * seconds, out = [];
  for (let at = 0; at < n; at += 128) {
    const block = new Float32Array(Math.min(128, n - at));
    for (let i = 0; i < block.length; i++) {
      block[i] = 0.5 * Math.sin((2 * Math.PI * hz * (at + i)) / inRate);
    }
    out.push(...r.process(block));
  }
  const steady = out.slice(out.length / 4, out.length - 200);
  const rms = Math.sqrt(steady.reduce((s, v) => s + v * v, 0) / steady.length);
  let crossings = 0;
  for (let i = 1; i < steady.length; i++) if ((steady[i - 1] < 0) !== (steady[i] < 0)) crossings++;
  return { count: out.length, rms, hz: crossings / 2 / (steady.length / outRate) };
}"""


RATES = [(48000, 16000), (48000, 8000), (44100, 16000), (44100, 8000), (16000, 8000)]
WEB = Path(__file__).resolve().parent.parent / "server" / "web"


async def _serve_web(route: Any) -> None:
    """A blank page at an origin of our own, and the playground's modules under it."""
    path = route.request.url.removeprefix("http://playground.test")
    if path.startswith("/playground/"):
        body = (WEB / path.removeprefix("/playground/")).read_text()
        await route.fulfill(body=body, content_type="text/javascript")
    else:
        await route.fulfill(body="<!doctype html><title>blank</title>", content_type="text/html")


async def test_the_page_resamples_without_aliasing() -> None:
    async with chromium(None) as browser:
        page = await browser.new_page()
        await page.route("http://playground.test/**", _serve_web)
        await page.goto("http://playground.test/")
        for in_rate, out_rate in RATES:
            passband = await page.evaluate(RESAMPLE_JS, [in_rate, out_rate, 1000])
            alias = await page.evaluate(RESAMPLE_JS, [in_rate, out_rate, out_rate / 2 + 1000])
            pair = f"{in_rate} -> {out_rate}"
            assert abs(passband["count"] - out_rate) <= 64, pair  # the filter's delay, no more
            assert passband["rms"] == pytest.approx(0.5 / 2**0.5, rel=0.02), pair
            assert passband["hz"] == pytest.approx(1000, rel=0.01), pair
            # A tone above the new Nyquist frequency would fold into the speech band.
            assert alias["rms"] < 0.5 / 2**0.5 / 100, pair  # at least 40 dB down


PURE_JS = """async () => {
  const { EnergyVad } = await import('/playground/vad.js');
  const { parseWav } = await import('/playground/wav.js');
  const { turnRows, transcript } = await import('/playground/timings.js');
  const vad = new EnergyVad({ frameMs: 20, startMs: 60, hangoverMs: 300 });
  const changes = [];
  const levels = [...Array(10).fill(0), ...Array(20).fill(0.1), ...Array(20).fill(0)];
  levels.forEach((rms, i) => {
    const change = vad.push(rms, (i + 1) * 0.02);
    if (change) changes.push({ ...change, frame: i });
  });
  const header = (bits) => {
    const b = new DataView(new ArrayBuffer(48));
    const tag = (at, s) => [...s].forEach((c, i) => b.setUint8(at + i, c.charCodeAt(0)));
    tag(0, 'RIFF'); b.setUint32(4, 40, true); tag(8, 'WAVE'); tag(12, 'fmt ');
    b.setUint32(16, 16, true); b.setUint16(20, 1, true); b.setUint16(22, 1, true);
    b.setUint32(24, 8000, true); b.setUint32(28, 16000, true); b.setUint16(32, 2, true);
    b.setUint16(34, bits, true); tag(36, 'data'); b.setUint32(40, 4, true);
    b.setInt16(44, 16384, true); b.setInt16(46, -32768, true);
    return new Uint8Array(b.buffer);
  };
  const wav = parseWav(header(16));
  let refused = '';
  try { parseWav(header(8)); } catch (e) { refused = e.message; }
  const events = [
    { kind: 'caller_speech', phase: 'final', text: 'hi', at_ms: 900 },
    { kind: 'turn_timings', turn: 1, user_text: 'hi', stt_final_ms: 1000,
      llm_first_token_ms: 1200, tts_first_audio_ms: 1350, first_audio_sent_ms: 1360,
      end_of_speech_ms: null, outcome: 'answered' },
    { kind: 'agent_speech', turn: 1, text: 'One. Two.', heard: 'One. Two.', at_ms: 1500 },
    { kind: 'barge_in', turn: 1, heard_text: 'One.', words: 'wait', at_ms: 1800 },
  ];
  const measures = [{ firstAudioMs: 5000, ms: 1 }, { firstAudioMs: 1400, ms: 700 }];
  return { changes, wav: { rate: wav.sampleRate, samples: [...wav.samples] }, refused,
           rows: turnRows(events, measures), lines: transcript(events) };
}"""


async def test_the_page_logic_vad_wav_and_turn_rows() -> None:
    async with chromium(None) as browser:
        page = await browser.new_page()
        await page.route("http://playground.test/**", _serve_web)
        await page.goto("http://playground.test/")
        result = await page.evaluate(PURE_JS)
    start, stop = result["changes"]
    assert start["speaking"] and start["frame"] == 12  # 60 ms of speech confirms it
    assert start["at"] == pytest.approx(0.2)  # ... and it began at the end of frame 9
    assert not stop["speaking"] and stop["frame"] == 44  # after the 300 ms hangover
    assert stop["at"] == pytest.approx(0.6)  # the end of the last loud frame
    assert result["wav"] == {"rate": 8000, "samples": [0.5, -1.0]}
    assert "need PCM 16-bit" in result["refused"]
    (row,) = result["rows"]
    assert (row["sttToLlm"], row["llmToTts"], row["ttsToSent"]) == (200, 150, 10)
    assert row["callerSide"] == 700  # paired by first audio time, not by order
    assert row["endOfSpeechToAudio"] is None and row["bargeIns"] == 1
    agent = next(line for line in result["lines"] if line["who"] == "agent")
    assert agent["heard"] == "One."  # the barge-in cut it there
