// The two-pixel figures, explorable: the build's own classifiers evaluated in the page.
// Data (written by figgen/figures/attacks.py and chaos.py through ctx.save_interactive):
//   axes: where the plot is in the PNG (fractions) and its limits (grey levels);
//   regions: the true regions (figgen/twopixel/world.py); model: an MLP's layers as
//   little-endian float32 in base64 (figgen/twopixel/models.py: input / 255, then 2x - 1);
//   votes: how many of an ensemble's models say cat, at each of the 256 x 256 two-pixel
//   images (chaos: its 72 models, 152,400 weights, would not fit the 30 KB; the table is
//   their exact answer at every image the probe can stand on).
// The maths follows PyTorch's float32 (Math.fround after each operation), so the page's
// P(cat) and attacks are the build's, not an approximation of them.

const f = Math.fround;
const SVG = "http://www.w3.org/2000/svg";
const CAT = 0;
const DOG = 1;
const NAMES = { [-1]: "neither", 0: "cat", 1: "dog" };

function floats(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new Float32Array(bytes.buffer);
}

// erf to about 1e-7 (Abramowitz and Stegun 7.1.26 is too coarse): a series, then a fraction.
function erf(x) {
  const t = Math.abs(x);
  if (t < 2.5) {
    let sum = t, term = t;
    for (let n = 1; n < 60; n++) {
      term *= -t * t / n;
      sum += term / (2 * n + 1);
    }
    return Math.sign(x) * Math.min(1, (2 / Math.sqrt(Math.PI)) * sum);
  }
  let frac = 0;
  for (let n = 40; n > 0; n--) frac = (n / 2) / (t + frac);
  return Math.sign(x) * (1 - Math.exp(-t * t) / Math.sqrt(Math.PI) / (t + frac));
}

const ACTIVATIONS = {
  sin: [(z) => f(Math.sin(z)), (z) => Math.cos(z)],
  tanh: [(z) => f(Math.tanh(z)), (z) => 1 - Math.tanh(z) ** 2],
  relu: [(z) => (z > 0 ? z : 0), (z) => (z > 0 ? 1 : 0)],
  gelu: [(z) => f(0.5 * z * (1 + erf(z / Math.SQRT2))),
    (z) => 0.5 * (1 + erf(z / Math.SQRT2)) + z * Math.exp(-z * z / 2) / Math.sqrt(2 * Math.PI)],
};

/** An MLP from its exported layers: weights [out, in] row-major, biases [out]. */
export function loadModel(spec) {
  const layers = spec.layers.map((l) => ({ w: floats(l.weight), b: floats(l.bias), n: l.in, m: l.out }));
  return { layers, act: ACTIVATIONS[spec.activation] };
}

/** Model input of a grey-level point, as torch makes it: float32, divided by 255. */
export function toInput(p1, p2) {
  return [f(f(p1) / 255), f(f(p2) / 255)];
}

// Every layer's pre-activations z and outputs h, from an input in [0, 1].
function forward(model, x) {
  let h = [f(2 * x[0] - 1), f(2 * x[1] - 1)];
  const trace = [];
  model.layers.forEach((layer, i) => {
    const z = new Float32Array(layer.m);
    for (let o = 0; o < layer.m; o++) {
      let s = 0;
      for (let k = 0; k < layer.n; k++) s = f(s + f(h[k] * layer.w[o * layer.n + k]));
      z[o] = f(s + layer.b[o]);
    }
    const last = i === model.layers.length - 1;
    trace.push({ input: h, z });
    h = last ? z : z.map(model.act[0]);
  });
  return { logits: h, trace };
}

/** The model's logits [cat, dog] at an input in [0, 1]. */
export function logits(model, x) {
  return Array.from(forward(model, x).logits);
}

/** P(cat) at an input in [0, 1]: the softmax's first column. */
export function pCat(model, x) {
  const [a, b] = logits(model, x);
  return 1 / (1 + Math.exp(b - a));
}

/** The class the model gives an input: cat (0) unless dog's logit is larger. */
export function predict(model, x) {
  const [a, b] = logits(model, x);
  return b > a ? DOG : CAT;
}

/** The cross-entropy's gradient w.r.t. the input, for a label (figgen.attacks' input_gradient). */
export function inputGradient(model, x, label) {
  const { logits: out, trace } = forward(model, x);
  const p = 1 / (1 + Math.exp(out[1] - out[0]));
  let grad = [p - (label === CAT ? 1 : 0), 1 - p - (label === DOG ? 1 : 0)];
  for (let i = model.layers.length - 1; i >= 0; i--) {
    const layer = model.layers[i];
    const last = i === model.layers.length - 1;
    const dz = last ? grad : grad.map((g, o) => g * model.act[1](trace[i].z[o]));
    const below = new Array(layer.n).fill(0);
    for (let o = 0; o < layer.m; o++) {
      for (let k = 0; k < layer.n; k++) below[k] += dz[o] * layer.w[o * layer.n + k];
    }
    grad = below;
  }
  return [2 * grad[0], 2 * grad[1]]; // through the centring, 2x - 1
}

const clamp01 = (v) => Math.min(1, Math.max(0, v));

/** FGSM from an input in [0, 1] (figgen/attacks/fgsm.py): one step of eps along the sign. */
export function fgsm(model, x, label, eps) {
  const g = inputGradient(model, x, label);
  return x.map((v, i) => clamp01(f(v + f(f(eps) * Math.sign(g[i])))));
}

/** PGD from an input in [0, 1] (figgen/attacks/pgd.py, no random start, no early stop). */
export function pgd(model, x, label, eps, alpha, steps) {
  const lo = x.map((v) => f(v - f(eps)));
  const hi = x.map((v) => f(v + f(eps)));
  let adv = x.slice();
  for (let s = 0; s < steps; s++) {
    const g = inputGradient(model, adv, label);
    adv = adv.map((v, i) => clamp01(Math.min(Math.max(f(v + f(f(alpha) * Math.sign(g[i]))), lo[i]), hi[i])));
  }
  return adv;
}

/** The true class of a grey-level point: in the cat region, the dog region, or neither (-1). */
export function trueClass(regions, p1, p2) {
  let found = -1;
  for (const r of regions) {
    const rad = (r.angle * Math.PI) / 180;
    const dx = p1 - r.center[0], dy = p2 - r.center[1];
    const u = (Math.cos(rad) * dx + Math.sin(rad) * dy) / r.axes[0];
    const v = (-Math.sin(rad) * dx + Math.cos(rad) * dy) / r.axes[1];
    const phi = Math.atan2(v, u);
    const edge = 1 + r.wobble.reduce((s, [a, k, ph]) => s + a * Math.sin(k * phi + ph), 0);
    if (Math.hypot(u, v) / edge < 1) found = r.class; // dog wins a tie, as in world.py
  }
  return found;
}

/** Where a grey-level point is in the image, in its natural pixels [x, y]. */
export function toPixels(axes, size, p1, p2) {
  const [x0, x1] = axes.xlim, [y0, y1] = axes.ylim;
  const fx = axes.left + ((p1 - x0) / (x1 - x0)) * (axes.right - axes.left);
  const fy = axes.bottom - ((p2 - y0) / (y1 - y0)) * (axes.bottom - axes.top);
  return [fx * size[0], fy * size[1]];
}

function fromPixels(axes, size, px, py) {
  const [x0, x1] = axes.xlim, [y0, y1] = axes.ylim;
  const fx = px / size[0], fy = py / size[1];
  const p1 = x0 + ((fx - axes.left) / (axes.right - axes.left)) * (x1 - x0);
  const p2 = y0 + ((axes.bottom - fy) / (axes.bottom - axes.top)) * (y1 - y0);
  return [Math.min(x1, Math.max(x0, p1)), Math.min(y1, Math.max(y0, p2))];
}

function el(tag, attrs = {}, ns = null) {
  const node = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function votesAt(data, p1, p2) {
  // The vote map's cells are one grey level apart, rows follow pixel 2 (world.grid).
  const n = data.votes.n, i = Math.round((p2 / 255) * (n - 1)), j = Math.round((p1 / 255) * (n - 1));
  return data.votes.counts[i * n + j];
}

function decodeVotes(data) {
  if (data.votes && typeof data.votes.runs === "string") {
    const runs = atob(data.votes.runs), counts = new Uint8Array(data.votes.n ** 2);
    let at = 0;
    for (let i = 0; i < runs.length; i += 2) {
      counts.fill(runs.charCodeAt(i + 1), at, at + runs.charCodeAt(i));
      at += runs.charCodeAt(i);
    }
    data.votes.counts = counts;
  }
}

function describe(model, data, p) {
  const x = toInput(p[0], p[1]);
  const where = NAMES[trueClass(data.regions, p[0], p[1])];
  const head = `(${p[0].toFixed(0)}, ${p[1].toFixed(0)}), true region: ${where}`;
  if (!model) {
    const v = votesAt(data, p[0], p[1]);
    return `${head}; ${v} of ${data.votes.models} models call it a cat.`;
  }
  const pc = pCat(model, x);
  return `${head}; the model says ${NAMES[predict(model, x)]}, P(cat) = ${(100 * pc).toFixed(1)}%.`;
}

/** Turn a figure's static image into a probe of the model, in place, on the same axes. */
export function enhance(figure, data) {
  decodeVotes(data);
  const img = figure.querySelector("img");
  const model = data.model ? loadModel(data.model) : null;
  const size = [Number(img.getAttribute("width")), Number(img.getAttribute("height"))];
  const id = figure.id || "figgen";
  // Chaos counts votes per two-pixel image: the probe stands on whole grey levels, the images
  // its table covers, so the count shown is the ensemble's own at the point drawn.
  const snap = model ? (p) => p : (p) => p.map(Math.round);
  const state = { p: snap(data.start ? data.start.slice() : [128, 128]), attack: "pgd", eps: data.eps_grey || 24 };

  const frame = el("div", { class: "figgen-explore" });
  frame.style.position = "relative";
  // The whole <picture>, when there is one: an <img> taken out of it loses its dark render.
  const picture = img.parentElement.tagName === "PICTURE" ? img.parentElement : img;
  picture.replaceWith(frame);
  frame.append(picture);
  img.style.display = "block";
  const svg = el("svg", {
    viewBox: `0 0 ${size[0]} ${size[1]}`, preserveAspectRatio: "none", tabindex: 0, role: "application",
    "aria-label": "Probe point: drag it, or move it with the arrow keys (Shift: 10 grey levels)",
    "aria-describedby": `${id}-readout`,
  }, SVG);
  Object.assign(svg.style, { position: "absolute", touchAction: "none", cursor: "crosshair" });
  const defs = el("defs", {}, SVG);
  const head = el("marker", { id: `${id}-head`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" }, SVG);
  head.append(el("path", { d: "M0,0 L10,5 L0,10 z", fill: "#000" }, SVG));
  defs.append(head);
  const arrow = el("line", { stroke: "#000", "stroke-width": 2.5, "marker-end": `url(#${id}-head)` }, SVG);
  const end = el("circle", { r: 6, fill: "#fff", stroke: "#000", "stroke-width": 2.5 }, SVG);
  const probe = el("circle", { r: 8, fill: "#ffd400", stroke: "#000", "stroke-width": 2.5, class: "figgen-probe" }, SVG);
  svg.append(defs, arrow, end, probe);
  frame.append(svg);
  // Over the image's pixels exactly: a theme may pad or border it (a card), and it scales.
  const fit = () => {
    const cs = getComputedStyle(img), px = (name) => parseFloat(cs[name]) || 0;
    const left = px("paddingLeft") + px("borderLeftWidth"), top = px("paddingTop") + px("borderTopWidth");
    Object.assign(svg.style, {
      left: `${img.offsetLeft + left}px`, top: `${img.offsetTop + top}px`,
      width: `${img.clientWidth - px("paddingLeft") - px("paddingRight")}px`,
      height: `${img.clientHeight - px("paddingTop") - px("paddingBottom")}px`,
    });
  };
  fit();
  new ResizeObserver(fit).observe(img);

  const panel = el("div", { class: "figgen-explore-controls" });
  const readout = el("p", { id: `${id}-readout`, "aria-live": "polite", class: "figgen-readout" });
  panel.append(readout);
  if (model) {
    const choose = el("select", { id: `${id}-attack` });
    for (const [value, text] of [["pgd", `PGD (${data.steps} steps)`], ["fgsm", "FGSM"], ["none", "no attack"]]) {
      const option = el("option", { value });
      option.textContent = text;
      choose.append(option);
    }
    const chooseLabel = el("label", { for: `${id}-attack` });
    chooseLabel.textContent = "Attack ";
    const slider = el("input", { id: `${id}-eps`, type: "range", min: 0, max: 64, step: 1, value: state.eps });
    const sliderLabel = el("label", { for: `${id}-eps` });
    sliderLabel.textContent = " epsilon (grey levels) ";
    const shown = el("output", { for: `${id}-eps` });
    chooseLabel.append(choose);
    sliderLabel.append(slider, shown);
    panel.prepend(chooseLabel, sliderLabel);
    choose.addEventListener("change", () => { state.attack = choose.value; draw(); });
    slider.addEventListener("input", () => { state.eps = Number(slider.value); draw(); });
    state.shown = shown;
  }
  frame.after(panel);

  function place(node, p, cx = "cx", cy = "cy") {
    const [x, y] = toPixels(data.axes, size, p[0], p[1]);
    node.setAttribute(cx, x);
    node.setAttribute(cy, y);
  }

  function draw() {
    place(probe, state.p);
    let text = `Probe at ${describe(model, data, state.p)}`;
    const attacking = model && state.attack !== "none" && state.eps > 0;
    arrow.style.display = end.style.display = attacking ? "" : "none";
    if (state.shown) state.shown.textContent = String(state.eps);
    if (attacking) {
      const x = toInput(state.p[0], state.p[1]);
      const label = predict(model, x);
      const eps = state.eps / 255;
      const adv = state.attack === "fgsm" ? fgsm(model, x, label, eps)
        : pgd(model, x, label, eps, data.alpha_grey / 255, data.steps);
      const q = [adv[0] * 255, adv[1] * 255];
      place(arrow, state.p, "x1", "y1");
      place(arrow, q, "x2", "y2");
      place(end, q);
      const was = trueClass(data.regions, ...state.p), now = trueClass(data.regions, ...q);
      const meaning = was === now ? `its meaning did not change (${NAMES[was]})`
        : `its meaning changed: ${NAMES[was]} to ${NAMES[now]}`;
      const fooled = predict(model, adv) !== label ? "the model's answer flipped" : "the model's answer held";
      text += ` ${state.attack.toUpperCase()} with epsilon ${state.eps} ends at ${describe(model, data, q)} So ${fooled}; ${meaning}.`;
      state.end = q;
    }
    readout.textContent = text;
    state.text = text;
  }

  function toPoint(event) {
    const box = svg.getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * size[0];
    const py = ((event.clientY - box.top) / box.height) * size[1];
    return snap(fromPixels(data.axes, size, px, py));
  }

  let dragging = false;
  svg.addEventListener("pointerdown", (e) => { dragging = true; svg.setPointerCapture(e.pointerId); state.p = toPoint(e); draw(); });
  svg.addEventListener("pointermove", (e) => { if (dragging) { state.p = toPoint(e); draw(); } });
  svg.addEventListener("pointerup", () => { dragging = false; });
  svg.addEventListener("keydown", (e) => {
    const step = e.shiftKey ? 10 : 1;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
    if (!(e.key in moves)) return;
    e.preventDefault();
    const [x0, x1] = data.axes.xlim, [y0, y1] = data.axes.ylim;
    state.p = [Math.min(x1, Math.max(x0, state.p[0] + moves[e.key][0])),
      Math.min(y1, Math.max(y0, state.p[1] + moves[e.key][1]))];
    draw();
  });
  // For tests and for other scripts: move the probe, read what the page says.
  figure.figgen = { set(p1, p2) { state.p = snap([p1, p2]); draw(); }, state: () => ({ ...state, shown: undefined }), probe };
  draw();
}
