// Users (admins): the accounts table with enable/disable, password reset, levels and delete; a create form;
// the self-registration switch. Every value is set as text; the server enforces who may do what.
import { $, $$, api, clear, clearFieldErrors, confirmDialog, fmtTime, h, levelBadge, markField, showError, toast }
  from "./common.js";

let me = null;

// --- dialogs ------------------------------------------------------------------------------------------------

for (const button of $$("dialog [data-close]")) {
  button.addEventListener("click", () => button.closest("dialog").close());
}

// --- the table ----------------------------------------------------------------------------------------------

function levelBadges(levels) {
  if (!levels.length) return h("span.muted", {}, "none");
  return levels.map(levelBadge);
}

function userRow(user) {
  const self = me && user.id === me.id;
  const toggle = h("button.btn.small", { type: "button", disabled: self,
    title: self ? "You cannot disable yourself" : null,
    "aria-label": `${user.is_active ? "Disable" : "Enable"} ${user.username}`,
    onclick: () => setActive(user, !user.is_active) }, user.is_active ? "Disable" : "Enable");
  const reset = h("button.btn.small", { type: "button", "aria-label": `Reset password of ${user.username}`,
    onclick: () => resetPassword(user) }, "Reset password");
  const levels = h("button.btn.small", { type: "button", "aria-label": `Change levels of ${user.username}`,
    onclick: () => changeLevels(user) }, "Levels");
  const remove = h("button.btn.small.danger", { type: "button", disabled: self,
    title: self ? "You cannot delete yourself" : null, "aria-label": `Delete ${user.username}`,
    onclick: () => deleteUser(user) }, "Delete");
  return h("tr", { dataset: { user: user.username } },
    h("th", { scope: "row" }, user.username, self ? h("span.muted", {}, " (you)") : null),
    h("td.opt", {}, user.email),
    h("td", {}, h("span.row.tight", {}, levelBadges(user.levels))),
    h("td", {}, user.is_active ? h("span.badge.state-completed", {}, "active")
      : h("span.badge.state-failed", {}, "disabled")),
    h("td.opt", { dataset: { label: "Last login" } },
      user.last_login_at ? fmtTime(user.last_login_at) : h("span.muted", {}, "never")),
    h("td.cell-actions", {}, h("div.row.actions", {}, toggle, reset, levels, remove)));
}

async function load() {
  try {
    const [self, users] = await Promise.all([me || api("/api/cloud/auth/me"), api("/api/users")]);
    me = self;
    clear($("#users-rows"), users.map(userRow));
    $("#users-table").classList.remove("hidden");
    $("#users-status").textContent = `${users.length} account${users.length === 1 ? "" : "s"}.`;
  } catch (err) {
    $("#users-status").textContent = `Could not list the users: ${err.message}`;
    showError(err);
  }
}

// The row of `user` redrawn from the updated user a PUT answered with.
function replaceRow(user, updated) {
  $(`#users-rows tr[data-user="${CSS.escape(user.username)}"]`)?.replaceWith(userRow(updated));
}

async function setActive(user, active) {
  try {
    replaceRow(user, await api(`/api/users/${user.id}`, { method: "PUT", json: { is_active: active } }));
    toast(`${user.username} ${active ? "enabled" : "disabled"}.`, "success");
  } catch (err) {
    showError(err);
    await load();
  }
}

async function deleteUser(user) {
  const yes = await confirmDialog({ title: `Delete ${user.username}?`,
    text: `The account ${user.username} (${user.email}) and its sessions and API keys are removed. ` +
      "This cannot be undone.",
    yes: "Delete", danger: true });
  if (!yes) return;
  try {
    await api(`/api/users/${user.id}`, { method: "DELETE" });
    toast(`${user.username} deleted.`, "success");
  } catch (err) {
    showError(err);
  }
  await load();
}

// --- password and levels dialogs ----------------------------------------------------------------------------

let editing = null;

function resetPassword(user) {
  editing = user;
  const form = $("#password-form");
  form.reset();
  clearFieldErrors(form);
  $("#password-for").textContent = `For ${user.username} (${user.email}).`;
  $("#password-dialog").showModal();
  form.elements.password.focus();
}

$("#password-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.currentTarget, input = form.elements.password;
  clearFieldErrors(form);
  if (input.value.length < 8) {
    markField(input, "At least 8 characters.");
    input.focus();
    return;
  }
  try {
    await api(`/api/users/${editing.id}`, { method: "PUT", json: { password: input.value } });
    $("#password-dialog").close();
    toast(`Password of ${editing.username} changed.`, "success");
  } catch (err) {
    showError(err, (path) => (path === "password" ? input : null));
  }
});

function changeLevels(user) {
  editing = user;
  const form = $("#levels-form");
  clearFieldErrors(form);
  $("#levels-for").textContent = `Levels of ${user.username}`;
  for (const box of form.querySelectorAll("input[name=level_names]")) box.checked = user.levels.includes(box.value);
  $("#levels-dialog").showModal();
  form.querySelector("input[name=level_names]").focus();
}

$("#levels-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.currentTarget;
  clearFieldErrors(form);
  const levels = checkedLevels(form);
  const first = form.querySelector("input[name=level_names]");
  if (!levels.length) {
    markField(first, "Choose at least one level.");
    return;
  }
  try {
    const updated = await api(`/api/users/${editing.id}`, { method: "PUT", json: { level_names: levels } });
    $("#levels-dialog").close();
    toast(`Levels of ${editing.username}: ${levels.join(", ")}.`, "success");
    replaceRow(editing, updated);
  } catch (err) {
    showError(err, (path) => (path.startsWith("level_names") ? first : null));
  }
});

const checkedLevels = (form) => Array.from(form.querySelectorAll("input[name=level_names]:checked"), (b) => b.value);

// --- create -------------------------------------------------------------------------------------------------

const createForm = $("#create-user-form");
createForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  clearFieldErrors(createForm);
  const el = createForm.elements, firstLevel = createForm.querySelector("input[name=level_names]");
  const body = { username: el.username.value.trim(), email: el.email.value.trim(), password: el.password.value,
    level_names: checkedLevels(createForm) };
  const fieldFor = (path) => (path.startsWith("level_names") ? firstLevel
    : ["username", "email", "password"].includes(path) ? el[path] : null);
  if (!body.level_names.length) {
    markField(firstLevel, "Choose at least one level.");
    return;
  }
  const button = createForm.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const user = await api("/api/users", { method: "POST", json: body });
    toast(`User ${user.username} created (${user.levels.join(", ")}).`, "success");
    createForm.reset();
    await load();
  } catch (err) {
    if (err.status === 409) { // "A user with this username already exists"
      const field = /email/i.test(err.message) ? el.email : /username/i.test(err.message) ? el.username : null;
      if (field) markField(field, err.message);
    }
    showError(err, fieldFor);
    createForm.querySelector("[aria-invalid=true]")?.focus();
  } finally {
    button.disabled = false;
  }
});

// --- registration -------------------------------------------------------------------------------------------

const registration = $("#registration-switch");

function showRegistration(info) {
  registration.checked = Boolean(info.enabled);
  registration.disabled = false;
  $("#registration-level").textContent = info.default_level || "viewer";
  $("#registration-state").textContent = info.enabled
    ? "Registration is on: the sign-in page offers a Register link."
    : "Registration is off: only admins create accounts.";
}

async function loadRegistration() {
  try {
    showRegistration(await api("/api/cloud/auth/registration"));
  } catch (err) {
    $("#registration-state").textContent = `Could not read the registration setting: ${err.message}`;
  }
}

registration.addEventListener("change", async () => {
  const wanted = registration.checked;
  registration.disabled = true;
  try {
    showRegistration(await api("/api/cloud/auth/registration", { method: "PUT", json: { enabled: wanted } }));
    toast(`Registration ${wanted ? "opened" : "closed"}.`, "success");
  } catch (err) {
    registration.checked = !wanted;
    registration.disabled = false;
    showError(err);
  }
});

load();
loadRegistration();
