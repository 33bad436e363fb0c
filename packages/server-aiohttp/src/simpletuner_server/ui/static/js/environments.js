// Training environments: the list (with the caller's active one) and, for users who may create, a form that
// makes one from a shipped example or blank for a model family.
import { $, api, clear, clearFieldErrors, fmtTime, h, markField, params, showError } from "./common.js";

const table = $("#env-table tbody");
const BLANK = "__blank__";

function model(cfg) {
  const parts = [cfg.model_family, cfg.model_flavour, cfg.model_type].filter((x) => x);
  return parts.length ? parts.join(" · ") : "–";
}

async function loadList() {
  let list, active;
  try {
    [list, active] = await Promise.all([api("/api/configs/"), api("/api/configs/active").catch(() => ({}))]);
  } catch (err) {
    clear(table, h("tr", {}, h("td", { colspan: 4 }, h("span.field-error", { role: "alert" },
      `Could not load the environments: ${err.message}`))));
    return;
  }
  const activeName = (active && active.active) || null;
  clear($("#env-active"), activeName ? ["Your active environment: ", h("strong", {}, activeName)]
    : "No active environment");
  const configs = (list && list.configs) || [];
  if (!configs.length) {
    clear(table, h("tr", {}, h("td.muted", { colspan: 4 },
      params.create === "1" ? "No environments yet: create one below." : "No environments yet.")));
    return;
  }
  clear(table, configs.map((cfg) => h("tr", { dataset: { env: cfg.name } },
    h("td", {},
      h("a", { href: "/environments/" + encodeURIComponent(cfg.name) }, cfg.name),
      cfg.name === activeName ? [" ", h("span.badge.state-running", { title: "Your active environment" }, "active")]
        : null),
    h("td.env-desc", {}, cfg.description || h("span.muted", {}, "–"),
      (cfg.tags || []).length ? h("div.env-tags", {}, cfg.tags.map((t) => h("span.badge", {}, t))) : null),
    h("td", {}, model(cfg)),
    h("td.opt", {}, fmtTime(cfg.updated_at)))));
}

// --- create ---------------------------------------------------------------------------------------------------

const form = $("#create-form");
const exampleSelect = $("#create-example");
const familyField = $("#create-family-field");
const familySelect = $("#create-family");
let examples = [];

function describeChoice() {
  const chosen = exampleSelect.value;
  const isBlank = chosen === BLANK;
  familyField.classList.toggle("hidden", !isBlank);
  familySelect.required = isBlank;
  const ex = examples.find((e) => e.name === chosen);
  $("#create-example-help").textContent = isBlank
    ? "An empty config for the model family you choose, with a starter dataloader."
    : (ex ? ex.description || "" : "");
}

async function setupCreate() {
  $("#create-card").classList.remove("hidden");
  const [ex, plugins] = await Promise.all([
    api("/api/configs/examples").catch((err) => { showError(err); return { examples: [] }; }),
    api("/api/plugins").catch(() => ({ families: [] })),
  ]);
  examples = (ex && ex.examples) || [];
  clear(exampleSelect,
    examples.map((e) => h("option", { value: e.name }, `Example: ${e.name}`)),
    h("option", { value: BLANK }, "Blank: choose a model family"));
  clear(familySelect, ((plugins && plugins.families) || []).map((f) => h("option", { value: f }, f)));
  describeChoice();
}

exampleSelect.addEventListener("change", describeChoice);

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  clearFieldErrors(form);
  const name = form.elements.name.value.trim();
  const body = { name };
  if (exampleSelect.value === BLANK) body.model_family = familySelect.value;
  else body.example = exampleSelect.value;
  const description = form.elements.description.value.trim();
  if (description) body.description = description;
  if (!name) {
    markField(form.elements.name, "Give the environment a name.");
    form.elements.name.focus();
    return;
  }
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const made = await api("/api/configs/environments", { method: "POST", json: body });
    location.assign("/environments/" + encodeURIComponent(made.name || name));
  } catch (err) {
    button.disabled = false;
    const fieldFor = (path) => {
      const key = String(path).split(".")[0];
      if (key === "model_family" || key === "model_flavour" || key === "model_type" || key === "lora_type") {
        return exampleSelect.value === BLANK && key === "model_family" ? familySelect : exampleSelect;
      }
      return form.elements[key] || null;
    };
    if (err.status === 409 && !err.errors.length) markField(form.elements.name, err.message);
    showError(err, fieldFor);
    const bad = form.querySelector("[aria-invalid=true]");
    if (bad) bad.focus();
  }
});

loadList();
if (params.create === "1") setupCreate();
