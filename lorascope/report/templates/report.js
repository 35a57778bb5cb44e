// Sorting and filtering of the modules table. Inline and self-contained: the page loads nothing.
(function () {
  "use strict";
  function sortKey(text) {
    text = text.trim();
    if (text === "") return null;
    var n = Number(text);
    return isNaN(n) ? text.toLowerCase() : n;
  }
  function compare(x, y) {
    if (typeof x !== typeof y) return typeof x === "number" ? -1 : 1;
    return x < y ? -1 : x > y ? 1 : 0;
  }
  function sortTable(table, col, th) {
    var body = table.tBodies[0];
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var keyed = Array.prototype.map.call(body.rows, function (row, i) {
      return { key: sortKey(row.cells[col].textContent), pos: i, row: row };
    });
    keyed.sort(function (a, b) {
      if (a.key === null || b.key === null) {  // empty cells go last in both directions
        return a.key === b.key ? a.pos - b.pos : (a.key === null ? 1 : -1);
      }
      var c = compare(a.key, b.key);
      return (ascending ? c : -c) || a.pos - b.pos;
    });
    var frag = document.createDocumentFragment();
    keyed.forEach(function (k) { frag.appendChild(k.row); });
    body.appendChild(frag);
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.title = "sort by " + th.textContent;
      th.addEventListener("click", function () { sortTable(table, col, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortTable(table, col, th); }
      });
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll("input.filter"), function (input) {
    var table = document.getElementById(input.getAttribute("data-table"));
    var count = document.getElementById(input.getAttribute("data-count"));
    input.addEventListener("input", function () {
      var terms = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      var rows = table.tBodies[0].rows, shown = 0;
      Array.prototype.forEach.call(rows, function (row) {
        var name = row.cells[0].textContent.toLowerCase();
        var keep = terms.every(function (t) { return name.indexOf(t) >= 0; });
        row.hidden = !keep;
        if (keep) shown++;
      });
      count.textContent = shown + " of " + rows.length;
    });
  });
})();
