// The Surface lab's timeline, drawn and played in the browser.
//
// Streamlit calls the default export with the payload of dgs_core.viz.surface.timeline_data
// (component.data) whenever the page reruns. Everything that moves along the steps happens
// here, with no message to the server: play/pause, one step back or forward, the speed, the
// slow replay of the first steps, the slider and the keyboard (← → space Home End). Only a
// click on a map talks to the server: its point becomes every optimizer's start
// (setTriggerValue("start", [x, y])), and the page reruns the simulation.
//
// The payload (dgs_core/viz/surface/timeline.py has the whole account):
//   steps, step, opening       the last step, the step to open at, the steps the slow replay shows
//   domain [x0, x1, y0, y1]    the maps' axes; xticks, yticks: [value, label]
//   field {size, levels}       the surface's colour level per grid cell (0 … 254, 255: none),
//                              base64, the bottom row first; palette: a colour per band
//   panels                     the maps' titles; path.panel is the index of its map
//   paths[i]                   x, y, gap: point t of the path at index t (null where not finite);
//                              overshoot: steps t whose step overshot, marked at point t;
//                              oscillation: steps t that reversed step t − 1, marked at the
//                              turning point t − 1; extrapolated[t − 1]: where step t's gradient
//                              was taken (ExtraSGD); diverged: the step it diverged at, or −1
//   curves[j]                  a plot: title, log, range ([lo, hi], in log10 units on a log
//                              axis), ticks ([value in those units, label]), xticks, lines
//                              ({label, color, dash, stepped, first, y}: y[i] is the value at
//                              step first + i, raw), marks ([step, value]: a diverged run's ✕)
//   font                       px of the text (larger in presenter mode)
//
// Drawing: the parts that never move (the surface's colour bands, axes, ticks, titles, the
// colour bar, the curves) are drawn once into a background canvas; a frame copies it and draws
// each path up to the current step, its markers, and the curves' cursors over it.

const SPEEDS = [1, 2, 5, 10, 20, 50, 100, 200]; // steps per second
const SLOW = 2; // steps per second of the "first steps, slow" replay
const FONT = 12; // px of the canvas's text; data.font overrides it (presenter mode)
const font = (data) => `${data.font || FONT}px sans-serif`;
const INK = "#31333F";
const GRID_INK = "rgba(49, 51, 63, 0.25)";
const LINE_OF_BANDS = [255, 255, 255, 0.35]; // the contour lines between colour bands
const DIVERGED = "#D62728";

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  const root = parentElement.querySelector(".dgs-tl");
  let lab = root.__timeline;
  if (!lab) {
    lab = root.__timeline = createLab(root, setTriggerValue);
  }
  lab.setTrigger(setTriggerValue);
  lab.load(data);
  return () => lab.stop();
}

function createLab(root, firstTrigger) {
  const canvas = root.querySelector("canvas.dgs-tl-canvas");
  const ctx = canvas.getContext("2d");
  const background = document.createElement("canvas");
  const tip = root.querySelector(".dgs-tl-tip");
  const legend = root.querySelector(".dgs-tl-legend");
  const slider = root.querySelector(".dgs-tl-slider");
  const readout = root.querySelector(".dgs-tl-readout");
  const speedSelect = root.querySelector(".dgs-tl-speed");
  const playButton = root.querySelector("[data-act=play]");
  let trigger = firstTrigger;
  let data = null;
  let layout = null;
  let field = null; // the surface's colour bands as an image of one panel's size
  let step = 0;
  let position = 0; // fractional step while playing
  let playing = false;
  let stopAt = 0;
  let speed = 20;
  let frame = 0; // the requestAnimationFrame id
  let last = 0; // the previous animation tick (ms)
  let pending = null; // a clicked start, drawn until the new runs arrive
  let loadedAt = 0; // when the current payload arrived (ms, performance.now)
  root.__draws = []; // [when (ms, performance.now), step] of each frame drawn: for tests and benchmarks

  // --- the payload --------------------------------------------------------------------------
  function load(next) {
    if (data && next.id === data.id) {
      // the same runs (another widget reran the page, or a click gave the same start): keep the
      // place and the play; only a new text size (presenter mode) needs a new layout
      pending = null;
      const font = next.font !== data.font;
      data = next;
      if (font) {
        root.style.fontSize = `${(data.font || FONT) + 1}px`;
        relayout(true);
      } else draw();
      return;
    }
    const fresh = !data;
    data = next;
    pending = null;
    loadedAt = performance.now();
    slider.max = String(data.steps);
    if (fresh) {
      speed = SPEEDS.reduce((a, b) => (Math.abs(b - data.steps / 10) < Math.abs(a - data.steps / 10) ? b : a));
      speed = Math.max(speed, 20);
      speedSelect.innerHTML = SPEEDS.map((s) => `<option value="${s}">${s} steps/s</option>`).join("");
      speedSelect.value = String(speed);
    }
    legend.replaceChildren(...legendEntries(data));
    root.style.fontSize = `${(data.font || FONT) + 1}px`;
    pause();
    step = position = Math.min(Math.max(data.step, 0), data.steps);
    relayout(true); // new runs may bring other panels or plots: lay them out before drawing
  }

  // --- layout: where every panel and plot sits, in CSS pixels ------------------------------
  // Only a new payload or a new width (or pixel ratio) lays the page out again and redraws the
  // background (the surface's colours are computed pixel by pixel).
  function relayout(force = false) {
    if (!data) return;
    const width = Math.max(root.clientWidth, 320);
    const ratio = window.devicePixelRatio || 1;
    if (!force && layout && layout.width === width && layout.ratio === ratio) return;
    layout = { ...computeLayout(data, width), width, ratio };
    for (const c of [canvas, background]) {
      c.width = Math.round(width * ratio);
      c.height = Math.round(layout.height * ratio);
    }
    canvas.style.width = `${width}px`;
    canvas.style.height = `${layout.height}px`;
    const map = layout.maps[0];
    field = bandsImage(data, Math.round(map.w * ratio), Math.round(map.h * ratio)); // one for every panel
    const bg = background.getContext("2d");
    bg.setTransform(ratio, 0, 0, ratio, 0, 0);
    drawBackground(bg, data, layout, field);
    draw();
  }

  // --- one frame ------------------------------------------------------------------------------
  function draw() {
    if (!data || !layout) return;
    const ratio = layout.ratio; // the canvases were sized with it
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(background, 0, 0);
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    for (const path of data.paths) drawPath(ctx, data, layout.maps[path.panel], path, step);
    layout.maps.forEach((map, i) => drawStartAndMinima(ctx, data, map, i));
    if (pending) {
      for (const map of layout.maps) ring(ctx, toPixel(data, map, pending[0], pending[1]), 7, "#ffffff", 2.5);
    }
    layout.plots.forEach((plot, i) => drawCursor(ctx, data, data.curves[i], plot, step));
    slider.value = String(step);
    readout.textContent = `step ${step} / ${data.steps}`;
    root.dataset.step = String(step);
    root.__draws.push([performance.now(), step]);
    if (root.__draws.length > 2000) root.__draws.splice(0, 1000);
  }

  // --- the timeline's controls ----------------------------------------------------------------
  function goTo(k) {
    step = Math.min(Math.max(Math.round(k), 0), data ? data.steps : 0);
    position = step;
    draw();
  }

  function play(until = data.steps, perSecond = speed) {
    if (step >= until) goTo(0);
    playing = true;
    stopAt = until;
    root.dataset.playing = "1";
    playButton.textContent = "❚❚ pause";
    last = performance.now();
    cancelAnimationFrame(frame);
    const tick = (now) => {
      if (!playing) return;
      position = Math.min(position + ((now - last) / 1000) * perSecond, stopAt);
      last = now;
      const k = Math.floor(position);
      if (k !== step) {
        step = k;
        draw();
      }
      if (position >= stopAt) {
        pause();
        remember();
        return;
      }
      frame = requestAnimationFrame(tick);
    };
    frame = requestAnimationFrame(tick);
  }

  function pause() {
    playing = false;
    cancelAnimationFrame(frame);
    root.dataset.playing = "";
    playButton.textContent = "▶ play";
  }

  // The step goes into the address bar while paused, so a copied link opens at it.
  function remember() {
    const url = new URL(window.location.href);
    if (step === data.steps) url.searchParams.delete("t");
    else url.searchParams.set("t", String(step));
    window.history.replaceState(window.history.state, "", url);
  }

  const actions = {
    play: () => (playing ? (pause(), remember()) : play()),
    first: () => (pause(), goTo(0), remember()),
    back: () => (pause(), goTo(step - 1), remember()),
    forward: () => (pause(), goTo(step + 1), remember()),
    last: () => (pause(), goTo(data.steps), remember()),
    opening: () => (pause(), goTo(0), play(Math.min(Math.max(data.opening, 1), data.steps), SLOW)),
  };
  root.querySelectorAll("[data-act]").forEach((button) => {
    button.addEventListener("click", () => data && actions[button.dataset.act]());
  });
  slider.addEventListener("input", () => {
    pause();
    goTo(Number(slider.value));
  });
  slider.addEventListener("change", () => remember());
  speedSelect.addEventListener("change", () => {
    speed = Number(speedSelect.value);
    if (playing) play(stopAt, speed);
  });
  root.addEventListener("keydown", (event) => {
    const key = { ArrowLeft: "back", ArrowRight: "forward", " ": "play", Home: "first", End: "last" }[event.key];
    if (!key || !data || event.altKey || event.ctrlKey || event.metaKey) return; // Alt+← stays the browser's
    const tag = event.target.tagName;
    if (tag === "SELECT" || tag === "INPUT" || (tag === "BUTTON" && event.key === " ")) return; // their own keys
    event.preventDefault();
    actions[key]();
  });

  // --- pointer: a readout under the cursor; a click on a map moves the start ----------------
  canvas.addEventListener("mousemove", (event) => {
    if (!layout) return;
    const [px, py] = local(event);
    const text = describe(data, layout, step, px, py);
    tip.hidden = !text;
    if (text) {
      tip.textContent = text;
      tip.style.left = `${Math.max(Math.min(px + 14, canvas.clientWidth - tip.offsetWidth - 4), 0)}px`;
      tip.style.top = `${canvas.offsetTop + py + 14}px`; // the root holds the legend above the canvas
    }
    const map = layout.maps.find((m) => inside(m, px, py));
    canvas.style.cursor = map ? "crosshair" : "default";
  });
  canvas.addEventListener("mouseleave", () => (tip.hidden = true));
  canvas.addEventListener("click", (event) => {
    if (!layout) return;
    const [px, py] = local(event);
    const map = layout.maps.find((m) => inside(m, px, py));
    if (!map) return;
    const [x, y] = toData(data, map, px, py);
    pending = [x, y];
    draw();
    trigger("start", [x, y]);
  });
  function local(event) {
    const box = canvas.getBoundingClientRect();
    return [event.clientX - box.left, event.clientY - box.top];
  }

  new ResizeObserver(() => relayout()).observe(root); // a new width only: the height is ours

  return {
    load,
    stop: pause,
    setTrigger: (next) => (trigger = next),
    // for the browser tests and bench/page_latency.py: what is drawn, and where a point lies
    state: () => ({
      id: data && data.id,
      font: data ? data.font || FONT : FONT,
      step,
      playing,
      labels: data ? data.paths.map((p) => p.label) : [],
      starts: data ? data.paths.map((p) => [p.x[0], p.y[0]]) : [],
      firstGaps: data ? data.paths.map((p) => p.gap[0]) : [],
      drawn: data ? data.paths.map((p) => Math.min(step, p.x.length - 1)) : [],
      loadedAt,
    }),
    pixel: (panel, x, y) => {
      const box = canvas.getBoundingClientRect();
      const [px, py] = toPixel(data, layout.maps[panel], x, y);
      return [box.left + px, box.top + py];
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Layout
// ---------------------------------------------------------------------------------------------

function computeLayout(data, width) {
  const [x0, x1, y0, y1] = data.domain;
  const aspect = (y1 - y0) / (x1 - x0);
  const em = (data.font || FONT) / FONT; // margins grow with the text
  const left = 44 * em; // y tick labels
  const colorbar = 80 * em; // the colour bar and its labels, right of the maps
  const gap = 24;
  const title = 20 * em;
  const n = data.panels.length;
  const cols = data.view === "panels" ? Math.min(n, 4) : 1;
  const rows = Math.ceil(n / cols);
  const usable = width - left - colorbar - (cols - 1) * gap;
  let w = usable / cols;
  let h = Math.min(w * aspect, data.view === "panels" ? 300 : 560);
  if (data.view === "overlay") w = Math.min(w, h / aspect);
  h = Math.max(Math.min(w * aspect, h), 120);
  const maps = [];
  for (let i = 0; i < n; i++) {
    const r = Math.floor(i / cols);
    const c = i % cols;
    maps.push({
      x: left + c * (w + gap),
      y: 4 + title + r * (h + title + 24 * em),
      w,
      h,
      title: data.panels[i],
      firstColumn: c === 0,
      bottomRow: r === rows - 1 || i + cols >= n,
    });
  }
  const mapsBottom = 4 + rows * (h + title + 24 * em);
  const bar = { x: left + cols * w + (cols - 1) * gap + 16, y: maps[0].y, w: 14, h: mapsBottom - maps[0].y - 24 };
  const plotTop = mapsBottom + 30 * em;
  const plotHeight = 190;
  const plotLeft = 58 * em;
  const plotGap = 18;
  const k = data.curves.length;
  const perRow = width / k >= 260 * em ? k : Math.ceil(k / 2); // a narrow page: two rows of plots
  const plotWidth = (width - perRow * plotLeft - (perRow - 1) * plotGap - 10) / perRow;
  const rowHeight = title + plotHeight + 40 * em;
  const plots = data.curves.map((_, i) => ({
    x: plotLeft + (i % perRow) * (plotWidth + plotLeft + plotGap),
    y: plotTop + title + Math.floor(i / perRow) * rowHeight,
    w: plotWidth,
    h: plotHeight,
  }));
  return { maps, bar, plots, height: plotTop + Math.ceil(k / perRow) * rowHeight, em };
}

function inside(box, px, py) {
  return px >= box.x && px <= box.x + box.w && py >= box.y && py <= box.y + box.h;
}

function toPixel(data, map, x, y) {
  const [x0, x1, y0, y1] = data.domain;
  return [map.x + ((x - x0) / (x1 - x0)) * map.w, map.y + map.h - ((y - y0) / (y1 - y0)) * map.h];
}

// A pixel's point, rounded to a round number near the size of a pixel (0.01 on a domain 4 wide):
// short links, and the same start for the same click.
function toData(data, map, px, py) {
  const [x0, x1, y0, y1] = data.domain;
  const x = x0 + ((px - map.x) / map.w) * (x1 - x0);
  const y = y0 + ((map.y + map.h - py) / map.h) * (y1 - y0);
  const unit = 10 ** Math.floor(Math.log10(Math.max(x1 - x0, y1 - y0) / 200));
  const round = (v) => Number((Math.round(v / unit) * unit).toFixed(Math.max(0, -Math.log10(unit))));
  return [round(x), round(y)];
}

function plotX(data, plot, t) {
  return plot.x + (t / Math.max(data.steps, 1)) * plot.w;
}

function plotY(curve, plot, v) {
  if (v === null || !(curve.log ? v > 0 : true)) return null;
  const u = curve.log ? Math.log10(v) : v;
  const [lo, hi] = curve.range;
  return plot.y + plot.h - ((u - lo) / (hi - lo)) * plot.h;
}

// ---------------------------------------------------------------------------------------------
// The background: drawn once per payload and size
// ---------------------------------------------------------------------------------------------

// The surface at the size it is drawn (w × h device pixels): each pixel's level is interpolated
// between the grid's four nearest values, then coloured by its band; a pixel whose band differs
// from its right or upper neighbour's lies on a contour line.
function bandsImage(data, w, h) {
  const size = data.field.size;
  const levels = Uint8Array.from(atob(data.field.levels), (c) => c.charCodeAt(0));
  const n = data.palette.length;
  const colors = data.palette.map((hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)));
  const band = new Int16Array(w * h); // −1: no value
  for (let r = 0; r < h; r++) {
    const gy = ((h - 1 - r) / Math.max(h - 1, 1)) * (size - 1); // the grid's first row is the bottom one
    const j = Math.min(Math.floor(gy), size - 2);
    const fy = gy - j;
    for (let c = 0; c < w; c++) {
      const gx = (c / Math.max(w - 1, 1)) * (size - 1);
      const i = Math.min(Math.floor(gx), size - 2);
      const fx = gx - i;
      const corners = [levels[j * size + i], levels[j * size + i + 1], levels[(j + 1) * size + i], levels[(j + 1) * size + i + 1]];
      if (corners.includes(255)) {
        band[r * w + c] = -1;
        continue;
      }
      const [a, b, d, e] = corners;
      const level = (a * (1 - fx) + b * fx) * (1 - fy) + (d * (1 - fx) + e * fx) * fy;
      band[r * w + c] = Math.min(Math.floor((level / 254) * n), n - 1);
    }
  }
  const image = new ImageData(w, h);
  const [lr, lg, lb, alpha] = LINE_OF_BANDS;
  for (let r = 0; r < h; r++) {
    for (let c = 0; c < w; c++) {
      const k = band[r * w + c];
      if (k < 0) continue; // transparent
      let [red, green, blue] = colors[k];
      const right = c + 1 < w ? band[r * w + c + 1] : k;
      const up = r > 0 ? band[(r - 1) * w + c] : k;
      if ((right >= 0 && right !== k) || (up >= 0 && up !== k)) {
        red = red * (1 - alpha) + lr * alpha;
        green = green * (1 - alpha) + lg * alpha;
        blue = blue * (1 - alpha) + lb * alpha;
      }
      image.data.set([red, green, blue, 255], (r * w + c) * 4);
    }
  }
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  canvas.getContext("2d").putImageData(image, 0, 0);
  return canvas;
}

function drawBackground(g, data, layout, field) {
  g.clearRect(0, 0, g.canvas.width, g.canvas.height);
  g.font = font(data);
  g.fillStyle = INK;
  for (const map of layout.maps) {
    g.drawImage(field, map.x, map.y, map.w, map.h);
    g.strokeStyle = GRID_INK;
    g.strokeRect(map.x, map.y, map.w, map.h);
    g.fillStyle = INK;
    g.textAlign = "center";
    g.textBaseline = "bottom";
    g.fillText(fit(g, map.title, map.w), map.x + map.w / 2, map.y - 4);
    if (map.bottomRow) {
      g.textBaseline = "top";
      for (const [v, text] of data.xticks) {
        const [px] = toPixel(data, map, v, data.domain[2]);
        g.fillText(text, px, map.y + map.h + 4);
      }
    }
    if (map.firstColumn) {
      g.textAlign = "right";
      g.textBaseline = "middle";
      for (const [v, text] of data.yticks) {
        const [, py] = toPixel(data, map, data.domain[0], v);
        g.fillText(text, map.x - 5, py);
      }
    }
  }
  drawColorbar(g, data, layout.bar);
  layout.plots.forEach((plot, i) => drawPlot(g, data, data.curves[i], plot));
}

function drawColorbar(g, data, bar) {
  const n = data.palette.length;
  for (let i = 0; i < n; i++) {
    g.fillStyle = data.palette[i];
    g.fillRect(bar.x, bar.y + bar.h - ((i + 1) / n) * bar.h, bar.w, bar.h / n + 0.5);
  }
  const { lo, hi, ticks, title } = data.colorbar;
  g.fillStyle = INK;
  g.textAlign = "left";
  g.textBaseline = "middle";
  for (const [v, text] of ticks) {
    const py = bar.y + bar.h - ((v - lo) / (hi - lo || 1)) * bar.h;
    g.fillText(text, bar.x + bar.w + 4, py);
  }
  g.textAlign = "left";
  g.textBaseline = "bottom";
  g.fillText(title, bar.x - 6, bar.y - 4);
}

function drawPlot(g, data, curve, plot) {
  g.strokeStyle = GRID_INK;
  g.fillStyle = INK;
  g.font = font(data);
  g.lineWidth = 1;
  g.textAlign = "right";
  g.textBaseline = "middle";
  for (const [u, text] of curve.ticks) {
    const py = plot.y + plot.h - ((u - curve.range[0]) / (curve.range[1] - curve.range[0])) * plot.h;
    if (py < plot.y - 1 || py > plot.y + plot.h + 1) continue;
    g.beginPath();
    g.moveTo(plot.x, py);
    g.lineTo(plot.x + plot.w, py);
    g.stroke();
    g.fillText(text, plot.x - 5, py);
  }
  g.textAlign = "center";
  g.textBaseline = "top";
  for (const [t, text] of curve.xticks) g.fillText(text, plotX(data, plot, t), plot.y + plot.h + 4);
  g.fillText("step t", plot.x + plot.w / 2, plot.y + plot.h + 4 + (data.font || FONT) * 1.3);
  g.textBaseline = "bottom";
  g.fillText(fit(g, curve.title, plot.w + 40), plot.x + plot.w / 2, plot.y - 4);
  g.strokeRect(plot.x, plot.y, plot.w, plot.h);
  g.save();
  g.beginPath();
  g.rect(plot.x, plot.y, plot.w, plot.h);
  g.clip();
  for (const line of curve.lines) {
    g.strokeStyle = line.color;
    g.lineWidth = 1.5;
    g.setLineDash(line.dash ? [3, 3] : []);
    g.beginPath();
    let previous = null; // the last point drawn, null after a gap
    line.y.forEach((v, i) => {
      const py = plotY(curve, plot, v);
      const px = plotX(data, plot, line.first + i);
      if (py === null) previous = null;
      else if (previous === null) g.moveTo(px, py);
      else {
        if (line.stepped) g.lineTo(px, previous); // the batch size holds until it grows
        g.lineTo(px, py);
      }
      if (py !== null) previous = py;
    });
    g.stroke();
  }
  g.setLineDash([]);
  for (const [t, v] of curve.marks) {
    const py = plotY(curve, plot, v);
    if (py !== null) cross(g, [plotX(data, plot, t), Math.max(py, plot.y + 6)], 6, DIVERGED); // cut off: at the top
  }
  g.restore();
}

// ---------------------------------------------------------------------------------------------
// What moves: the paths up to the step, their markers, the curves' cursors
// ---------------------------------------------------------------------------------------------

function drawPath(g, data, map, path, step) {
  const k = Math.min(step, path.x.length - 1);
  g.save();
  g.beginPath();
  g.rect(map.x, map.y, map.w, map.h);
  g.clip();
  const at = (i) => (path.x[i] === null || path.y[i] === null ? null : toPixel(data, map, path.x[i], path.y[i]));
  if (path.extrapolated) {
    g.strokeStyle = path.color;
    g.lineWidth = 1;
    g.setLineDash([2, 3]);
    for (let t = 1; t <= k; t++) {
      const e = path.extrapolated[t - 1]; // step t: from x_{t−1}, its gradient taken at x_{t−1} + δ
      const from = at(t - 1);
      if (!e || !from) continue;
      const to = toPixel(data, map, e[0], e[1]);
      g.beginPath();
      g.moveTo(...from);
      g.lineTo(...to);
      g.stroke();
      ring(g, to, 2.5, path.color, 1);
    }
    g.setLineDash([]);
  }
  g.strokeStyle = path.color;
  g.lineWidth = 2;
  g.beginPath();
  let open = false;
  for (let i = 0; i <= k; i++) {
    const p = at(i);
    if (!p) {
      open = false;
      continue;
    }
    open ? g.lineTo(...p) : g.moveTo(...p);
    open = true;
  }
  g.stroke();
  for (const t of path.overshoot) {
    if (t > k) break;
    const p = at(t); // where the overshooting step t landed
    if (p) triangle(g, p, 4.5, path.color);
  }
  for (const t of path.oscillation) {
    if (t > k) break;
    const p = at(t - 1); // step t turned back at x_{t−1}
    if (p) diamond(g, p, 4.5, path.color);
  }
  const head = at(k);
  if (head) dot(g, head, 5.5, path.color);
  g.restore();
  if (path.diverged >= 0 && k >= path.diverged - 1) {
    const p = at(path.diverged - 1);
    if (p) {
      const q = [Math.min(Math.max(p[0], map.x), map.x + map.w), Math.min(Math.max(p[1], map.y), map.y + map.h)];
      cross(g, q, 8, DIVERGED);
      g.fillStyle = DIVERGED;
      g.font = font(data);
      g.textAlign = "center";
      g.textBaseline = "bottom";
      g.fillText(path.message, Math.min(Math.max(q[0], map.x + 60), map.x + map.w - 60), Math.max(q[1] - 8, map.y + 14));
    }
  }
}

function drawStartAndMinima(g, data, map, index) {
  for (const [x, y] of data.minima) star(g, toPixel(data, map, x, y), 7, "#ffffff");
  for (const [x, y] of data.local_minima) star(g, toPixel(data, map, x, y), 6, null);
  const starts = new Set();
  for (const path of data.paths) {
    if (path.panel !== index) continue;
    const key = `${path.x[0]},${path.y[0]}`;
    if (starts.has(key)) continue;
    starts.add(key);
    ring(g, toPixel(data, map, path.x[0], path.y[0]), 6.5, "#000000", 2.5);
  }
}

function drawCursor(g, data, curve, plot, step) {
  const px = plotX(data, plot, step);
  g.strokeStyle = "#555555";
  g.setLineDash([2, 3]);
  g.lineWidth = 1.5;
  g.beginPath();
  g.moveTo(px, plot.y);
  g.lineTo(px, plot.y + plot.h);
  g.stroke();
  g.setLineDash([]);
  for (const line of curve.lines) {  // each line's value at the step
    if (line.dash) continue;
    const py = plotY(curve, plot, line.y[step - line.first] ?? null);
    if (py !== null && py >= plot.y && py <= plot.y + plot.h) dot(g, [px, py], 3, line.color);
  }
}

// ---------------------------------------------------------------------------------------------
// Marks
// ---------------------------------------------------------------------------------------------

function dot(g, [x, y], r, color) {
  g.beginPath();
  g.arc(x, y, r, 0, 2 * Math.PI);
  g.fillStyle = color;
  g.fill();
  g.lineWidth = 2;
  g.strokeStyle = "#ffffff";
  g.stroke();
}

function ring(g, [x, y], r, color, width) {
  g.beginPath();
  g.arc(x, y, r, 0, 2 * Math.PI);
  g.lineWidth = width;
  g.strokeStyle = color;
  g.stroke();
}

function triangle(g, [x, y], r, color) {
  g.beginPath();
  g.moveTo(x, y - r);
  g.lineTo(x + r, y + r * 0.8);
  g.lineTo(x - r, y + r * 0.8);
  g.closePath();
  g.fillStyle = color;
  g.globalAlpha = 0.75;
  g.fill();
  g.globalAlpha = 1;
  g.lineWidth = 1;
  g.strokeStyle = "#000000";
  g.stroke();
}

function diamond(g, [x, y], r, color) {
  g.beginPath();
  g.moveTo(x, y - r);
  g.lineTo(x + r, y);
  g.lineTo(x, y + r);
  g.lineTo(x - r, y);
  g.closePath();
  g.lineWidth = 1.5;
  g.strokeStyle = color;
  g.stroke();
}

function cross(g, [x, y], r, color) {
  g.lineWidth = 4;
  g.strokeStyle = "#ffffff";
  for (const width of [4, 2]) {
    g.lineWidth = width;
    g.strokeStyle = width === 4 ? "#ffffff" : color;
    g.beginPath();
    g.moveTo(x - r, y - r);
    g.lineTo(x + r, y + r);
    g.moveTo(x - r, y + r);
    g.lineTo(x + r, y - r);
    g.stroke();
  }
}

function star(g, [x, y], r, fill) {
  g.beginPath();
  for (let i = 0; i < 10; i++) {
    const a = -Math.PI / 2 + (i * Math.PI) / 5;
    const d = i % 2 === 0 ? r : r * 0.45;
    g.lineTo(x + d * Math.cos(a), y + d * Math.sin(a));
  }
  g.closePath();
  if (fill) {
    g.fillStyle = fill;
    g.fill();
  }
  g.lineWidth = 1.5;
  g.strokeStyle = "#000000";
  g.stroke();
}

function fit(g, text, width) {
  if (g.measureText(text).width <= width) return text;
  let cut = text;
  while (cut.length > 1 && g.measureText(`${cut}…`).width > width) cut = cut.slice(0, -1);
  return `${cut}…`;
}

// ---------------------------------------------------------------------------------------------
// The legend and the readout under the pointer
// ---------------------------------------------------------------------------------------------

const GLYPHS = { overshoot: "▲", oscillation: "◇", extrapolated: "○", diverged: "✕" };

function legendEntries(data) {
  const entry = (swatch, text, color) => {
    const span = document.createElement("span");
    span.className = "dgs-tl-key";
    const mark = document.createElement("b");
    mark.textContent = swatch;
    mark.style.color = color;
    span.append(mark, ` ${text}`);
    return span;
  };
  const seen = new Set();
  const entries = [];
  for (const path of data.paths) {
    if (seen.has(path.label)) continue;
    seen.add(path.label);
    entries.push(entry("━", path.label, path.color));
  }
  entries.push(entry("◯", "start", "#000000"));
  if (data.minima.length) entries.push(entry("★", "global minimum", "#000000"));
  if (data.local_minima.length) entries.push(entry("☆", "local minimum", "#000000"));
  for (const [kind, text] of data.keys) entries.push(entry(GLYPHS[kind], text, kind === "diverged" ? DIVERGED : "#555555"));
  return entries;
}

function describe(data, layout, step, px, py) {
  const mapIndex = layout.maps.findIndex((m) => inside(m, px, py));
  if (mapIndex >= 0) {
    const map = layout.maps[mapIndex];
    let best = null;
    for (const path of data.paths) {
      if (path.panel !== mapIndex) continue;
      const k = Math.min(step, path.x.length - 1);
      for (let i = 0; i <= k; i++) {
        if (path.x[i] === null) continue;
        const [qx, qy] = toPixel(data, map, path.x[i], path.y[i]);
        const d = Math.hypot(qx - px, qy - py);
        if (d < 8 && (!best || d < best.d)) best = { d, path, i };
      }
    }
    if (best) {
      const { path, i } = best;
      return `${path.label} · step ${i} · (${path.x[i].toFixed(4)}, ${path.y[i].toFixed(4)}) · ${data.gap_name} = ${format(path.gap[i])}`;
    }
    const [x, y] = toData(data, map, px, py);
    return `(${x.toFixed(2)}, ${y.toFixed(2)}) · click to start every optimizer here`;
  }
  const plotIndex = layout.plots.findIndex((p) => inside(p, px, py));
  if (plotIndex < 0) return "";
  const plot = layout.plots[plotIndex];
  const curve = data.curves[plotIndex];
  const t = Math.round(((px - plot.x) / plot.w) * data.steps);
  let best = null;
  for (const line of curve.lines) {
    const v = line.y[t - line.first];
    const y = v === undefined ? null : plotY(curve, plot, v);
    if (y !== null && (!best || Math.abs(y - py) < best.d)) best = { d: Math.abs(y - py), line, v };
  }
  return best ? `${best.line.label} · step ${t} · ${curve.title} = ${format(best.v)}` : `step ${t}`;
}

function format(v) {
  return v === null || v === undefined ? "—" : Number(v).toPrecision(4);
}
