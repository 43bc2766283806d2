// The summarisation card: the proposed summary in an editable box beside the text.
//
// As the reviewer edits, the card shows a word-level diff against the proposal (added words
// underlined, removed ones struck through), the length against the target, and the
// numbers and capitalised names of the summary that the text does not contain (a quick
// mirror of tasks/summarization/measure.py's grounding check; the server's list is shown
// first and the server validates whatever is posted). On submit the summary and the
// optional rating go out as the JSON "value" field; without JS the box posts as "label".
(function () {
  "use strict";

  var NUMBER = /\d+(?:[.,:]\d+)*/g;
  var NAME = /\b[A-Z][\w'’-]*/g;
  var NOT_NAMES = { I: 1, Mr: 1, Mrs: 1, Ms: 1, Dr: 1 };

  function words(text) { return (text || "").trim().split(/\s+/).filter(Boolean); }
  function sentences(text) { return (text.match(/[^.!?]+[.!?]+|[^.!?]+$/g) || []).filter(function (s) { return s.trim(); }).length; }

  // Longest common subsequence over words: the diff people read.
  function diff(before, after) {
    var a = words(before), b = words(after), n = a.length, m = b.length, i, j;
    var table = [];
    for (i = 0; i <= n; i++) { table.push(new Array(m + 1).fill(0)); }
    for (i = n - 1; i >= 0; i--) for (j = m - 1; j >= 0; j--) {
      table[i][j] = a[i] === b[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
    }
    var out = []; i = 0; j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && a[i] === b[j]) { out.push(["same", a[i]]); i++; j++; }
      else if (j < m && (i === n || table[i][j + 1] >= table[i + 1][j])) { out.push(["ins", b[j]]); j++; }
      else { out.push(["del", a[i]]); i++; }
    }
    return out;
  }

  function sourceText(form) {
    var text = document.querySelector("#card .example-text") || document.querySelector(".example-text");
    return text ? text.textContent : "";
  }

  function unsupported(summary, source) {
    var lower = source.toLowerCase(), found = [];
    (summary.match(NUMBER) || []).forEach(function (n) { if (source.indexOf(n) < 0) found.push(n); });
    summary.split(/(?<=[.!?])\s+/).forEach(function (sentence) {
      var first = true;
      (sentence.match(NAME) || []).forEach(function (word) {
        var sentenceStart = first && sentence.trim().indexOf(word) === 0;
        first = false;
        if (sentenceStart || NOT_NAMES[word]) return;
        if (lower.indexOf(word.toLowerCase()) < 0) found.push(word);
      });
    });
    return found.filter(function (w, k) { return found.indexOf(w) === k; });
  }

  function element(tag, text, className) {
    var node = document.createElement(tag);
    node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function refresh(form) {
    var box = form.querySelector("[data-summary-input]");
    var value = form.querySelector("[data-summary-value]");
    if (value) {
      var rating = form.querySelector('input[name="rating"]:checked');
      var answer = { summary: box.value };
      if (rating) answer.rating = parseInt(rating.value, 10);
      value.value = JSON.stringify(answer);
    }
    var original = box.getAttribute("data-original") || "";
    var now = box.value;
    var changed = now.trim().replace(/\s+/g, " ") !== original.trim().replace(/\s+/g, " ");
    var length = form.querySelector("[data-summary-length]");
    if (length) length.textContent = words(now).length + " words · " + sentences(now) + " sentence" + (sentences(now) === 1 ? "" : "s");
    var submit = form.querySelector("[data-summary-submit]");
    if (submit) {
      var kbd = submit.querySelector("kbd");
      submit.firstChild.textContent = (changed ? submit.getAttribute("data-changed") : submit.getAttribute("data-unchanged")) + " ";
      if (kbd) submit.appendChild(kbd);
    }
    var view = form.querySelector("[data-summary-diff]");
    if (view) {
      view.replaceChildren();
      view.hidden = !changed || !original;
      if (changed && original) {
        view.appendChild(element("strong", "Changes: "));
        diff(original, now).forEach(function (part) {
          view.appendChild(part[0] === "same" ? document.createTextNode(part[1]) : element(part[0], part[1]));
          view.appendChild(document.createTextNode(" "));
        });
      }
    }
    var warn = form.querySelector("[data-summary-unsupported]");
    if (warn && changed) {
      warn.replaceChildren();
      var items = unsupported(now, sourceText(form));
      if (items.length) {
        var p = element("p", "", "warn");
        p.appendChild(element("strong", "Possibly unsupported: "));
        items.forEach(function (item, k) {
          p.appendChild(element("mark", item, "unsupported"));
          if (k < items.length - 1) p.appendChild(document.createTextNode(", "));
        });
        p.appendChild(element("small", " (not found in the text: check before saving)"));
        warn.appendChild(p);
      }
    }
  }

  function init(root) {
    (root || document).querySelectorAll("[data-summary-form]").forEach(function (form) {
      if (form.dataset.ready) return;
      form.dataset.ready = "1";
      var box = form.querySelector("[data-summary-input]");
      box.addEventListener("input", function () { refresh(form); });
      box.addEventListener("keydown", function (event) {
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); form.requestSubmit(); }
        else if (event.key === "Escape") { event.preventDefault(); box.blur(); }
      });
      // The JSON answer is kept up to date as the box and the rating change (htmx reads the
      // form's values on submit, perhaps before a submit listener of ours would run).
      var value = document.createElement("input");
      value.type = "hidden"; value.name = "value"; value.setAttribute("data-summary-value", "");
      form.appendChild(value);
      form.addEventListener("change", function () { refresh(form); });
      var edit = form.querySelector("[data-summary-edit]");
      if (edit) edit.addEventListener("click", function () { box.focus(); box.setSelectionRange(box.value.length, box.value.length); });
      refresh(form);
    });
  }

  document.addEventListener("keydown", function (event) {
    if (event.metaKey || event.ctrlKey || event.altKey) return;
    if (event.target.closest("input, textarea, select, [contenteditable]")) return;
    var form = document.querySelector("#card [data-summary-form]");
    if (!form) return;
    if (/^[1-5]$/.test(event.key)) {
      var radio = form.querySelector('input[name="rating"][value="' + event.key + '"]');
      if (radio) { radio.checked = true; refresh(form); event.preventDefault(); }
    } else if ((event.key === "[" || event.key === "]") && document.querySelector("[data-summary-take]")) {
      var side = document.querySelector('[data-summary-take="' + (event.key === "[" ? 0 : 1) + '"]');
      if (side && !side.disabled) { event.preventDefault(); side.click(); }
    } else if (event.key === "Enter" && !document.querySelector("#card [data-key=a]")) {
      // Blind and adjudication cards save with Ctrl+Enter from the box; Enter outside it edits.
      event.preventDefault();
      form.querySelector("[data-summary-input]").focus();
    }
  });

  document.addEventListener("click", function (event) {
    var take = event.target.closest("[data-summary-take]");
    if (!take) return;
    var side = document.querySelector('[data-summary-side="' + take.getAttribute("data-summary-take") + '"]');
    var form = document.querySelector("[data-summary-editor] [data-summary-form]");
    if (!side || !form) return;
    var box = form.querySelector("[data-summary-input]");
    box.value = side.textContent.trim();
    refresh(form);
    box.focus();
  });

  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:afterSettle", function (event) { init(event.target); });
})();
