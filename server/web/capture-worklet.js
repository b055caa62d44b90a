// AudioWorklet: the page's microphone (or WAV file) as a Stream Node sends it.
//
// Input at the AudioContext's rate (44.1/48 kHz) -> mono -> band-limited resampling to
// the call's rate -> 20 ms frames of 16-bit little-endian PCM, posted to the page (which
// sends each as one binary WebSocket frame). Muted, the frames carry silence: a Stream
// Node keeps streaming while the caller is quiet. Each frame also carries its level and
// any voice-activity change, for the meters and the caller-side latency.

import { Resampler } from "./resampler.js";
import { EnergyVad } from "./vad.js";

class StreamNodeCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate, frameMs = 20 } = options.processorOptions;
    this.resampler = new Resampler(sampleRate, targetRate);
    this.targetRate = targetRate;
    this.frameSamples = Math.round((targetRate * frameMs) / 1000);
    this._newFrame();
    this.muted = false;
    this.running = true;
    this.vad = new EnergyVad({ frameMs });
    this.mono = new Float32Array(128);
    this.port.onmessage = (event) => {
      if ("muted" in event.data) this.muted = Boolean(event.data.muted);
      if (event.data.stop) this.running = false;
    };
  }

  process(inputs) {
    if (!this.running) return false;
    const channels = inputs[0] || [];
    const n = channels.length ? channels[0].length : 128;
    if (this.mono.length !== n) this.mono = new Float32Array(n);
    const mono = this.mono;
    mono.fill(0);
    for (const channel of channels) {
      for (let i = 0; i < n; i++) mono[i] += channel[i] / channels.length;
    }
    const out = this.resampler.process(mono);
    const quantumEnd = currentTime + n / sampleRate;
    for (let j = 0; j < out.length; j++) {
      let v = this.muted ? 0 : out[j];
      v = v > 1 ? 1 : v < -1 ? -1 : v;
      // Little-endian whatever the machine: the Stream Node wire format says so.
      this.frame.setInt16(2 * this.filled++, v < 0 ? Math.round(v * 32768) : Math.round(v * 32767), true);
      this.sumSquares += v * v;
      if (this.filled === this.frameSamples) {
        const end = quantumEnd - (out.length - 1 - j) / this.targetRate;
        this._emit(end);
      }
    }
    return true;
  }

  _emit(end) {
    const rms = Math.sqrt(this.sumSquares / this.frameSamples);
    const vad = this.vad.push(rms, end);
    const pcm = this.frame.buffer;
    this.port.postMessage({ pcm, rms, vad, end }, [pcm]);
    this._newFrame();
  }

  _newFrame() {
    this.frame = new DataView(new ArrayBuffer(2 * this.frameSamples));
    this.filled = 0;
    this.sumSquares = 0;
  }
}

registerProcessor("stream-node-capture", StreamNodeCapture);
