// What an htmx request does when the server will not answer it with a fragment.
//
// 401 (distillapp/middleware.py: the session is over, e.g. signed out in another tab): the
// page stays as it is and a sign-in dialog opens; once signed in, the same request (the
// reviewer's verdict) is sent again. Signing in rotates the CSRF token, so the page's forms
// and its htmx header get the new one first.
// 403, 404, 5xx: the reason from the error page (its [data-error-reason]) in a small dialog,
// rather than nothing happening. A 400 is the view's own answer (review.js swaps it in).
// 503 (distillapp/views.py: the database or Redis is not answering): the page (the review card)
// stays as it is, the dialog says whether what was sent was saved, and "Try again" sends it again.
(function () {
  var pending = null;  // the request to send again once signed in
  var toRetry = null;  // the request a 503 refused

  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || ""; }
    catch (e) { return ""; }
  }

  function useToken(token) {
    document.querySelectorAll('input[name="csrfmiddlewaretoken"]').forEach(function (input) { input.value = token; });
    var headers = {};
    try { headers = JSON.parse(document.body.getAttribute("hx-headers") || "{}"); } catch (e) { headers = {}; }
    headers["X-CSRFToken"] = token;
    document.body.setAttribute("hx-headers", JSON.stringify(headers));
  }

  function resend(config) {
    if (!config.elt || !document.body.contains(config.elt)) { location.reload(); return; }
    // The same values, but the form's stale CSRF token gives way to the new one in the DOM.
    var values = {};
    config.formData.forEach(function (value, key) {
      if (key === "csrfmiddlewaretoken") return;
      if (key in values) values[key] = [].concat(values[key], value);
      else values[key] = value;
    });
    htmx.ajax(config.verb, config.path, { source: config.elt, target: config.target, values: values });
  }

  function openSignIn(config) {
    var dialog = document.getElementById("signin-dialog");
    if (!dialog) { location.reload(); return; }  // a page drawn signed out: the login page is next
    if (dialog.open) return;  // one dialog for the first request; a poll will ask again anyway
    pending = config;
    dialog.querySelector("[data-signin-error]").hidden = true;
    dialog.showModal();
    var password = dialog.querySelector('input[name="password"]');
    password.value = "";
    password.focus();
  }

  async function signIn(form) {
    var dialog = form.closest("dialog");
    var error = form.querySelector("[data-signin-error]");
    var json = { "Accept": "application/json" };
    try {
      // A fresh token first: the page's may belong to a CSRF cookie that changed since.
      var fresh = await fetch(form.action, { headers: json, credentials: "same-origin" });
      var body = new FormData(form);
      body.set("csrfmiddlewaretoken", (await fresh.json()).csrf_token || csrfToken());
      var response = await fetch(form.action, { method: "POST", body: body, headers: json, credentials: "same-origin" });
      var answer = await response.json();
      if (!response.ok) throw new Error(answer.error || "Sign-in failed.");
      useToken(answer.csrf_token);
      document.querySelectorAll("[data-signed-in-as]").forEach(function (el) { el.textContent = answer.username; });
      dialog.close();
      var config = pending;
      pending = null;
      if (config) resend(config);
    } catch (e) {
      error.textContent = e.message || "Sign-in failed.";
      error.hidden = false;
    }
  }

  function reasonOf(xhr) {
    var type = xhr.getResponseHeader("Content-Type") || "";
    try {
      if (type.indexOf("json") !== -1) {
        var data = JSON.parse(xhr.responseText);
        return (data.error && data.error.message) || data.message || "";
      }
      var page = new DOMParser().parseFromString(xhr.responseText, "text/html");
      var reason = page.querySelector("[data-error-reason]");
      return reason ? reason.textContent.trim() : "";
    } catch (e) { return ""; }
  }

  function showError(xhr, config) {
    var dialog = document.getElementById("error-dialog");
    if (!dialog || dialog.open) return;
    dialog.querySelector("[data-error-text]").textContent =
      reasonOf(xhr) || "The server answered " + xhr.status + " " + (xhr.statusText || "") + ".";
    var retry = dialog.querySelector("[data-retry]");
    toRetry = xhr.status === 503 ? config : null;
    if (retry) retry.hidden = !toRetry;
    dialog.querySelector("[data-reload]").hidden = !!toRetry;
    dialog.showModal();
  }

  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    if (xhr.status === 401) openSignIn(event.detail.requestConfig);
    else if (xhr.status >= 403) showError(xhr, event.detail.requestConfig);
  });
  document.addEventListener("submit", function (event) {
    if (!event.target.matches("[data-signin-form]")) return;
    event.preventDefault();
    signIn(event.target);
  });
  document.addEventListener("click", function (event) {
    if (event.target.closest("[data-reload]")) { location.reload(); return; }
    if (event.target.closest("[data-retry]")) {
      var config = toRetry;
      toRetry = null;
      event.target.closest("dialog").close();
      if (config) resend(config);
      return;
    }
    var close = event.target.closest("[data-dialog-close]");
    if (close) close.closest("dialog").close();
  });
})();
