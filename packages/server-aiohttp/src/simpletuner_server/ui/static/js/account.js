// Your account: who you are (levels, permissions) and your API keys: list, create (the key is shown once), revoke.
import { $, api, clear, clearFieldErrors, confirmDialog, fmtTime, h, levelBadge, markField, showError, toast }
  from "./common.js";

const VIA = { session: "this browser's session", api_key: "an API key" };

async function loadMe() {
  try {
    const me = await api("/api/cloud/auth/me");
    $("#me-username").textContent = me.username;
    $("#me-email").textContent = me.email;
    clear($("#me-levels"), me.levels.length ? me.levels.map(levelBadge) : "none");
    $("#me-via").textContent = VIA[me.auth_method] || me.auth_method || "–";
    $("#me-created").textContent = fmtTime(me.created_at);
    $("#me-login").textContent = me.last_login_at ? fmtTime(me.last_login_at) : "never";
    const perms = me.permissions || [];
    clear($("#me-permissions"), perms.map((p) => h("li", {}, h("code", {}, p === "*" ? "* (everything)" : p))));
    $("#me-permissions-box").classList.toggle("hidden", !perms.length);
    $("#me-facts").classList.remove("hidden");
    $("#me-status").remove();
    const mayCreate = perms.includes("*") || perms.includes("api.keys.own");
    $("#key-form").classList.toggle("hidden", !mayCreate);
    $("#key-denied").classList.toggle("hidden", mayCreate);
  } catch (err) {
    $("#me-status").textContent = `Could not load your account: ${err.message}`;
    showError(err);
  }
}

// --- keys ---------------------------------------------------------------------------------------------------

function keyState(key) {
  if (!key.is_active) return h("span.badge.state-cancelled", {}, "revoked");
  if (key.expires_at && new Date(key.expires_at) < new Date()) return h("span.badge.state-failed", {}, "expired");
  return h("span.badge.state-completed", {}, "active");
}

function keyRow(key) {
  const revoke = key.is_active
    ? h("button.btn.small.danger", { type: "button", "aria-label": `Revoke key ${key.name}`,
      onclick: () => revokeKey(key) }, "Revoke")
    : null;
  return h("tr", { dataset: { key: String(key.id) } },
    h("th", { scope: "row" }, key.name),
    h("td", { dataset: { label: "Key" } }, h("code", {}, `${key.key_prefix}…`)),
    h("td.opt", { dataset: { label: "Created" } }, fmtTime(key.created_at)),
    h("td.opt", { dataset: { label: "Last used" } },
      key.last_used_at ? fmtTime(key.last_used_at) : h("span.muted", {}, "never")),
    h("td", { dataset: { label: "Expires" } }, key.expires_at ? fmtTime(key.expires_at) : h("span.muted", {}, "never")),
    h("td", {}, keyState(key)),
    h("td.cell-actions", {}, revoke));
}

async function loadKeys() {
  try {
    const keys = await api("/api/cloud/auth/api-keys");
    keys.sort((a, b) => (b.is_active - a.is_active) || String(b.created_at).localeCompare(String(a.created_at)));
    clear($("#keys-rows"), keys.map(keyRow));
    $("#keys-table").classList.toggle("hidden", !keys.length);
    const active = keys.filter((k) => k.is_active).length;
    $("#keys-status").textContent = keys.length
      ? `${active} active key${active === 1 ? "" : "s"}${keys.length > active ? `, ${keys.length - active} revoked` : ""}.`
      : "You have no API keys.";
  } catch (err) {
    $("#keys-status").textContent = `Could not list your keys: ${err.message}`;
    showError(err);
  }
}

const form = $("#key-form");
form.addEventListener("submit", async (e) => {
  e.preventDefault();
  clearFieldErrors(form);
  const name = form.elements.name.value.trim(), daysRaw = form.elements.expires_days.value.trim();
  const body = { name };
  if (!name) {
    markField(form.elements.name, "Give the key a name (what uses it).");
    form.elements.name.focus();
    return;
  }
  if (daysRaw) {
    const days = Number(daysRaw);
    if (!Number.isInteger(days) || days < 1 || days > 3650) {
      markField(form.elements.expires_days, "A whole number of days from 1 to 3650, or empty for no expiry.");
      form.elements.expires_days.focus();
      return;
    }
    body.expires_days = days;
  }
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const made = await api("/api/cloud/auth/api-keys", { method: "POST", json: body });
    form.reset();
    const input = $("#new-key-value");
    input.value = made.key;
    $("#new-key-label").textContent = `Your new key “${made.key_info.name}”`;
    $("#new-key").classList.remove("hidden");
    input.focus();
    input.select();
    await loadKeys();
  } catch (err) {
    showError(err, (path) => (path === "name" || path === "expires_days" ? form.elements[path] : null));
  } finally {
    button.disabled = false;
  }
});

$("#copy-key").addEventListener("click", async () => {
  const input = $("#new-key-value");
  input.focus();
  input.select();
  try {
    await navigator.clipboard.writeText(input.value);
    toast("Key copied to the clipboard.", "success");
  } catch {
    // Clipboard API refused (no permission, not a secure context): the legacy copy of the selection.
    const ok = document.execCommand && document.execCommand("copy");
    toast(ok ? "Key copied to the clipboard." : "Copy it by hand: it is selected.", ok ? "success" : "info");
  }
});

$("#hide-key").addEventListener("click", () => {
  $("#new-key-value").value = "";
  $("#new-key").classList.add("hidden");
  form.elements.name.focus();
});

async function revokeKey(key) {
  const yes = await confirmDialog({ title: `Revoke key ${key.name}?`,
    text: `Anything using ${key.key_prefix}… stops working at once. This cannot be undone.`,
    yes: "Revoke", danger: true });
  if (!yes) return;
  try {
    await api(`/api/cloud/auth/api-keys/${key.id}`, { method: "DELETE" });
    toast(`Key ${key.name} revoked.`, "success");
  } catch (err) {
    showError(err);
  }
  await loadKeys();
}

loadMe();
loadKeys();
