// The docs page's "Send" buttons: each form calls its operation on this server with the
// token typed at the top, and shows the status and the JSON that came back.
(function () {
  document.querySelectorAll("form.api-try").forEach(function (form) {
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      var path = form.dataset.path.replace(/\{(\w+)\}/g, function (_, name) {
        return encodeURIComponent(form.elements[name].value);
      });
      var options = { method: form.dataset.method, headers: {} };
      var token = document.getElementById("api-token").value.trim();
      if (token) options.headers["Authorization"] = "Bearer " + token;
      if (form.elements.body) {
        options.headers["Content-Type"] = "application/json";
        options.body = form.elements.body.value;
      }
      var out = form.querySelector("[data-result]");
      out.hidden = false;
      out.textContent = "…";
      try {
        var response = await fetch(path, options);
        var text = await response.text();
        try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* shown as it came */ }
        out.textContent = response.status + " " + response.statusText + "\n" + text;
      } catch (error) {
        out.textContent = "The request failed: " + error;
      }
    });
  });
})();
