// One call from the browser, exactly as a Knowlarity Stream Node makes it.
//
// /voice gets the metadata frame first, then 20 ms binary frames of 16-bit LE mono PCM
// at the chosen rate, continuously; the server's playAudio / killAudio / transfer /
// disconnect frames are obeyed as the Stream Node obeys them. What the wire protocol does
// not carry (transcripts, timings) comes from the read-only /calls/{id}/events feed.

import { Player } from "./player.js";
import { base64ToBytes } from "./wav.js";

const FRAME_MS = 20;
const LEVELS_KEPT = 3000;
const DRAIN_LIMIT_S = 15; // after transfer/disconnect, let queued audio finish this long

function wsBase() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;
}

function newCallId() {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return `web-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** The metadata frame as Knowlarity sends it: a JSON string wrapping a Python-style dict. */
export function metadataFrame(callId) {
  const dict = `{'callid': '${callId}', 'virtual_number': '', 'customer_number': '', 'call_type': 'inbound'}`;
  return JSON.stringify(dict);
}

export class Call extends EventTarget {
  constructor({ sampleRate, token = "", file = null, echoCancellation = true }) {
    super();
    this.sampleRate = sampleRate;
    this.token = token;
    this.file = file;
    this.echoCancellation = echoCancellation;
    this.callId = newCallId();
    this.phase = "idle"; // connecting, live, ending, ended
    this.endReason = null;
    this.transferTo = null;
    this.disconnected = false;
    this.muted = false;
    this.events = []; // from the event feed
    this.feedClosed = false;
    this.framesSent = 0;
    this.callerLevel = 0;
    this.levels = []; // per 20 ms frame sent, RMS in 16-bit units (the last minute)
    this.pendingEndOfSpeech = null; // performance.now() when the caller's input went quiet
    this.callerMeasures = []; // {endOfSpeechMs, firstAudioMs, ms}
    this.greetingMs = null;
    this.protocol = []; // {at, type, detail}
    this.errors = [];
    this.inputEnded = false;
    this.clips = []; // WAV files said into the call on demand: {name, startMs, endMs}
    this.clipSources = new Set();
  }

  _emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _note(type, detail = "") {
    this.protocol.push({ at: this.sinceStartMs(), type, detail });
    if (this.protocol.length > 500) this.protocol.shift();
    this._emit("protocol");
  }

  _fail(message) {
    this.errors.push(message);
    this._emit("error", { message });
  }

  /** ms on the call's axis: since the metadata frame was sent (performance.now() clock). */
  sinceStartMs(at = performance.now()) {
    return this.startedAt == null ? 0 : at - this.startedAt;
  }

  async start() {
    this.phase = "connecting";
    this._emit("phase");
    try {
      this.context = new AudioContext({ latencyHint: "interactive" });
      await this.context.resume();
      await this.context.audioWorklet.addModule("/playground/capture-worklet.js");
      this.botGain = this.context.createGain();
      this.botMeter = this.context.createAnalyser();
      this.botMeter.fftSize = 1024;
      this.botGain.connect(this.botMeter).connect(this.context.destination);
      this.player = new Player(this.context, this.botGain);
      this.capture = new AudioWorkletNode(this.context, "stream-node-capture", {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        outputChannelCount: [1],
        processorOptions: { targetRate: this.sampleRate, frameMs: FRAME_MS },
      });
      const sink = this.context.createGain();
      sink.gain.value = 0; // the worklet must be pulled by the graph, but never heard
      this.capture.connect(sink).connect(this.context.destination);
      this.capture.port.onmessage = (event) => this._onFrame(event.data);
      await this._connectInput();
    } catch (error) {
      const refused = error && error.name === "NotAllowedError";
      this._fail(
        refused
          ? "The browser refused the microphone: allow it for this page, or use a WAV file."
          : `Could not start audio: ${error.message || error}`,
      );
      await this._teardown("error");
      return;
    }
    this._openStream();
  }

  async _connectInput() {
    if (this.file) {
      const data = await this.file.arrayBuffer();
      const buffer = await this.context.decodeAudioData(data);
      this.inputSource = this.context.createBufferSource();
      this.inputSource.buffer = buffer;
      this.inputSource.onended = () => {
        this.inputEnded = true;
        this._emit("input-ended");
      };
      this.inputSource.connect(this.capture);
      return; // started with the stream, so no word is lost before it opens
    }
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: {
        channelCount: 1,
        echoCancellation: this.echoCancellation,
        noiseSuppression: this.echoCancellation,
        autoGainControl: this.echoCancellation,
      },
    });
    this.inputSource = this.context.createMediaStreamSource(this.stream);
    this.inputSource.connect(this.capture);
  }

  /**
   * Say a WAV file into the call now, mixed with the input (microphone or file): to talk
   * over the agent at a moment of your choosing, the same way every time. Muted, it is
   * silent like everything else. Resolves to false when the call is not live.
   */
  async playFile(file) {
    if (this.phase !== "live") return false;
    const buffer = await this.context.decodeAudioData(await file.arrayBuffer());
    if (this.phase !== "live") return false;
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.capture);
    const clip = { name: file.name, startMs: this.sinceStartMs(), endMs: null };
    this.clips.push(clip);
    this.clipSources.add(source);
    source.onended = () => {
      this.clipSources.delete(source);
      clip.endMs = this.sinceStartMs();
      this._emit("clip", clip);
    };
    source.start();
    this._note("clip", `saying ${file.name}`);
    return true;
  }

  _openStream() {
    const query = new URLSearchParams({ sample_rate: String(this.sampleRate) });
    if (this.token) query.set("token", this.token);
    const ws = new WebSocket(`${wsBase()}/voice?${query}`);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      ws.send(metadataFrame(this.callId));
      this.startedAt = performance.now();
      if (this.file) this.inputSource.start();
      this.phase = "live";
      this._note("metadata", this.callId);
      this._emit("phase");
      this._openFeed();
    };
    ws.onmessage = (event) => this._onServerFrame(event.data);
    ws.onerror = () => {
      if (this.phase === "connecting") {
        this._fail("The server refused the call (wrong stream token, address not allowed, or busy).");
      }
    };
    ws.onclose = (event) => {
      this._note("closed", `code ${event.code}`);
      if (this.phase !== "ended") this._teardown(this.endReason || (this.phase === "connecting" ? "refused" : "server closed"));
    };
  }

  _openFeed() {
    const query = this.token ? `?${new URLSearchParams({ token: this.token })}` : "";
    const feed = new WebSocket(`${wsBase()}/calls/${encodeURIComponent(this.callId)}/events${query}`);
    this.feed = feed;
    feed.onmessage = (event) => {
      const data = JSON.parse(event.data);
      const last = this.events.at(-1);
      const interim = (e) => e && e.kind === "caller_speech" && e.phase === "interim";
      // Only the latest interim matters: keep the list bounded by what was said.
      if (interim(data) && interim(last)) this.events[this.events.length - 1] = data;
      else this.events.push(data);
      this._emit("feed");
    };
    feed.onclose = () => {
      this.feedClosed = true;
      this._emit("feed");
    };
  }

  _onFrame({ pcm, rms, vad, end }) {
    this.callerLevel = rms;
    if (vad) {
      if (vad.speaking) {
        this.pendingEndOfSpeech = null;
      } else if (this.phase === "live") {
        // vad.at is on the audio clock, `end` (this frame) too: the gap is the hangover.
        this.pendingEndOfSpeech = performance.now() - (end - vad.at) * 1000;
      }
      this._emit("vad", vad);
    }
    if (this.phase === "live" && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(pcm);
      this.framesSent += 1;
      this.levels.push(Math.round(rms * 32768));
      if (this.levels.length > LEVELS_KEPT) this.levels.shift();
    }
  }

  _onServerFrame(data) {
    if (typeof data !== "string") {
      this._note("ignored", "binary frame from the server");
      return;
    }
    let message;
    try {
      message = JSON.parse(data);
    } catch (_) {
      this._note("ignored", "text frame that is not JSON");
      return;
    }
    const now = performance.now();
    if (message.type === "playAudio") {
      this._onPlayAudio(message, now);
    } else if (message.type === "killAudio") {
      const kill = this.player.kill();
      kill.atMs = this.sinceStartMs(now);
      this._note("killAudio", `${Math.round(kill.queuedMs)} ms of audio dropped`);
      this._checkSilenceAfterKill(kill);
    } else if (message.type === "transfer") {
      this.transferTo = message.data && message.data.destination;
      this._note("transfer", this.transferTo);
      this._finishAfterPlayout("transferred");
    } else if (message.type === "disconnect") {
      this.disconnected = true;
      this._note("disconnect");
      this._finishAfterPlayout("agent disconnected");
    } else {
      this._note("ignored", `unknown event ${message.type}`);
    }
  }

  _onPlayAudio(message, now) {
    const content = message.data && message.data.audioContent;
    if (!content) {
      this._note("ignored", "playAudio without audioContent");
      return;
    }
    const wasIdle = !this.player.playing;
    const scheduled = this.player.enqueue(base64ToBytes(content));
    if (!scheduled) {
      this._fail(`Unplayable playAudio: ${this.player.errors.at(-1)}`);
      return;
    }
    if (this.player.received === 1) {
      this.greetingMs = this.sinceStartMs(now);
      this._note("playAudio", `first audio after ${Math.round(this.greetingMs)} ms`);
    } else if (scheduled.newLine) {
      this._note("playAudio", "bot starts speaking");
    }
    let measured = false;
    if (wasIdle && this.pendingEndOfSpeech != null && this.player.received > 1) {
      const endMs = this.sinceStartMs(this.pendingEndOfSpeech);
      const firstAudioMs = this.sinceStartMs(now);
      this.callerMeasures.push({ endOfSpeechMs: endMs, firstAudioMs, ms: firstAudioMs - endMs });
      this.pendingEndOfSpeech = null;
      measured = true;
    }
    if (measured || this.player.received === 1) this._emit("audio"); // new numbers to show
  }

  _checkSilenceAfterKill(kill) {
    const received = this.player.received;
    setTimeout(() => {
      if (!this.botMeter || this.player.received !== received) return; // new audio since
      kill.levelAfter = this.botLevel();
    }, 120);
  }

  /** RMS of what the bot output plays right now (0..1). */
  botLevel() {
    if (!this.botMeter) return 0;
    const data = new Float32Array(this.botMeter.fftSize);
    this.botMeter.getFloatTimeDomainData(data);
    let sum = 0;
    for (const v of data) sum += v * v;
    return Math.sqrt(sum / data.length);
  }

  setMuted(muted) {
    this.muted = muted;
    if (this.capture) this.capture.port.postMessage({ muted });
    this._emit("phase");
  }

  _finishAfterPlayout(reason) {
    this.endReason = reason;
    this.phase = "ending";
    this._emit("phase");
    const wait = Math.min(DRAIN_LIMIT_S, this.player.queuedSeconds()) * 1000 + 100;
    setTimeout(() => this._teardown(reason), wait);
  }

  /** The caller hangs up: close the stream (code 1000), stop the microphone. */
  hangUp() {
    return this._teardown("you hung up");
  }

  async _teardown(reason) {
    if (this.phase === "ended") return;
    this.phase = "ended";
    this.endReason = this.endReason || reason;
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, "caller hung up");
    if (this.capture) this.capture.port.postMessage({ stop: true });
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    if (this.inputSource && this.inputSource.stop) {
      try {
        this.inputSource.stop();
      } catch (_) {
        // not started
      }
    }
    for (const source of this.clipSources) source.stop();
    this.clipSources.clear();
    if (this.player) this.player.kill();
    this.callerLevel = 0;
    this._emit("phase");
    if (this.context) {
      const context = this.context;
      setTimeout(() => context.close(), 200); // let the stop reach the output first
    }
  }

  /** A JSON-friendly view of the call, for the page's tests and debugging. */
  snapshot() {
    const p = this.player;
    return {
      callId: this.callId,
      phase: this.phase,
      endReason: this.endReason,
      sampleRate: this.sampleRate,
      contextRate: this.context ? this.context.sampleRate : null,
      muted: this.muted,
      framesSent: this.framesSent,
      greetingMs: this.greetingMs,
      transferTo: this.transferTo,
      disconnected: this.disconnected,
      received: p ? p.received : 0,
      played: p ? p.played : 0,
      queuedMs: p ? p.queuedSeconds() * 1000 : 0, // bot audio scheduled, not yet played
      lines: p ? p.lines.map((line) => ({ ...line })) : [],
      schedule: p ? p.schedule.map((entry) => ({ ...entry })) : [],
      kills: p ? p.kills.map((kill) => ({ ...kill })) : [],
      playerErrors: p ? [...p.errors] : [],
      callerMeasures: this.callerMeasures.map((m) => ({ ...m })),
      events: this.events.map((e) => ({ ...e })),
      feedClosed: this.feedClosed,
      protocol: this.protocol.map((entry) => ({ ...entry })),
      errors: [...this.errors],
      inputEnded: this.inputEnded,
      clips: this.clips.map((clip) => ({ ...clip })),
      levels: [...this.levels],
    };
  }
}
