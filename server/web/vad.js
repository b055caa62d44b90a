// Energy voice-activity detection on 20 ms frames, for the caller-side latency measure.
//
// Not a speech recogniser's VAD: it only has to tell when the page's own input stopped
// carrying sound, so the page can time "end of my speech -> first bot audio" itself.
// The threshold follows the noise floor (fast down, slow up) and never drops below
// minDb, so a quiet room and a fan both work; a short hangover bridges gaps between words.

export class EnergyVad {
  constructor({ frameMs = 20, startMs = 60, hangoverMs = 300, minDb = -50, marginDb = 15 } = {}) {
    this.frameS = frameMs / 1000;
    this.startFrames = Math.max(1, Math.round(startMs / frameMs));
    this.hangFrames = Math.max(1, Math.round(hangoverMs / frameMs));
    this.minDb = minDb;
    this.marginDb = marginDb;
    this.floorDb = -100;
    this.speaking = false;
    this.above = 0;
    this.below = 0;
    this.lastSpeechEnd = 0;
  }

  get thresholdDb() {
    return Math.max(this.minDb, this.floorDb + this.marginDb);
  }

  /** One frame's RMS (0..1) ending at time `end` (s); returns a change or null. */
  push(rms, end) {
    const db = rms > 1e-5 ? 20 * Math.log10(rms) : -100;
    const loud = db >= this.thresholdDb;
    if (!loud) {
      this.floorDb = db < this.floorDb ? db : this.floorDb + 0.05; // ~2.5 dB/s upwards
    }
    if (loud) {
      this.above += 1;
      this.below = 0;
      this.lastSpeechEnd = end;
      if (!this.speaking && this.above >= this.startFrames) {
        this.speaking = true;
        return { speaking: true, at: end - this.above * this.frameS };
      }
      return null;
    }
    this.above = 0;
    this.below += 1;
    if (this.speaking && this.below >= this.hangFrames) {
      this.speaking = false;
      return { speaking: false, at: this.lastSpeechEnd };
    }
    return null;
  }
}
