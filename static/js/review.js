// One keystroke per decision on review cards. Each action is a real button in
// a form (htmx swaps in the next card); a key just clicks the button with
// that data-key, so the page works the same with the mouse or without JS.
(function () {
  var IGNORED_FOR_MS = 2500;
  var ignoredTimer = null;

  function help() {
    var panel = document.getElementById("keys-help");
    if (panel) panel.hidden = !panel.hidden;
  }

  // A card is being fetched while htmx marks the element that asked (spans.js reads the same).
  function busy() { return !!document.querySelector(".htmx-request"); }

  // While a card loads, a decision key is not applied: it would land on a card that appeared a
  // moment before, unseen. Rather than drop it silently, say so, long enough to be read.
  function keyIgnored(key) {
    var note = document.getElementById("key-ignored");
    if (!note) {
      note = document.createElement("p");
      note.id = "key-ignored";
      note.className = "key-ignored";
      note.setAttribute("role", "status");
      document.body.appendChild(note);
    }
    note.textContent = "Still loading the card: " + (key === " " ? "space" : "“" + key + "”") + " was not applied. Press it again when the card is here.";
    note.hidden = false;
    note.classList.remove("is-again");
    void note.offsetWidth;  // restart the animation: each ignored key shows
    note.classList.add("is-again");
    clearTimeout(ignoredTimer);
    ignoredTimer = setTimeout(function () { note.hidden = true; }, IGNORED_FOR_MS);
  }

  document.addEventListener("keydown", function (event) {
    if (event.metaKey || event.ctrlKey || event.altKey) return;
    if (event.target.closest("input, textarea, select, [contenteditable]")) return;
    if (document.querySelector("dialog[open]")) return;  // the sign-in dialog (session.js) has the keys
    if (event.key === "?") { event.preventDefault(); help(); return; }
    if (event.key === "Escape") { var p = document.getElementById("keys-help"); if (p) p.hidden = true; return; }
    // One decision at a time: no key acts while a card is being fetched, and the reviewer is told.
    if (busy()) {
      if (event.key === "Enter" || event.key.length === 1) { event.preventDefault(); keyIgnored(event.key); }
      return;
    }
    var key = event.key === "Enter" ? "a" : event.key.toLowerCase();
    var button = document.querySelector('#card [data-key="' + CSS.escape(key) + '"]');
    if (!button || button.disabled) return;
    event.preventDefault();
    button.click();
  });

  // The card shows it is loading (dimmed, a spinner, what is happening) from the moment the
  // request leaves; the next card replaces it, and a failed request clears it below.
  document.addEventListener("htmx:beforeSend", function (event) {
    var card = document.getElementById("card");
    if (!card || event.detail.target !== card) return;
    var source = event.detail.elt.closest("[data-busy-label]");
    var cover = card.querySelector(":scope > .card-busy");
    if (!cover) {
      cover = document.createElement("div");
      cover.className = "card-busy";
      cover.innerHTML = '<p class="card-busy-note" role="status"><span class="spinner" aria-hidden="true"></span><span data-busy-text></span></p>';
      card.appendChild(cover);
    }
    cover.querySelector("[data-busy-text]").textContent = source ? source.getAttribute("data-busy-label") : "Loading the next card…";
    card.setAttribute("aria-busy", "true");
  });
  document.addEventListener("htmx:afterRequest", function () {
    var card = document.getElementById("card");
    if (!card || card.getAttribute("aria-busy") !== "true" || busy()) return;
    card.removeAttribute("aria-busy");
    var cover = card.querySelector(":scope > .card-busy");
    if (cover) cover.remove();
  });

  // On a phone the order and filters fold away, so the card is the first thing under the tabs.
  document.addEventListener("DOMContentLoaded", function () {
    if (!window.matchMedia("(max-width: 640px)").matches) return;
    document.querySelectorAll("details[data-fold-narrow]").forEach(function (d) { d.open = false; });
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
