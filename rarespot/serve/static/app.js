// rarespot review page: upload a scan, draw the server's detections over it,
// filter them live by confidence, re-render the scan through view filters,
// zoom and pan. Plain JS, no build step, nothing loaded from outside this server.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  scan: null,        // the /api/detect response for the scan on screen
  bitmap: null,      // the rendered scan (ImageBitmap) drawn under the boxes
  conf: 0.25,
  spec: "",          // view filter spec sent to /render
  zoom: 1, panX: 0, panY: 0,
  renderSeq: 0,      // drops renders that finish after a newer one was asked for
  firstScan: true,
};

// ------------------------------------------------------------ messages

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = false;
  if (kind === "error") document.body.dataset.state = "error";
}

function clearMessage() {
  $("message").hidden = true;
  $("message").textContent = "";
}

async function errorText(response) {
  // FastAPI errors are {"detail": "..."} (a string, or a list for validation errors).
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg).join("; ");
    return JSON.stringify(body);
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

// ------------------------------------------------------------ models

async function loadModels() {
  try {
    const response = await fetch("/api/models");
    if (!response.ok) throw new Error(await errorText(response));
    const models = await response.json();
    const select = $("model");
    select.innerHTML = "";
    for (const m of models) {
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = `${m.name} (${m.class_names.length} classes)`;
      option.selected = m.default;
      select.appendChild(option);
    }
    select.disabled = models.length < 2;
  } catch (err) {
    showMessage(`cannot reach the server: ${err.message}`);
  }
}

// ------------------------------------------------------------ upload + detect

async function detectFile(file) {
  clearMessage();
  document.body.dataset.state = "loading";
  $("busy").hidden = false;
  const form = new FormData();
  form.append("file", file, file.name);
  if ($("model").value) form.append("model", $("model").value);
  try {
    const response = await fetch("/api/detect", { method: "POST", body: form });
    if (!response.ok) {
      showMessage(await errorText(response));
      return;
    }
    const scan = await response.json();
    state.scan = scan;
    state.bitmap = null;
    const slider = $("conf");
    slider.min = scan.floor_conf;
    if (state.firstScan) {
      slider.value = scan.default_conf;
      state.firstScan = false;
    }
    state.conf = Number(slider.value);
    setWindowRange(scan.value_range, scan.window);
    if (document.querySelector('input[data-filter="window"]').checked) {
      $("spec").value = buildSpec();  // the window follows the new scan's grey values
      state.spec = $("spec").value.trim();
    }
    await renderView(true);
    document.body.dataset.state = "ready";
    // What the operator should know about this result (e.g. an old model given an 8-bit scan).
    if (scan.warnings && scan.warnings.length) showMessage(scan.warnings.join(" "), "info");
  } catch (err) {
    showMessage(`${file.name}: upload failed (${err.message})`);
  } finally {
    $("busy").hidden = true;
  }
}

// ------------------------------------------------------------ view filters

// The spec grammar of rarespot.filters.ViewFilter.parse: steps joined by ",";
// "name:key=value" starts a step, a bare "key=value" continues it.
// Built from the controls in a fixed order; the server puts a 16-bit scan
// through the display window first, unless the chain starts with "window".
const FILTER_SPECS = {
  window: () => `window:center=${num($("wl-level").value)},width=${num($("wl-width").value)}`,
  normalize: () => "normalize",
  bc: () => `bc:brightness=${num($("bc-brightness").value)},contrast=${num($("bc-contrast").value)}`,
  gamma: () => `gamma:g=${num($("gamma-g").value)}`,
  clahe: () => `clahe:clip=${num($("clahe-clip").value)}`,
};
const FILTER_ORDER = ["window", "normalize", "bc", "gamma", "clahe"];
// Seed 000's annotation aids (section 3.2, Fig. 2) as one-click starting points.
const PRESETS = {
  "": { filters: [] },
  bc: { filters: ["bc"], values: { "bc-brightness": 0.05, "bc-contrast": 1.4 } },
  "gamma-clahe": { filters: ["gamma", "clahe"], values: { "gamma-g": 0.8, "clahe-clip": 2 } },
  window: { filters: ["window"] },
  normalize: { filters: ["normalize"] },
};

function num(value) {
  return String(Math.round(Number(value) * 1000) / 1000);
}

function buildSpec() {
  const parts = [];
  for (const name of FILTER_ORDER) {
    const box = document.querySelector(`input[data-filter="${name}"]`);
    if (box.checked) parts.push(FILTER_SPECS[name]());
  }
  return parts.join(",");
}

function setWindowRange(range, fileWindow) {
  // Window level/width sliders work in the scan's own grey values (16-bit stays 16-bit);
  // they start at the file's own window (DICOM centre/width) when it has one.
  if (!range) return;
  const [lo, hi] = range;
  const span = Math.max(hi - lo, 1);
  const level = $("wl-level"), width = $("wl-width");
  level.min = lo; level.max = hi; level.step = span / 400;
  width.min = span / 200; width.max = span; width.step = span / 400;
  level.value = fileWindow ? fileWindow[0] : lo + span / 2;
  width.value = fileWindow ? fileWindow[1] : span;
  syncOutputs();
}

function syncOutputs() {
  for (const out of document.querySelectorAll("output[for]")) {
    out.textContent = num($(out.htmlFor).value);
  }
  for (const params of document.querySelectorAll(".params")) {
    const box = document.querySelector(`input[data-filter="${params.dataset.for}"]`);
    params.classList.toggle("off", !box.checked);
  }
}

let renderTimer = null;
function filtersChanged(fromSpecBox = false) {
  syncOutputs();
  if (!fromSpecBox) $("spec").value = buildSpec();
  state.spec = $("spec").value.trim();
  clearTimeout(renderTimer);
  renderTimer = setTimeout(() => renderView(false), 150);  // debounce slider drags
}

async function renderView(fit) {
  if (!state.scan) return;
  const seq = ++state.renderSeq;
  const url = `/api/scans/${encodeURIComponent(state.scan.id)}/render?view=${encodeURIComponent(state.spec)}`;
  try {
    const response = await fetch(url);
    if (!response.ok) {
      showMessage(await errorText(response));
      return;
    }
    const bitmap = await createImageBitmap(await response.blob());
    if (seq !== state.renderSeq) return;  // a newer render is on its way
    state.bitmap = bitmap;
    if (document.body.dataset.state === "error") clearMessage();
    if (fit) fitView();
    draw();
  } catch (err) {
    showMessage(`cannot render the scan: ${err.message}`);
  }
}

// ------------------------------------------------------------ drawing

function visibleDetections() {
  if (!state.scan) return [];
  return state.scan.detections.filter((d) => d.score >= state.conf);
}

function resizeCanvas() {
  const canvas = $("view");
  const rect = $("stage").getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.round(rect.width * dpr));
  canvas.height = Math.max(1, Math.round(rect.height * dpr));
  canvas.style.width = `${rect.width}px`;
  canvas.style.height = `${rect.height}px`;
}

function fitView() {
  if (!state.scan) return;
  const rect = $("stage").getBoundingClientRect();
  const { width, height } = state.scan;
  state.zoom = Math.min(rect.width / width, rect.height / height) * 0.98;
  state.panX = (rect.width - width * state.zoom) / 2;
  state.panY = (rect.height - height * state.zoom) / 2;
}

const PRED_COLOUR = "#22dd22";  // predictions green, as in seed 000's figures

function draw() {
  const canvas = $("view");
  const ctx = canvas.getContext("2d");
  const dpr = window.devicePixelRatio || 1;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#111";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const shown = visibleDetections();
  updateCounts(shown);
  if (!state.bitmap) return;
  $("drop-hint").hidden = true;

  const z = state.zoom;
  ctx.setTransform(dpr * z, 0, 0, dpr * z, dpr * state.panX, dpr * state.panY);
  ctx.imageSmoothingEnabled = z < 2;  // zoomed in: show the real pixels
  ctx.drawImage(state.bitmap, 0, 0, state.scan.width, state.scan.height);

  ctx.lineWidth = 2 / z;
  ctx.font = `${12 / z}px sans-serif`;
  ctx.textBaseline = "bottom";
  for (const d of shown) {
    const { x1, y1, x2, y2 } = d;
    ctx.strokeStyle = PRED_COLOUR;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const label = `${d.class_name} ${d.score.toFixed(2)}`;
    const w = ctx.measureText(label).width + 6 / z;
    const h = 15 / z;
    const ty = y1 - h >= 0 ? y1 : y1 + h;  // keep the label on the scan at the top edge
    ctx.fillStyle = "rgba(0,0,0,0.65)";
    ctx.fillRect(x1, ty - h, w, h);
    ctx.fillStyle = PRED_COLOUR;
    ctx.fillText(label, x1 + 3 / z, ty - 1 / z);
  }
  const canvas_ = $("view");  // state for tests and curious operators (devtools)
  canvas_.dataset.drawnBoxes = String(shown.length);
  canvas_.dataset.zoom = state.zoom.toFixed(4);
  canvas_.dataset.pan = `${Math.round(state.panX)},${Math.round(state.panY)}`;
}

function updateCounts(shown) {
  const count = $("box-count");
  count.dataset.count = String(shown.length);
  count.textContent = `${shown.length} box${shown.length === 1 ? "" : "es"}`;
  $("conf-value").textContent = state.conf.toFixed(2);
  if (!state.scan) return;
  const s = state.scan;
  $("status").textContent =
    `${s.filename} — ${s.width}×${s.height} ${s.dtype} ${s.format} — model ${s.model} — ` +
    `${shown.length} of ${s.detections.length} boxes ≥ ${state.conf.toFixed(2)} — detected in ${s.elapsed_ms} ms`;

  const id = encodeURIComponent(s.id);
  const json = $("dl-json"), png = $("dl-png");
  json.href = `/api/scans/${id}/detections?conf=${state.conf}`;
  png.href = `/api/scans/${id}/annotated?conf=${state.conf}&view=${encodeURIComponent(state.spec)}`;
  json.classList.remove("disabled");
  png.classList.remove("disabled");

  const list = $("det-list");
  list.innerHTML = "";
  for (const d of shown.slice(0, 100)) {
    const item = document.createElement("li");
    item.textContent = `${d.class_name} ${d.score.toFixed(3)}`;
    item.title = "zoom to this box";
    item.addEventListener("click", () => zoomToBox(d));
    list.appendChild(item);
  }
}

function zoomToBox({ x1, y1, x2, y2 }) {
  const rect = $("stage").getBoundingClientRect();
  const pad = 3;
  state.zoom = Math.min(8, Math.min(rect.width / ((x2 - x1) * pad), rect.height / ((y2 - y1) * pad)));
  state.panX = rect.width / 2 - ((x1 + x2) / 2) * state.zoom;
  state.panY = rect.height / 2 - ((y1 + y2) / 2) * state.zoom;
  draw();
}

// ------------------------------------------------------------ zoom + pan

function zoomAt(factor, sx, sy) {
  const newZoom = Math.min(40, Math.max(0.02, state.zoom * factor));
  // Keep the image point under the cursor where it is.
  state.panX = sx - ((sx - state.panX) / state.zoom) * newZoom;
  state.panY = sy - ((sy - state.panY) / state.zoom) * newZoom;
  state.zoom = newZoom;
  draw();
}

function setUpViewer() {
  const stage = $("stage");
  stage.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const rect = stage.getBoundingClientRect();
    zoomAt(Math.exp(-ev.deltaY * 0.0015), ev.clientX - rect.left, ev.clientY - rect.top);
  }, { passive: false });

  let drag = null;
  stage.addEventListener("pointerdown", (ev) => {
    if (ev.target.closest(".zoom-bar")) return;
    drag = { x: ev.clientX, y: ev.clientY, panX: state.panX, panY: state.panY };
    stage.setPointerCapture(ev.pointerId);
    stage.classList.add("dragging");
  });
  stage.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    state.panX = drag.panX + ev.clientX - drag.x;
    state.panY = drag.panY + ev.clientY - drag.y;
    draw();
  });
  const endDrag = () => { drag = null; stage.classList.remove("dragging"); };
  stage.addEventListener("pointerup", endDrag);
  stage.addEventListener("pointercancel", endDrag);
  stage.addEventListener("dblclick", () => { fitView(); draw(); });

  const centre = () => { const r = stage.getBoundingClientRect(); return [r.width / 2, r.height / 2]; };
  stage.addEventListener("keydown", (ev) => {
    if (ev.key === "+" || ev.key === "=") zoomAt(1.25, ...centre());
    else if (ev.key === "-") zoomAt(0.8, ...centre());
    else if (ev.key === "0") { fitView(); draw(); }
  });
  $("zoom-in").addEventListener("click", () => zoomAt(1.25, ...centre()));
  $("zoom-out").addEventListener("click", () => zoomAt(0.8, ...centre()));
  $("zoom-fit").addEventListener("click", () => { fitView(); draw(); });

  // Drag and drop a scan anywhere on the viewer.
  stage.addEventListener("dragover", (ev) => { ev.preventDefault(); stage.classList.add("drop"); });
  stage.addEventListener("dragleave", () => stage.classList.remove("drop"));
  stage.addEventListener("drop", (ev) => {
    ev.preventDefault();
    stage.classList.remove("drop");
    const file = ev.dataTransfer.files[0];
    if (file) detectFile(file);
  });

  window.addEventListener("resize", () => { resizeCanvas(); draw(); });
}

// ------------------------------------------------------------ wiring

function setUpControls() {
  $("file").addEventListener("change", (ev) => {
    const file = ev.target.files[0];
    if (file) detectFile(file);
    ev.target.value = "";  // picking the same file again re-runs it
  });
  $("conf").addEventListener("input", (ev) => {
    state.conf = Number(ev.target.value);
    draw();
  });
  $("preset").addEventListener("change", (ev) => {
    const preset = ev.target.value;
    if (preset === "custom") return;
    for (const box of document.querySelectorAll("input[data-filter]")) {
      box.checked = PRESETS[preset].filters.includes(box.dataset.filter);
    }
    for (const [id, value] of Object.entries(PRESETS[preset].values || {})) $(id).value = value;
    filtersChanged();
  });
  for (const input of document.querySelectorAll("#filters input")) {
    input.addEventListener("input", () => {
      if (input.type === "checkbox") $("preset").value = "custom";
      filtersChanged();
    });
  }
  $("spec").addEventListener("change", () => {
    $("preset").value = "custom";
    filtersChanged(true);
  });
  for (const link of [$("dl-json"), $("dl-png")]) {
    link.addEventListener("click", (ev) => { if (!state.scan) ev.preventDefault(); });
  }
}

resizeCanvas();
setUpViewer();
setUpControls();
syncOutputs();
draw();
loadModels();
