// active_finetune operator dashboard: plain JavaScript, canvas and SVG, no library.
// Talks to dashboard_node over one websocket (/ws): state and command results as JSON text,
// camera frames as binary packets (uint32 header length | JSON header | JPEG).
'use strict';

const SVG_NS = 'http://www.w3.org/2000/svg';
const COLORS = ['#2f5fd0', '#e4572e', '#17a589', '#f3a712', '#8e44ad', '#c0392b', '#2c3e50',
  '#16a085', '#d35400', '#7f8c8d', '#27ae60', '#9b59b6'];

// Exposed for tests and benchmarks (read-only use).
window.afStats = { frames: { policy: 0, full: 0 }, latencyMs: [], lastHeader: {},
  results: [], errors: [], states: 0, connected: false };
window.afState = null;

let socket = null;
let nextId = 1;
let termsTask = null;
const pending = new Map();

function $(id) { return document.getElementById(id); }
function nowMs() { return performance.timeOrigin + performance.now(); }
function fmt(value, digits) {
  if (value === null || value === undefined || Number.isNaN(value)) return '-';
  return typeof value === 'number' ? value.toFixed(digits === undefined ? 3 : digits) : String(value);
}
function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}
function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }
function setPill(el, text, cls) { el.textContent = text; el.className = 'pill ' + (cls || ''); }

// ------------------------------------------------------------------ connection
function connect() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  socket = new WebSocket(`${scheme}://${location.host}/ws${location.search}`);
  socket.binaryType = 'arraybuffer';
  socket.onopen = () => { window.afStats.connected = true; setPill($('connection'), 'connected', 'ok'); };
  socket.onclose = () => {
    window.afStats.connected = false;
    setPill($('connection'), 'disconnected: reconnecting', 'bad');
    for (const [id, entry] of pending) { showResult(entry, false, 'connection lost before an answer'); pending.delete(id); }
    setTimeout(connect, 1000);
  };
  socket.onmessage = (event) => {
    if (typeof event.data === 'string') onText(event.data); else onFrame(event.data);
  };
}

function onText(text) {
  let message;
  try { message = JSON.parse(text); } catch (e) { return; }
  if (message.type === 'state') { window.afState = message; window.afStats.states += 1; render(message); }
  else if (message.type === 'result') onResult(message);
  else if (message.type === 'error') { window.afStats.errors.push(message.message); addResultLine('server: ' + message.message, 'fail'); }
}

// ------------------------------------------------------------------ camera
function onFrame(buffer) {
  const received = nowMs();
  const view = new DataView(buffer);
  const length = view.getUint32(0, false);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
  const blob = new Blob([new Uint8Array(buffer, 4 + length)], { type: 'image/jpeg' });
  createImageBitmap(blob).then((bitmap) => {
    const canvas = $(header.stream === 'policy' ? 'camera-policy' : 'camera-full');
    if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
      canvas.width = bitmap.width; canvas.height = bitmap.height;
    }
    canvas.getContext('2d').drawImage(bitmap, 0, 0);
    bitmap.close();
    const shown = nowMs();
    const stats = window.afStats;
    stats.frames[header.stream] += 1;
    stats.lastHeader[header.stream] = header;
    // Per drawn frame, both streams (ms): added = drawn minus the node's arrival time of the
    // image message, endToEnd = drawn minus the image header stamp, receive = the websocket
    // message's arrival minus the node's arrival time, encoded = the server's encode time.
    stats.latencyMs.push({ stream: header.stream, seq: header.seq,
      added: shown - header.received_s * 1000,
      endToEnd: header.stamp_s ? shown - header.stamp_s * 1000 : null,
      receive: received - header.received_s * 1000,
      encoded: (header.encoded_s - header.received_s) * 1000, shownAt: shown });
    if (stats.latencyMs.length > 6000) stats.latencyMs.splice(0, 2000);
    $(header.stream === 'policy' ? 'policy-size' : 'full-size').textContent =
      `${header.width}x${header.height}` + (header.stream === 'full' && header.width !== header.source_width
        ? ` (of ${header.source_width}x${header.source_height})` : '');
  }).catch((error) => { window.afStats.errors.push('frame: ' + error); });
}

function cameraStats(state) {
  const cam = state.camera;
  const lat = window.afStats.latencyMs.filter((l) => l.stream === 'full').slice(-30);
  let fps = 0;
  if (lat.length > 1) fps = (lat.length - 1) / ((lat[lat.length - 1].shownAt - lat[0].shownAt) / 1000);
  const added = lat.length ? lat.map((l) => l.added).sort((a, b) => a - b)[Math.floor(lat.length / 2)] : null;
  const parts = [];
  if (cam.last_s === null) parts.push('no frame received by the node');
  else parts.push(`camera ${cam.width}x${cam.height} ${cam.encoding} at ${fmt(cam.rate_hz, 1)} Hz, ` +
    `last ${fmt(cam.age_s, 1)} s ago`);
  parts.push(`browser ${fmt(fps, 1)} fps, added latency p50 ${fmt(added, 0)} ms`);
  const el = $('camera-stats');
  el.textContent = parts.join(' | ');
  el.style.color = cam.stale ? '#c53030' : '';
}

// ------------------------------------------------------------------ commands
function send(action, args, label) {
  const id = nextId++;
  const entry = { id, action, label: label || action, line: addResultLine(`${label || action}: sent, waiting for the node`, 'pending') };
  if (!socket || socket.readyState !== WebSocket.OPEN) { showResult(entry, false, 'not connected'); return; }
  pending.set(id, entry);
  socket.send(JSON.stringify(Object.assign({ id, action }, args || {})));
}
function addResultLine(text, cls) {
  const line = document.createElement('div');
  line.className = cls; line.textContent = text;
  const box = $('results'); box.insertBefore(line, box.firstChild);
  while (box.childNodes.length > 30) box.removeChild(box.lastChild);
  return line;
}
function showResult(entry, ok, message) {
  entry.line.className = ok ? 'ok' : 'fail';
  entry.line.textContent = `${entry.label}: ${ok ? 'OK' : 'FAILED'} - ${message}`;
}
function onResult(message) {
  window.afStats.results.push(message);
  const entry = pending.get(message.id);
  if (!entry) return;
  pending.delete(message.id);
  showResult(entry, message.ok, message.message);
}

function wireButtons() {
  document.querySelectorAll('button[data-action]').forEach((button) => {
    button.addEventListener('click', () => send(button.dataset.action, {}, button.textContent));
  });
  $('btn-success').addEventListener('click', () => send('mark', { success: true, note: $('note').value }, 'mark success'));
  $('btn-failure').addEventListener('click', () => send('mark', { success: false, note: $('note').value }, 'mark failure'));
  $('btn-estop-on').addEventListener('click', () => send('estop', { engage: true }, 'estop on'));
  $('btn-estop-off').addEventListener('click', () => send('estop', { engage: false }, 'estop off'));
}

// ------------------------------------------------------------------ charts
function barChart(svg, items, options) {
  // items: [{label, value, cls, key}]; one <rect class="bar"> per item, horizontal bars.
  clear(svg);
  const width = 420; const left = 150; const right = 50; const rowH = 18;
  const height = Math.max(40, items.length * rowH + 10);
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  if (!items.length) { svg.appendChild(svgEl('text', { x: 10, y: 22 }, options.empty || 'no data')); return; }
  const values = items.map((i) => (Number.isFinite(i.value) ? i.value : 0));
  const max = Math.max(0, ...values); const min = Math.min(0, ...values);
  const span = (max - min) || 1; const plotW = width - left - right;
  const zeroX = left + ((0 - min) / span) * plotW;
  items.forEach((item, index) => {
    const y = 5 + index * rowH;
    const v = Number.isFinite(item.value) ? item.value : 0;
    const x0 = left + ((Math.min(0, v) - min) / span) * plotW;
    const w = Math.max(1, (Math.abs(v) / span) * plotW);
    const label = svgEl('text', { x: left - 4, y: y + 12, 'text-anchor': 'end' }, item.label);
    const rect = svgEl('rect', { x: x0, y: y + 2, width: w, height: rowH - 5,
      class: 'bar ' + (item.cls || '') + (v < 0 ? ' neg' : ''), 'data-key': item.key || item.label, 'data-value': String(item.value) });
    const title = svgEl('title', {}, `${item.label}: ${fmt(item.value, 4)}`);
    rect.appendChild(title);
    if (options.onClick) { rect.style.cursor = 'pointer'; rect.addEventListener('click', () => options.onClick(item)); }
    svg.appendChild(label); svg.appendChild(rect);
    svg.appendChild(svgEl('text', { x: x0 + w + 3, y: y + 12 }, Number.isFinite(item.value) ? fmt(item.value, 3) : String(item.value)));
  });
  svg.appendChild(svgEl('line', { x1: zeroX, x2: zeroX, y1: 2, y2: height - 2, class: 'axis' }));
}

function lineChart(svg, series, options) {
  // series: [{name, color, points: [[x, y], ...]}]
  clear(svg);
  const width = 420; const height = options.height || 160; const left = 40; const bottom = 20; const top = 8; const right = 10;
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  const all = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p[1]));
  if (!all.length) { svg.appendChild(svgEl('text', { x: 10, y: 22 }, options.empty || 'no data')); return; }
  let [xMin, xMax] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [yMin, yMax] = options.yRange || [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (xMax === xMin) { xMin -= 1; xMax += 1; }
  if (yMax === yMin) { yMin -= 1; yMax += 1; }
  const sx = (x) => left + ((x - xMin) / (xMax - xMin)) * (width - left - right);
  const sy = (y) => height - bottom - ((y - yMin) / (yMax - yMin)) * (height - bottom - top);
  svg.appendChild(svgEl('line', { x1: left, x2: width - right, y1: height - bottom, y2: height - bottom, class: 'axis' }));
  svg.appendChild(svgEl('line', { x1: left, x2: left, y1: top, y2: height - bottom, class: 'axis' }));
  svg.appendChild(svgEl('text', { x: left - 3, y: top + 8, 'text-anchor': 'end' }, fmt(yMax, 2)));
  svg.appendChild(svgEl('text', { x: left - 3, y: height - bottom, 'text-anchor': 'end' }, fmt(yMin, 2)));
  svg.appendChild(svgEl('text', { x: left, y: height - 5 }, `${options.xLabel || 'x'} ${fmt(xMin, 0)}`));
  svg.appendChild(svgEl('text', { x: width - right, y: height - 5, 'text-anchor': 'end' }, fmt(xMax, 0)));
  series.forEach((s) => {
    const pts = s.points.filter((p) => Number.isFinite(p[1]));
    if (!pts.length) return;
    svg.appendChild(svgEl('polyline', { points: pts.map((p) => `${sx(p[0])},${sy(p[1])}`).join(' '),
      fill: 'none', stroke: s.color, 'stroke-width': s.width || 1.5, 'data-series': s.name }));
    pts.forEach((p) => svg.appendChild(svgEl('circle', { cx: sx(p[0]), cy: sy(p[1]), r: 2.2, fill: s.color })));
  });
}

// ------------------------------------------------------------------ render
function render(state) {
  const t = state.topics;
  renderBanners(state);
  cameraStats(state);
  renderAction(state);
  renderNextTask(t['operator/next_task']);
  renderRecorder(t['recorder/status']);
  renderTrainer(state);
  renderEvents(state.events);
}

function renderBanners(state) {
  const ul = $('warnings'); clear(ul);
  state.warnings.forEach((w) => { const li = document.createElement('li'); li.textContent = w.text; li.dataset.code = w.code; ul.appendChild(li); });
  const mux = state.topics['mux/status'];
  const sent = state.estop_sent;
  const muxRunning = state.graph ? state.graph.mux_running : null;
  const banner = $('estop-banner');
  if (mux && mux.estop) setPill(banner, 'ESTOP ENGAGED', 'engaged');
  else if (sent && sent.engage && !(mux && mux.estop)) setPill(banner, 'ESTOP SENT, NOT CONFIRMED', 'warn');
  else if (muxRunning === false) setPill(banner, 'COMMAND MUX NOT RUNNING', 'bad');
  else if (mux) setPill(banner, `estop off (mux: ${mux.source})`, 'ok');
  else setPill(banner, 'estop: no mux status', 'warn');
  banner.dataset.estop = mux ? String(mux.estop) : 'unknown';
  const policy = state.topics['policy/status'];
  if (policy) setPill($('policy-pill'), `policy ${policy.state} (${policy.code}) v${fmt(policy.version, 0)}`, policy.state === 'running' ? 'ok' : (policy.state === 'error' ? 'bad' : 'warn'));
  const rec = state.topics['recorder/status'];
  if (rec) setPill($('recorder-pill'), `recorder ${rec.state}`, rec.state === 'error' ? 'bad' : (rec.state === 'recording' ? 'engaged' : 'ok'));
  $('recorder-pill').dataset.state = rec ? rec.state : 'unknown';
}

function renderAction(state) {
  const svg = $('action-chart'); clear(svg);
  const action = state.action;
  const policy = state.topics['policy/status'];
  if (!action) { svg.appendChild(svgEl('text', { x: 10, y: 22 }, 'no action received from the policy')); }
  else {
    const names = ['vx', 'vy', 'vz', 'gripper'];
    const values = [...action.linear, action.gripper];
    const maxV = Math.max(0.05, ...action.linear.map((v) => Math.abs(v || 0)));
    names.forEach((name, i) => {
      const y = 8 + i * 25; const v = values[i]; const scale = i < 3 ? maxV : 1;
      svg.appendChild(svgEl('text', { x: 4, y: y + 12 }, name));
      svg.appendChild(svgEl('line', { x1: 170, x2: 170, y1: y, y2: y + 18, class: 'axis' }));
      if (v !== null && v !== undefined) {
        const w = Math.min(1, Math.abs(v) / scale) * 100;
        svg.appendChild(svgEl('rect', { x: v < 0 ? 170 - w : 170, y: y + 3, width: Math.max(1, w), height: 12, class: 'bar' + (v < 0 ? ' neg' : '') }));
      }
      svg.appendChild(svgEl('text', { x: 280, y: y + 12, 'text-anchor': 'end' }, `${fmt(v, 3)}${i < 3 ? ' m/s' : ''}`));
    });
  }
  $('policy-detail').textContent = policy
    ? `task ${policy.task || '-'} | ${policy.state} (${policy.code})${policy.reason ? ': ' + policy.reason : ''} | device ${policy.device || '-'} | rollback to: ${(policy.rollback_versions || []).join(', ') || 'none'}`
    : 'no policy/status received';
}

function renderNextTask(next) {
  if (!next) { $('next-task').textContent = 'no suggestion received'; return; }
  $('next-task').textContent = next.done ? 'done: budget spent' : (next.task || 'none (waiting)');
  $('next-reason').textContent = next.reason || '';
  $('round').textContent = fmt(next.round, 0);
  $('policy-version').textContent = fmt(next.policy_version, 0);
  $('budget-used').textContent = `${next.demos_used} of ${next.budget}`;
  const left = next.budget_remaining !== null ? next.budget_remaining : next.budget - next.demos_used;
  $('budget-left').textContent = String(left);
  $('budget-bar').style.width = `${next.budget ? (100 * next.demos_used) / next.budget : 0}%`;
  $('this-round').textContent = (next.tasks_this_round || []).join(', ') || '-';
  $('strategy').textContent = `(${next.strategy || '?'}${next.skipped && next.skipped.length ? '; skipped: ' + next.skipped.join(', ') : ''})`;
  const scores = Object.entries(next.scores || {});
  barChart($('scores-chart'), scores.map(([task, value]) => ({ label: task, key: task, value: value === null ? NaN : value,
    cls: task === next.task ? 'chosen' : '' })), { empty: next.reason || 'no scores in this suggestion',
    onClick: (item) => { termsTask = item.key; renderNextTask(window.afState.topics['operator/next_task']); } });
  const terms = next.terms || {};
  const candidate = (termsTask && terms[termsTask]) ? termsTask : (terms[next.task] ? next.task : Object.keys(terms)[0]);
  $('terms-task').textContent = candidate || '-';
  barChart($('terms-chart'), candidate ? Object.entries(terms[candidate]).map(([target, value]) => ({ label: target, value: value === null ? NaN : value })) : [],
    { empty: `no per-target terms (strategy ${next.strategy || '?'})` });
  const table = $('demo-counts'); clear(table);
  Object.entries(next.demo_counts || {}).forEach(([task, count]) => {
    const row = table.insertRow(); row.insertCell().textContent = task; row.insertCell().textContent = String(count);
  });
}

function renderRecorder(rec) {
  $('recorder-detail').textContent = rec
    ? `recorder ${rec.state}${rec.task ? ' | ' + rec.task : ''} | ${fmt(rec.duration_s, 1)} s, ${rec.frames} frames, ${rec.dropped} dropped${rec.message ? ' | ' + rec.message : ''}`
    : 'recorder: no status received';
}

function renderTrainer(state) {
  const status = state.topics['trainer/status'];
  $('trainer-state').textContent = status
    ? `${status.state} | round ${fmt(status.round, 0)} | version ${fmt(status.version, 0)} | demos ${fmt(status.demos_available, 0)} (next round at ${fmt(status.demos_needed, 0)}) | ${status.message}`
    : 'no trainer/status received';
  $('trainer-bar').style.width = `${status ? Math.round(100 * status.progress) : 0}%`;
  const ckpt = state.topics['trainer/checkpoint'];
  $('checkpoint').textContent = ckpt
    ? `checkpoint v${ckpt.version} (round ${fmt(ckpt.round, 0)}, ${fmt(ckpt.demos_used, 0)} demos, ${ckpt.step} steps) sha256 ${ckpt.sha256}`
    : 'no checkpoint announced';
  const byRound = new Map();
  state.loss.forEach((p) => { const r = p.round === null ? 0 : p.round; if (!byRound.has(r)) byRound.set(r, []); byRound.get(r).push([p.step, p.loss]); });
  lineChart($('loss-chart'), [...byRound.entries()].map(([r, pts], i) => ({ name: `round ${r}`, color: COLORS[i % COLORS.length], points: pts })),
    { xLabel: 'step', empty: 'no training step reported yet' });
  const evals = state.evaluations;
  const tasks = [...new Set(evals.flatMap((e) => Object.keys(e.success)))];
  const series = tasks.map((task, i) => ({ name: task, color: COLORS[i % COLORS.length],
    points: evals.filter((e) => task in e.success).map((e) => [e.version, e.success[task]]) }));
  series.push({ name: 'mean', color: '#000', width: 3, points: evals.map((e) => [e.version, e.mean]) });
  lineChart($('success-chart'), series, { xLabel: 'version', yRange: [0, 1], height: 220,
    empty: 'no evaluation yet (trainer/evaluation)' });
  const legend = $('success-legend'); clear(legend);
  series.filter((s) => s.points.length).forEach((s) => {
    const span = document.createElement('span'); const dot = document.createElement('i');
    dot.style.background = s.color; span.appendChild(dot); span.appendChild(document.createTextNode(s.name)); legend.appendChild(span);
  });
}

function renderEvents(events) {
  const ol = $('events'); clear(ol);
  events.slice().reverse().forEach((e) => {
    const li = document.createElement('li'); li.className = e.level;
    li.textContent = `${new Date(e.t * 1000).toLocaleTimeString()} ${e.text}`; ol.appendChild(li);
  });
}

wireButtons();
connect();
