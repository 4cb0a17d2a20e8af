// Live progress: every bar of an unfinished job is refreshed from /console/progress.json
// (same origin, the session cookie) once a second until its job ends. A job page reloads
// once its job has ended, to show the final counts and results.
(function () {
  "use strict";
  var POLL_MS = 1000;
  var signedOut = false;

  function unfinished() {
    return Array.prototype.slice.call(
      document.querySelectorAll('.progress[data-job][data-finished="no"]'));
  }

  function show(bar, p) {
    bar.querySelector("progress").value = p.percent;
    bar.querySelector('[data-field="percent"]').textContent = p.percent + " %";
    bar.querySelector('[data-field="counts"]').textContent = p.processed + " / " + p.total + " rows";
    bar.querySelector('[data-field="pace"]').textContent = p.pace;
    bar.setAttribute("data-shown-at", String(Date.now()));  // when this pace was read
    document.querySelectorAll('[data-job-status="' + p.job_id + '"]').forEach(function (el) {
      el.textContent = p.status;
    });
    if (p.finished) {
      bar.setAttribute("data-finished", "yes");
      if (document.body.querySelector("h1 code")) { window.location.reload(); }
    }
  }

  function poll() {
    var bars = unfinished();
    if (!bars.length) { return; }
    var ids = bars.map(function (b) { return "ids=" + encodeURIComponent(b.getAttribute("data-job")); });
    fetch("/console/progress.json?" + ids.join("&"), { credentials: "same-origin" })
      .then(function (r) {
        if (r.status === 401) { signedOut = true; }  // the session ended: stop asking
        return r.ok ? r.json() : { jobs: {} };
      })
      .then(function (body) {
        bars.forEach(function (bar) {
          var p = body.jobs[bar.getAttribute("data-job")];
          if (p) { show(bar, p); }
        });
      })
      .catch(function () { /* the next poll tries again */ })
      .then(function () { if (!signedOut) { window.setTimeout(poll, POLL_MS); } });
  }

  document.addEventListener("DOMContentLoaded", function () { window.setTimeout(poll, POLL_MS); });
})();
