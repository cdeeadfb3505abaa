/* reportgen site: the full view with keyboard navigation, and the compare tool. Plain JavaScript, no network. */
(function () {
  "use strict";

  // ---- Full view: a cell's full image; arrows move to the neighbouring cell of the same grid. ----
  // Cells are looked up when needed, not once: the axis viewer (axes.js) draws its matrix's cells later.
  function cellAt(grid, row, col) {
    return document.querySelector('a.cell[data-grid="' + grid + '"][data-row="' + row + '"][data-col="' + col + '"]');
  }
  var viewer = null;
  var current = null;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text) node.textContent = text;
    return node;
  }

  function button(label, title, onClick) {
    var b = el("button", "viewer-button", label);
    b.type = "button";
    b.title = title;
    b.setAttribute("aria-label", title);
    b.addEventListener("click", onClick);
    return b;
  }

  function buildViewer() {
    viewer = el("div", "viewer");
    viewer.setAttribute("role", "dialog");
    viewer.setAttribute("aria-modal", "true");
    viewer.setAttribute("aria-label", "Full view");
    viewer.hidden = true;
    var bar = el("div", "viewer-bar");
    viewer.caption = el("span", "viewer-caption");
    bar.appendChild(viewer.caption);
    bar.appendChild(button("×", "Close (Esc)", close));
    var body = el("div", "viewer-body");
    watchSwipes(body);
    body.appendChild(button("‹", "Fewer steps (←)", function () { move(0, -1); }));
    var frame = el("div", "viewer-frame");
    viewer.image = el("img", "viewer-image");
    viewer.image.alt = "";
    // Small images (the tests' tiny model) are enlarged: keep their pixels sharp rather than blurred.
    viewer.image.addEventListener("load", function () {
      viewer.image.classList.toggle("pixelated", viewer.image.naturalWidth < 256);
    });
    frame.appendChild(viewer.image);
    body.appendChild(frame);
    body.appendChild(button("›", "More steps (→)", function () { move(0, 1); }));
    var foot = el("div", "viewer-foot");
    viewer.command = el("code", "viewer-command");
    viewer.reproduce = el("code", "viewer-reproduce");
    var actions = el("div", "viewer-actions");
    actions.appendChild(button("↑ sampler", "Previous sampler (↑)", function () { move(-1, 0); }));
    actions.appendChild(button("↓ sampler", "Next sampler (↓)", function () { move(1, 0); }));
    actions.appendChild(button("Compare as A", "Use this cell as A in the compare tool", function () { pick("a"); }));
    actions.appendChild(button("Compare as B", "Use this cell as B in the compare tool", function () { pick("b"); }));
    viewer.distances = el("span", "viewer-distances");
    foot.appendChild(viewer.distances);
    foot.appendChild(viewer.command);
    foot.appendChild(viewer.reproduce);
    foot.appendChild(actions);
    viewer.appendChild(bar);
    viewer.appendChild(body);
    viewer.appendChild(foot);
    viewer.addEventListener("click", function (event) { if (event.target === viewer) close(); });
    document.body.appendChild(viewer);
  }

  function show(a) {
    if (!viewer) buildViewer();
    current = a;
    viewer.image.src = a.href;
    viewer.image.alt = a.dataset.caption;
    viewer.caption.textContent = a.dataset.caption;
    viewer.command.textContent = a.dataset.command;
    viewer.reproduce.textContent = a.dataset.reproduce;
    viewer.distances.textContent = a.dataset.distances || "";
    viewer.distances.hidden = !a.dataset.distances;
    viewer.hidden = false;
    document.body.classList.add("viewing");
  }

  function close() {
    if (!viewer || viewer.hidden) return;
    viewer.hidden = true;
    document.body.classList.remove("viewing");
    if (current) current.focus();
  }

  // Step over cells that are not rendered, so the arrows always reach the next image in that direction.
  function move(dRow, dCol) {
    if (!current) return;
    var row = Number(current.dataset.row), col = Number(current.dataset.col);
    for (var i = 0; i < 1000; i++) {
      row += dRow;
      col += dCol;
      if (row < 0 || col < 0) return;
      var next = cellAt(current.dataset.grid, row, col);
      if (next) { show(next); return; }
      var rowExists = document.querySelector('a.cell[data-grid="' + current.dataset.grid + '"][data-row="' + row + '"]');
      var colExists = document.querySelector('a.cell[data-grid="' + current.dataset.grid + '"][data-col="' + col + '"]');
      if (!rowExists && !colExists) return;
    }
  }

  document.addEventListener("click", function (event) {
    var a = event.target.closest && event.target.closest("a.cell[data-grid]");
    if (!a || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    show(a);
  });

  document.addEventListener("keydown", function (event) {
    if (!viewer || viewer.hidden) return;
    var moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
    if (event.key === "Escape") { close(); event.preventDefault(); }
    else if (moves[event.key]) { move(moves[event.key][0], moves[event.key][1]); event.preventDefault(); }
  });

  // "Compare as A/B" hands the cell to the compare tool (assets/compare.js) by an event, then closes the view.
  function pick(which) {
    if (!current) return;
    document.dispatchEvent(new CustomEvent("reportgen:compare", { detail: { which: which, href: current.getAttribute("href") } }));
    close();
  }

  // Swipes on the full view (touch, pen or mouse drag): left/right change the steps, up/down the sampler.
  var swipeStart = null;
  function onSwipeStart(x, y) { swipeStart = { x: x, y: y }; }
  function onSwipeEnd(x, y) {
    if (!swipeStart) return;
    var dx = x - swipeStart.x, dy = y - swipeStart.y;
    swipeStart = null;
    if (Math.max(Math.abs(dx), Math.abs(dy)) < 40) return;  // a tap, not a swipe
    if (Math.abs(dx) > Math.abs(dy)) move(0, dx < 0 ? 1 : -1);  // swipe left: the next (more) steps
    else move(dy < 0 ? 1 : -1, 0);  // swipe up: the next sampler
  }
  function watchSwipes(node) {
    if (window.PointerEvent) {
      node.addEventListener("pointerdown", function (e) { if (e.isPrimary) onSwipeStart(e.clientX, e.clientY); });
      node.addEventListener("pointerup", function (e) { if (e.isPrimary) onSwipeEnd(e.clientX, e.clientY); });
      node.addEventListener("pointercancel", function () { swipeStart = null; });
    } else {
      node.addEventListener("touchstart", function (e) { onSwipeStart(e.touches[0].clientX, e.touches[0].clientY); }, { passive: true });
      node.addEventListener("touchend", function (e) { onSwipeEnd(e.changedTouches[0].clientX, e.changedTouches[0].clientY); });
    }
    node.addEventListener("dragstart", function (e) { e.preventDefault(); });  // a mouse drag swipes, never drags the image
  }
})();
