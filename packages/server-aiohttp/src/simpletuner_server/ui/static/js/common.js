// Shared by every dashboard page: the API client (CSRF header on writes), safe DOM building (text only, never
// innerHTML with data), formatting, toasts and a resumable event-stream follower. No framework, no build step.

const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content || "";
export const params = document.body.dataset; // data-* attributes the server put on <body>

export class ApiError extends Error {
  constructor(status, message, errors, body) {
    super(message);
    this.status = status;
    this.errors = errors || [];
    this.body = body;
  }
}

// fetch() a JSON API route. `json` or `form` (FormData) for the body. Throws ApiError with the server's
// message and per-field errors ({path, message, did_you_mean}) on a non-2xx answer.
let signingOut = false; // set by the sign-out button: pages stop polling instead of collecting 401s

export async function api(path, { method = "GET", json, form, signal, headers = {}, preloaded = false } = {}) {
  if (signingOut && !path.endsWith("/auth/logout")) return new Promise(() => {});
  // a read the page preloads goes out exactly as <link rel=preload as=fetch> sent it (no extra headers), so
  // the browser hands over the preloaded response instead of asking again
  const base = preloaded ? {} : { Accept: "application/json" };
  const init = { method, credentials: "same-origin", signal, headers: { ...base, ...headers } };
  if (method !== "GET" && method !== "HEAD") init.headers["X-CSRF-Token"] = csrfToken();
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  const resp = await fetch(path, init);
  return parseAnswer(resp.status, await resp.text(), resp.statusText, path);
}

// One reading of an answer for api() and upload(): a 401 (outside sign-in and setup) goes to the sign-in page;
// a non-2xx becomes an ApiError with the server's message and per-field errors; otherwise the parsed JSON.
function parseAnswer(status, text, statusText, path) {
  if (status === 401 && !path.includes("/auth/login") && !path.includes("/setup/")) {
    location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
    throw new ApiError(401, "Signed out");
  }
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = text; }
  if (status < 200 || status >= 300) {
    const err = (body && body.error) || {};
    const errors = err.errors || (body && body.errors) || [];
    throw new ApiError(status, err.message || (body && body.message) || statusText, errors, body);
  }
  return body;
}

// XMLHttpRequest upload with progress (fetch has no upload progress): resolves with the JSON answer.
export function upload(path, form, onProgress) {
  if (signingOut) return new Promise(() => {});
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.withCredentials = true;
    xhr.setRequestHeader("X-CSRF-Token", csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => { if (e.lengthComputable && onProgress) onProgress(e.loaded, e.total); };
    xhr.onload = () => {
      try { resolve(parseAnswer(xhr.status, xhr.responseText, xhr.statusText, path)); } catch (e) { reject(e); }
    };
    xhr.onerror = () => reject(new ApiError(0, "Network error during upload"));
    xhr.send(form);
  });
}

// h("tag.class#id", {attr: value, onclick: fn}, ...children): children are nodes or text (set as text).
export function h(spec, attrs = {}, ...children) {
  const [tagAndClasses, id] = spec.split("#");
  const [tag, ...classes] = tagAndClasses.split(".");
  const el = document.createElement(tag || "div");
  if (classes.length) el.className = classes.join(" ");
  if (id) el.id = id;
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "text") el.textContent = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function show(el, visible) {
  el.classList.toggle("hidden", !visible);
}

// A yes/no question in a modal <dialog> built on the spot: resolves true on the yes button, false on Cancel or
// Esc; the dialog leaves the page when it closes and focus goes back where it was.
export function confirmDialog({ title, text, yes = "OK", no = "Cancel", danger = false }) {
  const before = document.activeElement;
  return new Promise((resolve) => {
    const titleId = "confirm-" + Math.random().toString(36).slice(2);
    const dialog = h("dialog", { "aria-labelledby": titleId },
      h("form.stack", { method: "dialog" },
        h("h2#" + titleId, {}, title),
        text ? h("p", {}, text) : null,
        h("div.row", {},
          h(danger ? "button.btn.danger" : "button.btn.primary", { type: "submit", value: "yes" }, yes),
          h("button.btn", { type: "submit", value: "no", formnovalidate: true }, no))));
    dialog.addEventListener("close", () => {
      dialog.remove();
      if (before && typeof before.focus === "function" && before.isConnected) before.focus();
      resolve(dialog.returnValue === "yes");
    }, { once: true });
    document.body.append(dialog);
    dialog.returnValue = "";
    dialog.showModal();
    dialog.querySelector("[value=no]").focus();
  });
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

const MAX_TOASTS = 3; // older ones give way: a burst of messages must not cover the page

export function toast(message, kind = "info", ms = 5000) {
  const box = document.getElementById("toasts");
  const item = h("div.toast." + kind, { role: kind === "error" ? "alert" : "status", title: "Click to dismiss",
    onclick: () => item.remove() }, message);
  box.append(item);
  while (box.childElementCount > MAX_TOASTS) box.firstElementChild.remove();
  setTimeout(() => item.remove(), ms);
}

// A field error's text: its message, plus the server's suggestion when it has one.
export function errorText(e) {
  return (e.message || "invalid") + (e.did_you_mean ? ` (did you mean ${e.did_you_mean}?)` : "");
}

// Show an ApiError: a toast, plus each field error next to its field when `fieldFor(path)` finds one.
export function showError(err, fieldFor) {
  const errors = (err && err.errors) || [];
  let placed = 0;
  for (const e of errors) {
    const target = fieldFor ? fieldFor(e.path || e.field || "") : null;
    if (target) {
      markField(target, errorText(e));
      placed += 1;
    }
  }
  const rest = errors.length - placed;
  const message = (err && err.message) || String(err);
  toast(rest > 0 && placed > 0 ? `${message} (${rest} more)` : message, "error", 8000);
}

export function markField(input, message) {
  input.setAttribute("aria-invalid", "true");
  const holder = input.closest(".field") || input.parentElement;
  let note = holder.querySelector(".field-error");
  if (!note) {
    note = h("p.field-error", { role: "alert" });
    holder.append(note);
  }
  note.textContent = message;
  if (!input.id) input.id = "f" + Math.random().toString(36).slice(2);
  note.id = input.id + "-error";
  const described = (input.getAttribute("aria-describedby") || "").split(" ").filter((id) => id && id !== note.id);
  input.setAttribute("aria-describedby", [...described, note.id].join(" ")); // keep the help text read out
}

export function clearFieldErrors(root = document) {
  for (const note of $$(".field-error", root)) {
    for (const input of $$(`[aria-describedby~="${note.id}"]`, root)) {
      const rest = input.getAttribute("aria-describedby").split(" ").filter((id) => id !== note.id).join(" ");
      if (rest) input.setAttribute("aria-describedby", rest); else input.removeAttribute("aria-describedby");
    }
    note.remove();
  }
  for (const input of $$("[aria-invalid]", root)) input.removeAttribute("aria-invalid");
}

// --- formatting -----------------------------------------------------------------------------------------------

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  seconds = Math.max(0, Math.round(seconds));
  const hh = Math.floor(seconds / 3600), mm = Math.floor((seconds % 3600) / 60), ss = seconds % 60;
  if (hh) return `${hh}h ${String(mm).padStart(2, "0")}m`;
  if (mm) return `${mm}m ${String(ss).padStart(2, "0")}s`;
  return `${ss}s`;
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}

export function fmtNumber(x, digits = 4) {
  if (x === null || x === undefined || x === "") return "–";
  if (typeof x !== "number") return String(x);
  if (x !== 0 && (Math.abs(x) < 1e-3 || Math.abs(x) >= 1e5)) return x.toExponential(2);
  return Number(x.toFixed(digits)).toString();
}

// A progress bar (.progress in app.css) at `percent`, named `label` for screen readers.
export function progressBar(percent, label) {
  const bar = h("div.progress", { role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
    "aria-label": label }, h("div"));
  setProgressBar(bar, percent);
  return bar;
}

export function setProgressBar(bar, percent) {
  const shown = Math.max(0, Math.min(100, Number(percent) || 0));
  bar.firstElementChild.style.width = `${shown}%`;
  bar.setAttribute("aria-valuenow", String(Math.round(shown)));
}

// A user level as a badge (coloured by app.css's .level-<name>).
export function levelBadge(name) {
  return h("span.badge.level-" + String(name).replace(/[^a-z]/g, ""), {}, name);
}

export function badge(state) {
  return h("span.badge.state-" + String(state || "unknown").replace(/[^a-z_]/gi, ""), {}, state || "unknown");
}

// --- live events --------------------------------------------------------------------------------------------

// Follow a job's SSE stream from `since` on. The browser's EventSource resumes with Last-Event-ID on its own
// after a network drop; when it gives up (the server restarted, a proxy closed it) we reopen it after a delay
// from the last id we saw, so nothing is missed or repeated. `onState` gets "live" | "reconnecting" | "ended".
export function followEvents(jobId, since, onEvent, onState = () => {}) {
  let last = since, source = null, stopped = false, retry = 1000;
  const open = () => {
    if (stopped) return;
    const url = `/api/training/events/stream?job_id=${encodeURIComponent(jobId)}&since_index=${last}`;
    source = new EventSource(url, { withCredentials: true });
    source.onopen = () => { retry = 1000; onState("live"); };
    source.onmessage = handle;
    source.addEventListener("end", () => { stopped = true; source.close(); onState("ended"); });
    source.onerror = () => {
      if (stopped) return;
      onState("reconnecting");
      if (source.readyState === EventSource.CLOSED) {
        setTimeout(open, retry);
        retry = Math.min(retry * 2, 15000);
      }
    };
    for (const type of WIRE_TYPES) source.addEventListener(type, handle);
  };
  const handle = (msg) => {
    const id = Number(msg.lastEventId || 0);
    if (id && id <= last) return; // a replay after reconnecting: seen already
    if (id) last = id;
    let event;
    try { event = JSON.parse(msg.data); } catch { return; }
    onEvent(event);
  };
  open();
  return { close: () => { stopped = true; source && source.close(); }, get last() { return last; } };
}

const WIRE_TYPES = ["lifecycle.stage", "training.progress", "training.status", "training.summary",
  "training.checkpoint", "training.validation", "training.metric", "validation.image", "notification", "error",
  "debug", "debug.image"];

// Every page: the sign-out button in the header.
document.getElementById("logout")?.addEventListener("click", async () => {
  signingOut = true;
  try { await api("/api/cloud/auth/logout", { method: "POST" }); } catch { /* signed out anyway */ }
  location.assign("/login");
});
