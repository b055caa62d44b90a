// The playground page: wires the controls to a Call, renders it live, and the history.

import { Call } from "./call.js";
import { latencyChart } from "./chart.js";
import { clear, el } from "./dom.js";
import { HistorySource, HistoryView } from "./history.js";
import { currentInterim, transcript, turnRows } from "./timings.js";
import { renderTranscript, renderTurns } from "./views.js";

const TOKEN_KEY = "voice-playground-token";
const $ = (selector) => document.querySelector(selector);

const page = {
  config: null,
  call: null,
  callerMeasures: new Map(), // callId -> caller-side measures, for the history view
  announced: 0, // transcript lines already read out by screen readers
};

function token() {
  return $("#token").value.trim();
}

function setStatus(text) {
  $("#status").textContent = text;
}

function describePhase(call) {
  switch (call.phase) {
    case "connecting":
      return "Connecting…";
    case "live":
      return call.muted ? `In call ${call.callId} (muted)` : `In call ${call.callId}: speak now`;
    case "ending":
      return call.transferTo ? `Transferred to ${call.transferTo}` : "The agent ended the call";
    default:
      if (call.transferTo) return `Call ended: transferred to ${call.transferTo}`;
      if (call.disconnected) return "Call ended: the agent disconnected";
      return `Call ended (${call.endReason || "hung up"})`;
  }
}

function renderControls() {
  const call = page.call;
  const live = call && (call.phase === "connecting" || call.phase === "live" || call.phase === "ending");
  $("#call").disabled = Boolean(live);
  $("#hangup").disabled = !live;
  $("#mute").disabled = !(call && call.phase === "live");
  $("#mute").setAttribute("aria-pressed", String(Boolean(call && call.muted)));
  $("#mute").textContent = call && call.muted ? "Unmute" : "Mute";
  $("#say-wav").disabled = !(call && call.phase === "live" && $("#wav").files.length);
  // The WAV file can be chosen during a call too: "Say WAV file" says it into the call.
  for (const input of document.querySelectorAll("#setup input:not(#wav)")) input.disabled = Boolean(live);
  document.body.dataset.phase = call ? call.phase : "idle";
}

function renderConversation() {
  const call = page.call;
  const lines = transcript(call.events);
  renderTranscript($("#transcript"), lines, currentInterim(call.events));
  // The list is redrawn as it changes; screen readers hear each new line once, from here.
  if (lines.length > page.announced) {
    const line = lines.at(-1);
    const who = { caller: "You", agent: "Agent", "barge-in": "You interrupted" }[line.who];
    $("#announce").textContent = `${who}: ${line.who === "agent" ? line.heard ?? line.text : line.text}`;
    page.announced = lines.length;
  }
  const rows = turnRows(call.events, call.callerMeasures);
  renderTurns($("#turns tbody"), rows, call.greetingMs);
  const chart = $("#live-chart");
  clear(chart);
  if (rows.length) chart.append(latencyChart(rows, "Latency per turn of this call"));
  $("#barge-ins").textContent = String(call.events.filter((e) => e.kind === "barge_in").length);
}

function renderProtocol() {
  const log = clear($("#protocol"));
  for (const entry of page.call.protocol.slice(-30)) {
    const detail = entry.detail ? `: ${entry.detail}` : "";
    log.append(el("li", { text: `${(entry.at / 1000).toFixed(2)} s  ${entry.type}${detail}` }));
  }
}

function animateMeters() {
  const call = page.call;
  const caller = call && call.phase !== "ended" ? call.callerLevel : 0;
  const bot = call && call.phase !== "ended" ? call.botLevel() : 0;
  // Meters show dBFS from -60 to 0, the range a voice moves in.
  const scale = (rms) => Math.max(0, Math.min(1, (20 * Math.log10(rms + 1e-6) + 60) / 60));
  $("#caller-level").value = scale(caller);
  $("#bot-level").value = scale(bot);
  requestAnimationFrame(animateMeters);
}

async function startCall(event) {
  event.preventDefault();
  if (page.config.token_required && !token()) {
    setStatus("This server needs the stream token (VOICE_WS_TOKEN): enter it first.");
    $("#token").focus();
    return;
  }
  if (page.config.token_required) sessionStorage.setItem(TOKEN_KEY, token());
  const useFile = $("#input-file").checked;
  const file = useFile ? $("#wav").files[0] : null;
  if (useFile && !file) {
    setStatus("Choose a WAV file first, or use the microphone.");
    $("#wav").focus();
    return;
  }
  const call = new Call({
    sampleRate: Number(document.querySelector("input[name=rate]:checked").value),
    token: token(),
    file,
    echoCancellation: $("#echo").checked,
  });
  page.call = call;
  page.callerMeasures.set(call.callId, call.callerMeasures);
  page.announced = 0;
  call.addEventListener("phase", () => {
    setStatus(describePhase(call));
    renderControls();
  });
  call.addEventListener("feed", renderConversation);
  call.addEventListener("audio", renderConversation); // the greeting and caller-side times
  call.addEventListener("protocol", renderProtocol);
  call.addEventListener("error", (e) => setStatus(e.detail.message));
  call.addEventListener("input-ended", () => setStatus(`${describePhase(call)}; the WAV file has finished`));
  renderControls();
  await call.start();
  $("#hangup").focus();
}

/** Say the chosen WAV file into the live call now (over the agent, to try a barge-in). */
async function sayFile() {
  const call = page.call;
  const file = $("#wav").files[0];
  if (!call || !file) return;
  try {
    if (await call.playFile(file)) setStatus(`${describePhase(call)}; saying ${file.name}`);
  } catch (error) {
    setStatus(`Could not play ${file.name}: ${error.message || error}`);
  }
}

async function boot() {
  page.config = await (await fetch("/playground/config")).json();
  const rates = $("#rates");
  for (const rate of page.config.sample_rates) {
    const id = `rate-${rate}`;
    rates.append(
      el("input", { type: "radio", name: "rate", id, value: rate, checked: rate === page.config.default_sample_rate }),
      el("label", { for: id, text: `${rate / 1000} kHz` }),
    );
  }
  if (page.config.token_required) {
    $("#token-row").hidden = false;
    $("#token").value = sessionStorage.getItem(TOKEN_KEY) || "";
  }
  $("#wav").addEventListener("change", renderControls);
  $("#setup").addEventListener("submit", startCall);
  $("#hangup").addEventListener("click", () => page.call && page.call.hangUp());
  $("#mute").addEventListener("click", () => page.call && page.call.setMuted(!page.call.muted));
  $("#say-wav").addEventListener("click", sayFile);
  const history = new HistoryView($("#history"), new HistorySource(token), page.callerMeasures);
  const route = () => {
    const view = location.hash === "#history" ? "history" : "call";
    $("#call-view").hidden = view !== "call";
    $("#history").hidden = view !== "history";
    for (const link of document.querySelectorAll("nav a")) {
      link.setAttribute("aria-current", link.hash === `#${view}` ? "page" : "false");
    }
    if (view === "history") history.refresh();
  };
  window.addEventListener("hashchange", route);
  route();
  renderControls();
  requestAnimationFrame(animateMeters);
  document.body.dataset.ready = "true";
}

// For tests and debugging: the call's state as plain data.
window.playground = {
  state: () => (page.call ? page.call.snapshot() : null),
  history: () => page.callerMeasures,
};

boot().catch((error) => setStatus(`The page could not start: ${error.message}`));
