// fuji's dashboard in the browser: draws a job page's charts (uPlot) from /ui/api/jobs/ID/samples
// and /losses, and while the job has not ended, polls /ui/api/jobs/ID every 2 s to update its
// state, progress and charts (and reloads once when it ends, for the final history and timings).
// Everything else on the pages is rendered by fujid. window.fujiDashboard holds the charts, so a
// test can read what they draw.
'use strict';

(function () {
  const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
  const POLL_MS = 2000;
  const state = { charts: {}, loads: 0, errors: [] };
  window.fujiDashboard = state;

  async function getJson(url) {
    const response = await fetch(url, { credentials: 'same-origin', cache: 'no-store' });
    if (response.status === 401) {
      window.location.assign('/ui/login');
      throw new Error('logged out');
    }
    if (!response.ok) throw new Error(url + ': HTTP ' + response.status);
    return response.json();
  }

  // x values of every series together (ascending), and each series' y at those x (null where it
  // has none): uPlot's aligned data.
  function align(seriesMaps) {
    const xs = new Set();
    for (const m of seriesMaps) for (const x of m.keys()) xs.add(x);
    const sorted = Array.from(xs).sort((a, b) => a - b);
    return [sorted].concat(seriesMaps.map((m) => sorted.map((x) => (m.has(x) ? m.get(x) : null))));
  }

  // One series per device (and one per host memory), keyed by worker and device, used MiB over time.
  function memoryData(samples) {
    const byKey = new Map();
    for (const s of samples) {
      const key = s.host_memory ? s.worker_id + ' host memory'
                                : s.worker_id + ' device ' + s.device_index + ' (' + s.device_name + ')';
      if (!byKey.has(key)) byKey.set(key, new Map());
      byKey.get(key).set(s.at_ms / 1000, s.used_mib);
    }
    const labels = Array.from(byKey.keys()).sort();
    return { labels: labels, data: align(labels.map((k) => byKey.get(k))) };
  }

  // Train and eval losses by step; a later attempt's point replaces an earlier one's.
  function lossData(losses) {
    const splits = new Map();
    const attemptOf = new Map();
    for (const p of losses) {
      if (!splits.has(p.split)) splits.set(p.split, new Map());
      const key = p.split + '/' + p.step;
      if (attemptOf.has(key) && attemptOf.get(key) > p.attempt) continue;
      attemptOf.set(key, p.attempt);
      splits.get(p.split).set(p.step, p.loss);
    }
    const labels = ['train', 'eval'].filter((s) => splits.has(s));
    return { labels: labels, data: align(labels.map((s) => splits.get(s))) };
  }

  function draw(name, element, built, time, yLabel) {
    const old = state.charts[name];
    const sameSeries = old && old.series.length === built.labels.length + 1 &&
        built.labels.every((l, i) => old.series[i + 1].label === l);
    if (sameSeries) {
      old.setData(built.data);
      return;
    }
    if (old) old.destroy();
    element.textContent = '';
    if (built.labels.length === 0) {
      element.textContent = 'No data yet.';
      delete state.charts[name];
      return;
    }
    const options = {
      width: Math.max(320, element.clientWidth || 800),
      height: 280,
      scales: { x: { time: time } },
      axes: [{ label: time ? 'time' : 'step' }, { label: yLabel, size: 70 }],
      series: [{ label: time ? 'time' : 'step' }].concat(built.labels.map((label, i) => ({
        label: label, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: true,
        points: { show: built.data[0].length < 60 },
      }))),
    };
    state.charts[name] = new uPlot(options, built.data, element);
  }

  async function loadCharts() {
    const memory = document.getElementById('memory-chart');
    const loss = document.getElementById('loss-chart');
    if (memory) draw('memory', memory, memoryData((await getJson(memory.dataset.src)).samples), true, 'MiB used');
    if (loss) draw('loss', loss, lossData((await getJson(loss.dataset.src)).losses), false, 'loss');
    state.loads += 1;
  }

  async function poll(article) {
    const job = await getJson('/ui/api/jobs/' + article.dataset.id);
    const set = (id, text) => {
      const cell = document.getElementById(id);
      if (cell && cell.textContent !== text) cell.textContent = text;
    };
    set('job-state', job.state);
    set('job-reason', job.reason);
    if (job.progress) {
      set('job-progress', job.progress.phase + (job.progress.total > 0
          ? ' ' + job.progress.done + '/' + job.progress.total : ''));
    }
    await loadCharts();
    return job.ended;
  }

  function start() {
    const article = document.getElementById('job');
    if (!article) return;
    loadCharts().catch((e) => state.errors.push(String(e)));
    if (article.dataset.live !== '1') return;
    const timer = setInterval(() => {
      poll(article).then((ended) => {
        if (ended) {
          clearInterval(timer);
          window.location.reload();
        }
      }).catch((e) => state.errors.push(String(e)));
    }, POLL_MS);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
