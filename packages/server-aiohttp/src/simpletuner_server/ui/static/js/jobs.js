// Jobs and queue: every job you may see (refreshed every few seconds), queue statistics, the GPU allocation,
// and for admins the concurrency limits and the remote workers.
import {
  $, api, badge, clear, clearFieldErrors, fmtDuration, fmtTime, h, params, progressBar, showError, toast,
} from "./common.js";

const REFRESH_MS = 4000;
const admin = params.admin === "1";

function progressCell(job) {
  const p = job.progress;
  if (!p || !p.total_steps) return h("span.muted", {}, job.state === "queued" ? job.reason || "waiting" : "–");
  const bar = progressBar(p.percent ?? (100 * p.step) / p.total_steps, `job ${job.job_id} progress`);
  return h("div", {}, bar, h("small.muted", {}, `${p.step}/${p.total_steps}`));
}

function jobLink(id) {
  return h("a.mono", { href: `/jobs/${encodeURIComponent(id)}` }, id);
}

function where(job) {
  if (job.worker_id) return `${job.executor || "worker"}: ${job.worker_id}`;
  if (job.executor) return job.executor;
  return job.target || "auto";
}

// What each table last showed, as JSON: an unchanged answer leaves the table (and the keyboard focus) alone.
const drawn = new Map();
function changed(table, data) {
  const json = JSON.stringify(data);
  if (drawn.get(table) === json) return false;
  drawn.set(table, json);
  return true;
}

async function loadJobs() {
  const body = $("#jobs-table tbody");
  const data = await api("/api/jobs?limit=200");
  if (!changed("jobs", data.jobs)) return;
  // a rebuilt table gets the focus back on the same job's link
  const focused = body.contains(document.activeElement) ? document.activeElement.getAttribute("href") : null;
  drawJobs(body, data.jobs);
  if (focused) body.querySelector(`a[href="${CSS.escape(focused)}"]`)?.focus();
}

function drawJobs(body, jobs) {
  if (!jobs.length) {
    clear(body, h("tr", {}, h("td.muted", { colspan: 8 }, "No jobs yet: start one from an environment.")));
    return;
  }
  clear(body, jobs.map((job) => h("tr", { dataset: { job: job.job_id } },
    h("td", {}, jobLink(job.job_id)),
    h("td", {}, badge(job.state), job.queue_position ? h("small.muted", {}, ` #${job.queue_position}`) : null),
    h("td.opt", {}, job.env || "–"),
    h("td.opt", {}, job.user || "–"),
    h("td", {}, progressCell(job)),
    h("td.opt", { title: fmtTime(job.created_at) }, fmtDuration(job.duration_seconds)),
    h("td.opt", {}, job.allocated_gpus && job.allocated_gpus.length ? job.allocated_gpus.join(", ")
      : job.cpu_slot ? "CPU" : String(job.gpus_requested || 0)),
    h("td.opt", {}, where(job)),
  )));
}

function stat(label, value) {
  return h("div.stat", {}, h("b", {}, value ?? "–"), h("span", {}, label));
}

async function loadQueue() {
  const q = await api("/api/queue/stats");
  const by = q.by_status || {};
  clear($("#queue-stats"), stat("queued", q.queue_depth ?? by.queued ?? 0), stat("running", q.running ?? 0),
    stat("completed", by.completed ?? 0), stat("failed", by.failed ?? 0),
    stat("avg wait", fmtDuration(q.avg_wait_seconds)));
  fillLimits(q);
  if (admin && changed("workers", q.workers || [])) renderWorkers(q.workers || []);
  const s = await system;
  if (changed("allocation", q.local || {})) renderAllocation(q.local || {}, s);
}

// The host's core count and memory use, read once (the allocation itself comes with every queue answer).
const system = api("/api/system/status").catch((err) => {
  if (err.status !== 401) toast(err.message, "error");
  return {};
});

function renderAllocation(alloc, s) {
  const devices = alloc.devices || [];
  const box = $("#gpu-allocation");
  const rows = devices.map((d) => h("tr", {}, h("td", {}, `GPU ${d.index}`), h("td", {}, d.name || "–"),
    h("td.num", {}, d.memory_gb ? `${d.memory_gb} GB` : "–"),
    h("td", {}, d.job_id ? jobLink(d.job_id) : h("span.muted", {}, "free"))));
  const cpu = alloc.cpu_slot || {};
  rows.push(h("tr", {}, h("td", {}, "CPU slot"), h("td", {}, s.cpu_count ? `${s.cpu_count} cores` : "–"),
    h("td.num", {}, s.memory_percent !== undefined ? `${Math.round(s.memory_percent)} % RAM` : "–"),
    h("td", {}, cpu.job_id ? jobLink(cpu.job_id) : h("span.muted", {}, "free"))));
  clear(box, h("div.table-wrap", {}, h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Device"),
    h("th", {}, "Name"), h("th.num", {}, "Memory"), h("th", {}, "Job"))), h("tbody", {}, rows))));
}

let limitsFilled = false;
function fillLimits(q) {
  if (!admin || limitsFilled) return;
  limitsFilled = true;
  $("#limits-card").classList.remove("hidden");
  const form = $("#limits-form");
  for (const name of ["local_gpu_max_concurrent", "local_job_max_concurrent", "local_user_max_concurrent"]) {
    form.elements[name].value = q[name] ?? "";
  }
}

$("#limits-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.target;
  clearFieldErrors(form);
  const body = {};
  for (const el of form.elements) if (el.name) body[el.name] = el.value === "" ? null : Number(el.value);
  try {
    await api("/api/queue/concurrency", { method: "POST", json: body });
    toast("Limits saved", "success");
  } catch (err) {
    showError(err, (path) => form.elements[path]);
  }
});

function renderWorkers(workers) {
  $("#workers-card").classList.remove("hidden");
  const box = $("#workers");
  if (!workers.length) {
    clear(box, h("p.muted", {}, "No remote workers. Register one with POST /api/admin/workers, then run "),
      h("code", {}, "simpletuner worker --orchestrator-url … --worker-token …"));
    return;
  }
  clear(box, h("div.table-wrap", {}, h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Worker"),
    h("th", {}, "Status"), h("th", {}, "GPUs"), h("th", {}, "Labels"), h("th", {}, "Job"))),
  h("tbody", {}, workers.map((w) => h("tr", {}, h("td", {}, w.name || w.id), h("td", {}, badge(w.status)),
    h("td", {}, `${w.gpu_count ?? 0} × ${w.gpu_name || "–"}`),
    h("td", {}, Object.entries(w.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "–"),
    h("td", {}, w.current_job_id ? jobLink(w.current_job_id) : "–")))))));
}

async function refresh() {
  const results = await Promise.allSettled([loadJobs(), loadQueue()]);
  const failed = results.find((r) => r.status === "rejected");
  if (failed && failed.reason && failed.reason.status !== 401) toast(failed.reason.message, "error");
}

// The next refresh is planned when this one has finished, so a slow answer never overlaps the next poll.
async function poll(first = false) {
  if (first || !document.hidden) await refresh();
  setTimeout(poll, REFRESH_MS);
}

poll(true);
