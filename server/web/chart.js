// Per-turn latency waterfall, drawn as SVG: where each turn's time went.
//
// One row per turn: end of speech -> STT final -> LLM first token -> TTS first audio ->
// first playAudio sent, each stage its own colour, from the turn's first known mark; a
// thin bar under it shows the page's own end-of-speech -> first-audio measure.

import { svg } from "./dom.js";

const STAGES = [
  { from: "endOfSpeech", to: "sttFinal", label: "end of speech → STT final", cls: "stage-stt" },
  { from: "sttFinal", to: "llmFirstToken", label: "STT final → LLM first token", cls: "stage-llm" },
  { from: "llmFirstToken", to: "ttsFirstAudio", label: "LLM → TTS first audio", cls: "stage-tts" },
  { from: "ttsFirstAudio", to: "firstAudioSent", label: "TTS → playAudio sent", cls: "stage-send" },
];

const ROW = 34;
const LEFT = 64;
const RIGHT = 56;
const WIDTH = 640;

/** The next round number up (100, 200, 250, 500, 1000, ...) for a readable axis. */
function niceCeiling(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

function origin(marks) {
  const known = [marks.endOfSpeech, marks.sttFinal].filter((v) => v != null);
  return known.length ? Math.min(...known) : null;
}

function total(row) {
  const start = origin(row.marks);
  const end = row.marks.firstAudioSent;
  const server = start == null || end == null ? 0 : end - start;
  return Math.max(server, row.callerSide || 0);
}

/** An <svg> waterfall of the given turn rows (see timings.turnRows). */
export function latencyChart(rows, title = "Per-turn latency") {
  const scaleMs = niceCeiling(Math.max(100, ...rows.map(total)));
  const plot = WIDTH - LEFT - RIGHT;
  const x = (ms) => LEFT + (ms / scaleMs) * plot;
  const height = rows.length * ROW + 64;
  const chart = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${height}`,
    class: "latency-chart",
    role: "img",
    "aria-label": `${title}: ${rows.length} turns, longest ${Math.round(scaleMs)} ms`,
  });
  chart.append(svg("title", { text: title }));
  rows.forEach((row, i) => {
    const y = 8 + i * ROW;
    chart.append(svg("text", { x: 4, y: y + 14, class: "chart-label", text: `Turn ${row.turn}` }));
    const start = origin(row.marks);
    if (start != null) {
      for (const stage of STAGES) {
        const a = row.marks[stage.from];
        const b = row.marks[stage.to];
        if (a == null || b == null) continue;
        const bar = svg("rect", {
          x: x(a - start),
          y,
          width: Math.max(1, x(b - start) - x(a - start)),
          height: 18,
          class: stage.cls,
        });
        bar.append(svg("title", { text: `${stage.label}: ${Math.round(b - a)} ms` }));
        chart.append(bar);
      }
      const end = row.marks.firstAudioSent;
      if (end != null) {
        chart.append(
          svg("text", { x: x(end - start) + 4, y: y + 14, class: "chart-value", text: `${Math.round(end - start)} ms` }),
        );
      }
    }
    if (row.callerSide != null) {
      const bar = svg("rect", { x: LEFT, y: y + 21, width: Math.max(1, x(row.callerSide) - LEFT), height: 5, class: "stage-caller" });
      bar.append(svg("title", { text: `caller side, end of speech → first audio: ${Math.round(row.callerSide)} ms` }));
      chart.append(bar);
    }
  });
  const axisY = rows.length * ROW + 14;
  chart.append(svg("line", { x1: LEFT, y1: axisY, x2: LEFT + plot, y2: axisY, class: "chart-axis" }));
  for (const fraction of [0, 0.25, 0.5, 0.75, 1]) {
    const label = Math.round(scaleMs * fraction);
    chart.append(svg("text", { x: x(scaleMs * fraction), y: axisY + 16, class: "chart-tick", "text-anchor": "middle", text: `${label}` }));
  }
  const legendY = axisY + 36;
  const legend = [...STAGES.map((s) => [s.cls, s.label]), ["stage-caller", "caller side"]];
  let lx = 4;
  for (const [cls, label] of legend) {
    const short = label.replace(/ first (token|audio)/, "").replace("end of speech", "speech end");
    chart.append(svg("rect", { x: lx, y: legendY - 9, width: 10, height: 10, class: `${cls} legend` }));
    chart.append(svg("text", { x: lx + 14, y: legendY, class: "chart-tick", text: short }));
    lx += 14 + short.length * 6.2 + 12;
  }
  return chart;
}

export const CHART_STAGES = STAGES;
