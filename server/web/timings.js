// Turn rows and transcript lines from a call's events (live feed or history): pure.
//
// Server times are ms since the call started (the server's clock); the page's own
// caller-side measures are on the same axis (ms since the page sent the metadata), close
// enough to pair each with the turn whose first audio it heard.

const PAIR_WINDOW_MS = 1500;

function span(from, to) {
  return from == null || to == null ? null : Math.max(0, to - from);
}

/** One row per answered/interrupted/failed turn, oldest first. */
export function turnRows(events, clientMeasures = []) {
  const timings = new Map();
  const bargeIns = new Map();
  for (const event of events) {
    if (event.kind === "turn_timings") timings.set(event.turn, event);
    if (event.kind === "barge_in") bargeIns.set(event.turn, (bargeIns.get(event.turn) || 0) + 1);
  }
  const unpaired = [...clientMeasures];
  return [...timings.values()]
    .sort((a, b) => a.turn - b.turn)
    .map((t) => {
      let client = null;
      if (t.first_audio_sent_ms != null && unpaired.length) {
        let best = -1;
        let bestGap = PAIR_WINDOW_MS;
        unpaired.forEach((m, i) => {
          const gap = Math.abs(m.firstAudioMs - t.first_audio_sent_ms);
          if (gap <= bestGap) {
            best = i;
            bestGap = gap;
          }
        });
        if (best >= 0) client = unpaired.splice(best, 1)[0];
      }
      return {
        turn: t.turn,
        said: t.user_text,
        outcome: t.outcome,
        marks: {
          endOfSpeech: t.end_of_speech_ms,
          sttFinal: t.stt_final_ms,
          llmFirstToken: t.llm_first_token_ms,
          ttsFirstAudio: t.tts_first_audio_ms,
          firstAudioSent: t.first_audio_sent_ms,
        },
        endOfSpeechToAudio: span(t.end_of_speech_ms, t.first_audio_sent_ms),
        sttToLlm: span(t.stt_final_ms, t.llm_first_token_ms),
        llmToTts: span(t.llm_first_token_ms, t.tts_first_audio_ms),
        ttsToSent: span(t.tts_first_audio_ms, t.first_audio_sent_ms),
        sttToAudio: span(t.stt_final_ms, t.first_audio_sent_ms),
        callerSide: client ? client.ms : null,
        bargeIns: bargeIns.get(t.turn) || 0,
      };
    });
}

/** The conversation: caller finals and agent lines (with what the caller heard). */
export function transcript(events) {
  const lines = [];
  const agentByTurn = new Map();
  for (const event of events) {
    if (event.kind === "caller_speech" && event.phase === "final" && event.text) {
      lines.push({ who: "caller", text: event.text, at: event.at_ms });
    } else if (event.kind === "agent_speech") {
      const line = { who: "agent", turn: event.turn, text: event.text, heard: event.heard, at: event.at_ms };
      lines.push(line);
      agentByTurn.set(event.turn, line); // turn 0: the latest fixed line (greeting, ...)
    } else if (event.kind === "barge_in") {
      const line = agentByTurn.get(event.turn);
      if (line) line.heard = event.heard_text; // the caller cut it here
      lines.push({ who: "barge-in", text: event.words, at: event.at_ms });
    }
  }
  return lines;
}

/** The words the caller is saying right now (the last interim), or "". */
export function currentInterim(events) {
  for (let i = events.length - 1; i >= 0; i--) {
    const event = events[i];
    if (event.kind === "caller_speech") return event.phase === "interim" ? event.text : "";
  }
  return "";
}
