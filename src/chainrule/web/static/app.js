// chainrule explorer: the page's behaviour. Hand-written, no build step, no dependencies.
// Everything numeric comes from the server's JSON (/api/trace): this file never computes a gradient.
"use strict";

const $ = (sel) => document.querySelector(sel);

const state = {
  data: null,        // the last successful /api/trace (or /api/step) answer
  fwd: -1,           // index of the last forward step shown
  bwd: -1,           // index of the last backward step shown
  current: null,     // name of the highlighted node
  parseSeq: 0,       // answers to older requests are ignored
  computeSeq: 0,
  gdCount: 0,
  examples: [],
};

// ---------------------------------------------------------------------------------------------
// talking to the server
// ---------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, status, info) {
    super(message);
    this.status = status;
    this.info = info || {};
  }
}

async function api(path, body) {
  let res;
  try {
    res = await fetch(path, body === undefined ? {} : {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError("cannot reach the chainrule server: is `chainrule serve` still running?", 0, {});
  }
  let data = null;
  try {
    data = await res.json();
  } catch (err) {
    throw new ApiError(`the server answered ${res.status} ${res.statusText} without JSON`, res.status, {});
  }
  if (!res.ok) throw new ApiError(data.error || `${res.status} ${res.statusText}`, res.status, data);
  return data;
}

// ---------------------------------------------------------------------------------------------
// formatting numbers (values arrive as numbers, lists, or "NaN"/"Infinity" strings; a long array
// inside a node arrives summarized: {summary, shape, size, head, tail}, its first and last three)
// ---------------------------------------------------------------------------------------------

function fmt(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "string") return v === "Infinity" ? "∞" : v === "-Infinity" ? "−∞" : v;
  if (typeof v === "boolean") return v ? "1" : "0";
  if (typeof v === "object" && v.summary) {
    return `[${[...v.head.map(fmt), "…", ...v.tail.map(fmt)].join(", ")}]`;
  }
  if (Array.isArray(v)) {
    const items = v.length > 8 ? [...v.slice(0, 3).map(fmt), "…", ...v.slice(-3).map(fmt)] : v.map(fmt);
    return `[${items.join(", ")}]`;
  }
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-4 || a >= 1e9)) return v.toExponential(4).replace(/\.?0+e/, "e");
  return String(Number(v.toPrecision(6)));
}

// for putting a value back into an input box: 15 significant digits (float64 keeps 15-17), which
// drops binary noise such as 1.0537999999999998 while staying exact for the worksheet's numbers
function exact(v) {
  if (Array.isArray(v)) return `[${v.map(exact).join(", ")}]`;
  if (typeof v === "string") return v;
  if (typeof v !== "number") return String(v);
  return String(Number(v.toPrecision(15)));
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// ---------------------------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------------------------

function hide(box) { box.hidden = true; box.textContent = ""; }

function clearErrors() {
  $("#expr-error").hidden = true;
  $("#expression").classList.remove("invalid");
  hide($("#run-error"));
  hide($("#gd-error"));
  for (const input of document.querySelectorAll("#values input, #lr")) input.classList.remove("invalid");
}

function showError(err, where) {
  const info = err.info || {};
  const field = info.field || "";
  if (field === "expression" || (field === "" && typeof info.position === "number" && where !== "gd")) {
    const text = $("#expression").value;
    const pos = typeof info.position === "number" ? Math.max(0, Math.min(info.position, text.length)) : null;
    $("#expr-caret").textContent = pos === null ? text : `${text}\n${" ".repeat(pos)}^`;
    $("#expr-message").textContent = pos === null ? err.message : `column ${pos + 1}: ${err.message}`;
    $("#expr-error").hidden = false;
    $("#expression").classList.add("invalid");
    return;
  }
  if (field.startsWith("values.")) {
    const input = document.getElementById(`value-${field.slice(7)}`);
    if (input) input.classList.add("invalid");
  }
  if (field === "lr") $("#lr").classList.add("invalid");
  const box = where === "gd" || field === "lr" ? $("#gd-error") : $("#run-error");
  box.textContent = err.message;
  box.hidden = false;
}

function markStale(on) {
  for (const id of ["#graph", "#source", "#equations"]) $(id).classList.toggle("stale", on);
}

// ---------------------------------------------------------------------------------------------
// the value boxes, one per variable, following the expression as it is typed
// ---------------------------------------------------------------------------------------------

function currentValues() {
  const values = {};
  for (const input of document.querySelectorAll("#values input")) {
    if (input.value.trim() !== "") values[input.dataset.var] = input.value.trim();
  }
  return values;
}

function setVariables(variables, given = {}) {
  const box = $("#values");
  const old = {};
  for (const input of box.querySelectorAll("input")) old[input.dataset.var] = input.value;
  const names = variables.join("\u0000");
  if (box.dataset.names === names && Object.keys(given).length === 0) return;
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.var : null;
  box.replaceChildren();
  for (const name of variables) {
    const value = name in given ? exact(given[name]) : name in old ? old[name] : "1";
    const input = el("input", { type: "text", id: `value-${name}`, value, spellcheck: false, autocomplete: "off",
      "data-var": name });
    input.setAttribute("aria-label", `value of ${name}`);
    fitWidth(input);
    input.addEventListener("input", () => { fitWidth(input); schedule(compute, 300); });
    input.addEventListener("keydown", (e) => { if (e.key === "Enter") compute(); });
    box.append(el("label", {}, `${name} =`, input));
  }
  box.dataset.names = names;
  if (focused && document.getElementById(`value-${focused}`)) document.getElementById(`value-${focused}`).focus();
}

// a value box grows with what it holds (lists), within reason
function fitWidth(input) {
  input.style.width = `${Math.min(42, Math.max(9, input.value.length + 2))}ch`;
}

let timer = null;
function schedule(fn, ms) {
  clearTimeout(timer);
  timer = setTimeout(fn, ms);
}

async function onExpressionInput() {
  const text = $("#expression").value;
  const seq = ++state.parseSeq;
  if (text.trim() === "") {
    clearErrors();
    setVariables([]);
    return;
  }
  try {
    const r = await api("/api/parse", { expression: text });
    if (seq !== state.parseSeq) return;
    $("#expr-error").hidden = true;
    $("#expression").classList.remove("invalid");
    setVariables(r.variables);
    await compute();
  } catch (err) {
    if (seq !== state.parseSeq) return;
    clearErrors();
    showError(err, "expression");
    markStale(true);
  }
}

function mode() { return $("#mode-expanded").checked ? "expanded" : "fused"; }

function request() {
  return { expression: $("#expression").value, values: currentValues(), expand: mode() === "expanded" };
}

async function compute() {
  clearTimeout(timer);
  if ($("#expression").value.trim() === "") return;
  const seq = ++state.computeSeq;
  try {
    const r = await api("/api/trace", request());
    if (seq !== state.computeSeq) return;
    clearErrors();
    show(r);
  } catch (err) {
    if (seq !== state.computeSeq) return;
    clearErrors();
    showError(err, "compute");
    markStale(true);
  }
}

// ---------------------------------------------------------------------------------------------
// showing one traced graph
// ---------------------------------------------------------------------------------------------

// a fresh trace starts with the passes hidden (to step through); revealAll shows every value and
// gradient at once, as after a gradient-descent step, which ran both passes at the new point
function show(r, revealAll = false) {
  state.data = r;
  state.fwd = revealAll ? r.forward.length - 1 : -1;
  state.bwd = revealAll ? r.backward.length - 1 : -1;
  state.current = null;
  markStale(false);
  setVariables(r.variables);
  renderGraph(r);
  renderSource(r);
  renderTable();
  renderStep();
  updateButtons();
}

function renderGraph(r) {
  const box = $("#graph");
  box.replaceChildren();
  if (!r.svg) {
    box.append(el("p", { class: "muted", text: r.svg_error || "no picture" }));
    return;
  }
  // parse as SVG and keep only drawing elements (the server made it, but never trust markup)
  const doc = new DOMParser().parseFromString(r.svg, "image/svg+xml");
  const svg = doc.documentElement;
  if (svg.nodeName !== "svg") {
    box.append(el("p", { class: "muted", text: "the picture could not be read" }));
    return;
  }
  for (const bad of svg.querySelectorAll("script, foreignObject, iframe")) bad.remove();
  for (const node of svg.querySelectorAll("*")) {
    for (const attr of [...node.attributes]) {
      if (/^on/i.test(attr.name) || /javascript:/i.test(attr.value)) node.removeAttribute(attr.name);
    }
  }
  // Graphviz sizes the picture in points; show it a little larger than that, scrolling if wide
  const w = parseFloat(svg.getAttribute("width"));
  const h = parseFloat(svg.getAttribute("height"));
  if (w > 0 && h > 0) {
    const scale = (4 / 3) * 1.2;
    svg.setAttribute("width", `${Math.round(w * scale)}px`);
    svg.setAttribute("height", `${Math.round(h * scale)}px`);
  }
  box.append(document.importNode(svg, true));
}

function renderSource(r) {
  const pre = $("#source");
  pre.replaceChildren();
  if (r.source) pre.textContent = r.source;
  else pre.append(el("span", { class: "muted", text: r.source_error || "no generated function" }));
}

function nodeByName(name) {
  return state.data.nodes.find((n) => n.name === name);
}

function revealed() {
  const values = new Set();
  const grads = new Set();
  const d = state.data;
  if (!d) return { values, grads };
  for (let i = 0; i <= state.fwd; i++) values.add(d.forward[i].node);
  for (let i = 0; i <= state.bwd; i++) grads.add(d.backward[i].node);
  return { values, grads };
}

function renderTable() {
  const body = $("#equations tbody");
  body.replaceChildren();
  const d = state.data;
  if (!d) return;
  const { values, grads } = revealed();
  for (const n of d.nodes) {
    if (n.kind === "const") continue;
    const row = el("tr", { class: n.kind + (n.name === state.current ? " current" : ""), "data-node": n.name },
      el("td", { class: "name", text: n.name }),
      el("td", { class: "eq", text: n.kind === "input" ? "input" : n.equation }),
      el("td", { class: "num value", text: values.has(n.name) ? fmt(n.value) : "" }),
      el("td", { class: "num grad", text: grads.has(n.name) ? fmt(n.grad) : "" }));
    body.append(row);
  }
}

const SVG_NS = "http://www.w3.org/2000/svg";

function svgNode(name) {
  const box = $("#graph");
  const target = document.getElementById(`node-${name}`);
  return target && box.contains(target) ? target : null;
}

// the current node gets a halo drawn behind it (inputs are bare text, gates are circles)
function highlight(name, edges = []) {
  const box = $("#graph");
  for (const h of box.querySelectorAll(".cr-halo")) h.remove();
  for (const g of box.querySelectorAll(".cr-current, .cr-edge")) g.classList.remove("cr-current", "cr-edge");
  if (!name) return;
  const target = svgNode(name);
  if (!target) return;
  target.classList.add("cr-current");
  try {
    const bb = target.getBBox();
    const pad = 4;
    const halo = document.createElementNS(SVG_NS, "rect");
    halo.setAttribute("class", "cr-halo");
    halo.setAttribute("x", bb.x - pad);
    halo.setAttribute("y", bb.y - pad);
    halo.setAttribute("width", bb.width + 2 * pad);
    halo.setAttribute("height", bb.height + 2 * pad);
    halo.setAttribute("rx", 6);
    target.insertBefore(halo, target.firstChild);
  } catch (err) {
    // getBBox needs a rendered SVG; the class alone still marks the node
  }
  for (const id of edges) {
    // an edge is drawn in two halves, through its label: `${id}-tail` runs into the label's rule
    for (const part of [id, `${id}-tail`]) {
      const e = document.getElementById(part);
      if (e && box.contains(e)) e.classList.add("cr-edge");
    }
  }
}

// ids of the picture's edges that the current step travels along
function stepEdges() {
  const d = state.data;
  if (!d) return [];
  if (state.bwd >= 0) {
    const s = d.backward[state.bwd];
    return s.terms.map((t) => d.edges.find((e) => e.source === s.node && e.target === t.via &&
      (t.operand === null || e.index === t.operand))).filter(Boolean).map(edgeId);
  }
  if (state.fwd >= 0) {
    const node = d.forward[state.fwd].node;
    return d.edges.filter((e) => e.target === node).map(edgeId);
  }
  return [];
}

function edgeId(e) { return `edge-${e.source}-${e.target}-${e.index}`; }

function renderStep() {
  const box = $("#step-info");
  box.replaceChildren();
  const d = state.data;
  highlight(state.current, stepEdges());
  if (!d) return;
  if (state.fwd < 0 && state.bwd < 0) {
    box.append(el("p", { class: "muted" }, "Press ", el("b", { text: "Forward step" }),
      " to compute one node at a time, then ", el("b", { text: "Backward step" }),
      " to push the gradient back through the graph."));
    return;
  }
  if (state.bwd < 0) {
    const s = d.forward[state.fwd];
    box.append(el("p", { class: "phase", text: `forward pass · step ${state.fwd + 1} of ${d.forward.length}` }));
    const input = s.text === s.node;
    box.append(el("p", { class: "eq" }, input ? `${s.text}` : `${s.text} ${s.detail}`,
      el("span", { class: "value", text: ` = ${fmt(s.value)}` }), input ? el("span", { class: "muted", text: "  (an input)" }) : null));
    if (s.explain) box.append(el("p", { class: "explain", text: s.explain }));
    return;
  }
  const s = d.backward[state.bwd];
  box.append(el("p", { class: "phase", text: `backward pass · step ${state.bwd + 1} of ${d.backward.length}` }));
  box.append(el("p", { class: "eq" }, `∂${d.output}/∂${s.node}`,
    el("span", { class: "grad", text: ` = ${fmt(s.grad)}` })));
  if (s.seed) {
    box.append(el("p", { class: "explain", text: s.explain }));
    return;
  }
  for (const t of s.terms) {
    const upstream = `upstream ∂${d.output}/∂${t.via} = ${fmt(t.upstream)}`;
    const line = t.local === null || t.local === undefined
      // not elementwise (sum, mean, max, ...): the gate's vector-Jacobian rule maps upstream to the gradient
      ? el("div", {}, `${upstream}  →  the ${t.via} gate's rule sends back`,
        el("span", { class: "grad", text: `  ${fmt(t.product)}` }))
      : el("div", {}, `${upstream}  ×  local ∂${t.via}/∂${s.node} = ${t.rule && t.rule !== fmt(t.local) ? t.rule + " = " : ""}${fmt(t.local)}`,
        el("span", { class: "grad", text: `  =  ${fmt(t.product)}` }));
    const slot = t.operand === null || t.operand === undefined ? "" : ` (operand ${t.operand + 1})`;
    box.append(el("div", { class: "term" }, el("div", { class: "muted", text: `through ${t.equation}${slot}` }), line));
    if (t.explain) box.append(el("p", { class: "explain", text: t.explain }));
  }
  if (s.terms.length > 1) {
    box.append(el("p", { class: "eq" }, `sum of ${s.terms.length} paths (fan-out): `,
      el("span", { class: "grad", text: fmt(s.grad) })));
  }
}

function updateButtons() {
  const d = state.data;
  $("#forward").disabled = !d || state.fwd >= d.forward.length - 1;
  $("#backward").disabled = !d || state.bwd >= d.backward.length - 1;
  $("#show-all").disabled = !d;
  $("#reset").disabled = !d || (state.fwd < 0 && state.bwd < 0);
  $("#gd-step").disabled = !d;
}

function stepForward() {
  const d = state.data;
  if (!d || state.fwd >= d.forward.length - 1) return;
  state.fwd += 1;
  state.bwd = -1;
  state.current = d.forward[state.fwd].node;
  refresh();
}

function stepBackward() {
  const d = state.data;
  if (!d || state.bwd >= d.backward.length - 1) return;
  state.fwd = d.forward.length - 1; // the backward pass needs every forward value
  state.bwd += 1;
  state.current = d.backward[state.bwd].node;
  refresh();
}

function showAll() {
  const d = state.data;
  if (!d) return;
  state.fwd = d.forward.length - 1;
  state.bwd = d.backward.length - 1;
  state.current = null;
  refresh();
}

function reset() {
  state.fwd = -1;
  state.bwd = -1;
  state.current = null;
  refresh();
}

function refresh() {
  renderTable();
  renderStep();
  updateButtons();
}

// ---------------------------------------------------------------------------------------------
// gradient descent: the server updates every input by lr * gradient and recomputes
// ---------------------------------------------------------------------------------------------

async function gradientStep() {
  if (!state.data) return;
  const seq = ++state.computeSeq;
  try {
    const r = await api("/api/step", { ...request(), lr: $("#lr").value.trim() });
    if (seq !== state.computeSeq) return;
    clearErrors();
    setVariables(r.variables, r.step.after);
    state.gdCount += 1;
    const parts = r.variables.map((v) =>
      `${v}: ${fmt(r.step.before[v])} → ${fmt(r.step.after[v])}`);
    $("#gd-log").append(el("li", { "data-step": String(state.gdCount) },
      `${parts.join(",  ")}   (${r.output} ${fmt(r.step.output_before)} → ${fmt(r.value)})`));
    show(r, true); // the table shows the new point's values and gradients, as the picture does
  } catch (err) {
    if (seq !== state.computeSeq) return;
    clearErrors();
    showError(err, "gd");
  }
}

// ---------------------------------------------------------------------------------------------
// examples
// ---------------------------------------------------------------------------------------------

async function loadExamples() {
  try {
    state.examples = await api("/api/examples");
  } catch (err) {
    showError(err, "compute");
    return;
  }
  const select = $("#examples");
  state.examples.forEach((ex, i) => select.append(el("option", { value: String(i), text: ex.title })));
}

function useExample(i) {
  const ex = state.examples[i];
  if (!ex) return;
  $("#expression").value = ex.expression;
  (ex.expand ? $("#mode-expanded") : $("#mode-fused")).checked = true;
  if (ex.lr !== undefined && ex.lr !== null) $("#lr").value = String(ex.lr);
  state.parseSeq += 1; // an older parse answer must not overwrite these boxes
  $("#values").dataset.names = "";
  setVariables(ex.variables, ex.values);
  $("#gd-log").replaceChildren();
  state.gdCount = 0;
  compute();
}

// ---------------------------------------------------------------------------------------------

function init() {
  $("#expression").addEventListener("input", () => schedule(onExpressionInput, 250));
  $("#expression").addEventListener("keydown", (e) => { if (e.key === "Enter") onExpressionInput(); });
  $("#compute").addEventListener("click", onExpressionInput);
  for (const r of document.querySelectorAll("input[name=mode]")) r.addEventListener("change", compute);
  $("#forward").addEventListener("click", stepForward);
  $("#backward").addEventListener("click", stepBackward);
  $("#show-all").addEventListener("click", showAll);
  $("#reset").addEventListener("click", reset);
  $("#gd-step").addEventListener("click", gradientStep);
  $("#lr").addEventListener("keydown", (e) => { if (e.key === "Enter") gradientStep(); });
  $("#examples").addEventListener("change", (e) => { if (e.target.value !== "") useExample(Number(e.target.value)); });
  $("#copy").addEventListener("click", () => {
    if (state.data && state.data.source && navigator.clipboard) navigator.clipboard.writeText(state.data.source).catch(() => {});
  });
  updateButtons();
  loadExamples();
}

document.addEventListener("DOMContentLoaded", init);
