// What the stylesheet cannot do alone on a narrow screen: the project tabs scroll sideways
// (app.css shades the edge that hides more), so start them at the current tab, not at the first.
(function () {
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".tabs").forEach(function (tabs) {
      var current = tabs.querySelector("[aria-current=page]");
      if (!current || tabs.scrollWidth <= tabs.clientWidth) return;
      var left = current.getBoundingClientRect().left - tabs.getBoundingClientRect().left + tabs.scrollLeft;
      tabs.scrollLeft = left - (tabs.clientWidth - current.offsetWidth) / 2;
    });
  });
})();
