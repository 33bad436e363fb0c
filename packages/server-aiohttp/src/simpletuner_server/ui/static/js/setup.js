// First run: create the first admin, which also signs them in.
import { $, api, clearFieldErrors, showError } from "./common.js";

const form = $("#setup-form");
form.addEventListener("submit", async (e) => {
  e.preventDefault();
  clearFieldErrors(form);
  const { username, email, password, token } = Object.fromEntries(new FormData(form));
  const headers = token ? { "X-Setup-Token": token } : {};
  try {
    await api("/api/cloud/auth/setup/first-admin", { method: "POST", json: { username, email, password }, headers });
    location.assign("/jobs");
  } catch (err) {
    showError(err, (path) => form.elements[path]);
  }
});
