/* The console's small enhancements: the overview updates itself, and destructive forms ask first. */
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });
  var live = document.querySelector("[data-live]");
  if (!live) return;
  function text(node, value) { if (node && node.textContent !== String(value)) node.textContent = value; }
  function row(cells) {
    var tr = document.createElement("tr");
    cells.forEach(function (value) { var td = document.createElement("td"); td.textContent = value; tr.appendChild(td); });
    return tr;
  }
  function render(data) {
    Object.keys(data.images).forEach(function (status) {
      text(document.querySelector('[data-count="' + status + '"]'), data.images[status]);
    });
    var jobs = document.querySelector("[data-jobs]");
    if (jobs) {
      jobs.replaceChildren.apply(jobs, data.jobs.length ? data.jobs.map(function (job) {
        var li = document.createElement("li");
        li.setAttribute("data-job", job.id);
        li.appendChild(document.createTextNode(job.kind + " #" + job.id + " · "));
        var status = document.createElement("span"); status.setAttribute("data-status", ""); status.textContent = job.status;
        var bar = document.createElement("progress"); bar.max = job.total || 0; bar.value = job.done + job.failed;
        var progress = document.createElement("span"); progress.setAttribute("data-progress", "");
        progress.textContent = job.done + " done, " + job.failed + " failed" + (job.total ? " of " + job.total : "");
        [status, document.createTextNode(" "), bar, document.createTextNode(" "), progress].forEach(function (n) { li.appendChild(n); });
        if (job.error) { var e = document.createElement("span"); e.className = "error"; e.textContent = " " + job.error; li.appendChild(e); }
        return li;
      }) : [Object.assign(document.createElement("li"), { className: "empty", textContent: "No syncs or imports yet." })]);
    }
    var body = document.querySelector("[data-connections]");
    if (body && data.connections.length) {
      body.replaceChildren.apply(body, data.connections.map(function (c) {
        return row([c.name, c.connector, c.status, c.last_delivery_at || "never", c.failing_deliveries,
                    (c.last_sync_at || "never") + (c.last_sync_status ? " (" + c.last_sync_status + ")" : "")]);
      }));
    }
  }
  var EVERY = 3000, delay = EVERY, timer = 0;
  function poll() {
    if (document.hidden) return;  /* a tab nobody looks at asks nothing; it catches up when shown */
    fetch(live.getAttribute("data-live"), { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (r.status === 401) { location.href = "/console"; throw new Error("signed out"); } return r.json(); })
      .then(function (data) { render(data); delay = EVERY; })
      .catch(function () { delay = Math.min(delay * 2, 30000); })
      .then(function () { clearTimeout(timer); timer = setTimeout(poll, delay); });
  }
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) { clearTimeout(timer); poll(); }
  });
  timer = setTimeout(poll, delay);
})();
