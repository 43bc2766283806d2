// The extraction card: mark field values in the text with the keyboard (or the mouse).
//
// The card's text (#card article.example .example-text) is the editing surface: the
// spans are drawn into it as <mark>s, a selection snapped to whole words becomes a span
// when a field's key is pressed, and the span set is kept, as JSON, in the card form's
// hidden "value" field, so Enter (review.js clicks the [data-key=a] button) posts it.
// Offsets are code points, as in Python (tasks/extraction/spans.py); JS strings count
// UTF-16 units, so every conversion goes through Array.from. The server validates
// whatever is posted (project.task.validate): it is the truth, this is only the pen.
(function () {
  "use strict";

  var OTHER_COLOR = "#9aa3af";
  var WORD = /[\p{L}\p{N}\p{M}_]/u;
  var SPACE = /\s/;
  var state = null;

  function isWordChar(ch) { return ch !== undefined && WORD.test(ch); }
  function isSpace(ch) { return ch !== undefined && SPACE.test(ch); }
  function key(span) { return span.start + ":" + span.end + ":" + span.field; }
  function bySpan(a, b) { return a.start - b.start || a.end - b.end || (a.field < b.field ? -1 : a.field > b.field ? 1 : 0); }

  function normalise(spans) {
    var seen = {};
    return spans
      .map(function (s) { return { start: s.start, end: s.end, field: s.field }; })
      .sort(bySpan)
      .filter(function (s) { var k = key(s); if (seen[k]) return false; seen[k] = true; return true; });
  }

  function sameSet(a, b) {
    return a.length === b.length && a.map(key).sort().join("|") === b.map(key).sort().join("|");
  }

  function readJSON(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  // --- the text as code points, its grapheme clusters, and snapping -------------------

  function textModel(text) {
    var chars = Array.from(text);
    // UTF-16 index -> code point index, for the grapheme segmenter's indices.
    var cp = [], i = 0, u = 0;
    chars.forEach(function (ch) { cp[u] = i; u += ch.length; i += 1; });
    cp[u] = chars.length;
    var clusters = [];
    if (window.Intl && Intl.Segmenter) {
      var segments = new Intl.Segmenter(undefined, { granularity: "grapheme" }).segment(text);
      for (var seg of segments) {
        clusters.push([cp[seg.index], cp[seg.index + seg.segment.length]]);
      }
    } else {
      clusters = chars.map(function (_, k) { return [k, k + 1]; });
    }
    return { text: text, chars: chars, clusters: clusters };
  }

  // Mirrors tasks/extraction/spans.snap_to_words: a selection grown to whole words and
  // whole characters, trimmed of whitespace; only whitespace gives start == end.
  function snapToWords(model, start, end) {
    var chars = model.chars, clusters = model.clusters, n = chars.length;
    start = Math.max(0, Math.min(start, n));
    end = Math.max(0, Math.min(end, n));
    if (start > end) { var t = start; start = end; end = t; }
    while (start < end && isSpace(chars[start])) start += 1;
    while (end > start && isSpace(chars[end - 1])) end -= 1;
    if (start === end) return [start, start];
    var first = clusters.findIndex(function (c) { return c[1] > start; });
    var last = clusters.length - 1;
    while (last >= 0 && !(clusters[last][0] < end)) last -= 1;
    function isWord(k) { return isWordChar(chars[clusters[k][0]]); }
    while (first > 0 && isWord(first) && isWord(first - 1)) first -= 1;
    while (last < clusters.length - 1 && isWord(last) && isWord(last + 1)) last += 1;
    return [clusters[first][0], clusters[last][1]];
  }

  // A keyboard step covers one unit: a word, or one character of punctuation.
  function unitAfter(model, p) {
    var chars = model.chars, n = chars.length;
    while (p < n && isSpace(chars[p])) p += 1;
    if (p >= n) return null;
    var e = p + 1;
    if (isWordChar(chars[p])) while (e < n && isWordChar(chars[e])) e += 1;
    return [p, e];
  }

  function unitBefore(model, p) {
    var chars = model.chars;
    while (p > 0 && isSpace(chars[p - 1])) p -= 1;
    if (p <= 0) return null;
    var s = p - 1;
    if (isWordChar(chars[s])) while (s > 0 && isWordChar(chars[s - 1])) s -= 1;
    return [s, p];
  }

  // --- drawing spans into a text element ----------------------------------------------

  function colorOf(field) {
    var found = state.byName[field];
    return found ? found.color : OTHER_COLOR;
  }

  function drawMarks(el, model, spans, options) {
    options = options || {};
    var n = model.chars.length;
    var cuts = [0, n];
    spans.forEach(function (s) { cuts.push(s.start, s.end); });
    cuts = Array.from(new Set(cuts)).sort(function (a, b) { return a - b; });
    var fragment = document.createDocumentFragment();
    for (var k = 0; k + 1 < cuts.length; k += 1) {
      var a = cuts[k], b = cuts[k + 1];
      if (a === b) continue;
      var covering = [];
      spans.forEach(function (s, index) { if (s.start <= a && b <= s.end) covering.push(index); });
      var seg = document.createElement(covering.length ? "mark" : "span");
      seg.dataset.start = a;
      seg.dataset.end = b;
      seg.textContent = model.chars.slice(a, b).join("");
      if (covering.length) {
        // The shortest covering span gives the colour: the inner one of a nested pair.
        covering.sort(function (x, y) { return (spans[x].end - spans[x].start) - (spans[y].end - spans[y].start); });
        var inner = spans[covering[0]];
        seg.className = "span-mark";
        seg.style.setProperty("--c", colorOf(inner.field));
        if (covering.length > 1) {
          seg.classList.add("is-overlap");
          seg.style.setProperty("--c2", colorOf(spans[covering[1]].field));
        }
        seg.dataset.spans = covering.join(" ");
        seg.title = covering.map(function (i) { return spans[i].field; }).join(" + ");
        if (covering.some(function (i) { return spans[i].start === a; })) seg.classList.add("is-start");
        var ending = covering.filter(function (i) { return spans[i].end === b; });
        if (ending.length) {
          seg.classList.add("is-end");
          seg.dataset.tag = ending.map(function (i) { return spans[i].field; }).join(" + ");
        }
        if (options.focused !== undefined && covering.indexOf(options.focused) >= 0) seg.classList.add("is-focused");
        if (options.only && covering.some(function (i) { return options.only[key(spans[i])]; })) seg.classList.add("is-only");
      }
      fragment.appendChild(seg);
    }
    el.replaceChildren(fragment);
    el.classList.add("is-marked");
  }

  // --- selection <-> code point offsets -----------------------------------------------

  function pointToOffset(node, offset) {
    var el = state.textEl;
    if (!el.contains(node)) return null;
    if (node.nodeType === Node.TEXT_NODE) {
      var seg = node.parentElement.closest("[data-start]");
      return Number(seg.dataset.start) + Array.from(node.data.slice(0, offset)).length;
    }
    if (node === el) {
      var child = el.childNodes[offset];
      return child && child.dataset ? Number(child.dataset.start) : state.model.chars.length;
    }
    var holder = node.closest("[data-start]");
    return offset === 0 ? Number(holder.dataset.start) : Number(holder.dataset.end);
  }

  function selectionInText() {
    var sel = window.getSelection();
    if (!sel || !sel.rangeCount) return null;
    var range = sel.getRangeAt(0);
    if (!range.intersectsNode(state.textEl)) return null;
    var el = state.textEl;
    var start = el.contains(range.startContainer) ? pointToOffset(range.startContainer, range.startOffset) : 0;
    var end = el.contains(range.endContainer) ? pointToOffset(range.endContainer, range.endOffset) : state.model.chars.length;
    var anchor = pointToOffset(sel.anchorNode, sel.anchorOffset);
    var focus = pointToOffset(sel.focusNode, sel.focusOffset);
    if (anchor === null || focus === null) { anchor = start; focus = end; }
    return { start: start, end: end, anchor: anchor, focus: focus, collapsed: start === end };
  }

  function domPoint(p) {
    var segs = state.textEl.querySelectorAll("[data-start]");
    for (var k = 0; k < segs.length; k += 1) {
      var s = Number(segs[k].dataset.start), e = Number(segs[k].dataset.end);
      if ((p >= s && p < e) || (p === e && k === segs.length - 1)) {
        var textNode = segs[k].firstChild;
        return { node: textNode, offset: state.model.chars.slice(s, p).join("").length };
      }
    }
    return { node: state.textEl, offset: 0 };
  }

  function select(anchor, focus) {
    var a = domPoint(anchor), f = domPoint(focus);
    window.getSelection().setBaseAndExtent(a.node, a.offset, f.node, f.offset);
    var mark = f.node.parentElement;
    if (mark && mark.scrollIntoView) mark.scrollIntoView({ block: "nearest" });
  }

  function clearSelection() {
    var sel = window.getSelection();
    if (sel) sel.removeAllRanges();
  }

  // --- the editor ---------------------------------------------------------------------

  function say(message) {
    if (!state.alertEl) return;
    state.alertEl.textContent = message;
    state.alertEl.hidden = !message;
  }

  function render() {
    var spans = state.spans;
    drawMarks(state.textEl, state.model, spans, { focused: state.focused });
    var list = state.listEl;
    list.replaceChildren();
    if (!spans.length) {
      var none = document.createElement("li");
      none.className = "muted span-none";
      none.textContent = "No spans: Enter saves this text with no fields.";
      list.appendChild(none);
    }
    spans.forEach(function (span, index) {
      var li = document.createElement("li");
      li.dataset.index = index;
      if (index === state.focused) li.className = "is-focused";
      var chip = document.createElement("span");
      chip.className = "field-chip is-small";
      chip.style.setProperty("--c", colorOf(span.field));
      chip.textContent = span.field;
      var value = document.createElement("span");
      value.className = "span-value";
      value.textContent = state.model.chars.slice(span.start, span.end).join("").replace(/\s+/g, " ");
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "link span-remove";
      remove.dataset.remove = index;
      remove.title = "Remove this span";
      remove.setAttribute("aria-label", "Remove " + span.field + " " + value.textContent);
      remove.textContent = "×";
      li.append(chip, " ", value, " ");
      if (key(span) in state.confidence) {
        var conf = document.createElement("span");
        conf.className = "conf";
        conf.title = "The teacher's confidence in this span";
        conf.dataset.spanConfidence = state.confidence[key(span)].toFixed(2);
        conf.textContent = state.confidence[key(span)].toFixed(2);
        li.append(conf, " ");
      }
      li.append(remove);
      list.appendChild(li);
    });
    var changed = !sameSet(spans, state.initial);
    state.valueInput.value = JSON.stringify({ spans: spans });
    if (state.submit) {
      var label = changed ? state.submit.dataset.changed : state.submit.dataset.unchanged;
      state.submit.firstChild.textContent = label + " ";
      state.submit.classList.toggle("is-changed", changed);
    }
    if (state.stateEl) {
      state.stateEl.textContent = spans.length + (spans.length === 1 ? " span" : " spans") + (changed ? " · edited" : "");
    }
    state.root.dataset.spanCount = spans.length;
    state.root.dataset.changed = changed ? "yes" : "no";
  }

  function change(spans, focused) {
    state.history.push({ spans: state.spans, focused: state.focused });
    state.spans = normalise(spans);
    state.focused = focused === undefined ? -1 : focused;
    say("");
    render();
  }

  function addSpan(field, start, end) {
    var info = state.byName[field];
    var others = state.spans.filter(function (s) {
      return !(info && !info.allows_many && s.field === field);
    });
    var replaced = state.spans.some(function (s) { return others.indexOf(s) < 0 && !(s.start === start && s.end === end); });
    var added = { start: start, end: end, field: field };
    var next = normalise(others.concat([added]));
    change(next, next.findIndex(function (s) { return key(s) === key(added); }));
    if (replaced) say(field + " takes one value per text: the earlier one was replaced.");
  }

  function markSelection(field) {
    var sel = selectionInText();
    if (sel && !sel.collapsed) {
      var snapped = snapToWords(state.model, sel.start, sel.end);
      clearSelection();
      if (snapped[0] === snapped[1]) { say("Only spaces are selected: select a word."); return; }
      addSpan(field, snapped[0], snapped[1]);
      return;
    }
    if (state.focused >= 0) {
      var span = state.spans[state.focused];
      var moved = { start: span.start, end: span.end, field: field };
      var info = state.byName[field];
      var rest = state.spans.filter(function (s, i) {
        return i !== state.focused && !(info && !info.allows_many && s.field === field);
      });
      var next = normalise(rest.concat([moved]));
      change(next, next.findIndex(function (s) { return key(s) === key(moved); }));
      return;
    }
    say("Select words in the text first (mouse, or ← → and shift+← →), then press the field's key.");
  }

  function focusSpan(index) {
    state.focused = index;
    clearSelection();
    render();
    var mark = state.textEl.querySelector(".span-mark.is-focused");
    if (mark) mark.scrollIntoView({ block: "nearest" });
  }

  function cursor(forward) {
    var sel = selectionInText();
    if (sel) {
      if (!sel.collapsed) return forward ? sel.end : sel.start;
      return sel.start;
    }
    if (state.focused >= 0) {
      var span = state.spans[state.focused];
      return forward ? span.end : span.start;
    }
    return forward ? 0 : state.model.chars.length;
  }

  function step(forward, extend) {
    var model = state.model;
    var sel = selectionInText();
    if (extend) {
      var anchor, focus;
      if (sel && !sel.collapsed) { anchor = sel.anchor; focus = sel.focus; }
      else { anchor = focus = cursor(forward); }
      var unit = forward ? unitAfter(model, focus) : unitBefore(model, focus);
      if (!unit) return;
      focus = forward ? unit[1] : unit[0];
      if (state.focused >= 0) { state.focused = -1; render(); }
      select(anchor, focus);
      return;
    }
    var from = cursor(forward);
    var next = forward ? unitAfter(model, from) : unitBefore(model, from);
    if (!next) return;
    if (state.focused >= 0) { state.focused = -1; render(); }
    select(next[0], next[1]);
  }

  function onKey(event) {
    if (!state || !document.body.contains(state.root)) return;
    if (event.metaKey || event.ctrlKey || event.altKey) return;
    if (event.target.closest && event.target.closest("input, textarea, select, [contenteditable]")) return;
    if (document.querySelector(".htmx-request")) return;  // review.js holds keys while a card loads
    if (document.querySelector("dialog[open]")) return;  // the sign-in dialog (session.js) has the keys
    var k = event.key;
    function handled() { event.preventDefault(); event.stopImmediatePropagation(); }
    if (k === "ArrowRight" || k === "ArrowLeft") { handled(); step(k === "ArrowRight", event.shiftKey); return; }
    if (k === "Tab") {
      if (!state.spans.length) return;
      handled();
      var n = state.spans.length;
      var from = state.focused < 0 ? (event.shiftKey ? 0 : -1) : state.focused;
      focusSpan(((from + (event.shiftKey ? -1 : 1)) % n + n) % n);
      return;
    }
    if (k === "Delete" || k === "Backspace") {
      if (state.focused < 0) return;
      handled();
      var rest = state.spans.filter(function (_, i) { return i !== state.focused; });
      change(rest, rest.length ? Math.min(state.focused, rest.length - 1) : -1);
      return;
    }
    if (k === "Escape") { state.focused = -1; clearSelection(); say(""); render(); return; }
    if (k === "u" && state.history.length) {
      handled();
      var last = state.history.pop();
      state.spans = last.spans;
      state.focused = last.focused;
      say("");
      render();
      return;
    }
    if ((k === "[" || k === "]") && state.sides) {
      var side = state.sides[k === "[" ? 0 : 1];
      if (side) { handled(); change(side.spans, -1); }
      return;
    }
    if (k.length === 1) {
      var field = state.byKey[k] || state.byKey[k.toLowerCase()];
      if (field) { handled(); markSelection(field.name); }
    }
  }

  function onClick(event) {
    if (!state || !state.root.isConnected) return;
    var chip = event.target.closest(".span-legend [data-field]");
    if (chip && state.root.contains(chip)) { markSelection(chip.dataset.field); return; }
    var remove = event.target.closest("[data-remove]");
    if (remove && state.listEl.contains(remove)) {
      var index = Number(remove.dataset.remove);
      var rest = state.spans.filter(function (_, i) { return i !== index; });
      change(rest, -1);
      return;
    }
    var item = event.target.closest("li[data-index]");
    if (item && state.listEl.contains(item)) { focusSpan(Number(item.dataset.index)); return; }
    var take = event.target.closest("[data-span-take]");
    if (take && state.sides) {
      var side = state.sides[Number(take.dataset.spanTake)];
      if (side) change(side.spans, -1);
      return;
    }
    var mark = event.target.closest(".span-mark");
    if (mark && state.textEl.contains(mark)) {
      var sel = selectionInText();
      if (sel && !sel.collapsed) return;  // the end of a drag, not a click
      var covering = mark.dataset.spans.split(" ").map(Number);
      var at = covering.indexOf(state.focused);
      // Clicking again where spans overlap goes to the next one.
      focusSpan(at >= 0 ? covering[(at + 1) % covering.length] : covering[0]);
    }
  }

  function init() {
    var card = document.getElementById("card");
    var root = card && card.querySelector("[data-span-editor]");
    if (!root || root.dataset.ready) return;
    var data = readJSON("span-editor-data");
    var fields = readJSON("span-fields") || [];
    var textEl = card.querySelector("article.example .example-text");
    if (!data || !textEl) return;
    root.dataset.ready = "yes";
    var byName = {}, byKey = {};
    fields.forEach(function (f) { byName[f.name] = f; if (f.key) byKey[f.key] = f; });
    var sides = data.sides || null;
    var initial;
    // The teacher's confidence of each proposed span (log-probs or sample share), shown beside it.
    var confidence = {};
    if (data.initial && Array.isArray(data.initial.spans)) {
      data.initial.spans.forEach(function (s) {
        if (typeof s.confidence === "number") confidence[key(s)] = s.confidence;
      });
      initial = normalise(data.initial.spans);
    } else if (sides) {
      // Adjudication starts from what both reviewers marked.
      var answered = sides.filter(Boolean);
      initial = answered.length === 2
        ? normalise(answered[0].spans.filter(function (s) { return answered[1].spans.some(function (t) { return key(t) === key(s); }); }))
        : [];
    } else {
      initial = [];
    }
    var alertEl = document.createElement("p");
    alertEl.className = "span-alert";
    alertEl.setAttribute("role", "status");
    alertEl.hidden = true;
    var hint = root.querySelector("[data-span-hint]");
    if (hint) hint.after(alertEl);
    state = {
      root: root,
      textEl: textEl,
      model: textModel(data.text),
      byName: byName,
      byKey: byKey,
      sides: sides,
      initial: initial,
      confidence: confidence,
      spans: initial.slice(),
      focused: -1,
      history: [],
      listEl: root.querySelector("[data-span-list]"),
      stateEl: root.querySelector("[data-span-state]"),
      valueInput: root.querySelector("[data-span-value]"),
      submit: root.querySelector("[data-span-submit]"),
      alertEl: alertEl,
    };
    textEl.classList.add("span-text");
    render();
    // The two blind answers, read-only, each marking what the other lacks.
    if (sides) {
      card.querySelectorAll("[data-span-view]").forEach(function (el) {
        var index = Number(el.dataset.spanView);
        var mine = sides[index], other = sides[1 - index];
        if (!mine) return;
        var theirs = {};
        ((other && other.spans) || []).forEach(function (s) { theirs[key(s)] = true; });
        var only = {};
        mine.spans.forEach(function (s) { if (!theirs[key(s)]) only[key(s)] = true; });
        drawMarks(el, textModel(data.text), normalise(mine.spans), { only: only });
      });
    }
  }

  document.addEventListener("keydown", onKey, true);  // before review.js, which runs on bubbling
  document.addEventListener("click", onClick);
  document.addEventListener("DOMContentLoaded", init);
  document.addEventListener("htmx:afterSettle", init);
  if (document.readyState !== "loading") init();

  // For tests and the curious: the same snapping the server expects.
  window.distillSpans = { snapToWords: function (text, s, e) { return snapToWords(textModel(text), s, e); } };
})();
