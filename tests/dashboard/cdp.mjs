// A headless Chromium driven through the Chrome DevTools Protocol, for fujid's dashboard test and
// bench: it logs in through the form, reads the pages' tables and the charts' data (what uPlot
// draws), saves screenshots, and writes what it saw as JSON for the C++ test to check against the
// CLI and the database. Node 20: run with `node --experimental-websocket cdp.mjs CONFIG OUT`.
//
// CONFIG (JSON): chromium, base (https://127.0.0.1:PORT), spki (the base64 SHA-256 of fujid's
// certificate's public key: only that certificate is trusted), token, screenshots (a directory),
// and optionally: finetune (a job id), xss (a job id), foreign (another user's job id), live
// {id, command: argv run once the page shows the job, env}, bench (N loads of the jobs page).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [configPath, outPath] = process.argv.slice(2);
const config = JSON.parse(readFileSync(configPath, 'utf8'));
const result = { steps: [] };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- Chromium and its DevTools socket ----
const profile = mkdtempSync(join(tmpdir(), 'fuji-dashboard-chromium-'));
const args = ['--headless=new', '--disable-gpu', '--no-first-run', '--no-default-browser-check',
  '--disable-extensions', '--disable-background-networking', '--window-size=1280,900',
  '--user-data-dir=' + profile, '--remote-debugging-port=0',
  '--ignore-certificate-errors-spki-list=' + config.spki, 'about:blank'];
if (process.getuid && process.getuid() === 0) args.unshift('--no-sandbox');
const chromium = spawn(config.chromium, args, { stdio: ['ignore', 'ignore', 'pipe'] });
let chromiumLog = '';
const wsUrl = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('chromium did not start: ' + chromiumLog)), 30000);
  chromium.stderr.on('data', (chunk) => {
    chromiumLog += chunk;
    const m = /DevTools listening on (ws:\/\/\S+)/.exec(chromiumLog);
    if (m) { clearTimeout(timer); resolve(m[1]); }
  });
  chromium.on('exit', (code) => reject(new Error('chromium exited ' + code + ': ' + chromiumLog)));
});

const socket = new WebSocket(wsUrl);
await new Promise((resolve, reject) => { socket.onopen = resolve; socket.onerror = reject; });
let nextId = 1;
const pending = new Map();
const listeners = [];
socket.onmessage = (event) => {
  const message = JSON.parse(event.data);
  if (message.id && pending.has(message.id)) {
    const { resolve, reject } = pending.get(message.id);
    pending.delete(message.id);
    if (message.error) reject(new Error(JSON.stringify(message.error)));
    else resolve(message.result);
  } else if (message.method) {
    for (const l of listeners.slice()) l(message);
  }
};
function send(method, params = {}, sessionId = undefined) {
  const id = nextId++;
  socket.send(JSON.stringify({ id, method, params, sessionId }));
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
}
function once(method, sessionId, timeoutMs = 30000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('timed out waiting for ' + method)), timeoutMs);
    const l = (m) => {
      if (m.method === method && m.sessionId === sessionId) {
        clearTimeout(timer);
        listeners.splice(listeners.indexOf(l), 1);
        resolve(m.params);
      }
    };
    listeners.push(l);
  });
}

const { targetInfos } = await send('Target.getTargets');
const page = targetInfos.find((t) => t.type === 'page');
const { sessionId } = await send('Target.attachToTarget', { targetId: page.targetId, flatten: true });
const cdp = (method, params) => send(method, params, sessionId);
await cdp('Page.enable');
await cdp('Runtime.enable');
await cdp('Network.enable');

// Network.responseReceived of documents: the HTTP status each navigation got.
const documentStatus = [];
listeners.push((m) => {
  if (m.sessionId === sessionId && m.method === 'Network.responseReceived' && m.params.type === 'Document') {
    documentStatus.push({ url: m.params.response.url, status: m.params.response.status });
  }
});

async function evaluate(expression) {
  const r = await cdp('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true });
  if (r.exceptionDetails) throw new Error(expression + ': ' + JSON.stringify(r.exceptionDetails));
  return r.result.value;
}
async function navigate(url) {
  const loaded = once('Page.loadEventFired', sessionId);
  await cdp('Page.navigate', { url });
  await loaded;
}
// Runs `expression` (which submits a form or clicks) and waits for the page it leads to.
async function submit(expression) {
  const loaded = once('Page.loadEventFired', sessionId);
  await evaluate(expression);
  await loaded;
}
async function waitFor(expression, timeoutMs = 20000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    try {
      if (await evaluate(expression)) return true;
    } catch (e) {
      // The page is between two documents (a reload): ask again.
    }
    await sleep(100);
  }
  return false;
}
async function screenshot(name) {
  const { cssContentSize } = await cdp('Page.getLayoutMetrics');
  const clip = { x: 0, y: 0, width: Math.ceil(cssContentSize.width), height: Math.min(Math.ceil(cssContentSize.height), 6000), scale: 1 };
  const { data } = await cdp('Page.captureScreenshot', { format: 'png', clip, captureBeyondViewport: true });
  mkdirSync(config.screenshots, { recursive: true });
  const path = join(config.screenshots, name + '.png');
  writeFileSync(path, Buffer.from(data, 'base64'));
  return path;
}
const path = () => evaluate('location.pathname');
const table = (selector) => evaluate(
  `[...document.querySelectorAll(${JSON.stringify(selector)})].map(tr => [...tr.cells].map(td => td.textContent))`);
const charts = () => evaluate(`(() => {
  const out = {};
  for (const [name, u] of Object.entries(window.fujiDashboard.charts))
    out[name] = { labels: u.series.slice(1).map(s => s.label), data: u.data.map(a => Array.from(a)) };
  return out; })()`);
const navigationTiming = () => evaluate(`(() => {
  const n = performance.getEntriesByType('navigation')[0];
  return { status: n.responseStatus, request_start: n.requestStart, response_start: n.responseStart,
           response_end: n.responseEnd, dom_content_loaded: n.domContentLoadedEventEnd,
           load: n.loadEventEnd, bytes: n.transferSize }; })()`);

try {
  const base = config.base;
  // ---- Without a cookie: the login form ----
  await navigate(base + '/ui/');
  result.no_cookie_path = await path();
  result.screenshot_login = await screenshot('login');

  // ---- A wrong token is refused ----
  await submit(`document.getElementById('token').value = 'fuji_u_1_not-a-real-token';
                document.querySelector('form[action="/ui/login"]').submit()`);
  result.wrong_token = { path: await path(), error: await evaluate(`document.getElementById('login-error')?.textContent ?? ''`),
    cookies: (await cdp('Network.getCookies', { urls: [base + '/ui/'] })).cookies.length,
    status: documentStatus.at(-1)?.status };

  // ---- The right token: the cookie, then the jobs page ----
  await submit(`document.getElementById('token').value = ${JSON.stringify(config.token)};
                document.querySelector('form[action="/ui/login"]').submit()`);
  result.login_path = await path();
  result.cookies = (await cdp('Network.getCookies', { urls: [base + '/ui/'] })).cookies
    .map((c) => ({ name: c.name, secure: c.secure, httpOnly: c.httpOnly, sameSite: c.sameSite, path: c.path,
                   session: c.session, expires: c.expires, value_is_token: c.value === config.token }));
  result.cookie_visible_to_script = await evaluate('document.cookie');

  if (config.bench) {
    result.bench = [];
    for (let i = 0; i < config.bench; ++i) {
      await navigate(base + '/ui/' + (config.bench_query || ''));
      result.bench.push(await navigationTiming());
    }
    result.bench_rows = (await table('#jobs tbody tr')).length;
    await screenshot('bench_jobs');
  } else {
    // First, while the running job still runs.
    if (config.live) {
      await navigate(base + '/ui/jobs/' + config.live.id);
      const before = await evaluate(`document.getElementById('job-state').textContent`);
      const env = { ...process.env, ...(config.live.env || {}) };
      const ran = spawnSync(config.live.command[0], config.live.command.slice(1), { env, encoding: 'utf8' });
      // The page polls every 2 s (the state cell changes first) and reloads once the job has
      // ended (then its history has the last move): wait for both.
      const expect = JSON.stringify(config.live.expect);
      const updated = await waitFor(`(() => {
        const rows = document.querySelectorAll('#history tbody tr');
        const last = rows[rows.length - 1];
        return document.getElementById('job-state')?.textContent === ${expect} &&
            !!last && last.cells[3]?.textContent === ${expect};
      })()`, 20000);
      result.live = { before, command_status: ran.status, command_err: ran.stderr, updated,
        after: await evaluate(`document.getElementById('job-state')?.textContent`),
        history: await table('#history tbody tr') };
    }
    await navigate(base + '/ui/');
    result.jobs = { rows: await table('#jobs tbody tr'), timing: await navigationTiming(), who: await evaluate(`document.getElementById('who').textContent`) };
    result.screenshot_jobs = await screenshot('jobs');

    if (config.finetune) {
      await navigate(base + '/ui/jobs/' + config.finetune);
      const drawn = await waitFor(`window.fujiDashboard && window.fujiDashboard.loads >= 1`);
      result.finetune = { drawn, charts: drawn ? await charts() : {}, errors: await evaluate('window.fujiDashboard.errors'),
        state: await evaluate(`document.getElementById('job-state').textContent`),
        history: await table('#history tbody tr'), timings: await table('#timings tbody tr'),
        plan: await evaluate(`document.getElementById('plan').textContent`) };
      result.screenshot_job = await screenshot('job_finetune');
    }
    if (config.filter) {
      await navigate(base + '/ui/?' + config.filter);
      result.filtered = await table('#jobs tbody tr');
    }
    if (config.xss) {
      await navigate(base + '/ui/jobs/' + config.xss);
      result.xss = { scripts: await evaluate(`[...document.scripts].map(s => s.getAttribute('src'))`),
        fired: await evaluate('window.__fuji_xss === true'),
        spec: await evaluate(`document.getElementById('spec').textContent`) };
    }
    if (config.foreign) {
      await navigate(base + '/ui/jobs/' + config.foreign);
      result.foreign = { status: (await navigationTiming()).status, title: await evaluate('document.title'),
        job_shown: await evaluate(`document.getElementById('job') !== null`) };
    }
    await navigate(base + '/ui/workers');
    result.workers = await evaluate(`[...document.querySelectorAll('section.worker')].map(s => ({
      id: s.dataset.worker, devices: [...s.querySelectorAll('table.devices tbody tr')].map(tr => [...tr.cells].map(td => td.textContent)) }))`);
    result.screenshot_workers = await screenshot('workers');

    // ---- Log out: the cookie goes, and pages lead to the login form again ----
    await submit(`document.getElementById('logout').click()`);
    result.logout = { path: await path(), cookies: (await cdp('Network.getCookies', { urls: [base + '/ui/'] })).cookies.length };
    await navigate(base + '/ui/');
    result.logout.after_path = await path();
  }
  result.ok = true;
} catch (e) {
  result.ok = false;
  result.error = String(e && e.stack || e);
}
writeFileSync(outPath, JSON.stringify(result, null, 1));
socket.close();
// Chromium writes its profile until it has exited: wait for that, then remove it.
const exited = chromium.exitCode !== null ? Promise.resolve() : new Promise((r) => chromium.on('exit', r));
chromium.kill('SIGTERM');
await Promise.race([exited, sleep(10000)]);
try {
  rmSync(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
} catch (e) {
  process.stderr.write('could not remove ' + profile + ': ' + e + '\n');
}
process.exit(result.ok ? 0 : 1);
