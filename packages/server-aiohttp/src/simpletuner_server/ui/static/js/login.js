// Sign in (and register, when an admin has switched registration on).
import { $, api, clearFieldErrors, params, showError, toast } from "./common.js";

const form = $("#login-form");
form.addEventListener("submit", async (e) => {
  e.preventDefault();
  clearFieldErrors(form);
  const data = Object.fromEntries(new FormData(form));
  try {
    await api("/api/cloud/auth/login", { method: "POST", json: data });
    location.assign(params.next || "/jobs");
  } catch (err) {
    showError(err, (path) => form.elements[path]);
  }
});

const regForm = $("#register-form");
api("/api/cloud/auth/registration").then((info) => {
  if (info && info.enabled) $("#register-hint").hidden = false;
}).catch(() => { /* older server: no registration */ });
$("#register-link").addEventListener("click", (e) => {
  e.preventDefault();
  regForm.hidden = false;
  regForm.elements.username.focus();
});
regForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  clearFieldErrors(regForm);
  try {
    await api("/api/cloud/auth/register", { method: "POST", json: Object.fromEntries(new FormData(regForm)) });
    toast("Account created: sign in with it.", "success");
    regForm.hidden = true;
    form.elements.username.value = regForm.elements.username.value;
    form.elements.password.focus();
  } catch (err) {
    showError(err, (path) => regForm.elements[path]);
  }
});
