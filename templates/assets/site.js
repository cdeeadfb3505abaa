/* reportgen site: the full view with keyboard navigation, and the compare tool. Plain JavaScript, no network. */
(function () {
  "use strict";

  // ---- Full view: a cell's full image; arrows move to the neighbouring cell of the same grid. ----
  var cells = Array.prototype.slice.call(document.querySelectorAll("a.cell[data-grid]"));
  var byPosition = {};
  cells.forEach(function (a) {
    byPosition[a.dataset.grid + ":" + a.dataset.row + ":" + a.dataset.col] = a;
  });
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
      var next = byPosition[current.dataset.grid + ":" + row + ":" + col];
      if (next) { show(next); return; }
      var rowExists = document.querySelector('a.cell[data-grid="' + current.dataset.grid + '"][data-row="' + row + '"]');
      var colExists = document.querySelector('a.cell[data-grid="' + current.dataset.grid + '"][data-col="' + col + '"]');
      if (!rowExists && !colExists) return;
    }
  }

  cells.forEach(function (a) {
    a.addEventListener("click", function (event) {
      if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      show(a);
    });
  });

  document.addEventListener("keydown", function (event) {
    if (!viewer || viewer.hidden) return;
    var moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
    if (event.key === "Escape") { close(); event.preventDefault(); }
    else if (moves[event.key]) { move(moves[event.key][0], moves[event.key][1]); event.preventDefault(); }
  });

  // ---- Compare: two cells side by side, under a slider, or flickering. ----
  var stage = document.getElementById("compare-stage");
  var selectA = document.getElementById("compare-a");
  var selectB = document.getElementById("compare-b");
  var flickerTimer = null;
  var flickerShowsA = true;

  function chosen(select) {
    var option = select.options[select.selectedIndex];
    return { src: option.value, caption: option.dataset.caption };
  }

  function setImages(selector, src) {
    Array.prototype.forEach.call(stage.querySelectorAll(selector), function (img) {
      if (img.getAttribute("src") !== src) img.src = src;
    });
  }

  function updateCompare() {
    var a = chosen(selectA), b = chosen(selectB);
    setImages("img.cmp-a", a.src);
    setImages("img.cmp-b", b.src);
    stage.querySelector(".cap-a").textContent = a.caption;
    stage.querySelector(".cap-b").textContent = b.caption;
    renderFlicker();
  }

  function renderFlicker() {
    var which = flickerShowsA ? chosen(selectA) : chosen(selectB);
    var img = stage.querySelector("img.flicker");
    if (img.getAttribute("src") !== which.src) img.src = which.src;
    stage.querySelector(".flicker-which").textContent = flickerShowsA ? "A" : "B";
    stage.querySelector(".flicker-caption").textContent = which.caption;
  }

  function setMode(mode) {
    stage.dataset.mode = mode;
    Array.prototype.forEach.call(document.querySelectorAll(".modes button"), function (b) {
      b.setAttribute("aria-pressed", String(b.dataset.mode === mode));
    });
    if (flickerTimer) { clearInterval(flickerTimer); flickerTimer = null; }
    if (mode === "flicker") {
      flickerTimer = setInterval(function () { flickerShowsA = !flickerShowsA; renderFlicker(); }, 700);
    }
  }

  function pick(which) {
    if (!stage || !current) return;
    var select = which === "a" ? selectA : selectB;
    for (var i = 0; i < select.options.length; i++) {
      if (select.options[i].value === current.getAttribute("href")) select.selectedIndex = i;
    }
    updateCompare();
    close();
    stage.scrollIntoView({ behavior: "smooth", block: "center" });
  }

  if (stage && selectA && selectB) {
    selectA.addEventListener("change", updateCompare);
    selectB.addEventListener("change", updateCompare);
    Array.prototype.forEach.call(document.querySelectorAll(".modes button"), function (b) {
      b.addEventListener("click", function () { setMode(b.dataset.mode); });
    });
    var slider = document.getElementById("compare-slider");
    var over = stage.querySelector(".slider-box img.over");
    var applySlider = function () { over.style.clipPath = "inset(0 " + (100 - Number(slider.value)) + "% 0 0)"; };
    slider.addEventListener("input", applySlider);
    applySlider();
    updateCompare();
  }
})();
