// The per-visit table of bgdask's report sorts on a click on its header
// (bgdask.report.page inlines this script; it loads nothing).
(function () {
  function value(cell) {
    var v = cell.getAttribute("data-value");
    if (v === null) { v = cell.textContent; }
    var x = parseFloat(v);
    return isNaN(x) ? v.toLowerCase() : x;
  }
  function sortBy(table, col, th) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var descending = th.getAttribute("aria-sort") === "ascending";
    rows.sort(function (a, b) {
      var x = value(a.cells[col]), y = value(b.cells[col]);
      if (x === "" || y === "") { return (x === "") - (y === ""); }   // empty cells last, either way
      var nx = typeof x === "number", ny = typeof y === "number";
      var c = (nx && ny) ? x - y : (nx ? -1 : (ny ? 1 : (x < y ? -1 : (x > y ? 1 : 0))));
      return descending ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  document.addEventListener("DOMContentLoaded", function () {
    var table = document.getElementById("visit-table");
    if (!table) { return; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.addEventListener("click", function () { sortBy(table, col, th); });
    });
  });
})();
