"""The labelling page: one self-contained HTML document with inline CSS and JavaScript.

It asks the server for the state (``GET /api/state``), shows the current pair's face and
cartoon side by side, and posts each decision (``POST /api/label``, ``POST /api/undo``). The
server decides which pair comes next, so a reload or a second tab always shows the truth.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>toonforge cleaner: label pairs</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0; background: #1e1f22; color: #eee; }
  header { display: flex; gap: 2em; align-items: baseline; padding: 0.6em 1.2em;
           background: #2b2d31; }
  header h1 { font-size: 1.1em; margin: 0; }
  .count { font-variant-numeric: tabular-nums; }
  .good { color: #7bd88f; } .bad { color: #ff6e6e; } .skip { color: #aaa; }
  main { display: flex; gap: 1.5em; justify-content: center; padding: 1em; }
  figure { margin: 0; text-align: center; }
  figure img { width: min(42vw, 70vh); height: min(42vw, 70vh); object-fit: contain;
               image-rendering: pixelated; background: #000; border: 4px solid transparent; }
  figure.judged img { border-color: #f0c75e; }
  figcaption { margin-top: 0.3em; color: #bbb; }
  nav { display: flex; gap: 1em; justify-content: center; padding-bottom: 1em; }
  button { font-size: 1.1em; padding: 0.5em 1.4em; border-radius: 6px; border: 0;
           cursor: pointer; }
  #good { background: #2f7d43; color: #fff; } #bad { background: #a33a3a; color: #fff; }
  #skip, #undo { background: #4a4d55; color: #fff; }
  #message { text-align: center; min-height: 1.4em; color: #f0c75e; }
</style>
</head>
<body>
<header>
  <h1>Label pairs: is the <span id="side">cartoon</span> good?</h1>
  <span class="count good">good <b id="count-good">0</b> / <span class="target">0</span></span>
  <span class="count bad">bad <b id="count-bad">0</b> / <span class="target">0</span></span>
  <span class="count skip">skipped <b id="count-skip">0</b></span>
  <span class="count">pair <b id="position">-</b> of <b id="total">0</b>:
    <code id="pair-id">-</code></span>
</header>
<main>
  <figure id="fig-A"><img id="img-A" alt="face"><figcaption>face</figcaption></figure>
  <figure id="fig-B"><img id="img-B" alt="cartoon"><figcaption>cartoon</figcaption></figure>
</main>
<nav>
  <button id="good" data-label="good">good (g)</button>
  <button id="bad" data-label="bad">bad (b)</button>
  <button id="skip" data-label="skip">skip (s)</button>
  <button id="undo">undo (u)</button>
</nav>
<div id="message"></div>
<script>
"use strict";
let state = null;

function show(next) {
  state = next;
  document.getElementById("side").textContent = state.side;
  for (const label of ["good", "bad", "skip"]) {
    document.getElementById("count-" + label).textContent = state.counts[label];
  }
  for (const el of document.querySelectorAll(".target")) el.textContent = state.target;
  document.getElementById("total").textContent = state.total;
  document.getElementById("position").textContent = state.decided + (state.current ? 1 : 0);
  document.getElementById("pair-id").textContent = state.current || "-";
  for (const folder of ["A", "B"]) {
    const figure = document.getElementById("fig-" + folder);
    const img = document.getElementById("img-" + folder);
    const has = state.current !== null && state.sides.includes(folder);
    figure.style.display = has ? "" : "none";
    figure.classList.toggle("judged", state.judged.includes(folder));
    if (has) img.src = "/image/" + folder + "/" + encodeURIComponent(state.current);
  }
  let message = "";
  if (state.current === null) message = "All pairs are labelled. You can close this tab.";
  else if (state.counts.good >= state.target && state.counts.bad >= state.target) {
    message = "Target reached for both classes; keep going or close this tab.";
  }
  document.getElementById("message").textContent = message;
}

async function call(method, path, body) {
  const options = { method: method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = await response.json();
  if (!response.ok && response.status !== 409) throw new Error(data.error || response.status);
  if (response.status === 409) document.getElementById("message").textContent = data.error;
  return data.state || data;
}

// Actions run one after another, so keys pressed quickly are all applied in order.
let queue = Promise.resolve();

async function run(action) {
  try {
    if (action === "undo") show(await call("POST", "/api/undo", {}));
    else if (state !== null && state.current !== null) {
      show(await call("POST", "/api/label", { id: state.current, label: action }));
    }
  } catch (error) {
    document.getElementById("message").textContent = "error: " + error.message;
  }
}

function act(action) {
  queue = queue.then(() => run(action));
}

const KEYS = { g: "good", b: "bad", s: "skip", u: "undo" };
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const action = KEYS[event.key.toLowerCase()];
  if (action) { event.preventDefault(); act(action); }
});
for (const id of ["good", "bad", "skip", "undo"]) {
  document.getElementById(id).addEventListener("click", () => act(id));
}
queue = call("GET", "/api/state").then(show).catch((error) => {
  document.getElementById("message").textContent = "error: " + error.message;
});
</script>
</body>
</html>
"""
