// The playground: draw on #pad; the drawing goes to this server's POST /v1/classify as a PNG at
// most every INTERVAL ms while drawing, with the layers whose panels are open, and the answer
// is drawn: the digit, the ten probabilities, the not-a-digit verdict, the 28x28 input and
// every layer, and for the mlp its strongest connections. Nothing is fetched from anywhere but
// this server.
"use strict";

const INTERVAL = 100; // ms between two requests while drawing, at most
const UNSURE_MARGIN = 0.2; // top-two probability margin below which the page says "not sure"
const STROKE = 18; // pen width on the 280x280 pad

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const pen = pad.getContext("2d");
const state = {
  model: null, // {name, version, layers: [names], shapes, links: [{source, target, weights}]}
  drawn: false,
  inFlight: false,
  again: false, // the drawing changed while a request was out
  last: 0,
  timer: 0,
  drawing: 0, // counts clears: an answer about an earlier drawing is not shown
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
  clearTimeout(state.timer);
  state.drawing++;
  state.again = false;
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
  const drawing = state.drawing;
  try {
    const png = await new Promise((done) => pad.toBlob(done, "image/png"));
    const layers = new Set(["input", ...state.model.layers.filter((n) => !state.closed.has(n))]);
    if (state.model.links.length && !state.closed.has(NETWORK)) {
      for (const link of state.model.links) layers.add(link.source);
    }
    const query = new URLSearchParams({
      model: state.model.name,
      version: String(state.model.version),
      layers: [...layers].join(","),
      layer_data: "base64",
    });
    const response = await fetch(`/v1/classify?${query}`, {
      method: "POST",
      headers: { "Content-Type": "image/png" },
      body: png,
    });
    const answer = await response.json();
    if (drawing !== state.drawing) return; // the pad was cleared meanwhile
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
  drawNetwork(null);
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
  const seen = { output: p };
  for (const layer of result.layers || []) {
    const values = floats(layer.data);
    seen[layer.name] = values;
    if (layer.name === "input") {
      paint($("input"), values, 28, 28);
    } else {
      drawLayer(layer.name, layer.shape, values);
    }
  }
  drawNetwork(seen, result.digit);
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
  const [lo, hi] = low === null ? range(values) : [low, high];
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

// ---- the mlp's connections, drawn as the lesson draws them ----------------------------------
// Columns of units (hidden1, hidden2, the ten digits), each lit by its activation; into every
// unit, its STRONGEST incoming connections for this drawing (weight x the activation it
// carries), blue where they excite, red where they inhibit, wider the stronger. Before a
// drawing, the strongest weights.

const NETWORK = "network"; // the panel's key in state.closed
const STRONGEST = 3;

function drawNetwork(seen, digit = -1) {
  const canvas = document.querySelector(`[data-view="${NETWORK}"] canvas`);
  if (!canvas) return;
  const links = state.model.links;
  const columns = [links[0].source, ...links.map((link) => link.target)];
  const sizes = [links[0].weights[0].length, ...links.map((link) => link.weights.length)];
  const activation = (column, unit) => (seen && seen[column] ? seen[column][unit] : null);
  const w = canvas.width;
  const h = canvas.height;
  const x = (c) => 40 + (c * (w - 80)) / (columns.length - 1);
  const y = (c, unit) => 24 + ((unit + 0.5) * (h - 32)) / sizes[c];
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, w, h);
  let edges = 0;
  let into = ""; // what feeds the answer most, in words
  links.forEach((link, c) => {
    const chosen = link.weights.map((row, target) =>
      row
        .map((weight, source) => [weight * (activation(columns[c], source) ?? 1), source])
        .sort((a, b) => Math.abs(b[0]) - Math.abs(a[0]))
        .slice(0, STRONGEST)
        .map(([strength, source]) => ({ strength, source, target })),
    );
    const strongest = Math.max(...chosen.flat().map((e) => Math.abs(e.strength))) || 1;
    for (const edge of chosen.flat()) {
      g.strokeStyle = edge.strength >= 0 ? "rgba(47,111,222,0.85)" : "rgba(192,57,43,0.85)";
      g.lineWidth = 0.5 + (3.5 * Math.abs(edge.strength)) / strongest;
      g.beginPath();
      g.moveTo(x(c), y(c, edge.source));
      g.lineTo(x(c + 1), y(c + 1, edge.target));
      g.stroke();
      edges++;
    }
    if (c === links.length - 1 && digit >= 0) {
      into = chosen[digit]
        .map((e) => `${columns[c]} unit ${e.source} (${e.strength >= 0 ? "+" : "−"}${Math.abs(e.strength).toFixed(2)})`)
        .join(", ");
    }
  });
  columns.forEach((column, c) => {
    g.fillStyle = "#888";
    g.font = "12px system-ui, sans-serif";
    g.textAlign = "center";
    g.fillText(column === "output" ? "digit" : column, x(c), 12);
    for (let unit = 0; unit < sizes[c]; unit++) {
      const level = Math.round(255 * Math.min(1, Math.max(0, activation(column, unit) ?? 0)));
      g.fillStyle = `rgb(${level},${level},${level})`;
      g.strokeStyle = "#888";
      g.lineWidth = 1;
      g.beginPath();
      g.arc(x(c), y(c, unit), 6, 0, 2 * Math.PI);
      g.fill();
      g.stroke();
      // The digits right of their column, the units' numbers (as the note names them) left.
      const output = column === "output";
      g.fillStyle = output && unit === digit ? "#1e8449" : "#888";
      g.font = output ? "12px system-ui, sans-serif" : "9px system-ui, sans-serif";
      g.textAlign = output ? "left" : "right";
      g.fillText(String(unit), x(c) + (output ? 10 : -9), y(c, unit) + 4);
    }
  });
  canvas.dataset.edges = String(edges);
  const note = document.querySelector(`[data-view="${NETWORK}"] .note`);
  note.textContent = into
    ? `Strongest into ${digit}: ${into}.`
    : "Before a drawing: the strongest weights into each unit.";
  canvas.setAttribute("aria-label", `Connections between ${columns.join(", ")}. ${note.textContent}`);
}

// A panel the learner can close; a closed one is not asked for.
function panel(key, title, body) {
  const details = document.createElement("details");
  details.className = "layer";
  details.open = !state.closed.has(key);
  details.innerHTML = `<summary>${title}</summary>${body}`;
  details.addEventListener("toggle", () => {
    if (details.open) state.closed.delete(key);
    else state.closed.add(key);
    schedule(true);
  });
  return details;
}

function buildPanels(model) {
  const panels = model.layers.map((name) => {
    const shape = model.shapes[name].join(" x ");
    const layer = panel(name, `${name} <span class="shape">${shape}</span>`, '<div class="body"></div>');
    layer.dataset.layer = name;
    return layer;
  });
  if (model.links.length) {
    const network = panel(
      NETWORK,
      'connections <span class="shape">the strongest into each unit</span>',
      '<canvas class="network" width="600" height="330" role="img"></canvas><p class="note hint"></p>',
    );
    network.dataset.view = NETWORK;
    panels.push(network);
  }
  $("layers").replaceChildren(...panels);
  drawNetwork(null);
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
  await choose(picker.value);
}

async function choose(value) {
  const model = served.find((m) => `${m.name}/${m.version}` === value);
  const chosen = {
    name: model.name,
    version: model.version,
    layers: model.layers.map((layer) => layer.name),
    shapes: Object.fromEntries(model.layers.map((layer) => [layer.name, layer.shape])),
    links: [],
  };
  state.model = chosen;
  if ((model.connections || []).length) {
    const query = new URLSearchParams({ version: String(model.version) });
    const response = await fetch(`/v1/models/${encodeURIComponent(model.name)}/connections?${query}`);
    if (!response.ok) throw new Error(`connections: ${response.status}`);
    chosen.links = (await response.json()).connections;
    if (state.model !== chosen) return; // another model was picked meanwhile
  }
  buildPanels(chosen);
  say(`${model.name} v${model.version} (${model.architecture}): draw a digit.`);
  schedule(true);
}

$("model").addEventListener("change", (event) =>
  choose(event.target.value).catch((error) => say(`Could not load the model: ${error.message}`)),
);

clearPad();
showEmpty();
loadModels().catch((error) => say(`Could not load the models: ${error.message}`));
