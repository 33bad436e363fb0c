// One training environment: the config as a form (config_form.js) or as raw JSON, the description and tags,
// the dataloader; save, validate, activate, start, and their results.
//
// `form.config` (the "--key": value object) is the one source of truth: the form writes a key only when its input
// changes, the raw view replaces it when left or used. Validate and start send only the unsaved changes: the
// server merges them over the caller's active environment, which the page first makes this one. A merge cannot
// remove a key (null is a value, not "unset"), so a saved key removed here must be saved before validate or start.
import {
  $, $$, api, clear, clearFieldErrors, errorText, fmtBytes, fmtTime, h, markField, params, show, toast,
} from "./common.js";
import {
  applyVisibility, bare, clearFormErrors, fieldFor, form, renderForm, selectConfigTab, selectTabButton, setFieldList,
  wireForm, wireTablist,
} from "./config_form.js";

const NAME = params.name;
const ENC = encodeURIComponent(NAME);
document.getElementById("env-name").textContent = NAME;

const state = {
  saved: null, // the environment as last loaded or saved: {name, config, dataloader, metadata}
  view: "form",
  rawDirty: false, // the raw view's text was edited and not yet read into `form.config`
  dataDirty: false, // the dataloader's text was edited and not saved
  dirty: false, // the config, description or tags were edited and not saved
  active: null,
  me: null,
};

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const clone = (x) => (x === undefined ? undefined : JSON.parse(JSON.stringify(x)));

// --- dirty state ----------------------------------------------------------------------------------------------

function markDirty() {
  state.dirty = true;
  $("#env-dirty").textContent = "Unsaved changes";
  showRemoved();
}

function markClean() {
  state.dirty = false;
  $("#env-dirty").textContent = "";
  showRemoved();
}

// Leaving with unsaved edits asks first (removed before Start goes on to its job: the job has the changes).
function warnUnsaved(e) {
  if (!state.dirty && !state.dataDirty) return;
  e.preventDefault();
  e.returnValue = "";
}

// The unsaved config changes: keys added or changed since the last load or save (what validate/start send).
function changes() {
  const base = (state.saved && state.saved.config) || {};
  const out = {};
  for (const [key, value] of Object.entries(form.config)) {
    if (!Object.prototype.hasOwnProperty.call(base, key) || !same(base[key], value)) out[key] = value;
  }
  return out;
}

// Saved keys no longer in `form.config` (unset in the form, or deleted in the raw view): changes() cannot send
// them, so validate and start would still use their saved values.
function removedKeys() {
  const kept = new Set(Object.keys(form.config).map(bare));
  return Object.keys((state.saved && state.saved.config) || {}).filter((key) => !kept.has(bare(key)));
}

// Validate and start wait for Save while a saved key is removed; the note by the buttons says why. (Edits in the
// raw view count once they are read in: validate and start read them first, then check again.)
function showRemoved() {
  const removed = state.rawDirty ? [] : removedKeys();
  const note = $("#env-removed");
  note.textContent = removed.length
    ? `Save first: ${removed.join(", ")} ${removed.length === 1 ? "is" : "are"} removed here but still saved. ` +
      "Validate and start add your changes to the saved environment and cannot remove a key."
    : "";
  show(note, removed.length > 0);
  for (const id of ["#env-validate", "#env-start"]) $(id).disabled = removed.length > 0;
  return removed.length > 0;
}

// --- views: form, raw JSON, dataloader -------------------------------------------------------------------------

// A textarea's JSON: `{ok: true, value}`, or `{ok: false, problem}` with the problem (not JSON, or `isShape` says
// no) at the textarea, focused.
function readJsonArea(area, isShape, shapeMessage) {
  clearFieldErrors(area.parentElement);
  let problem;
  try {
    const value = JSON.parse(area.value);
    if (isShape(value)) return { ok: true, value };
    problem = shapeMessage;
  } catch (err) {
    problem = `Not valid JSON: ${err.message}`;
  }
  markField(area, problem);
  area.focus();
  return { ok: false, problem };
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

// Take the raw view's text into `form.config` when it was edited; false (and the error at the textarea) if it is not
// a JSON object.
function syncFromRaw() {
  if (!state.rawDirty) return true;
  const area = $("#env-raw");
  const got = readJsonArea(area, isObject, 'The config must be a JSON object of "--key": value.');
  if (!got.ok) {
    setView("raw", true);
    area.focus();
    toast(got.problem, "error", 8000);
    return false;
  }
  const config = {};
  for (const [key, value] of Object.entries(got.value)) config["--" + bare(key)] = value;
  form.config = config;
  state.rawDirty = false;
  renderForm();
  showRemoved();
  return true;
}

function setView(view, force = false) {
  if (view === state.view) return true;
  if (!force && state.view === "raw" && !syncFromRaw()) return false;
  state.view = view;
  for (const [v, tabId, panelId] of [["form", "#view-form-tab", "#view-form"], ["raw", "#view-raw-tab", "#view-raw"],
    ["data", "#view-data-tab", "#view-data"]]) {
    show($(panelId), v === view);
    if (v === view) selectTabButton($("#env-views"), $(tabId));
  }
  if (view === "raw" && !state.rawDirty) {
    $("#env-raw").value = JSON.stringify(form.config, null, 2);
  }
  return true;
}

// --- errors at their fields -------------------------------------------------------------------------------------

function clearErrors() {
  clearFieldErrors(document);
  clearFormErrors();
}

function isDataloaderPath(path) {
  return /^\[\d+\]/.test(path) || /^dataloader\b/.test(path) || /^data_backend_config\b/.test(path);
}

// The input an error's path names (`--learning_rate`, `learning_rate`, `config.--learning_rate`,
// `dataloader[0].crop_style`, `description`), made visible: its view and tab selected, its field shown.
function targetFor(path) {
  const p = String(path || "").trim();
  if (p === "description") return $("#env-description");
  if (p === "tags" || p.startsWith("tags[")) return $("#env-tags");
  if (isDataloaderPath(p) && p !== "data_backend_config") return $("#env-dataloader");
  return fieldFor(p);
}

// Put each error at its field (several at one field are joined); switch to the first one's view and tab.
// Returns the errors that found no field.
function placeErrors(errors, { allTo } = {}) {
  const byTarget = new Map();
  const loose = [];
  for (const e of errors || []) {
    const target = allTo || targetFor(e.path || e.field || "");
    if (!target) {
      loose.push(e);
      continue;
    }
    const prefix = target.id === "env-dataloader" && e.path ? `${e.path}: ` : "";
    if (!byTarget.has(target)) byTarget.set(target, []);
    byTarget.get(target).push(prefix + errorText(e));
  }
  let first = null;
  for (const [target, messages] of byTarget) {
    markField(target, messages.join("; "));
    first = first || target;
  }
  if (first) {
    if (first.id === "env-dataloader") setView("data", true);
    else if (first.closest("#view-form")) {
      setView("form", true);
      const panel = first.closest(".env-panel");
      if (panel) form.tab = panel.dataset.tab;
    }
    if (state.view === "form") selectConfigTab(form.tab);
    else applyVisibility();
    first.focus({ preventScroll: true });
    first.scrollIntoView({ block: "center" });
  }
  return loose;
}

// --- the result box under the buttons ---------------------------------------------------------------------------

function result(kind, title, ...parts) {
  const box = $("#env-result");
  box.className = "env-result " + kind;
  clear(box, h("p.env-result-title", { role: kind === "bad" ? "alert" : "status" }, title), parts);
}

function warningList(warnings) {
  if (!warnings || !warnings.length) return null;
  return h("div", {}, h("p.env-result-sub", {}, `Warnings (${warnings.length}):`),
    h("ul.env-list", {}, warnings.map((w) => h("li", {}, typeof w === "string" ? w : errorText(w)))));
}

function errorList(errors) {
  if (!errors || !errors.length) return null;
  return h("ul.env-list", {}, errors.map((e) => {
    const path = e.path || e.field || "";
    return h("li", {}, path ? [h("code", {}, path), ": "] : null, errorText(e));
  }));
}

function memorySummary(plan) {
  if (!plan || typeof plan !== "object") return null;
  const total = plan.total_bytes !== undefined ? fmtBytes(plan.total_bytes) : `${plan.total_gib} GiB`;
  const bits = [`about ${total}`, plan.device ? `on ${plan.device}` : null,
    plan.bucket ? `bucket ${plan.bucket}` : null, plan.batch ? `batch ${plan.batch}` : null,
    plan.largest ? `largest: ${plan.largest}` : null].filter(Boolean);
  const rows = Object.entries(plan.breakdown_bytes || {});
  return h("details.env-memory", {},
    h("summary", {}, `Memory estimate: ${bits.join(", ")}`),
    rows.length ? h("table.env-mem-table", {}, h("tbody", {}, rows.map(([k, v]) => h("tr", {},
      h("th", { scope: "row" }, k), h("td.num", {}, fmtBytes(v)))))) : null,
    (plan.notes || []).length ? h("ul.env-list.muted", {}, plan.notes.map((n) => h("li", {}, n))) : null);
}

// A refusal with no field errors: the result box and a toast.
function failed(title, err) {
  result("bad", `${title}: ${err.message}`);
  toast(err.message, "error", 8000);
}

// An API error: at its fields, with the list in the result box and a toast.
function reportError(err, title, opts = {}) {
  const errors = (err && err.errors) || [];
  const loose = placeErrors(errors, opts);
  const warnings = err && err.body && err.body.warnings;
  result("bad", title || err.message, errorList(errors), warningList(warnings));
  const extra = errors.length ? ` (${errors.length - loose.length} shown at their fields)` : "";
  toast(`${err.message || err}${extra}`, "error", 8000);
}

// --- actions ----------------------------------------------------------------------------------------------------

function tagsValue() {
  return $("#env-tags").value.split(",").map((t) => t.trim()).filter(Boolean);
}

async function busy(button, fn) {
  const buttons = $$("#env-actions button, #env-save-dataloader");
  for (const b of buttons) b.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await fn();
  } finally {
    for (const b of buttons) b.disabled = false;
    button.removeAttribute("aria-busy");
    showRemoved();
  }
}

async function activate() {
  const answer = await api(`/api/configs/${ENC}/activate`, { method: "POST" });
  state.active = answer.active;
  renderBadges();
  return answer;
}

async function save() {
  if (!syncFromRaw()) return;
  clearErrors();
  const body = { description: $("#env-description").value, tags: tagsValue(), config: form.config };
  try {
    const answer = await api(`/api/configs/${ENC}`, { method: "PUT", json: body });
    state.saved = { ...state.saved, ...answer, dataloader: state.saved.dataloader };
    form.config = clone(answer.config || form.config);
    markClean();
    if (state.view === "raw") $("#env-raw").value = JSON.stringify(form.config, null, 2);
    renderForm();
    renderBadges();
    const warnings = answer.warnings || [];
    result(warnings.length ? "warn" : "good", "Saved.", warningList(warnings));
    toast("Environment saved", "success");
  } catch (err) {
    if (err.status === 403) failed("Not saved", err);
    else reportError(err, `Not saved: ${err.message}`);
  }
}

// Validate and start merge over the caller's active environment: make it this one, unless it is already.
async function useThisEnvironment() {
  if (state.active !== NAME) await activate();
}

// Read the raw view in and check nothing removed waits for Save; false (said at the buttons) if not ready.
function readyToSend() {
  if (!syncFromRaw()) return false;
  if (!showRemoved()) return true;
  toast($("#env-removed").textContent, "error", 8000);
  return false;
}

async function validate() {
  if (!readyToSend()) return;
  clearErrors();
  try {
    await useThisEnvironment();
    const answer = await api("/api/training/validate", { method: "POST", json: changes() });
    if (answer && answer.valid === false) {
      reportError({ message: answer.message, errors: answer.errors, body: answer }, answer.message);
      return;
    }
    result((answer.warnings || []).length ? "warn" : "good", "Configuration valid",
      warningList(answer.warnings), memorySummary(answer.memory_plan));
  } catch (err) {
    reportError(err, err.status === 422 ? err.message : `Could not validate: ${err.message}`);
  }
}

async function start() {
  if (!readyToSend()) return;
  clearErrors();
  try {
    await useThisEnvironment();
    const answer = await api("/api/training/start", { method: "POST", json: changes() });
    result("good", `Job ${answer.job_id} ${answer.status || "submitted"}` +
      (answer.queue_position ? ` (queue position ${answer.queue_position})` : ""));
    window.removeEventListener("beforeunload", warnUnsaved);
    location.assign("/jobs/" + encodeURIComponent(answer.job_id));
  } catch (err) {
    if (err.status === 422) reportError(err, `Not started: ${err.message}`);
    else failed("Not started", err);
  }
}

async function saveDataloader() {
  const area = $("#env-dataloader");
  const got = readJsonArea(area, Array.isArray, "The dataloader must be a JSON list of dataset objects.");
  if (!got.ok) return;
  const list = got.value;
  try {
    const answer = await api(`/api/configs/${ENC}/dataloader`, { method: "POST", json: list });
    state.saved.dataloader = answer.dataloader || list;
    area.value = JSON.stringify(state.saved.dataloader, null, 2);
    state.dataDirty = false;
    $("#env-dataloader-dirty").textContent = "";
    result("good", "Dataloader saved.");
    toast("Dataloader saved", "success");
  } catch (err) {
    if (err.status === 422 && err.errors.length) reportError(err, `Dataloader not saved: ${err.message}`, { allTo: area });
    else {
      markField(area, err.message);
      failed("Dataloader not saved", err);
    }
  }
}

// --- header ---------------------------------------------------------------------------------------------------

function renderBadges() {
  const cfg = form.config;
  const bits = [cfg["--model_family"], cfg["--model_flavour"], cfg["--model_type"]].filter((x) => x);
  clear($("#env-badges"),
    bits.map((b) => h("span.badge", {}, String(b))),
    state.active === NAME ? h("span.badge.state-running", { title: "Your active environment" }, "active") : null);
}

function renderOwner() {
  const meta = (state.saved && state.saved.metadata) || {};
  const me = state.me;
  const owner = meta.owner;
  const perms = (me && me.permissions) || [];
  const admin = perms.includes("*");
  const mine = me && owner && owner === me.username;
  const updated = meta.updated_at ? ` Updated ${fmtTime(typeof meta.updated_at === "number"
    ? meta.updated_at * 1000 : meta.updated_at)}.` : "";
  let text = owner ? `Owner: ${owner}.` : "No owner (made outside the server: admins only).";
  const canEdit = admin || perms.includes("config.edit.own");
  if (me && !canEdit) {
    text += " You can read this environment but not change it.";
    for (const id of ["#env-save", "#env-activate", "#env-save-dataloader"]) show($(id), false);
  } else if (me && !admin && !mine) {
    text += " Only its owner or an admin can save it; you can still try changes and validate or train with them.";
  }
  $("#env-owner").textContent = text + updated;
}

// --- start ----------------------------------------------------------------------------------------------------

async function load() {
  let env;
  let fieldsAnswer = null;
  try {
    const [envAnswer, fields, active, me] = await Promise.all([
      api(`/api/configs/${ENC}`),
      api("/api/configs/fields").catch(() => null),
      api("/api/configs/active").catch(() => null),
      api("/api/cloud/auth/me").catch(() => null),
    ]);
    env = envAnswer;
    fieldsAnswer = fields;
    state.active = active && active.active;
    state.me = me;
  } catch (err) {
    show($("#env-loading"), false);
    $("#env-missing-text").textContent = err.status === 404
      ? `There is no environment named “${NAME}”. (${err.message})`
      : `Could not load the environment: ${err.message}`;
    show($("#env-missing"), true);
    return;
  }
  setFieldList(fieldsAnswer);
  state.saved = clone(env);
  form.config = clone(env.config || {}); // "--key" form, as the API stores it

  const meta = env.metadata || {};
  $("#env-description").value = meta.description || "";
  $("#env-tags").value = (meta.tags || []).join(", ");
  $("#env-dataloader").value = JSON.stringify(env.dataloader || [], null, 2);
  $("#env-export").href = `/api/configs/${ENC}/export`;
  show($("#env-start"), params.submit === "1");
  show($("#env-validate"), params.submit === "1");
  if (!fieldsAnswer) {
    $("#env-count").textContent = "The field list could not be loaded: edit the config in the Raw JSON view.";
  }
  renderForm();
  renderBadges();
  renderOwner();
  showRemoved();
  show($("#env-loading"), false);
  for (const id of ["#env-meta", "#env-actions", "#env-body"]) show($(id), true);
}

wireTablist($("#env-views"), (btn) => setView(btn.id.replace(/^view-|-tab$/g, "")));
wireForm({ edited: markDirty });
$("#env-raw").addEventListener("input", () => {
  state.rawDirty = true;
  markDirty();
});
$("#env-dataloader").addEventListener("input", () => {
  state.dataDirty = true;
  $("#env-dataloader-dirty").textContent = "Unsaved dataloader changes";
});
for (const id of ["#env-description", "#env-tags"]) {
  $(id).addEventListener("input", (e) => {
    clearFieldErrors(e.target.parentElement);
    markDirty();
  });
}
$("#env-save").addEventListener("click", (e) => busy(e.currentTarget, save));
$("#env-validate").addEventListener("click", (e) => busy(e.currentTarget, validate));
$("#env-start").addEventListener("click", (e) => busy(e.currentTarget, start));
$("#env-save-dataloader").addEventListener("click", (e) => busy(e.currentTarget, saveDataloader));
$("#env-activate").addEventListener("click", (e) => busy(e.currentTarget, async () => {
  try {
    await activate();
    result("good", `${NAME} is now your active environment.`);
    toast(`${NAME} is active`, "success");
  } catch (err) {
    failed("Not activated", err);
  }
}));
$("#env-meta").addEventListener("submit", (e) => e.preventDefault());
window.addEventListener("beforeunload", warnUnsaved);
// Another tab may have made another environment the active one: read it again when this page is seen again,
// so validate and start know whether to activate this one first.
document.addEventListener("visibilitychange", async () => {
  if (document.visibilityState !== "visible" || !state.saved) return;
  try {
    state.active = (await api("/api/configs/active")).active;
    renderBadges();
  } catch {
    state.active = null; // not known: validate and start activate this one first
  }
});

load();
