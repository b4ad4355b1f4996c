// The sign-in page (docs/security.md): POST /api/auth/login sets the HTTP-only session cookie; a
// first-start password must be changed (POST /api/auth/password, with the session's CSRF token)
// before the dashboard opens.
"use strict";

(function () {
  const loginForm = document.getElementById("login-form");
  const passwordForm = document.getElementById("password-form");
  const errorLine = document.getElementById("login-error");
  let currentPassword = "";
  let csrfToken = null;

  function next() {
    const target = new URLSearchParams(location.search).get("next") || "/";
    // Only a path on this site: never an open redirect.
    return target.startsWith("/") && !target.startsWith("//") ? target : "/";
  }

  function showError(text) {
    errorLine.textContent = text;
    errorLine.hidden = !text;
  }

  async function post(path, body) {
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    if (csrfToken) headers["X-CSRF-Token"] = csrfToken;
    const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
    let envelope = null;
    try {
      envelope = await response.json();
    } catch (_) {
      /* the status says it */
    }
    if (!response.ok) throw new Error((envelope && envelope.message) || `HTTP ${response.status}`);
    return envelope.data;
  }

  loginForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError("");
    const form = new FormData(loginForm);
    currentPassword = String(form.get("password"));
    try {
      const me = await post("/api/auth/login", { username: String(form.get("username")), password: currentPassword });
      csrfToken = me.csrf_token;
      if (me.password_change_required) {
        loginForm.hidden = true;
        passwordForm.hidden = false;
        return;
      }
      location.href = next();
    } catch (err) {
      showError(err.message);
    }
  });

  passwordForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError("");
    const form = new FormData(passwordForm);
    try {
      await post("/api/auth/password", { current_password: currentPassword, new_password: String(form.get("new_password")) });
      location.href = next();
    } catch (err) {
      showError(err.message);
    }
  });
})();
