// One training environment: the config as a form laid out from GET /api/configs/fields (tabs, sections, an
// input per field) or as raw JSON, the description and tags, the dataloader; save, validate, activate, start.
//
// `config` (the "--key": value object) is the one source of truth: the form writes a key only when its input
// changes (so only keys already in the config, plus the fields the user changes, are saved), the raw view
// replaces it when left or used. Validate and start send only the unsaved changes: the server merges them over
// the caller's active environment, which the page first makes this one.
import { $, $$, api, clear, clearFieldErrors, fmtBytes, fmtNumber, fmtTime, h, markField, params, toast }
  from "./common.js";

const NAME = params.name;
const ENC = encodeURIComponent(NAME);
document.getElementById("env-name").textContent = NAME;
const ESSENTIAL_TABS = new Set(["basic"]);
const OTHER_TAB = "advanced";
const OTHER_SECTION = "other keys (not in the field list)";

const state = {
  fields: [], // [{key, name, type, default, choices, help, tab, section, family}]
  byName: new Map(),
  tabs: [],
  saved: null, // the environment as last loaded or saved: {name, config, dataloader, metadata}
  config: {},
  touched: new Set(), // names the user changed (stay visible)
  forceShow: new Set(), // names shown because an error points at them
  expandedTabs: new Set(), // tabs where the user asked for every field
  inputs: new Map(), // name -> input element
  holders: new Map(), // name -> .field element
  tab: "basic",
  view: "form",
  rawDirty: false,
  dataDirty: false,
  dirty: false,
  active: null,
  me: null,
};

// --- small helpers --------------------------------------------------------------------------------------------

const bare = (key) => String(key).replace(/^--/, "");
const human = (s) => {
  const t = String(s || "").replace(/_/g, " ").trim();
  return t ? t[0].toUpperCase() + t.slice(1) : "Other";
};
const safeId = (s) => String(s).replace(/[^A-Za-z0-9_-]/g, "_");
const present = (name) => Object.prototype.hasOwnProperty.call(state.config, "--" + name);
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const clone = (x) => (x === undefined ? undefined : JSON.parse(JSON.stringify(x)));

function show(el, visible) {
  el.classList.toggle("hidden", !visible);
}

function fmtValue(v) {
  if (v === null || v === undefined) return "none";
  if (typeof v === "number") return fmtNumber(v, 8);
  if (typeof v === "string") return v === "" ? '""' : v;
  return JSON.stringify(v);
}

function kindOf(meta) {
  const t = String(meta.type || "").toLowerCase();
  if (meta.choices && meta.choices.length) return "select";
  if (/\bbool\b/.test(t)) return "bool";
  if (/\bfloat\b/.test(t)) return "float";
  if (/\bint\b/.test(t)) return "int";
  if (/dict|list|tuple|any|\[|\{/.test(t)) return "json";
  return "text";
}

// Roving-tabindex tab list: arrows, Home and End move between tabs; `select(button)` on click or arrow.
function wireTablist(list, select) {
  list.addEventListener("click", (e) => {
    const btn = e.target.closest("[role=tab]");
    if (btn && list.contains(btn)) select(btn);
  });
  list.addEventListener("keydown", (e) => {
    const tabs = $$("[role=tab]", list).filter((b) => !b.classList.contains("hidden"));
    const i = tabs.indexOf(document.activeElement);
    if (i < 0) return;
    let next = null;
    if (e.key === "ArrowRight") next = tabs[(i + 1) % tabs.length];
    else if (e.key === "ArrowLeft") next = tabs[(i - 1 + tabs.length) % tabs.length];
    else if (e.key === "Home") next = tabs[0];
    else if (e.key === "End") next = tabs[tabs.length - 1];
    if (next) {
      e.preventDefault();
      select(next);
      next.focus();
    }
  });
}

function selectTabButton(list, btn) {
  for (const b of $$("[role=tab]", list)) {
    const on = b === btn;
    b.setAttribute("aria-selected", on ? "true" : "false");
    b.tabIndex = on ? 0 : -1;
  }
}

// --- dirty state ----------------------------------------------------------------------------------------------

function markDirty() {
  state.dirty = true;
  $("#env-dirty").textContent = "Unsaved changes";
}

function markClean() {
  state.dirty = false;
  $("#env-dirty").textContent = "";
}

// The unsaved config changes: keys added or changed since the last load or save (what validate/start send).
function changes() {
  const base = (state.saved && state.saved.config) || {};
  const out = {};
  for (const [key, value] of Object.entries(state.config)) {
    if (!Object.prototype.hasOwnProperty.call(base, key) || !same(base[key], value)) out[key] = value;
  }
  return out;
}

// --- the form -------------------------------------------------------------------------------------------------

function displayValue(meta, kind) {
  const key = "--" + meta.name;
  if (!present(meta.name)) return undefined;
  const v = state.config[key];
  if (v === null || v === undefined) return "";
  if (kind === "json") return typeof v === "string" ? v : JSON.stringify(v, null, 2);
  if (typeof v === "string") return v;
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function readInput(meta, kind, input) {
  if (kind === "bool") return { set: true, value: input.checked };
  const raw = input.value;
  if (raw.trim() === "") return { set: false };
  if (kind === "select") {
    const choice = meta.choices.find((c) => String(c) === raw);
    return { set: true, value: choice !== undefined ? choice : raw };
  }
  if (kind === "int" || kind === "float") {
    const n = Number(raw);
    return { set: true, value: Number.isFinite(n) ? n : raw };
  }
  if (kind === "json") {
    try {
      const v = JSON.parse(raw);
      if (v !== null && typeof v === "object") return { set: true, value: v };
    } catch { /* not JSON: kept as text (the server may accept a path or JSON text) */ }
  }
  return { set: true, value: raw };
}

function buildInput(meta, kind, id, describedBy) {
  const shown = displayValue(meta, kind);
  const common = { id, name: meta.key, "aria-describedby": describedBy, autocomplete: "off" };
  if (kind === "bool") {
    const v = present(meta.name) ? state.config[meta.key] : meta.default;
    const input = h("input", { ...common, type: "checkbox" });
    input.checked = v === true || v === "true" || v === 1;
    return input;
  }
  if (kind === "select") {
    const dflt = meta.default === null || meta.default === undefined ? "none" : fmtValue(meta.default);
    const options = [h("option", { value: "" }, `(default: ${dflt})`)];
    for (const c of meta.choices) options.push(h("option", { value: String(c) }, String(c)));
    if (shown && !meta.choices.some((c) => String(c) === shown)) {
      options.push(h("option", { value: shown }, `${shown} (not a known choice)`));
    }
    const select = h("select", common, options);
    select.value = shown || "";
    return select;
  }
  const placeholder = meta.default === null || meta.default === undefined ? ""
    : (typeof meta.default === "object" ? JSON.stringify(meta.default) : String(meta.default));
  if (kind === "json") {
    const area = h("textarea.mono", { ...common, rows: 3, spellcheck: "false", placeholder });
    area.value = shown || "";
    return area;
  }
  const numeric = kind === "int" || kind === "float";
  // A value a number input cannot hold (text typed in the raw view) stays visible in a text input.
  const notNumber = numeric && shown && !Number.isFinite(Number(shown));
  const input = h("input", {
    ...common, placeholder,
    type: numeric && !notNumber ? "number" : "text",
    step: numeric && !notNumber ? "any" : null,
    inputmode: numeric ? "decimal" : null,
    spellcheck: numeric ? null : "false",
  });
  input.value = shown || "";
  return input;
}

function buildField(meta) {
  const kind = kindOf(meta);
  const id = "cfg-" + safeId(meta.name);
  const helpId = id + "-help";
  const input = buildInput(meta, kind, id, helpId);
  const label = h("label", { for: id }, h("code", {}, meta.key));
  const unset = h("button.btn.link.small.env-unset", {
    type: "button", "aria-label": `Unset ${meta.key} (use the default)`, title: "Remove from the config: the default applies",
  }, "unset");
  const helpText = [meta.help || ""];
  if (meta.family) helpText.push(`(${meta.family} only)`);
  if (!meta.synthetic) helpText.push(`Default: ${fmtValue(meta.default)}.`);
  const help = h("p.help", { id: helpId }, helpText.filter(Boolean).join(" "));
  const head = kind === "bool"
    ? h("div.env-field-head", {}, h("span.env-check", {}, input, label), unset)
    : h("div.env-field-head", {}, label, unset);
  const holder = h("div.field.env-field", { dataset: { name: meta.name } }, head,
    kind === "bool" ? null : input, help);
  holder.classList.toggle("env-set", present(meta.name));

  const update = () => {
    const got = readInput(meta, kind, input);
    if (got.set) state.config[meta.key] = got.value;
    else delete state.config[meta.key];
    state.touched.add(meta.name);
    holder.classList.toggle("env-set", present(meta.name));
    clearFieldErrors(holder);
    markDirty();
  };
  input.addEventListener(kind === "bool" || kind === "select" ? "change" : "input", update);
  unset.addEventListener("click", () => {
    delete state.config[meta.key];
    state.touched.add(meta.name);
    const fresh = buildField(meta);
    holder.replaceWith(fresh);
    markDirty();
    fresh.querySelector("input, select, textarea").focus();
  });
  state.inputs.set(meta.name, input);
  state.holders.set(meta.name, holder);
  return holder;
}

// Every field of the table, plus config keys it does not know (shown at the end of `advanced`).
function allFields() {
  const out = state.fields.slice();
  for (const key of Object.keys(state.config)) {
    const name = bare(key);
    if (!state.byName.has(name)) {
      out.push({ key: "--" + name, name, type: "Any", default: null, choices: [], help: "Not a known config key.",
        tab: OTHER_TAB, section: OTHER_SECTION, family: null, synthetic: true });
    }
  }
  return out;
}

function renderForm() {
  state.inputs.clear();
  state.holders.clear();
  const fields = allFields();
  const tabs = state.tabs.slice();
  for (const f of fields) if (!tabs.includes(f.tab)) tabs.push(f.tab);
  if (!tabs.includes(state.tab)) state.tab = tabs[0];
  const tabList = $("#env-tabs");
  const panels = $("#env-panels");
  clear(tabList, tabs.map((tab) => h("button", {
    type: "button", role: "tab", id: "tab-" + safeId(tab), "aria-controls": "panel-" + safeId(tab),
    "aria-selected": tab === state.tab ? "true" : "false", tabindex: tab === state.tab ? 0 : -1,
    dataset: { tab },
  }, human(tab), h("span.env-tab-count", {}), h("span.env-tab-flag", { "aria-hidden": "true" }),
  h("span.env-sr.env-tab-flag-text", {}))));
  clear(panels, tabs.map((tab) => {
    const sections = new Map();
    for (const f of fields.filter((x) => x.tab === tab)) {
      if (!sections.has(f.section)) sections.set(f.section, []);
      sections.get(f.section).push(f);
    }
    return h("div.env-panel", {
      role: "tabpanel", id: "panel-" + safeId(tab), "aria-labelledby": "tab-" + safeId(tab), dataset: { tab },
    },
    h("h2.env-panel-title", {}, human(tab)),
    [...sections.entries()].map(([section, list]) => h("fieldset.env-section", { dataset: { section } },
      h("legend", {}, human(section)),
      h("div.env-fields", {}, list.map(buildField)))),
    h("p.muted.env-panel-empty", {}, "No field of this tab is set. ",
      h("button.btn.link.env-expand", { type: "button", dataset: { tab } }, `Show the fields of ${human(tab)}`)));
  }));
  applyVisibility();
}

function applyVisibility() {
  const q = $("#env-filter").value.trim().toLowerCase();
  const all = $("#env-show-all").checked;
  let shown = 0;
  let total = 0;
  for (const panel of $$(".env-panel")) {
    const tab = panel.dataset.tab;
    let inPanel = 0;
    let set = 0;
    for (const section of $$(".env-section", panel)) {
      let inSection = 0;
      for (const holder of $$(".env-field", section)) {
        const name = holder.dataset.name;
        const meta = state.byName.get(name);
        total += 1;
        if (present(name)) set += 1;
        let visible;
        if (q) {
          const hay = `--${name} ${meta ? meta.help || "" : ""} ${section.dataset.section}`.toLowerCase();
          visible = hay.includes(q);
        } else {
          visible = all || present(name) || state.touched.has(name) || state.forceShow.has(name)
            || ESSENTIAL_TABS.has(tab) || state.expandedTabs.has(tab);
        }
        show(holder, visible);
        if (visible) inSection += 1;
      }
      show(section, inSection > 0);
      inPanel += inSection;
    }
    shown += inPanel;
    const btn = $(`#tab-${CSS.escape(safeId(tab))}`);
    if (btn) $(".env-tab-count", btn).textContent = set ? ` ${set} set` : "";
    show($(".env-panel-empty", panel), !q && inPanel === 0);
    // Searching shows the matches of every tab at once, each under its tab's title.
    show(panel, q ? inPanel > 0 : tab === state.tab);
    show($(".env-panel-title", panel), Boolean(q));
  }
  show($("#env-tabs"), !q);
  show($("#env-nomatch"), Boolean(q) && shown === 0);
  $("#env-count").textContent = `Showing ${shown} of ${total} fields`;
}

function selectConfigTab(tab) {
  state.tab = tab;
  const btn = $(`#tab-${CSS.escape(safeId(tab))}`);
  if (btn) selectTabButton($("#env-tabs"), btn);
  applyVisibility();
}

// --- views: form, raw JSON, dataloader -------------------------------------------------------------------------

// Take the raw view's text into `config` when it was edited; false (and the error at the textarea) if it is not
// a JSON object.
function syncFromRaw() {
  if (!state.rawDirty) return true;
  const area = $("#env-raw");
  clearFieldErrors(area.parentElement);
  let parsed;
  try {
    parsed = JSON.parse(area.value);
  } catch (err) {
    return rawProblem(`Not valid JSON: ${err.message}`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    return rawProblem('The config must be a JSON object of "--key": value.');
  }
  const config = {};
  for (const [key, value] of Object.entries(parsed)) config["--" + bare(key)] = value;
  state.config = config;
  state.rawDirty = false;
  renderForm();
  return true;
}

function rawProblem(message) {
  setView("raw", true);
  const area = $("#env-raw");
  markField(area, message);
  area.focus();
  toast(message, "error", 8000);
  return false;
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
    $("#env-raw").value = JSON.stringify(state.config, null, 2);
  }
  return true;
}

// --- errors at their fields -------------------------------------------------------------------------------------

function clearErrors() {
  clearFieldErrors(document);
  state.forceShow.clear();
  for (const btn of $$("#env-tabs [role=tab]")) {
    btn.classList.remove("env-tab-error");
    $(".env-tab-flag", btn).textContent = "";
    $(".env-tab-flag-text", btn).textContent = "";
  }
}

function isDataloaderPath(path) {
  return /^\[\d+\]/.test(path) || /^dataloader\b/.test(path) || /^data_backend_config\b/.test(path);
}

// The input an error's path names (`--learning_rate`, `learning_rate`, `config.--learning_rate`,
// `dataloader[0].crop_style`, `description`), made visible: its view and tab selected, its field shown.
function targetFor(path) {
  let p = String(path || "").trim();
  if (p === "description") return $("#env-description");
  if (p === "tags" || p.startsWith("tags[")) return $("#env-tags");
  if (isDataloaderPath(p) && p !== "data_backend_config") return $("#env-dataloader");
  p = p.replace(/^config\./, "").replace(/^config\[["']?([^"'\]]+)["']?\]/, "$1");
  const name = bare(p).split(/[.[]/)[0];
  const input = state.inputs.get(name);
  if (!input) return null;
  const meta = state.byName.get(name);
  const tab = meta ? meta.tab : OTHER_TAB;
  state.forceShow.add(name);
  const filter = $("#env-filter");
  if (filter.value) {
    const hay = `--${name} ${meta ? meta.help || "" : ""}`.toLowerCase();
    if (!hay.includes(filter.value.trim().toLowerCase())) filter.value = "";
  }
  const btn = $(`#tab-${CSS.escape(safeId(tab))}`);
  if (btn) {
    btn.classList.add("env-tab-error");
    $(".env-tab-flag", btn).textContent = " !";
    $(".env-tab-flag-text", btn).textContent = " (has errors)";
  }
  return input;
}

function errorText(e) {
  return (e.message || "invalid") + (e.did_you_mean ? ` (did you mean ${e.did_you_mean}?)` : "");
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
      if (panel) state.tab = panel.dataset.tab;
    }
    if (state.view === "form") selectConfigTab(state.tab);
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
  const body = { description: $("#env-description").value, tags: tagsValue(), config: state.config };
  try {
    const answer = await api(`/api/configs/${ENC}`, { method: "PUT", json: body });
    state.saved = { ...state.saved, ...answer, dataloader: state.saved.dataloader };
    state.config = clone(answer.config || state.config);
    markClean();
    if (state.view === "raw") $("#env-raw").value = JSON.stringify(state.config, null, 2);
    renderForm();
    renderBadges();
    const warnings = answer.warnings || [];
    result(warnings.length ? "warn" : "good", "Saved.", warningList(warnings));
    toast("Environment saved", "success");
  } catch (err) {
    if (err.status === 403) {
      result("bad", `Not saved: ${err.message}`);
      toast(err.message, "error", 8000);
    } else {
      reportError(err, `Not saved: ${err.message}`);
    }
  }
}

async function validate() {
  if (!syncFromRaw()) return;
  clearErrors();
  try {
    await activate();
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
  if (!syncFromRaw()) return;
  clearErrors();
  try {
    await activate();
    const answer = await api("/api/training/start", { method: "POST", json: changes() });
    result("good", `Job ${answer.job_id} ${answer.status || "submitted"}` +
      (answer.queue_position ? ` (queue position ${answer.queue_position})` : ""));
    location.assign("/jobs/" + encodeURIComponent(answer.job_id));
  } catch (err) {
    if (err.status === 422) reportError(err, `Not started: ${err.message}`);
    else {
      result("bad", `Not started: ${err.message}`);
      toast(err.message, "error", 8000);
    }
  }
}

async function saveDataloader() {
  const area = $("#env-dataloader");
  clearFieldErrors(area.parentElement);
  let list;
  try {
    list = JSON.parse(area.value);
  } catch (err) {
    markField(area, `Not valid JSON: ${err.message}`);
    area.focus();
    return;
  }
  if (!Array.isArray(list)) {
    markField(area, "The dataloader must be a JSON list of dataset objects.");
    area.focus();
    return;
  }
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
      result("bad", `Dataloader not saved: ${err.message}`);
      toast(err.message, "error", 8000);
    }
  }
}

// --- header ---------------------------------------------------------------------------------------------------

function renderBadges() {
  const cfg = state.config;
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
  state.fields = (fieldsAnswer && fieldsAnswer.fields) || [];
  state.tabs = (fieldsAnswer && fieldsAnswer.tabs) || [];
  for (const f of state.fields) state.byName.set(f.name, f);
  state.saved = clone(env);
  state.config = {};
  for (const [key, value] of Object.entries(env.config || {})) state.config["--" + bare(key)] = value;
  state.saved.config = clone(state.config);
  state.tab = state.tabs[0] || OTHER_TAB;

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
  show($("#env-loading"), false);
  for (const id of ["#env-meta", "#env-actions", "#env-body"]) show($(id), true);
}

wireTablist($("#env-views"), (btn) => setView(btn.id.replace(/^view-|-tab$/g, "")));
wireTablist($("#env-tabs"), (btn) => selectConfigTab(btn.dataset.tab));
$("#env-filter").addEventListener("input", applyVisibility);
$("#env-show-all").addEventListener("change", applyVisibility);
$("#env-panels").addEventListener("click", (e) => {
  const btn = e.target.closest(".env-expand");
  if (!btn) return;
  state.expandedTabs.add(btn.dataset.tab);
  applyVisibility();
  const first = $(`.env-panel[data-tab="${CSS.escape(btn.dataset.tab)}"] .env-field:not(.hidden) input, ` +
    `.env-panel[data-tab="${CSS.escape(btn.dataset.tab)}"] .env-field:not(.hidden) select, ` +
    `.env-panel[data-tab="${CSS.escape(btn.dataset.tab)}"] .env-field:not(.hidden) textarea`);
  if (first) first.focus();
});
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
    result("bad", `Not activated: ${err.message}`);
    toast(err.message, "error", 8000);
  }
}));
$("#env-meta").addEventListener("submit", (e) => e.preventDefault());

load();
