// The axis viewer of a topic page: one 2-D matrix at a time, rows and columns chosen from the study's axes
// (sampler x steps first), every other axis a selector. Its data is the JSON in #axes-data (site/axes.py), so it
// works from file:// with no request; every control is a <select> and every cell a link, so the keyboard
// reaches all of it (Tab, arrow keys in a select, Enter on a cell).
(function () {
  "use strict";
  var source = document.getElementById("axes-data");
  var root = document.getElementById("axes-viewer");
  if (!source || !root) { return; }
  var data = JSON.parse(source.textContent);
  var base = root.getAttribute("data-root") || "";
  var axes = data.axes;
  var names = axes.map(function (a) { return a.name; });
  var state = { rows: data.rows, columns: data.columns, fixed: {} };
  names.forEach(function (n) { state.fixed[n] = 0; });
  var byPlace = {};
  data.cells.forEach(function (c) { byPlace[c.at.join(",")] = c; });

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function select(id, label, options, value, onChange) {
    var wrap = el("label", { "class": "picker" }, label + " ");
    var box = el("select", { id: id });
    options.forEach(function (o, i) {
      var opt = el("option", { value: String(i) }, o);
      if (i === value) { opt.selected = true; }
      box.appendChild(opt);
    });
    box.addEventListener("change", function () { onChange(parseInt(box.value, 10)); });
    wrap.appendChild(box);
    return wrap;
  }

  function axisIndex(name) { return names.indexOf(name); }

  function draw() {
    root.textContent = "";
    var controls = el("div", { "class": "axes-controls", role: "group", "aria-label": "Matrix axes" });
    var labels = axes.map(function (a) { return a.label; });
    controls.appendChild(select("axes-rows", "Rows", labels, axisIndex(state.rows), function (i) {
      if (names[i] === state.columns) { state.columns = state.rows; }
      state.rows = names[i]; draw(); focus("axes-rows");
    }));
    controls.appendChild(select("axes-columns", "Columns", labels, axisIndex(state.columns), function (i) {
      if (names[i] === state.rows) { state.rows = state.columns; }
      state.columns = names[i]; draw(); focus("axes-columns");
    }));
    axes.forEach(function (a) {
      if (a.name === state.rows || a.name === state.columns) { return; }
      var id = "axes-fix-" + a.name;
      controls.appendChild(select(id, a.label, a.values, state.fixed[a.name], function (i) {
        state.fixed[a.name] = i; draw(); focus(id);
      }));
    });
    root.appendChild(controls);

    var rows = axes[axisIndex(state.rows)], cols = axes[axisIndex(state.columns)];
    var wrap = el("div", { "class": "table-wrap" });
    var table = el("table", { "class": "matrix axes-matrix" });
    var head = el("tr");
    head.appendChild(el("th", { scope: "col", "class": "corner" }, rows.label + " \u2193 / " + cols.label + " \u2192"));
    cols.values.forEach(function (v) { head.appendChild(el("th", { scope: "col" }, v)); });
    var thead = el("thead"); thead.appendChild(head); table.appendChild(thead);
    var body = el("tbody");
    rows.values.forEach(function (rv, ri) {
      var tr = el("tr");
      tr.appendChild(el("th", { scope: "row" }, rv));
      cols.values.forEach(function (cv, ci) {
        var at = names.map(function (n) {
          return n === state.rows ? ri : n === state.columns ? ci : state.fixed[n];
        });
        var cell = byPlace[at.join(",")];
        var td = el("td");
        if (cell && cell.stored) {
          // the site's full view (site.js) opens it, and its arrows move along this matrix
          var link = el("a", { "class": "cell", href: base + cell.full, title: cell.caption, "data-grid": "axes",
                               "data-row": ri, "data-col": ci, "data-caption": cell.caption,
                               "data-command": cell.command, "data-reproduce": cell.reproduce,
                               "data-distances": cell.distances });
          link.appendChild(el("img", { src: base + cell.thumb, width: cell.w, height: cell.h, loading: "lazy",
                                        alt: cell.caption }));
          td.appendChild(link);
        } else {
          td.appendChild(el("span", { "class": "cell missing", title: cell ? cell.caption : "" },
                            cell ? "not rendered" : "not in the study"));
        }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    table.appendChild(body);
    wrap.appendChild(table);
    root.appendChild(wrap);
  }

  function focus(id) { var node = document.getElementById(id); if (node) { node.focus(); } }

  // Arrow keys move between the matrix's cells, as in the full view: left/right along a row, up/down a column.
  root.addEventListener("keydown", function (event) {
    var moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
    var move = moves[event.key];
    var td = event.target.closest && event.target.closest(".axes-matrix td");
    if (!move || !td) { return; }
    var tr = td.parentElement;
    var rows = Array.prototype.slice.call(tr.parentElement.children);
    var r = rows.indexOf(tr) + move[0], c = Array.prototype.indexOf.call(tr.children, td) + move[1];
    if (r < 0 || r >= rows.length || c < 1 || c >= tr.children.length) { return; }
    var target = rows[r].children[c].querySelector("a, span");
    if (target) {
      if (!target.hasAttribute("href")) { target.setAttribute("tabindex", "-1"); }
      target.focus();
      event.preventDefault();
    }
  });

  draw();
})();
