// The new-project form: a task type's own settings (fields marked data-task-type) show only
// while that type is chosen, and the labels box hides for a type that has none.
(function () {
  "use strict";
  function sync() {
    var select = document.querySelector('select[name="task_type"]');
    if (!select) return;
    document.querySelectorAll("[data-task-type]").forEach(function (input) {
      var field = input.closest(".field");
      if (field) field.hidden = input.getAttribute("data-task-type") !== select.value;
    });
    var labels = document.querySelector('textarea[name="labels"]');
    var noLabels = (select.getAttribute("data-no-labels") || "").split(" ");
    if (labels && labels.closest(".field")) labels.closest(".field").hidden = noLabels.indexOf(select.value) >= 0;
  }
  document.addEventListener("change", function (event) { if (event.target.name === "task_type") sync(); });
  document.addEventListener("DOMContentLoaded", sync);
})();
