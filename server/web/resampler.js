// Streaming band-limited resampler (windowed sinc), used by the capture worklet.
//
// Browsers capture at 44.1 or 48 kHz; a Stream Node sends 8 or 16 kHz. Dropping samples
// would fold everything above the new Nyquist frequency back into the speech band, so
// each output sample is a low-pass-filtered interpolation of the input around its exact
// (fractional) position. The kernel is tabulated once; per sample it costs one
// multiply-add per tap (about 80 taps for 48 kHz -> 16 kHz).

const TABLE_STEPS = 256; // kernel samples per input sample (linear interpolation between)

export class Resampler {
  constructor(inRate, outRate, zeroCrossings = 12) {
    if (!(inRate > 0 && outRate > 0)) throw new RangeError("rates must be positive");
    this.inRate = inRate;
    this.outRate = outRate;
    this.step = inRate / outRate; // input samples per output sample
    this.passthrough = inRate === outRate;
    // Cut off a little below the lower Nyquist frequency, as a fraction of the input's.
    const cutoff = Math.min(1, outRate / inRate) * 0.92;
    this.halfWidth = zeroCrossings / cutoff; // in input samples
    const size = Math.ceil(this.halfWidth * TABLE_STEPS) + 2;
    this.table = new Float32Array(size);
    for (let i = 0; i < size; i++) {
      const d = i / TABLE_STEPS;
      const t = d / this.halfWidth;
      if (t >= 1) break;
      const x = Math.PI * cutoff * d;
      const sinc = d === 0 ? 1 : Math.sin(x) / x;
      const blackman = 0.42 + 0.5 * Math.cos(Math.PI * t) + 0.08 * Math.cos(2 * Math.PI * t);
      this.table[i] = cutoff * sinc * blackman;
    }
    // Input history; buf[0] is absolute input index `bufStart`. Zeros before the start.
    const lead = Math.ceil(this.halfWidth) + 1;
    this.buf = new Float32Array(4096);
    this.bufStart = -lead;
    this.bufLen = lead;
    this.pos = 0; // absolute (fractional) input index of the next output sample
  }

  /** Take input samples; return the output samples they complete (may be empty). */
  process(input) {
    if (this.passthrough) return Float32Array.from(input);
    this._append(input);
    const end = this.bufStart + this.bufLen; // one past the last input index held
    const w = this.halfWidth;
    const count = Math.max(0, Math.floor((end - 1 - w - this.pos) / this.step) + 1);
    const out = new Float32Array(count);
    const buf = this.buf;
    const table = this.table;
    for (let j = 0; j < count; j++) {
      const pos = this.pos;
      const first = Math.ceil(pos - w);
      const last = Math.floor(pos + w);
      let acc = 0;
      for (let k = first; k <= last; k++) {
        const f = Math.abs(pos - k) * TABLE_STEPS;
        const i = f | 0;
        const tap = table[i] + (table[i + 1] - table[i]) * (f - i);
        acc += buf[k - this.bufStart] * tap;
      }
      out[j] = acc;
      this.pos = pos + this.step;
    }
    this._forget(Math.ceil(this.pos - w) - 1);
    return out;
  }

  _append(input) {
    const need = this.bufLen + input.length;
    if (need > this.buf.length) {
      const bigger = new Float32Array(Math.max(need, this.buf.length * 2));
      bigger.set(this.buf.subarray(0, this.bufLen));
      this.buf = bigger;
    }
    this.buf.set(input, this.bufLen);
    this.bufLen = need;
  }

  _forget(before) {
    const drop = before - this.bufStart;
    if (drop <= 0) return;
    this.buf.copyWithin(0, drop, this.bufLen);
    this.bufLen -= drop;
    this.bufStart += drop;
  }
}
