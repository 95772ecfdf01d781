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
  practice: false,   // practice mode: type each value and gradient before it is shown
  score: null,       // {asked, first, revealed, expression} for the function being practised
  tries: 0,          // wrong answers to the current question
  feedback: null,    // {kind: "right"|"wrong"|"revealed", text, hint} about the last answer
  reached: { fwd: -1, bwd: -1 },  // practice: the last step answered or revealed (each is asked once)
  showSource: false, // practice mode hides the generated function until asked or done
  declared: false,   // the expression declares its own signature, g(x, y) = ...
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

// the boxes keep the order they have (the generated function takes its inputs in this order): new
// variables are added after the ones that stay; `given` (an example, a step) sets values and order
function setVariables(variables, given = {}) {
  const box = $("#values");
  const old = {};
  for (const input of box.querySelectorAll("input")) old[input.dataset.var] = input.value;
  if (Object.keys(given).length === 0) {
    const kept = Object.keys(old).filter((v) => variables.includes(v));
    variables = [...kept, ...variables.filter((v) => !kept.includes(v))];
  }
  const names = variables.join("\u0000");
  // the signature the generated function will have (a declared g(x, y) = ... says it itself)
  $("#fname").textContent = state.declared ? "" : variables.length ? `f(${variables.join(", ")}) =` : "f =";
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
    state.declared = !!r.declared;
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
  state.feedback = null;
  state.tries = 0;
  if (!state.score || state.score.expression !== r.expression) {
    state.score = { asked: 0, first: 0, revealed: 0, expression: r.expression };
    state.showSource = false;
  }
  if (state.practice && !revealAll) startPractice();
  else state.reached = { fwd: state.fwd, bwd: state.bwd };
  state.declared = !!r.declared;
  markStale(false);
  setVariables(r.inputs || r.variables);
  renderGraph(r);
  renderSource(r);
  refresh();
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
      // tooltips hold every value and gradient: the picture shows them only as they are stepped
      if (/^on/i.test(attr.name) || /javascript:/i.test(attr.value) || /(^|:)title$/i.test(attr.name)) {
        node.removeAttribute(attr.name);
      }
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
  updateSourceVisibility();
}

// in practice mode the generated function (the answer to part iii) waits until the passes are done
function updateSourceVisibility() {
  const d = state.data;
  const done = d && (state.practice ? state.reached.bwd : state.bwd) >= d.backward.length - 1;
  const hidden = state.practice && !state.showSource && !done && !!d;
  $("#source-hidden").hidden = !hidden;
  $("#source").hidden = hidden;
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

// the picture shows a value once its node is stepped forward, a gradient once stepped backward
function applyReveal() {
  const d = state.data;
  const box = $("#graph");
  if (!d || !box.querySelector("svg")) return;
  const { values, grads } = revealed();
  const valueColor = (d.colors && d.colors.value || "").toLowerCase();
  const gradColor = (d.colors && d.colors.grad || "").toLowerCase();
  const setTexts = (group, showValue, showGrad) => {
    for (const t of group.querySelectorAll("text")) {
      const fill = (t.getAttribute("fill") || "").toLowerCase();
      if (fill === valueColor) t.style.visibility = showValue ? "" : "hidden";
      else if (fill === gradColor) t.style.visibility = showGrad ? "" : "hidden";
    }
  };
  // an edge's numbers are drawn on the edge itself, or in a label of their own (label-<edge>)
  const labelled = (id, showValue, showGrad) => {
    for (const el of [document.getElementById(id), document.getElementById(id.replace("edge-", "label-"))]) {
      if (el && box.contains(el)) setTexts(el, showValue, showGrad);
    }
  };
  for (const e of d.edges) labelled(edgeId(e), values.has(e.source), grads.has(e.source));
  labelled(`edge-${d.output}-result`, values.has(d.output), grads.has(d.output));
  for (const n of d.nodes) {
    const g = svgNode(n.name);
    if (g) setTexts(g, values.has(n.name), grads.has(n.name));
  }
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
  const target = state.practice ? nextTarget() : null;
  highlight(target ? target.node : state.current, target ? [] : stepEdges());
  applyReveal();
  renderScore();
  if (!d) return;
  if (state.fwd < 0 && state.bwd < 0 && !target) {
    box.append(el("p", { class: "muted" }, "Press ", el("b", { text: "Forward step" }),
      " to compute one node at a time, then ", el("b", { text: "Backward step" }),
      " to push the gradient back through the graph."));
    return;
  }
  if (state.practice) {
    if (!atFrontier()) {  // stepped back over found nodes: show them; → walks forward to the question again
      box.append(...currentStepView(),
        el("p", { class: "muted", text: "already found: → (or the step buttons) goes forward again" }));
      return;
    }
    if (state.feedback) {
      box.append(feedbackBox(state.feedback));
      if (state.feedback.kind !== "wrong") box.append(...currentStepView());  // how the answer comes about
    }
    if (target) {
      box.append(questionBox(target));
      return;
    }
    box.append(el("p", { class: "phase", text: "done" }),
      el("p", { text: `Every value and gradient of ${d.output} is found.` }));
    return;
  }
  box.append(...currentStepView());
}

// what the last revealed step shows: the equation and value, or the gradient with its terms
function currentStepView() {
  const d = state.data;
  const out = [];
  if (state.bwd < 0) {
    if (state.fwd < 0) return out;
    const s = d.forward[state.fwd];
    out.push(el("p", { class: "phase", text: `forward pass · step ${state.fwd + 1} of ${d.forward.length}` }));
    const input = s.text === s.node;
    out.push(el("p", { class: "eq" }, input ? `${s.text}` : `${s.text} ${s.detail}`,
      el("span", { class: "value", text: ` = ${fmt(s.value)}` }), input ? el("span", { class: "muted", text: "  (an input)" }) : null));
    if (s.explain) out.push(el("p", { class: "explain", text: s.explain }));
    return out;
  }
  const s = d.backward[state.bwd];
  out.push(el("p", { class: "phase", text: `backward pass · step ${state.bwd + 1} of ${d.backward.length}` }));
  out.push(el("p", { class: "eq" }, `∂${d.output}/∂${s.node}`, el("span", { class: "grad", text: ` = ${fmt(s.grad)}` })));
  if (s.seed) {
    out.push(el("p", { class: "explain", text: s.explain }));
    return out;
  }
  for (const t of s.terms) {
    // upstream is the gradient of the node that used this one; local is that gate's own derivative
    const upstream = `upstream ∂${d.output}/∂${t.via} = ${fmt(t.upstream)}`;
    const line = t.local_equation === null || t.local_equation === undefined
      // not elementwise (sum, mean, indexing, ...): the gate's vector-Jacobian rule maps upstream to the gradient
      ? el("div", {}, `${upstream}  →  the ${t.via} gate's rule sends back`,
        el("span", { class: "grad", text: `  ${fmt(t.product)}` }))
      : el("div", {}, `${upstream}  ×  local ${t.local_equation}`,
        el("span", { class: "grad", text: `   →  ${fmt(t.product)}` }));
    const slot = t.operand === null || t.operand === undefined ? "" : ` (operand ${t.operand + 1})`;
    out.push(el("div", { class: "term" }, el("div", { class: "muted", text: `through ${t.equation}${slot}` }), line));
    if (t.explain) out.push(el("p", { class: "explain", text: t.explain }));
  }
  if (s.terms.length > 1) {
    out.push(el("p", { class: "eq" }, `sum of ${s.terms.length} paths (fan-out): `,
      el("span", { class: "grad", text: fmt(s.grad) })));
  }
  return out;
}

function updateButtons() {
  const d = state.data;
  const move = state.practice ? nextMove() : null;  // practice: the buttons do what → does, in their own pass
  $("#forward").disabled = !d || (state.practice ? !move || move.phase !== "forward" : state.fwd >= d.forward.length - 1);
  $("#backward").disabled = !d || (state.practice ? !move || move.phase !== "backward" : state.bwd >= d.backward.length - 1);
  $("#show-all").disabled = !d;
  $("#reset").disabled = !d || (state.fwd < 0 && state.bwd < 0);
  $("#gd-step").disabled = !d;
}

function stepForward() {
  const d = state.data;
  if (state.practice) { const m = nextMove(); if (m && m.phase === "forward") stepNext(); return; }
  if (!d || state.fwd >= d.forward.length - 1) return;
  state.fwd += 1;
  state.bwd = -1;
  state.current = d.forward[state.fwd].node;
  state.feedback = null;
  refresh();
}

function stepBackward() {
  const d = state.data;
  if (state.practice) { const m = nextMove(); if (m && m.phase === "backward") stepNext(); return; }
  if (!d || state.bwd >= d.backward.length - 1) return;
  state.fwd = d.forward.length - 1; // the backward pass needs every forward value
  state.bwd += 1;
  state.current = d.backward[state.bwd].node;
  state.feedback = null;
  refresh();
}

function showAll() {
  const d = state.data;
  if (!d) return;
  if (state.practice && state.score) {  // the questions not found yet are given away: they count as revealed
    const left = (d.forward.length - 1 - state.reached.fwd) + (d.backward.length - 1 - state.reached.bwd);
    state.score.asked += left;
    state.score.revealed += left;
  }
  state.reached = { fwd: d.forward.length - 1, bwd: d.backward.length - 1 };
  state.fwd = d.forward.length - 1;
  state.bwd = d.backward.length - 1;
  state.current = null;
  state.feedback = null;
  refresh();
}

function reset() {
  if (state.practice) { setPractice(true); return; }  // a fresh round, with a fresh score
  state.fwd = -1;
  state.bwd = -1;
  state.current = null;
  refresh();
}

function refresh() {
  renderTable();
  renderStep();
  updateButtons();
  updateSourceVisibility();
}

// one step on, whichever pass is next (the → key); one step back (the ← key)
function stepNext() {
  const d = state.data;
  if (!d) return;
  if (state.practice) {
    const m = nextMove();
    if (!m) return;
    if (m.ask) { reveal(); return; }  // a question not yet answered: → reveals it, and it counts
    state.feedback = null;            // a node already found: shown again, not asked again
    if (m.phase === "forward") { state.fwd = m.index; state.bwd = -1; state.current = d.forward[m.index].node; }
    else { state.fwd = d.forward.length - 1; state.bwd = m.index; state.current = d.backward[m.index].node; }
    refresh();
    return;
  }
  if (state.fwd < d.forward.length - 1) stepForward();
  else stepBackward();
}

function stepPrevious() {
  const d = state.data;
  if (!d) return;
  state.feedback = null;
  state.tries = 0;
  if (state.bwd >= 0) state.bwd -= 1;
  else if (state.fwd >= 0) state.fwd -= 1;
  else return;
  state.current = state.bwd >= 0 ? d.backward[state.bwd].node : state.fwd >= 0 ? d.forward[state.fwd].node : null;
  refresh();
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
  setPractice(!!ex.practice);  // the worksheet's examples open in practice mode
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
// practice mode: the student types each value (forward) and gradient (backward) before it is shown;
// the server reads what they type (the command line's value parser) and sends each step's hint,
// built from the gate's rule and the numbers at hand. Nothing here computes a gradient.
// ---------------------------------------------------------------------------------------------

function setPractice(on) {
  state.practice = on;
  $("#practice").checked = on;
  state.showSource = false;
  if (state.data) {
    state.fwd = -1;
    state.bwd = -1;
    state.current = null;
    state.feedback = null;
    state.score = { asked: 0, first: 0, revealed: 0, expression: state.data.expression };
    if (on) startPractice();
    refresh();
  }
}

// the inputs are given: practice starts at the first computed node
function startPractice() {
  const d = state.data;
  state.fwd = -1;
  state.bwd = -1;
  while (state.fwd + 1 < d.forward.length && d.forward[state.fwd + 1].text === d.forward[state.fwd + 1].node) {
    state.fwd += 1;
  }
  state.reached = { fwd: state.fwd, bwd: state.bwd };
  state.tries = 0;
}

// the view is at the last node found (not stepped back): only there is the next question asked
function atFrontier() {
  return state.fwd === state.reached.fwd && state.bwd === state.reached.bwd;
}

// the next node to find, after the last one answered or revealed: {phase, index, node, answer, step}
// (null when everything is found); a node is asked once, however the student steps back and forth
function nextTarget() {
  const d = state.data;
  if (!d) return null;
  const r = state.reached;
  if (r.fwd < d.forward.length - 1) {
    const step = d.forward[r.fwd + 1];
    return { phase: "forward", index: r.fwd + 1, node: step.node, answer: step.value, step };
  }
  if (r.bwd < d.backward.length - 1) {
    const step = d.backward[r.bwd + 1];
    return { phase: "backward", index: r.bwd + 1, node: step.node, answer: step.grad, step };
  }
  return null;
}

// practice: what → does next: {phase, index, ask} (ask: the next question, which counts) or null
function nextMove() {
  const d = state.data;
  if (!d) return null;
  if (atFrontier()) {
    const t = nextTarget();
    return t ? { phase: t.phase, index: t.index, ask: true } : null;
  }
  if (state.bwd < 0 && state.fwd < state.reached.fwd) return { phase: "forward", index: state.fwd + 1, ask: false };
  return { phase: "backward", index: state.bwd + 1, ask: false };
}

function questionBox(target) {
  const d = state.data;
  const s = target.step;
  const total = target.phase === "forward" ? d.forward.length : d.backward.length;
  const ask = target.phase === "forward"
    ? `${s.text} = ?`
    : `∂${d.output}/∂${target.node} = ?`;
  const input = el("input", { type: "text", id: "answer", spellcheck: false, autocomplete: "off" });
  input.setAttribute("aria-label", `your answer for ${target.node}`);
  const context = target.phase === "forward"
    ? "the value of this node"
    : (s.seed ? "the gradient of the output with respect to itself"
      : `the gradient of ${d.output} with respect to ${target.node}` +
        (s.terms.length > 1 ? ` (${target.node} is used ${s.terms.length} times)` : ""));
  const summarized = typeof target.answer === "object" && target.answer !== null && target.answer.summary;
  const box = el("div", { class: "question" },
    el("p", { class: "phase", text: `${target.phase} pass · step ${target.index + 1} of ${total} · your turn` }),
    el("p", { class: "ask", text: ask }),
    el("p", { class: "muted", text: summarized ? "this array is long: reveal it" : `type ${context}` }),
    el("div", { class: "row" }, summarized ? null : input,
      summarized ? null : el("button", { type: "button", id: "answer-check", class: "primary", text: "Check",
        onclick: submitAnswer }),
      el("button", { type: "button", id: "answer-reveal", text: "Reveal", onclick: reveal })));
  setTimeout(() => { if (document.getElementById("answer")) document.getElementById("answer").focus(); }, 0);
  return box;
}

function feedbackBox(f) {
  const box = el("div", { class: `feedback ${f.kind}`, id: "feedback" }, f.text);
  if (f.hint) box.append(el("span", { class: "hint-text", text: `hint: ${f.hint}` }));
  return box;
}

function renderScore() {
  const box = $("#score");
  const sc = state.score;
  if (!state.practice || !sc || !state.data) { box.hidden = true; return; }
  box.hidden = false;
  box.textContent = `score ${sc.first} / ${sc.asked}` + (sc.revealed ? ` · ${sc.revealed} revealed` : "");
  box.title = "right on the first try / questions so far";
}

// a typed answer is right within 1% (or 1e-6 near zero), element by element for arrays
function close(typed, answer) {
  if (Array.isArray(answer)) {
    const t = Array.isArray(typed) ? typed : answer.map(() => typed);
    return t.length === answer.length && answer.every((a, i) => close(t[i], a));
  }
  if (Array.isArray(typed)) return false;
  if (typeof answer === "string" || typeof typed === "string") return String(answer) === String(typed);
  return Math.abs(typed - answer) <= 1e-2 * Math.abs(answer) + 1e-6;
}

async function submitAnswer() {
  const target = atFrontier() ? nextTarget() : null;
  const input = document.getElementById("answer");
  if (!target || !input) return;
  const text = input.value.trim();
  if (text === "") return;
  let typed;
  try {
    typed = (await api("/api/value", { text })).value;
  } catch (err) {
    state.feedback = { kind: "wrong", text: `I cannot read “${text}”: ${err.message}` };
    renderStep();
    return;
  }
  if (close(typed, target.answer)) {
    state.score.asked += 1;
    if (state.tries === 0) state.score.first += 1;
    const what = target.phase === "forward" ? target.node : `∂${state.data.output}/∂${target.node}`;
    state.feedback = { kind: "right", text: `Right: ${what} = ${fmt(target.answer)}` +
      (state.tries ? ` (after ${state.tries} wrong ${state.tries === 1 ? "try" : "tries"})` : "") };
    advance(target);
  } else {
    state.tries += 1;
    state.feedback = { kind: "wrong", text: `Not ${text}: try again, or Reveal.`, hint: target.step.hint };
    renderStep();
  }
}

function reveal() {
  const target = atFrontier() ? nextTarget() : null;
  if (!target) return;
  state.score.asked += 1;
  state.score.revealed += 1;
  const what = target.phase === "forward" ? target.node : `∂${state.data.output}/∂${target.node}`;
  state.feedback = { kind: "revealed", text: `${what} = ${fmt(target.answer)}`, hint: target.step.hint };
  advance(target);
}

function advance(target) {
  if (target.phase === "forward") state.fwd = target.index;
  else { state.fwd = state.data.forward.length - 1; state.bwd = target.index; }
  state.reached = { fwd: state.fwd, bwd: state.bwd };
  state.current = target.node;
  state.tries = 0;
  refresh();
}

function onKey(e) {
  const t = e.target;
  const typing = t && (t.tagName === "TEXTAREA" || t.tagName === "SELECT" || (t.tagName === "INPUT" && t.type === "text"));
  if (t && t.id === "answer") {
    if (e.key === "Enter") { e.preventDefault(); submitAnswer(); return; }
    if (t.value !== "") return;  // the arrows move the caret in a typed answer
  } else if (typing) {
    return;
  }
  if (e.key === "ArrowRight") { e.preventDefault(); stepNext(); }
  else if (e.key === "ArrowLeft") { e.preventDefault(); stepPrevious(); }
}

// ---------------------------------------------------------------------------------------------
// check my backward pass: the pasted function is read by the server (never run as Python) and
// checked like `chainrule check`; the first wrong line is marked
// ---------------------------------------------------------------------------------------------

function template() {
  const d = state.data;
  const names = d ? (d.inputs || d.variables) : ["x", "y", "z"];
  const name = (d && d.signature ? d.signature.split("(")[0] : "f") || "f";
  return `import numpy as np\n\n\ndef ${name}(${names.join(", ")}):\n    # forward pass\n\n    # backward pass\n\n` +
    `    return out, ${names.map((n) => "d" + n).join(", ")}\n`;
}

async function checkCode() {
  const box = $("#check-result");
  box.replaceChildren(el("p", { class: "muted", text: "checking…" }));
  const code = $("#code").value;
  let r;
  try {
    r = await api("/api/check", { expression: $("#expression").value, values: currentValues(), code });
  } catch (err) {
    const info = err.info || {};
    box.replaceChildren(el("p", { class: "verdict failed", text: "cannot check this yet" }),
      el("p", { class: "error", text: err.message }));
    if (info.field === "code" && typeof info.position === "number") {
      box.append(listing(code, [lineOf(code, info.position)]));
    }
    return;
  }
  const verdict = r.status === "correct" ? "correct: the output and every gradient, at these values and 3 random ones"
    : r.status === "wrong" ? "wrong" : "it failed";
  box.replaceChildren(el("p", { class: `verdict ${r.status}`, id: "check-verdict", text: `${r.function}: ${verdict}` }));
  if (r.feedback) box.append(el("p", { class: "feedback-sentence", id: "check-feedback" }, ...withCode(r.feedback)));
  if (!r.ok) box.append(el("pre", { class: "report", text: r.report }));
  box.append(listing(code, r.lines || []));
}

// `code` in a sentence as code (the rest as text: never markup)
function withCode(text) {
  return text.split("`").map((part, i) => (i % 2 ? el("code", { text: part }) : document.createTextNode(part)));
}

function lineOf(text, pos) { return text.slice(0, pos).split("\n").length; }

function listing(code, bad) {
  const ol = el("ol", { class: "listing", id: "check-listing" });
  code.replace(/\n$/, "").split("\n").forEach((line, i) => {
    ol.append(el("li", { class: bad.includes(i + 1) ? "bad" : "", "data-line": String(i + 1), text: line || " " }));
  });
  return ol;
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
  $("#practice").addEventListener("change", (e) => setPractice(e.target.checked));
  $("#source-reveal").addEventListener("click", () => { state.showSource = true; updateSourceVisibility(); });
  $("#check-run").addEventListener("click", checkCode);
  $("#check-template").addEventListener("click", () => { $("#code").value = template(); $("#code").focus(); });
  document.addEventListener("keydown", onKey);
  $("#copy").addEventListener("click", () => {
    if (state.data && state.data.source && navigator.clipboard) navigator.clipboard.writeText(state.data.source).catch(() => {});
  });
  updateButtons();
  loadExamples();
}

document.addEventListener("DOMContentLoaded", init);
