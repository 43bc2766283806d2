// One keystroke per decision on review cards. Each action is a real button in
// a form (htmx swaps in the next card); a key just clicks the button with
// that data-key, so the page works the same with the mouse or without JS.
(function () {
  function help() {
    var panel = document.getElementById("keys-help");
    if (panel) panel.hidden = !panel.hidden;
  }
  document.addEventListener("keydown", function (event) {
    if (event.metaKey || event.ctrlKey || event.altKey) return;
    if (event.target.closest("input, textarea, select, [contenteditable]")) return;
    if (event.key === "?") { event.preventDefault(); help(); return; }
    if (event.key === "Escape") { var p = document.getElementById("keys-help"); if (p) p.hidden = true; return; }
    // One decision at a time: ignore keys while a card is being fetched.
    if (document.querySelector(".htmx-request")) { event.preventDefault(); return; }
    var key = event.key === "Enter" ? "a" : event.key.toLowerCase();
    var button = document.querySelector('#card [data-key="' + CSS.escape(key) + '"]');
    if (!button || button.disabled) return;
    event.preventDefault();
    button.click();
  });
  // A refused answer (400) comes back as the same card saying why, a verdict on a card
  // no longer mine (409: a second tab, a double press) as my next card saying why: show
  // it rather than leave the old card standing as if nothing happened.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    var status = event.detail.xhr.status;
    if ((status === 400 || status === 409) && target && target.id === "card") {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
})();
