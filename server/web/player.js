// Bot audio: every playAudio WAV back to back on the AudioContext's clock.
//
// Knowlarity queues playAudio events and plays them in order with no gap; so does this:
// each chunk starts exactly where the previous one ends (sample-accurate scheduling on
// one clock), or a few ms from now when the queue had run dry. killAudio stops what is
// playing and drops what is queued, at once. Everything scheduled is recorded, so the
// page (and its tests) can check for gaps, overlaps and what a kill cut off.

import { parseWav } from "./wav.js";

const LEAD_S = 0.03; // a chunk arriving to an idle player starts this far ahead
const HISTORY = 2000; // schedule entries kept

export class Player {
  constructor(context, output) {
    this.context = context;
    this.output = output;
    this.nextTime = 0;
    this.sources = new Set();
    this.schedule = []; // {line, start, end, state: "queued"|"played"|"killed"}
    this.lines = []; // one per run of back-to-back audio: {index, chunks, start, end, played, killed}
    this.kills = []; // {at, queuedMs, stopped}
    this.received = 0;
    this.played = 0;
    this.errors = [];
  }

  /** True while scheduled audio has not finished playing. */
  get playing() {
    return this.nextTime > this.context.currentTime;
  }

  /** Schedule one playAudio WAV; returns its entry ({start, end, newLine}). */
  enqueue(bytes) {
    let wav;
    try {
      wav = parseWav(bytes);
    } catch (error) {
      this.errors.push(String(error.message || error));
      return null;
    }
    this.received += 1;
    const ctx = this.context;
    const buffer = ctx.createBuffer(1, Math.max(1, wav.samples.length), wav.sampleRate);
    buffer.copyToChannel(wav.samples, 0);
    const now = ctx.currentTime;
    const newLine = this.nextTime < now + 0.002;
    const start = newLine ? now + LEAD_S : this.nextTime;
    const end = start + buffer.duration;
    if (newLine || !this.lines.length) {
      this.lines.push({ index: this.lines.length, chunks: 0, start, end, played: 0, killed: 0 });
    }
    const line = this.lines[this.lines.length - 1];
    line.chunks += 1;
    line.end = end;
    const entry = { line: line.index, start, end, state: "queued" };
    this.schedule.push(entry);
    if (this.schedule.length > HISTORY) this.schedule.shift();
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.output);
    source.onended = () => {
      this.sources.delete(source);
      entry.state = "played";
      line.played += 1;
      this.played += 1;
    };
    source.start(start);
    this.sources.add(source);
    this.nextTime = end;
    return { start, end, newLine };
  }

  /** killAudio: stop what plays, drop what is queued. */
  kill() {
    const now = this.context.currentTime;
    const queuedMs = Math.max(0, (this.nextTime - now) * 1000);
    let stopped = 0;
    for (const source of this.sources) {
      source.onended = null;
      try {
        source.stop();
      } catch (_) {
        // never started: nothing to stop
      }
      stopped += 1;
    }
    this.sources.clear();
    for (const entry of this.schedule) {
      if (entry.state === "queued") {
        entry.state = "killed";
        this.lines[entry.line].killed += 1;
      }
    }
    this.nextTime = now;
    const record = { at: now, queuedMs, stopped };
    this.kills.push(record);
    return record;
  }

  /** Seconds of audio scheduled but not yet played. */
  queuedSeconds() {
    return Math.max(0, this.nextTime - this.context.currentTime);
  }
}
