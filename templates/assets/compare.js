/* reportgen site: the compare tool. Two cells (of any topic) side by side, under a slider, flickering, or as their
   amplified difference. Plain JavaScript, no network; the difference is drawn by CSS blending (site.css,
   .diff-box), so it works from file:// where a canvas would be tainted. */
(function () {
  "use strict";

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

  // A cell chosen in the full view ("Compare as A/B", assets/site.js).
  document.addEventListener("reportgen:compare", function (event) {
    if (!stage) return;
    var select = event.detail.which === "a" ? selectA : selectB;
    for (var i = 0; i < select.options.length; i++) {
      if (select.options[i].value === event.detail.href) select.selectedIndex = i;
    }
    updateCompare();
    stage.scrollIntoView({ behavior: "smooth", block: "center" });
  });

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
    var amp = document.getElementById("diff-amp");
    var ampShown = document.getElementById("diff-amp-value");
    var box = document.getElementById("diff-box");
    var applyAmp = function () { box.style.setProperty("--amp", amp.value); ampShown.textContent = amp.value + "×"; };
    amp.addEventListener("input", applyAmp);
    applyAmp();
    updateCompare();
  }
})();
