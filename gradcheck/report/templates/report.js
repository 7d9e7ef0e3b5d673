(function () {
  "use strict";
  function value(cell) {
    var v = cell.getAttribute("data-v");
    return v === null ? cell.textContent.trim() : v;
  }
  function sortBy(th) {
    var table = th.closest("table"), body = table.tBodies[0];
    var i = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.getAttribute("data-dir") !== "asc";
    Array.prototype.forEach.call(th.parentNode.children, function (h) { h.removeAttribute("data-dir"); });
    th.setAttribute("data-dir", asc ? "asc" : "desc");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a.cells[i]), y = value(b.cells[i]), nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  function applyFilters(form) {
    var table = document.getElementById(form.getAttribute("data-table"));
    var selects = form.querySelectorAll("select"), hide = form.querySelector("[data-hide-pass]");
    var shown = 0, rows = table.tBodies[0].rows;
    Array.prototype.forEach.call(rows, function (row) {
      var ok = !(hide && hide.checked && row.getAttribute("data-status") === "pass");
      Array.prototype.forEach.call(selects, function (s) {
        if (s.value && row.getAttribute("data-" + s.getAttribute("data-key")) !== s.value) { ok = false; }
      });
      row.style.display = ok ? "" : "none";
      if (ok) { shown += 1; }
    });
    form.querySelector(".shown").textContent = shown + " of " + rows.length + " rows shown";
  }
  function copy(button) {
    var text = button.getAttribute("data-text");
    function fallback() {
      var area = document.createElement("textarea");
      area.value = text; document.body.appendChild(area); area.select();
      try { document.execCommand("copy"); } catch (e) { /* nothing more to try */ }
      document.body.removeChild(area);
    }
    try {
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).catch(fallback);
      } else { fallback(); }
    } catch (e) { fallback(); }
    button.textContent = "copied";
    setTimeout(function () { button.textContent = "copy"; }, 1500);
  }
  document.querySelectorAll("table.sortable th").forEach(function (th) {
    th.addEventListener("click", function () { sortBy(th); });
  });
  document.querySelectorAll("form.filters").forEach(function (form) {
    form.addEventListener("change", function () { applyFilters(form); });
    form.addEventListener("submit", function (e) { e.preventDefault(); });
    applyFilters(form);
  });
  document.querySelectorAll("button.copy").forEach(function (b) {
    b.addEventListener("click", function () { copy(b); });
  });
}());
