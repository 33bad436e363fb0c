// One job, live. First paint needs three small reads (the job, a decimated loss/LR series, the last events),
// whatever the log's length; after that everything arrives over the event stream, which resumes from the
// last event id after a drop.
import {
  $, api, badge, clear, confirmDialog, fmtBytes, fmtDuration, fmtNumber, fmtTime, followEvents, h, params,
  setProgressBar, toast,
} from "./common.js";
import { LossChart } from "./loss_chart.js";

const jobId = params.job;
const q = `job_id=${encodeURIComponent(jobId)}`;
const FINAL = new Set(["completed", "stopped", "cancelled", "failed"]);
const LOG_LIMIT = 200;
// the first reads' sizes, from the page (ui/views.py CHART_POINTS and TAIL: its <link rel="preload"> URLs)
const CHART_POINTS = Number(params.chartPoints), TAIL = Number(params.tail);
let state = null, lastLogged = 0, stream = null;

const chart = new LossChart($("#chart"), $("#chart-points"));

// --- header: state, stage, progress ---------------------------------------------------------------------

// `reason`: the failure reason to show; "" or null clears it, undefined leaves it as it is.
function setState(next, reason) {
  state = next;
  clear($("#job-state"), badge(next));
  const canCommand = params.command === "1" && !FINAL.has(next) && next !== "queued";
  for (const id of ["cmd-validate", "cmd-checkpoint", "cmd-stop"]) $("#" + id).disabled = !canCommand;
  $("#cmd-cancel").disabled = params.command !== "1" || FINAL.has(next);
  if (reason !== undefined) $("#job-reason").textContent = reason || ""; // hidden while empty (app.css)
}

// `p`: the job's `progress` as /api/jobs/{id} answers it: {step, total_steps, percent, loss, learning_rate,
// iterations_per_second, eta_seconds} (live events are mapped to the same shape by fromStatusEvent).
function setProgress(p) {
  if (!p) return;
  const { step, total_steps: total } = p;
  const percent = p.percent ?? (total ? (100 * step) / total : 0);
  setProgressBar($("#job-progress"), percent);
  $("#st-step").textContent = total ? `${step}/${total}` : String(step ?? "–");
  $("#st-percent").textContent = `${Math.round(percent)} %`;
  if (p.loss !== undefined) $("#st-loss").textContent = fmtNumber(p.loss);
  if (p.learning_rate !== undefined) $("#st-lr").textContent = fmtNumber(p.learning_rate);
  const rate = p.iterations_per_second;
  if (rate !== undefined && rate !== null) $("#st-rate").textContent = fmtNumber(rate, 2);
  $("#st-eta").textContent = FINAL.has(state) ? "done" : fmtDuration(p.eta_seconds);
}

// A live `training.status` event's payload ({step, total, percent, loss, lr, rate, eta_seconds}) as a progress.
function fromStatusEvent(d) {
  return { step: d.step, total_steps: d.total, percent: d.percent, loss: d.loss, learning_rate: d.lr,
    iterations_per_second: d.rate, eta_seconds: d.eta_seconds };
}

// --- event log ------------------------------------------------------------------------------------------

// Append events to the log (one layout read for the whole batch: the initial tail comes at once).
function logEvents(events) {
  const box = $("#log"), list = $("#log ul");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  let added = 0;
  for (const ev of events) {
    const id = Number(ev.id || 0);
    if (id && id <= lastLogged) continue;
    if (id) lastLogged = id;
    const time = ev.timestamp ? new Date(ev.timestamp).toLocaleTimeString() : "";
    list.append(h("li.sev-" + (ev.severity || "info"), {}, h("span.t", {}, time), ev.title || ev.type,
      ev.message ? h("span.muted", {}, ` · ${ev.message}`) : null));
    added += 1;
  }
  if (!added) return;
  while (list.childElementCount > LOG_LIMIT) list.firstElementChild.remove();
  $("#log-count").textContent = `event ${lastLogged}`;
  if (atBottom) box.scrollTop = box.scrollHeight;
}

// --- validation grid: prompts × steps, previews streaming into a last column ------------------------------

let images = [], steps = [], prompts = [];
const previews = new Map(); // prompt text -> {src, label}

function renderValidation() {
  const box = $("#validation");
  if (!images.length && !previews.size) return;
  const byKey = new Map(images.map((img) => [`${img.prompt_name}|${img.step}`, img]));
  const names = prompts.length ? prompts : [...new Set(images.map((i) => i.prompt_name))];
  const promptText = new Map(images.map((i) => [i.prompt_name, i.prompt]));
  const head = h("tr", {}, h("th", {}, "prompt"), steps.map((s) => h("th", { scope: "col" }, `step ${s}`)),
    previews.size ? h("th", { scope: "col" }, "live preview") : null);
  const rows = names.map((name) => h("tr", {},
    h("th", { scope: "row", title: promptText.get(name) || "" }, name),
    steps.map((s) => {
      const img = byKey.get(`${name}|${s}`);
      return h("td", {}, img ? imageButton(img) : h("span.muted", {}, "–"));
    }),
    previews.size ? h("td.preview-cell", {}, previewFor(promptText.get(name) ?? "")) : null));
  if (!names.length) {
    rows.push(h("tr", {}, h("th", { scope: "row" }, "preview"), h("td.preview-cell", {}, previewFor(null))));
  }
  clear(box, h("table", {}, h("thead", {}, head), h("tbody", {}, rows)));
}

// The latest preview of a prompt's row (the unconditional row's prompt is ""); with no row yet, the latest one.
function previewFor(prompt) {
  const p = prompt === null ? [...previews.values()].pop() : previews.get(prompt);
  return p ? h("img", { src: p.src, alt: `preview ${p.label}`, title: `sampler step ${p.label}` }) : "";
}

function imageButton(img) {
  return h("button.img", { type: "button", "aria-label": `${img.prompt_name} at step ${img.step}`,
    onclick: () => openLightbox(img) },
  h("img", { src: img.url, alt: `${img.prompt_name}, step ${img.step}`, loading: "lazy" }));
}

let shown = null;
function openLightbox(img) {
  shown = img;
  $("#lb-img").src = img.url;
  $("#lb-img").alt = `${img.prompt_name}, step ${img.step}`;
  $("#lb-title").textContent = `${img.prompt_name} · step ${img.step}`;
  $("#lb-caption").textContent = img.prompt || "";
  const dialog = $("#lightbox");
  if (!dialog.open) dialog.showModal();
}

function moveLightbox(delta) {
  if (!shown) return;
  const same = images.filter((i) => i.prompt_name === shown.prompt_name).sort((a, b) => a.step - b.step);
  const at = same.findIndex((i) => i.event_id === shown.event_id);
  const next = same[at + delta];
  if (next) openLightbox(next);
}

$("#lb-close").addEventListener("click", () => $("#lightbox").close());
$("#lb-prev").addEventListener("click", () => moveLightbox(-1));
$("#lb-next").addEventListener("click", () => moveLightbox(1));
$("#lightbox").addEventListener("keydown", (e) => {
  if (e.key === "ArrowLeft") moveLightbox(-1);
  if (e.key === "ArrowRight") moveLightbox(1);
});
$("#lightbox").addEventListener("click", (e) => { if (e.target === e.currentTarget) e.currentTarget.close(); });

async function loadValidation(preloaded = false) {
  const data = await api(`/api/training/validation/images?${q}`, { preloaded });
  images = data.images;
  steps = data.steps;
  prompts = data.prompts;
  renderValidation();
}

// --- checkpoints --------------------------------------------------------------------------------------------

async function loadCheckpoints(preloaded = false) {
  const data = await api(`/api/training/checkpoints?${q}`, { preloaded });
  const box = $("#checkpoints");
  if (!data.checkpoints.length) return;
  clear(box, h("div.table-wrap", {}, h("table#checkpoint-table", {}, h("thead", {}, h("tr", {},
    h("th", {}, "step"), h("th.num", {}, "size"), h("th.opt", {}, "saved"), h("th", {}, ""))),
  h("tbody", {}, data.checkpoints.map((c) => h("tr", {}, h("td", {}, `checkpoint-${c.step}`),
    h("td.num", {}, fmtBytes(c.size_bytes)), h("td.opt", {}, fmtTime(c.created_at)),
    h("td", {}, h("a.btn.small", { href: c.download_url, download: "" }, "Download"))))))));
}

// --- live updates -----------------------------------------------------------------------------------------

const debounced = (fn, ms) => { let t; return () => { clearTimeout(t); t = setTimeout(fn, ms); }; };
const refreshValidation = debounced(() => loadValidation().catch(() => {}), 300);
const refreshCheckpoints = debounced(() => loadCheckpoints().catch(() => {}), 300);

function onEvent(ev) {
  logEvents([ev]);
  const d = ev.data || {};
  switch (ev.event_type) {
    case "training.status":
      setProgress(fromStatusEvent(d));
      chart.push(d.step, d.loss, d.lr);
      break;
    case "training.metric":
      // the envelope's metrics map reads every payload shape ({name, value}, flat numbers, a `metrics` map)
      for (const [name, value] of Object.entries(ev.progress?.metrics || {})) chart.pushMetric(name, d.step, value);
      break;
    case "job.stage":
      $("#job-stage").textContent = `${d.label || d.stage}: ${d.status}`;
      break;
    case "checkpoint.saved":
      refreshCheckpoints();
      break;
    case "validation.image":
      if (d.validation_type === "intermediary" && ev.images && ev.images[0]) {
        previews.set(d.prompt, { src: ev.images[0].src || ev.images[0].url, label: d.step_label || d.step });
        renderValidation();
      } else {
        refreshValidation(); // the last preview stays in its column until the next one replaces it
      }
      break;
    default:
      if (ev.event_type && ev.event_type.startsWith("job.")) {
        const next = { "job.queued": "queued", "job.started": "starting", "job.running": "running",
          "job.completed": "completed", "job.failed": "failed", "job.cancelled": "cancelled",
          "job.stopped": "stopped", "job.requeued": "queued" }[ev.event_type];
        if (next) setState(next, ev.event_type === "job.failed" ? d.reason ?? "" : "");
        if (FINAL.has(next)) { refreshCheckpoints(); refreshValidation(); }
      }
  }
}

function setLive(mode) {
  const el = $("#live");
  el.className = "live " + (mode === "live" ? "on" : mode === "ended" ? "" : "off");
  el.textContent = { live: "live", reconnecting: "reconnecting…", ended: "finished" }[mode] || mode;
}

async function command(path, label) {
  try {
    const r = await api(`/api/training/${path}`, { method: "POST", json: { job_id: jobId } });
    toast(`${label}: requested (${r.state})`, "success");
    if (r.state) setState(r.state); // e.g. "stopping" until the trainer has finished its step
  } catch (err) {
    toast(`${label}: ${err.message}`, "error");
  }
}

$("#cmd-validate").addEventListener("click", () => command("validation/run", "Validation"));
$("#cmd-checkpoint").addEventListener("click", () => command("checkpoint/run", "Checkpoint"));
$("#cmd-stop").addEventListener("click", async () => {
  if (await confirmDialog({ title: "Stop this job?", yes: "Stop",
    text: "Stop gracefully? The trainer finishes its step and saves a checkpoint." })) command("stop", "Stop");
});
$("#cmd-cancel").addEventListener("click", async () => {
  if (await confirmDialog({ title: "Cancel this job?", yes: "Cancel job", no: "Keep it running", danger: true,
    text: "It ends without a final checkpoint." })) command("cancel", "Cancel");
});

async function main() {
  // Everything the first paint needs, in one parallel round: the server rendered the state and the event id
  // the page starts from, so no request waits for another.
  setState(params.state); // (the server rendered the failure reason: left as it is)
  const last = Number(params.lastEvent || 0);
  const tailFrom = Math.max(0, last - TAIL);
  let since = last; // where the live stream starts when the first reads fail
  try {
    const [job, metrics, tail] = await Promise.all([
      api(`/api/jobs/${encodeURIComponent(jobId)}`, { preloaded: true }),
      api(`/api/training/metrics?${q}&max_points=${CHART_POINTS}`, { preloaded: true }),
      api(`/api/training/events?${q}&since_index=${tailFrom}&limit=${TAIL}`, { preloaded: true }),
      loadValidation(true).catch((err) => toast(err.message, "error")),
      loadCheckpoints(true).catch((err) => toast(err.message, "error")),
    ]);
    setState(job.state, job.state === "failed" ? job.reason : "");
    setProgress(job.progress);
    if (job.stage) $("#job-stage").textContent = `${job.stage.label || job.stage.stage}: ${job.stage.status}`;
    chart.load(metrics);
    logEvents(tail.events);
    // live from the older of the two reads: the chart and the log each skip what they already have
    since = Math.min(metrics.last_event_id, tail.events.length ? Number(tail.events.at(-1).id) : tailFrom);
  } catch (err) {
    // the page still follows the run from the event it was rendered at
    $("#job-meta").append(h("span.sev-error#job-load-error", {}, ` · could not load the job: ${err.message}`));
  }
  stream = followEvents(jobId, since, onEvent, setLive);
  document.body.dataset.readyMs = String(Math.round(performance.now())); // since navigation start (bench/ui.py)
  document.body.dataset.ready = "1"; // first render done (read by the browser tests and the benchmark)
}

main();
window.addEventListener("pagehide", () => stream && stream.close());
