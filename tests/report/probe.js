/* Drives the report for tests/report/test_html_browser.py; what it saw goes into a pre element (id probe). */
(function () {
  var out = {};
  function done() { var p = document.createElement("pre"); p.id = "probe"; p.textContent = JSON.stringify(out);
    document.body.appendChild(p); }
  function later(f) { setTimeout(f, 400); }
  function passes() { return Number(document.body.dataset.passes || 0); }
  function afterPass(n, f) { (function poll() { if (passes() > n) f(); else setTimeout(poll, 50); })(); }
  function plots() { return Array.prototype.slice.call(document.querySelectorAll(".plot")); }
  function ready() {
    if (!document.body.dataset.charts) return later(ready);
    out.frames = plots().length;
    out.drawn = plots().filter(function (p) { return p.querySelector(".main-svg") && p.data.length; }).length;
    out.ticks = plots()[0].querySelectorAll(".xtick text").length ?
      Array.prototype.map.call(plots()[0].querySelectorAll(".xtick text"), function (t) { return t.textContent; }) : [];
    var n = passes();
    Plotly.relayout(plots()[0], {"xaxis.range[0]": 1.2, "xaxis.range[1]": 3.7});
    afterPass(n, zoomed);
  }
  function zoomed() {
    var kinds = JSON.parse(document.getElementById("gs-data").textContent).charts.map(function (c) { return c.kind; });
    function kindOf(p) { return kinds[Number(p.closest("figure").dataset.index)]; }
    out.ranges = plots().filter(function (p) { return kindOf(p) === "line" || kindOf(p) === "heatmap"; })
      .map(function (p) { return p._fullLayout.xaxis.range; });
    out.kinds = kinds;
    out.from = document.getElementById("gs-from").value; out.to = document.getElementById("gs-to").value;
    var el = plots()[0];
    Plotly.Fx.hover(el, {xval: 2});
    out.hover = el.querySelector(".hoverlayer").textContent;
    var fig = document.querySelector("figure.chart button.log:not([disabled])").closest("figure");
    out.scale = [fig.querySelector(".plot")._fullLayout.yaxis.type];
    fig.querySelector("button.log").click();
    later(function () {
      out.scale.push(fig.querySelector(".plot")._fullLayout.yaxis.type);
      var layered = plots().find(function (p) { return p.data.some(function (t) { return t.name === "fc2"; }); });
      out.traces = [layered.data.length];
      var box = document.querySelector("#gs-layers input[value=fc2]"), n = passes();
      box.checked = false; box.dispatchEvent(new Event("change"));
      afterPass(n, function () {
        out.traces.push(layered.data.length);
        out.pwned = Boolean(window.__pwned) || document.querySelectorAll("img").length > 0;
        out.layerLabels = Array.prototype.map.call(document.querySelectorAll("#gs-layers label"),
          function (l) { return l.textContent; });
        out.legend = Array.prototype.map.call(document.querySelectorAll(".legendtext"),
          function (t) { return t.textContent; });
        done();
      });
    });
  }
  window.addEventListener("load", ready);
})();
