// WAV (RIFF, 16-bit PCM) parsing and base64, for playAudio payloads.
//
// Parsed synchronously on purpose: decodeAudioData is asynchronous, and chunks must be
// scheduled in the order they arrived.

export function base64ToBytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** {sampleRate, channels, samples: Float32Array (mono mix)} or throws with the reason. */
export function parseWav(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const tag = (at) => String.fromCharCode(...bytes.subarray(at, at + 4));
  if (bytes.byteLength < 12 || tag(0) !== "RIFF" || tag(8) !== "WAVE") {
    throw new Error("not a RIFF/WAVE file");
  }
  let format = null;
  let at = 12;
  while (at + 8 <= bytes.byteLength) {
    const id = tag(at);
    const size = view.getUint32(at + 4, true);
    const body = at + 8;
    if (id === "fmt ") {
      let code = view.getUint16(body, true);
      if (code === 0xfffe && size >= 26) code = view.getUint16(body + 24, true); // extensible
      format = {
        code,
        channels: view.getUint16(body + 2, true),
        sampleRate: view.getUint32(body + 4, true),
        bits: view.getUint16(body + 14, true),
      };
    } else if (id === "data") {
      if (!format) throw new Error("data chunk before fmt chunk");
      if (format.code !== 1 || format.bits !== 16) {
        throw new Error(`unsupported WAV format ${format.code}/${format.bits}-bit (need PCM 16-bit)`);
      }
      const end = Math.min(bytes.byteLength, body + size);
      const frames = Math.floor((end - body) / (2 * format.channels));
      const samples = new Float32Array(frames);
      for (let f = 0; f < frames; f++) {
        let sum = 0;
        for (let c = 0; c < format.channels; c++) {
          sum += view.getInt16(body + 2 * (f * format.channels + c), true);
        }
        samples[f] = sum / format.channels / 32768;
      }
      return { sampleRate: format.sampleRate, channels: format.channels, samples };
    }
    at = body + size + (size % 2); // chunks are padded to an even length
  }
  throw new Error("no data chunk");
}
