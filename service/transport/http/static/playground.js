// The playground: draw on #pad; the drawing goes to this server's POST /v1/classify as a PNG at
// most every INTERVAL ms while drawing, with the layers whose panels are open, and the answer
// is drawn: the digit, the ten probabilities, the not-a-digit verdict, the 28x28 input and
// every layer. Nothing is fetched from anywhere but this server.
"use strict";

const INTERVAL = 100; // ms between two requests while drawing, at most
const UNSURE_MARGIN = 0.2; // top-two probability margin below which the page says "not sure"
const STROKE = 18; // pen width on the 280x280 pad

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const pen = pad.getContext("2d");
const state = {
  model: null, // {name, version, layers: [names]}
  drawn: false,
  inFlight: false,
  again: false, // the drawing changed while a request was out
  last: 0,
  timer: 0,
  closed: new Set(), // layer panels the learner closed: not asked for
};

function clearPad() {
  pen.fillStyle = "#fff";
  pen.fillRect(0, 0, pad.width, pad.height);
  state.drawn = false;
}

// ---- drawing: pointer events cover mouse, pen and touch -------------------------------------

let drawing = null; // the last point of the stroke being drawn

function point(event) {
  const box = pad.getBoundingClientRect();
  return [
    ((event.clientX - box.left) * pad.width) / box.width,
    ((event.clientY - box.top) * pad.height) / box.height,
  ];
}

function strokeTo([x, y]) {
  pen.strokeStyle = "#000";
  pen.lineWidth = STROKE;
  pen.lineCap = "round";
  pen.lineJoin = "round";
  pen.beginPath();
  pen.moveTo(drawing[0], drawing[1]);
  pen.lineTo(x, y);
  pen.stroke();
  drawing = [x, y];
  state.drawn = true;
  schedule();
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  drawing = point(event);
  strokeTo(drawing); // a dot
});
pad.addEventListener("pointermove", (event) => {
  if (drawing) strokeTo(point(event));
});
for (const name of ["pointerup", "pointercancel"]) {
  pad.addEventListener(name, () => {
    if (drawing) {
      drawing = null;
      schedule(true);
    }
  });
}

// Keyboard: Delete or Escape clears the pad.
pad.addEventListener("keydown", (event) => {
  if (event.key === "Delete" || event.key === "Escape" || event.key === "Backspace") {
    event.preventDefault();
    reset();
  }
});

function reset() {
  clearPad();
  showEmpty();
}

$("clear").addEventListener("click", reset);

// ---- an image file, chosen or dropped, goes on the pad ---------------------------------------

async function putImage(file) {
  if (!file || !file.type.startsWith("image/")) {
    say("That is not an image file.");
    return;
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    say("That image could not be read.");
    return;
  }
  clearPad();
  const scale = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
  const w = bitmap.width * scale;
  const h = bitmap.height * scale;
  pen.drawImage(bitmap, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  state.drawn = true;
  schedule(true);
}

$("file").addEventListener("change", (event) => putImage(event.target.files[0]));
pad.addEventListener("dragover", (event) => {
  event.preventDefault();
  pad.classList.add("dropping");
});
pad.addEventListener("dragleave", () => pad.classList.remove("dropping"));
pad.addEventListener("drop", (event) => {
  event.preventDefault();
  pad.classList.remove("dropping");
  putImage(event.dataTransfer.files[0]);
});

// ---- asking the server: one request out at a time, at most every INTERVAL ms -----------------

function schedule(now = false) {
  if (!state.model || !state.drawn) return;
  if (state.inFlight) {
    state.again = true;
    return;
  }
  clearTimeout(state.timer);
  const wait = now ? 0 : Math.max(0, state.last + INTERVAL - performance.now());
  state.timer = setTimeout(ask, wait);
}

function say(text) {
  $("status").textContent = text;
}

async function ask() {
  state.inFlight = true;
  state.again = false;
  state.last = performance.now();
  try {
    const png = await new Promise((done) => pad.toBlob(done, "image/png"));
    const layers = ["input", ...state.model.layers.filter((name) => !state.closed.has(name))];
    const query = new URLSearchParams({
      model: state.model.name,
      version: String(state.model.version),
      layers: layers.join(","),
      layer_data: "base64",
    });
    const response = await fetch(`/v1/classify?${query}`, {
      method: "POST",
      headers: { "Content-Type": "image/png" },
      body: png,
    });
    const answer = await response.json();
    if (!response.ok) {
      say(`The server said: ${answer.error || response.status}`);
      return;
    }
    show(answer.results[0]);
    say(`${state.model.name} v${answer.version} answered.`);
  } catch (error) {
    say(`No answer from the server (${error.message}).`);
  } finally {
    state.inFlight = false;
    if (state.again) schedule();
  }
}

// ---- the answer -------------------------------------------------------------------------------

function showEmpty() {
  $("digit").textContent = "?";
  $("confidence").textContent = "Draw something.";
  $("not-digit").textContent = "";
  $("not-digit").classList.remove("flagged");
  $("unsure").textContent = "";
  drawBars(new Array(10).fill(0), -1);
  paint($("input"), new Float32Array(28 * 28), 28, 28);
  for (const canvas of document.querySelectorAll("#layers canvas")) {
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  }
}

function show(result) {
  const p = result.probabilities;
  const verdict = result.not_digit;
  const isDigit = !verdict || verdict.is_digit;
  $("digit").textContent = isDigit ? String(result.digit) : "✗";
  $("confidence").textContent = `${result.digit} with ${(100 * result.confidence).toFixed(1)}%`;
  const note = $("not-digit");
  if (verdict) {
    note.textContent = isDigit
      ? `Looks like a digit (not-a-digit score ${verdict.score.toFixed(3)}, threshold ${verdict.threshold.toFixed(3)}).`
      : `That does not look like a digit (not-a-digit score ${verdict.score.toFixed(3)}, over ${verdict.threshold.toFixed(3)}).`;
    note.classList.toggle("flagged", !isDigit);
  }
  const order = p.map((value, digit) => [value, digit]).sort((a, b) => b[0] - a[0]);
  $("unsure").textContent =
    isDigit && result.top2_margin < UNSURE_MARGIN
      ? `Not sure: ${order[0][1]} or ${order[1][1]}?`
      : "";
  drawBars(p, result.digit);
  for (const layer of result.layers || []) {
    const values = floats(layer.data);
    if (layer.name === "input") {
      paint($("input"), values, 28, 28);
    } else {
      drawLayer(layer.name, layer.shape, values);
    }
  }
}

function drawBars(p, top) {
  const bars = $("bars");
  if (!bars.children.length) {
    for (let digit = 0; digit < 10; digit++) {
      const item = document.createElement("li");
      item.innerHTML = `<span>${digit}</span><span class="bar"></span><span class="value"></span>`;
      bars.append(item);
    }
  }
  [...bars.children].forEach((item, digit) => {
    item.classList.toggle("top", digit === top);
    item.querySelector(".bar").style.width = `${(100 * p[digit]).toFixed(1)}%`;
    item.querySelector(".value").textContent = `${(100 * p[digit]).toFixed(1)}%`;
    item.setAttribute("aria-label", `${digit}: ${(100 * p[digit]).toFixed(1)}%`);
  });
}

function floats(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new Float32Array(bytes.buffer);
}

// Grey levels for `values` (h x w), scaled so the layer's own range fills black to white.
function paint(canvas, values, h, w, low = null, high = null) {
  let lo = low;
  let hi = high;
  if (lo === null) {
    lo = Infinity;
    hi = -Infinity;
    for (const v of values) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
  }
  const span = hi - lo || 1;
  const image = new ImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    const level = Math.round((255 * (values[i] - lo)) / span);
    image.data.set([level, level, level, 255], 4 * i);
  }
  canvas.width = w;
  canvas.height = h;
  canvas.getContext("2d").putImageData(image, 0, 0);
}

function range(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  return [lo, hi];
}

// A layer's panel body: feature maps as a grid (C x H x W), a unit vector as a strip, a small
// one (the mlp's 16 hidden units) as circles that light up.
function drawLayer(name, shape, values) {
  const body = document.querySelector(`[data-layer="${name}"] .body`);
  if (!body) return;
  const [lo, hi] = range(values);
  if (shape.length === 3) {
    const [c, h, w] = shape;
    if (body.children.length !== c) {
      body.className = "body maps";
      body.replaceChildren(...Array.from({ length: c }, () => document.createElement("canvas")));
    }
    [...body.children].forEach((canvas, i) =>
      paint(canvas, values.subarray(i * h * w, (i + 1) * h * w), h, w, lo, hi),
    );
    return;
  }
  const n = values.length;
  const small = n <= 32;
  if (body.children.length !== n) {
    body.className = small ? "body units" : "body strip";
    body.replaceChildren(...Array.from({ length: n }, () => document.createElement("span")));
  }
  [...body.children].forEach((cell, i) => {
    const level = Math.round((255 * (values[i] - lo)) / (hi - lo || 1));
    cell.style.background = `rgb(${level},${level},${level})`;
    if (small) cell.title = `unit ${i}: ${values[i].toFixed(3)}`;
  });
}

function buildPanels(model) {
  const panels = $("layers");
  panels.replaceChildren(
    ...model.layers.map((name) => {
      const panel = document.createElement("details");
      panel.className = "layer";
      panel.dataset.layer = name;
      panel.open = !state.closed.has(name);
      const shape = model.shapes[name].join(" x ");
      panel.innerHTML = `<summary>${name} <span class="shape">${shape}</span></summary><div class="body"></div>`;
      panel.addEventListener("toggle", () => {
        if (panel.open) state.closed.delete(name);
        else state.closed.add(name);
        schedule(true);
      });
      return panel;
    }),
  );
}

// ---- models: every version served, with its layers (GET /v1/models) ---------------------------

let served = [];

async function loadModels() {
  const response = await fetch("/v1/models");
  if (!response.ok) throw new Error(`models: ${response.status}`);
  served = (await response.json()).models;
  served.sort((a, b) => a.name.localeCompare(b.name) || b.version - a.version);
  const picker = $("model");
  picker.replaceChildren(
    ...served.map((model) => {
      const option = document.createElement("option");
      option.value = `${model.name}/${model.version}`;
      option.textContent = `${model.name} v${model.version}`;
      return option;
    }),
  );
  const preferred = served.find((model) => model.name === "convnet") || served[0];
  if (!preferred) throw new Error("the server serves no model");
  picker.value = `${preferred.name}/${preferred.version}`;
  choose(picker.value);
}

function choose(value) {
  const model = served.find((m) => `${m.name}/${m.version}` === value);
  state.model = {
    name: model.name,
    version: model.version,
    layers: model.layers.map((layer) => layer.name),
    shapes: Object.fromEntries(model.layers.map((layer) => [layer.name, layer.shape])),
  };
  buildPanels(state.model);
  say(`${model.name} v${model.version} (${model.architecture}): draw a digit.`);
  schedule(true);
}

$("model").addEventListener("change", (event) => choose(event.target.value));

clearPad();
showEmpty();
loadModels().catch((error) => say(`Could not load the models: ${error.message}`));
