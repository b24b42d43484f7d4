/* gradscope HTML report: draws the charts described in #gs-data with Plotly (inlined in
   the page) and wires the controls: shared step range, per-chart log / linear, layer
   selection, smoothing, sortable tables. Names from the run reach the page only through
   textContent or, for Plotly (which reads a few HTML tags in its text), escaped. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("gs-data").textContent);
  var charts = data.charts;
  var state = { range: null, selected: new Set(data.defaultLayers), smooth: 0, logs: {} };
  var PALETTE = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#0ea5e9", "#ec4899",
    "#64748b", "#84cc16", "#14b8a6", "#a855f7", "#f97316"];
  var layerIndex = {};
  data.layers.forEach(function (name, i) { layerIndex[name] = i; });
  var syncing = false;

  function esc(s) {
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  }
  function colour(t, i) {
    if (t.scope === "model") return "#0f172a";
    var n = t.layer !== undefined && t.layer in layerIndex ? layerIndex[t.layer] : i;
    return PALETTE[n % PALETTE.length];
  }
  function fade(hex, a) {
    var v = parseInt(hex.slice(1), 16);
    return "rgba(" + (v >> 16) + "," + ((v >> 8) & 255) + "," + (v & 255) + "," + a + ")";
  }
  /* TensorBoard's smoothing: an exponential moving average, debiased at the start. */
  function smooth(y, w) {
    if (!w) return y;
    var last = 0, n = 0;
    return y.map(function (v) {
      if (v === null) return null;
      last = last * w + (1 - w) * v; n += 1;
      return last / (1 - Math.pow(w, n));
    });
  }
  function shown(t) { return t.layer === undefined || state.selected.has(t.layer); }

  function lineTraces(t, i) {
    var col = colour(t, i), name = esc(t.name), out = [];
    if (t.lo) {
      out.push({ x: t.x, y: t.lo, mode: "lines", line: { width: 0, color: col }, hoverinfo: "skip",
        showlegend: false, legendgroup: name });
      out.push({ x: t.x, y: t.hi, mode: "lines", line: { width: 0, color: col }, fill: "tonexty",
        fillcolor: fade(col, 0.22), hoverinfo: "skip", showlegend: false, legendgroup: name });
      out.push({ x: t.x, y: smooth(t.y, state.smooth), mode: "lines", name: name, legendgroup: name,
        line: { width: 1.4, color: col },
        customdata: t.x.map(function (x, j) { return [t.x1[j], t.lo[j], t.hi[j]]; }),
        hovertemplate: name + ": mean %{y:.4g}, min %{customdata[1]:.4g}, max %{customdata[2]:.4g}" +
          " (steps %{x}-%{customdata[0]})<extra></extra>" });
      return out;
    }
    if (state.smooth) {
      out.push({ x: t.x, y: t.y, mode: "lines", line: { width: 1, color: fade(col, 0.25) },
        hoverinfo: "skip", showlegend: false, legendgroup: name });
    }
    out.push({ x: t.x, y: smooth(t.y, state.smooth), mode: t.x.length < 40 ? "lines+markers" : "lines",
      name: name, legendgroup: name, line: { width: 1.5, color: col }, marker: { size: 4 },
      hovertemplate: name + ": %{y:.4g}<extra></extra>" });
    return out;
  }

  function plotTraces(c) {
    var out = [];
    c.traces.forEach(function (t, i) { if (shown(t)) out = out.concat(lineTraces(t, i)); });
    c.marks.forEach(function (m) {
      out.push({ x: m.x, y: m.y, mode: "markers", name: esc(m.label), marker: { color: m.color, size: 8,
        symbol: "circle-open", line: { width: 2 } }, hovertemplate: esc(m.label) + "<extra></extra>" });
    });
    return out;
  }

  /* Ticks on whole steps only: 1, 2, 5 x 10^k, never below 1. */
  function stepTicks(lo, hi) {
    var raw = Math.max((hi - lo) / 6, 1e-9), p = Math.pow(10, Math.floor(Math.log10(raw)));
    var nice = [1, 2, 5, 10].map(function (m) { return m * p; }).find(function (v) { return v >= raw; });
    return { tickmode: "linear", tick0: 0, dtick: Math.max(1, Math.round(nice)), tickformat: "d" };
  }

  /* The y range of what is visible in the step range (Plotly's autorange spans all steps). */
  function yRange(c, log) {
    var r = kind(c) === "line" ? state.range || data.steps : [-Infinity, Infinity], lo = Infinity, hi = -Infinity;
    c.traces.forEach(function (t) {
      if (!shown(t)) return;
      t.x.forEach(function (x, j) {
        var end = t.x1 ? t.x1[j] : x;
        if (end < r[0] || x > r[1]) return;
        [t.y[j], t.lo ? t.lo[j] : null, t.hi ? t.hi[j] : null].forEach(function (v) {
          if (v === null || (log && v <= 0)) return;
          lo = Math.min(lo, v); hi = Math.max(hi, v);
        });
      });
    });
    if (!isFinite(lo)) return null;
    if (log) { lo = Math.log10(lo); hi = Math.log10(hi); }
    var pad = (hi - lo) * 0.06 || Math.abs(hi) * 0.06 || 1;
    return [lo - pad, hi + pad];
  }

  function layout(c) {
    var log = c.id in state.logs ? state.logs[c.id] : c.log;
    var r = state.range || data.steps;
    var x = Object.assign({ title: { text: "step", standoff: 4 }, range: [r[0] - 0.5, r[1] + 0.5],
      zeroline: false }, stepTicks(r[0], r[1]));
    var y = { type: log ? "log" : "linear", exponentformat: "e", zeroline: false };
    var yr = yRange(c, log);
    if (yr) y.range = yr; else y.autorange = true;
    if (log && yr && yr[1] - yr[0] > 1.5) { y.dtick = Math.max(1, Math.ceil((yr[1] - yr[0]) / 6)); y.tick0 = 0; }
    var shapes = c.bands.map(function (b) {
      return { type: "rect", xref: "paper", x0: 0, x1: 1, y0: b.y0, y1: b.y1, fillcolor: fade(b.color, 0.09),
        line: { width: 0 }, layer: "below" };
    });
    var notes = [];
    c.guides.forEach(function (g) {
      if (log && g.y <= 0) return;
      shapes.push({ type: "line", xref: "paper", x0: 0, x1: 1, y0: g.y, y1: g.y,
        line: { color: g.color, width: 1, dash: "dash" } });
      if (g.label) notes.push({ xref: "paper", x: 1, xanchor: "right", y: log ? Math.log10(g.y) : g.y,
        yanchor: "bottom", text: esc(g.label), showarrow: false, font: { size: 10, color: g.color } });
    });
    return { height: 270, margin: { l: 58, r: 12, t: 8, b: 40 }, xaxis: x, yaxis: y, shapes: shapes,
      annotations: notes, hovermode: "x unified", showlegend: true,
      legend: { orientation: "h", y: -0.3, font: { size: 10 } }, font: { size: 11 },
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "#fff", uirevision: c.id };
  }

  function kind(c) { return c.kind || "line"; }
  function stepped(c) { return kind(c) === "line" || kind(c) === "heatmap"; }

  /* Layers x steps, colour on log10 (Python sent z = log10 value, raw = the value). */
  function heatmapFigure(c) {
    var r = state.range || data.steps;
    var custom = c.raw.map(function (row) { return row.map(function (v, j) { return [v, c.x1[j]]; }); });
    var trace = { type: "heatmap", x: c.x, y: c.y.map(function (n) { return esc(n || "(root)"); }), z: c.z,
      customdata: custom, colorscale: "Viridis", colorbar: { title: { text: "log10" }, thickness: 12 },
      hovertemplate: "%{y}<br>steps %{x}-%{customdata[1]}: %{customdata[0]:.4g}<extra></extra>", xgap: 0 };
    var x = Object.assign({ title: { text: "step", standoff: 4 }, range: [r[0] - 0.5, r[1] + 0.5] },
      stepTicks(r[0], r[1]));
    return { data: [trace], layout: { height: Math.max(270, 80 + 18 * c.y.length), margin: { l: 120, r: 12, t: 8, b: 40 },
      xaxis: x, yaxis: { autorange: "reversed", automargin: true }, font: { size: 11 },
      paper_bgcolor: "rgba(0,0,0,0)" } };
  }
  function matrixFigure(c) {
    var names = c.y.map(function (n) { return esc(n); });
    return { data: [{ type: "heatmap", x: names, y: names, z: c.z, zmin: -1, zmax: 1, zmid: 0, colorscale: "RdBu",
      texttemplate: "%{z:.2f}", hovertemplate: "%{y} / %{x}: %{z:.3f}<extra></extra>" }],
      layout: { height: 300, margin: { l: 90, r: 12, t: 8, b: 70 }, font: { size: 11 },
        yaxis: { autorange: "reversed" }, paper_bgcolor: "rgba(0,0,0,0)" } };
  }
  function violinFigure(c) {
    var traces = c.groups.map(function (g) {
      return { type: "violin", y: g.y, name: "epoch " + g.epoch, box: { visible: true }, meanline: { visible: true },
        points: false, line: { color: "#2563eb" }, showlegend: false, hoveron: "violins" };
    });
    return { data: traces, layout: { height: 270, margin: { l: 58, r: 12, t: 8, b: 40 }, font: { size: 11 },
      yaxis: { title: { text: "cos(-g_i, W)" }, zeroline: true }, paper_bgcolor: "rgba(0,0,0,0)" } };
  }
  function figureOf(c) {
    if (kind(c) === "heatmap") return heatmapFigure(c);
    if (kind(c) === "matrix") return matrixFigure(c);
    if (kind(c) === "violin") return violinFigure(c);
    var l = layout(c);
    if (kind(c) === "epoch") {
      var e = c.traces[0].x;
      l.xaxis = Object.assign({ title: { text: "epoch", standoff: 4 }, zeroline: false,
        range: [e[0] - 0.3, e[e.length - 1] + 0.3] }, stepTicks(e[0], e[e.length - 1]));
    }
    return { data: plotTraces(c), layout: l };
  }

  var CONFIG = { displaylogo: false, responsive: true, displayModeBar: "hover", modeBarButtonsToRemove: ["select2d", "lasso2d"] };

  function draw(c) {
    var el = document.querySelector("#" + c.id + " .plot");
    if (!el) return Promise.resolve();
    var fig = figureOf(c);
    syncing = true;  /* a redraw is not the reader zooming */
    return Plotly.react(el, fig.data, fig.layout, CONFIG).then(function () {
      syncing = false;
      if (!el.dataset.wired && stepped(c)) { el.dataset.wired = "1"; el.on("plotly_relayout", onZoom); }
    }, function () { syncing = false; });
  }
  /* How far a chart is from the window: the visible ones are drawn first. */
  function distance(c) {
    var el = document.getElementById(c.id);
    if (!el) return Infinity;
    var r = el.getBoundingClientRect();
    return r.bottom < 0 ? -r.bottom : Math.max(0, r.top - window.innerHeight);
  }
  /* Every chart, one at a time, letting the browser paint in between (the first charts show
     at once on a big page); a newer pass (another zoom) stops an older one. When a pass is
     complete, body[data-charts] holds the number of drawn charts and data-passes counts. */
  var generation = 0, channel = new MessageChannel(), queue = [];
  channel.port1.onmessage = function () { var f = queue.shift(); if (f) f(); };
  /* The next task, unthrottled (a timer is clamped and slowed where the page is not in front). */
  function soon(f) { queue.push(f); channel.port2.postMessage(0); }
  function drawAll() {
    var mine = ++generation;
    var order = charts.slice().sort(function (a, b) { return distance(a) - distance(b); });
    return new Promise(function (resolve) {
      function next(i) {
        if (mine !== generation) return resolve();
        if (i >= order.length) {
          document.body.dataset.charts = String(document.querySelectorAll(".plot .main-svg").length);
          document.body.dataset.passes = String(Number(document.body.dataset.passes || 0) + 1);
          return resolve();
        }
        draw(order[i]).then(function () { soon(function () { next(i + 1); }); });
      }
      next(0);
    });
  }

  function onZoom(ev) {
    if (syncing) return;
    if (ev["xaxis.autorange"]) setRange(null);
    else if ("xaxis.range[0]" in ev) setRange([ev["xaxis.range[0]"], ev["xaxis.range[1]"]]);
    else if (ev["xaxis.range"]) setRange(ev["xaxis.range"]);
  }
  function setRange(r) {
    if (r) {
      var lo = Math.max(data.steps[0], Math.ceil(r[0])), hi = Math.min(data.steps[1], Math.floor(r[1]));
      r = hi > lo ? [lo, hi] : null;
    }
    state.range = r;
    document.getElementById("gs-from").value = r ? r[0] : data.steps[0];
    document.getElementById("gs-to").value = r ? r[1] : data.steps[1];
    return drawAll();
  }

  function controls() {
    var from = document.getElementById("gs-from"), to = document.getElementById("gs-to");
    from.value = data.steps[0]; to.value = data.steps[1];
    function typed() { setRange([Number(from.value), Number(to.value)]); }
    from.addEventListener("change", typed); to.addEventListener("change", typed);
    document.getElementById("gs-reset").addEventListener("click", function () { setRange(null); });
    var slider = document.getElementById("gs-smooth"), shownValue = document.getElementById("gs-smooth-v");
    slider.addEventListener("input", function () {
      state.smooth = Number(slider.value); shownValue.textContent = slider.value; drawAll();
    });
    layerPicker();
    document.querySelectorAll("figure.chart").forEach(function (fig) {
      var btn = fig.querySelector("button.log"), c = charts[Number(fig.dataset.index)];
      if (!btn || !c) return;
      btn.disabled = !c.canLog;
      btn.title = c.canLog ? "switch the y axis between log and linear (a log axis leaves out values <= 0)"
        : "no value > 0: no log scale";
      function label() { btn.textContent = (c.id in state.logs ? state.logs[c.id] : c.log) ? "y: log" : "y: linear"; }
      label();
      btn.addEventListener("click", function () {
        state.logs[c.id] = !(c.id in state.logs ? state.logs[c.id] : c.log); label(); draw(c);
      });
    });
  }

  function layerPicker() {
    var box = document.getElementById("gs-layers");
    if (!data.layers.length) { box.closest(".layerpick").hidden = true; return; }
    data.layers.forEach(function (name, i) {
      var label = document.createElement("label"), input = document.createElement("input");
      input.type = "checkbox"; input.value = name; input.checked = state.selected.has(name);
      var swatch = document.createElement("span");
      swatch.className = "sw"; swatch.style.background = PALETTE[i % PALETTE.length];
      label.appendChild(input); label.appendChild(swatch);
      label.appendChild(document.createTextNode(name || "(root)"));
      input.addEventListener("change", function () {
        if (input.checked) state.selected.add(name); else state.selected.delete(name);
        drawAll();
      });
      box.appendChild(label);
    });
    function all(on) {
      box.querySelectorAll("input").forEach(function (i) { i.checked = on; if (on) state.selected.add(i.value); });
      if (!on) state.selected.clear();
      drawAll();
    }
    document.getElementById("gs-all").addEventListener("click", function () { all(true); });
    document.getElementById("gs-none").addEventListener("click", function () { all(false); });
  }

  function sortable() {
    document.querySelectorAll("table.sortable").forEach(function (table) {
      table.querySelectorAll("th").forEach(function (th, col) {
        th.addEventListener("click", function () {
          var up = th.dataset.dir !== "up", body = table.tBodies[0];
          table.querySelectorAll("th").forEach(function (h) { delete h.dataset.dir; });
          th.dataset.dir = up ? "up" : "down";
          var rows = Array.prototype.slice.call(body.rows);
          rows.sort(function (a, b) {
            var x = a.cells[col], y = b.cells[col];
            var u = x.dataset.v !== undefined ? (x.dataset.v === "" ? NaN : Number(x.dataset.v)) : x.textContent;
            var v = y.dataset.v !== undefined ? (y.dataset.v === "" ? NaN : Number(y.dataset.v)) : y.textContent;
            if (typeof u === "number") {
              if (isNaN(u)) return 1; if (isNaN(v)) return -1;
              return up ? u - v : v - u;
            }
            return up ? u.localeCompare(v) : v.localeCompare(u);
          });
          rows.forEach(function (r) { body.appendChild(r); });
        });
      });
    });
  }

  controls();
  sortable();
  drawAll();
})();
