// The tablet app's only script: sync with a progress bar (polling /api/status), no double submits,
// new-record forms that Back refills with their id, and "back" links. Every page works without it; forms
// post as usual.
(function () {
  "use strict";
  var csrf = (document.querySelector("meta[name=csrf-token]") || {}).content || "";

  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (form.dataset.sent) { e.preventDefault(); return; }
    form.dataset.sent = "1";
    // a disabled button is not sent: the one pressed (标记已完成 of a task) goes as a hidden field instead
    var by = e.submitter;
    if (by && by.name) {
      var field = document.createElement("input");
      field.type = "hidden";
      field.name = by.name;
      field.value = by.value;
      form.appendChild(field);
    }
    form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
  });
  // A new-record form's id (rid, a text input kept out of sight): Chromium refills on Back only the inputs whose
  // value differs from their value attribute, so the id is made to differ; Back then 保存 sends the id the
  // record was saved under again, and the app makes no second record.
  document.querySelectorAll("input[name=rid]").forEach(function (rid) {
    var id = rid.value;
    rid.defaultValue = "";
    rid.value = id;
  });
  document.querySelectorAll("[data-back]").forEach(function (a) {
    a.addEventListener("click", function (e) {
      if (history.length > 1) { e.preventDefault(); history.back(); }
    });
  });

  var box = document.getElementById("syncbox");
  if (!box) return;
  var form = document.getElementById("sync-form");
  var button = document.getElementById("sync-now");
  var bar = document.getElementById("sync-progress");
  var text = document.getElementById("sync-progress-text");
  var progress = document.getElementById("progress-box");

  function show(st) {
    var job = st.job || {};
    document.getElementById("pending").textContent = st.pending;
    var nav = document.getElementById("nav-pending");
    if (nav) nav.textContent = st.pending;
    if (job.total > 0) {
      bar.max = job.total;
      bar.value = Math.min(job.sent, job.total);
    } else {
      bar.removeAttribute("value");  // indeterminate: only receiving
    }
    text.textContent = "正在同步… 已发出 " + job.sent + (job.total ? " / " + job.total : "") +
      " 条，已收到 " + job.received + " 条";
  }

  function poll() {
    fetch("/api/status", {headers: {"accept": "application/json"}, cache: "no-store"})
      .then(function (r) { return r.json(); })
      .then(function (st) {
        if (!st.job) { location.reload(); return; }
        show(st);
        if (st.job.state === "running") setTimeout(poll, 400);
        else location.reload();  // the page shows the result and the conflicts now open
      })
      .catch(function () { setTimeout(poll, 1000); });
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    button.disabled = true;
    progress.classList.remove("hidden");
    var old = document.getElementById("sync-result");
    if (old) old.remove();
    fetch("/api/sync", {method: "POST", headers: {"x-csrf-token": csrf, "accept": "application/json"}})
      .then(function () { poll(); })
      .catch(function () { location.reload(); });
  }, true);

  if (box.dataset.state === "running") poll();
})();
