// The config form of the environment page, laid out from GET /api/configs/fields: a tab list, a panel per tab
// with a fieldset per section, an input per field by its type; the filter and "show all"; reading the inputs
// back into `form.config`; the input an error's path names.
//
// `form.config` (the "--key": value object) is the one source of truth: an input writes its key only when it
// changes (so only keys already in the config, plus the fields the user changes, are saved). The page replaces
// `form.config` (raw JSON view, save) and then calls renderForm().
import { $, $$, clear, clearFieldErrors, fmtNumber, h, show } from "./common.js";

const ESSENTIAL_TABS = new Set(["basic"]);
const OTHER_TAB = "advanced";
const OTHER_SECTION = "other keys (not in the field list)";

export const form = {
  fields: [], // [{key, name, type, default, choices, help, tab, section, family}]
  byName: new Map(),
  tabs: [],
  config: {},
  touched: new Set(), // names the user changed (stay visible)
  forceShow: new Set(), // names shown because an error points at them
  expandedTabs: new Set(), // tabs where the user asked for every field
  inputs: new Map(), // name -> input element
  holders: new Map(), // name -> .field element
  tab: "basic",
};

let onEdit = () => {}; // called after every change the form makes to `form.config`

// --- small helpers --------------------------------------------------------------------------------------------

export const bare = (key) => String(key).replace(/^--/, "");
const human = (s) => {
  const t = String(s || "").replace(/_/g, " ").trim();
  return t ? t[0].toUpperCase() + t.slice(1) : "Other";
};
const safeId = (s) => String(s).replace(/[^A-Za-z0-9_-]/g, "_");
const present = (name) => Object.prototype.hasOwnProperty.call(form.config, "--" + name);

// Whether the filter text `query` (trimmed, lower case) finds the field `name`: in its key, help or section (a key
// not in the field list is in OTHER_SECTION).
function matches(name, query) {
  const meta = form.byName.get(name);
  const hay = `--${name} ${meta ? meta.help || "" : ""} ${meta ? meta.section : OTHER_SECTION}`;
  return hay.toLowerCase().includes(query);
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
export function wireTablist(list, select) {
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

export function selectTabButton(list, btn) {
  for (const b of $$("[role=tab]", list)) {
    const on = b === btn;
    b.setAttribute("aria-selected", on ? "true" : "false");
    b.tabIndex = on ? 0 : -1;
  }
}

// --- inputs -----------------------------------------------------------------------------------------------------

function displayValue(meta, kind) {
  const key = "--" + meta.name;
  if (!present(meta.name)) return undefined;
  const v = form.config[key];
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
    const v = present(meta.name) ? form.config[meta.key] : meta.default;
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
    if (got.set) form.config[meta.key] = got.value;
    else delete form.config[meta.key];
    form.touched.add(meta.name);
    holder.classList.toggle("env-set", present(meta.name));
    clearFieldErrors(holder);
    onEdit();
  };
  input.addEventListener(kind === "bool" || kind === "select" ? "change" : "input", update);
  unset.addEventListener("click", () => {
    delete form.config[meta.key];
    form.touched.add(meta.name);
    const fresh = buildField(meta);
    holder.replaceWith(fresh);
    onEdit();
    fresh.querySelector("input, select, textarea").focus();
  });
  form.inputs.set(meta.name, input);
  form.holders.set(meta.name, holder);
  return holder;
}

// --- tabs, sections, visibility -----------------------------------------------------------------------------------

// The field list (GET /api/configs/fields; null when it could not be loaded: only unknown keys are shown then).
export function setFieldList(answer) {
  form.fields = (answer && answer.fields) || [];
  form.tabs = (answer && answer.tabs) || [];
  for (const f of form.fields) form.byName.set(f.name, f);
  form.tab = form.tabs[0] || OTHER_TAB;
}

// Every field of the table, plus config keys it does not know (shown at the end of `advanced`).
function allFields() {
  const out = form.fields.slice();
  for (const key of Object.keys(form.config)) {
    const name = bare(key);
    if (!form.byName.has(name)) {
      out.push({ key: "--" + name, name, type: "Any", default: null, choices: [], help: "Not a known config key.",
        tab: OTHER_TAB, section: OTHER_SECTION, family: null, synthetic: true });
    }
  }
  return out;
}

export function renderForm() {
  form.inputs.clear();
  form.holders.clear();
  const fields = allFields();
  const tabs = form.tabs.slice();
  for (const f of fields) if (!tabs.includes(f.tab)) tabs.push(f.tab);
  if (!tabs.includes(form.tab)) form.tab = tabs[0];
  const tabList = $("#env-tabs");
  const panels = $("#env-panels");
  clear(tabList, tabs.map((tab) => h("button", {
    type: "button", role: "tab", id: "tab-" + safeId(tab), "aria-controls": "panel-" + safeId(tab),
    "aria-selected": tab === form.tab ? "true" : "false", tabindex: tab === form.tab ? 0 : -1,
    dataset: { tab },
  }, human(tab), h("span.env-tab-count", {}), h("span.env-tab-flag", { "aria-hidden": "true" }),
  h("span.sr-only.env-tab-flag-text", {}))));
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

export function applyVisibility() {
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
        total += 1;
        if (present(name)) set += 1;
        const visible = q ? matches(name, q) : all || present(name) || form.touched.has(name)
          || form.forceShow.has(name) || ESSENTIAL_TABS.has(tab) || form.expandedTabs.has(tab);
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
    show(panel, q ? inPanel > 0 : tab === form.tab);
    show($(".env-panel-title", panel), Boolean(q));
  }
  show($("#env-tabs"), !q);
  show($("#env-nomatch"), Boolean(q) && shown === 0);
  $("#env-count").textContent = `Showing ${shown} of ${total} fields`;
}

export function selectConfigTab(tab) {
  form.tab = tab;
  const btn = $(`#tab-${CSS.escape(safeId(tab))}`);
  if (btn) selectTabButton($("#env-tabs"), btn);
  applyVisibility();
}

// The form's own controls: its tab list, the filter, "show all", a tab's "show the fields" button.
// `edited` is called after each change an input or "unset" makes to `form.config`.
export function wireForm({ edited }) {
  onEdit = edited;
  wireTablist($("#env-tabs"), (btn) => selectConfigTab(btn.dataset.tab));
  $("#env-filter").addEventListener("input", applyVisibility);
  $("#env-show-all").addEventListener("change", applyVisibility);
  $("#env-panels").addEventListener("click", (e) => {
    const btn = e.target.closest(".env-expand");
    if (!btn) return;
    form.expandedTabs.add(btn.dataset.tab);
    applyVisibility();
    const first = $(`.env-panel[data-tab="${CSS.escape(btn.dataset.tab)}"] .env-field:not(.hidden) ` +
      ":is(input, select, textarea)");
    if (first) first.focus();
  });
}

// --- errors at their fields -------------------------------------------------------------------------------------

// Forget which fields errors forced into view, and the tabs' error flags (the page clears the messages).
export function clearFormErrors() {
  form.forceShow.clear();
  for (const btn of $$("#env-tabs [role=tab]")) {
    btn.classList.remove("env-tab-error");
    $(".env-tab-flag", btn).textContent = "";
    $(".env-tab-flag-text", btn).textContent = "";
  }
}

// The input of the config key an error's path names (`--learning_rate`, `learning_rate`,
// `config.--learning_rate`, `config["learning_rate"]`), made visible: its field shown, its tab flagged; null when
// no field has that name.
export function fieldFor(path) {
  let p = String(path || "").trim();
  p = p.replace(/^config\./, "").replace(/^config\[["']?([^"'\]]+)["']?\]/, "$1");
  const name = bare(p).split(/[.[]/)[0];
  const input = form.inputs.get(name);
  if (!input) return null;
  const meta = form.byName.get(name);
  const tab = meta ? meta.tab : OTHER_TAB;
  form.forceShow.add(name);
  const filter = $("#env-filter");
  if (filter.value && !matches(name, filter.value.trim().toLowerCase())) filter.value = ""; // it would hide the field
  const btn = $(`#tab-${CSS.escape(safeId(tab))}`);
  if (btn) {
    btn.classList.add("env-tab-error");
    $(".env-tab-flag", btn).textContent = " !";
    $(".env-tab-flag-text", btn).textContent = " (has errors)";
  }
  return input;
}
