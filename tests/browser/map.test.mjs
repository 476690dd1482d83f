// Browser test of the built-in map page: headless Chromium (Debian's, driven by
// playwright-core) opens `/` on a demo server, waits until the map has drawn our vector
// tiles, finds no console errors, clicks several risk points one after the other and
// sees each one's popup, finds a level I point drawn above a level IV one at the same
// place, creates a layer from an upload and finds it in the layer list and legend,
// drawn, with its popup; then posts a reading over a threshold and sees the warning
// listed and drawn within a second without a reload, opens its plan on click and
// acknowledges it with a duty officer's key; and saves screenshots to target/browser/.
//
//   node tests/browser/map.test.mjs        (from the repository; .ci/run does it)
// Env: RISKMAP_BIN (default target/debug/riskmap), CHROMIUM (default /usr/bin/chromium).
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const require = createRequire(join(root, 'web', 'package.json'));
const { chromium } = require('playwright-core');

const bin = process.env.RISKMAP_BIN || join(root, 'target', 'debug', 'riskmap');
const data = mkdtempSync(join(tmpdir(), 'riskmap-browser-'));
// A layers directory of its own: the test creates a layer from an upload.
const layersDir = join(data, 'layers');
cpSync(join(root, 'layers'), layersDir, { recursive: true });
const fail = (msg) => { console.error(`FAIL: ${msg}`); process.exitCode = 1; };

function startServer() {
  return new Promise((resolve, reject) => {
    const proc = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--data', data, '--layers', layersDir], {
      env: { ...process.env, RISKMAP_LOG: 'info', NO_COLOR: '1' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`no address from riskmap: ${buf}`)), 120_000);
    proc.stderr.on('data', (d) => {
      buf += d.toString();
      const m = buf.match(/listening on (http:\/\/[^/\s]+)\//);
      if (m) { clearTimeout(timer); resolve({ proc, base: m[1] }); }
    });
    proc.on('exit', (code) => reject(new Error(`riskmap exited (${code}): ${buf}`)));
  });
}

// A point of style layer `layer` drawn well inside the viewport (clear of the side
// panel): its id and where to click it, or null.
function drawnInside(page, layer, withPlan = false) {
  return page.evaluate(({ layer, withPlan }) => {
    const m = window.riskmapMap;
    const canvas = m.getCanvas().getBoundingClientRect();
    for (const f of m.queryRenderedFeatures({ layers: [layer] })) {
      if (withPlan && !f.properties.plan_id) continue;
      const p = m.project(f.geometry.coordinates);
      if (p.x > 300 && p.x < canvas.width - 80 && p.y > 80 && p.y < canvas.height - 80) {
        return { id: f.properties.id, x: p.x + canvas.left, y: p.y + canvas.top };
      }
    }
    return null;
  }, { layer, withPlan });
}

const { proc, base } = await startServer();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--use-angle=swiftshader', '--enable-unsafe-swiftshader'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  const tiles = { ok: 0, empty: 0, other: [] };
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`page: ${e.message}`));
  // Requests a navigation of the test's own aborts are not errors.
  let navigating = false;
  page.on('requestfailed', (r) => {
    if (navigating && r.failure()?.errorText === 'net::ERR_ABORTED') return;
    errors.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400) errors.push(`HTTP ${r.status()} ${r.url()}`);
    if (!r.url().includes('/tiles/')) return;
    if (r.status() === 200) tiles.ok += 1; else if (r.status() === 204) tiles.empty += 1;
    else if (!r.url().endsWith('.json')) tiles.other.push(`${r.status()} ${r.url()}`);
  });

  await page.goto(`${base}/#12/29.56/106.55`, { waitUntil: 'load' });
  // Drawn: the style is loaded, tiles are in, and risk points are on screen.
  await page.waitForFunction(() => {
    const m = window.riskmapMap;
    return m && m.getLayer('risk-points') && m.areTilesLoaded() && m.queryRenderedFeatures({ layers: ['risk-points'] }).length > 0;
  }, null, { timeout: 90_000 });
  if (tiles.ok < 1) fail(`no vector tile was fetched (${JSON.stringify(tiles)})`);

  // Click a risk point well inside the viewport and read its popup.
  const target = await drawnInside(page, 'risk-points');
  if (!target) throw new Error('no risk point drawn inside the viewport');
  await page.mouse.click(target.x, target.y);
  const popup = page.locator('.maplibregl-popup .riskmap-popup');
  await popup.waitFor({ state: 'visible', timeout: 10_000 });
  const text = await popup.innerText();
  if (!text.includes(target.id)) fail(`popup does not show ${target.id}: ${text}`);
  if (!/level/i.test(text)) fail(`popup lacks the level: ${text}`);
  if (/plan_id|type_id/.test(text)) fail(`popup shows raw field names: ${text}`);

  // Several clicks in a row, with the popup open: each opens the clicked point's popup.
  // Each target is a point the click reaches (not under the open popup or the panel).
  const clicked = [target.id];
  for (let n = 0; n < 4; n += 1) {
    const t = await page.evaluate((clicked) => {
      const m = window.riskmapMap;
      const canvas = m.getCanvas();
      const r = canvas.getBoundingClientRect();
      for (const f of m.queryRenderedFeatures({ layers: ['risk-points'] })) {
        if (clicked.includes(f.properties.id)) continue;
        const p = m.project(f.geometry.coordinates);
        const x = p.x + r.left; const y = p.y + r.top;
        if (x < 20 || y < 20 || x > r.width - 20 || y > r.height - 20) continue;
        if (document.elementFromPoint(x, y) !== canvas) continue;
        // Alone under the click: no other risk point within 12 px.
        const near = m.queryRenderedFeatures([[p.x - 12, p.y - 12], [p.x + 12, p.y + 12]], { layers: ['risk-points'] });
        if (near.length !== 1) continue;
        return { id: f.properties.id, x, y };
      }
      return null;
    }, clicked);
    if (!t) { fail(`found only ${n} more risk points to click in a row`); break; }
    clicked.push(t.id);
    await page.mouse.click(t.x, t.y);
    try {
      await page.waitForFunction((id) => {
        const box = document.querySelector('.maplibregl-popup .riskmap-popup');
        return box && box.innerText.includes(id);
      }, t.id, { timeout: 5_000 });
    } catch {
      fail(`a click on ${t.id} right after the popup of ${clicked[clicked.length - 2]} opened no popup for it`);
    }
  }
  await page.keyboard.press('Escape');

  // Layer toggles and legend are there.
  const toggles = await page.locator('#layers input[type=checkbox]').count();
  if (toggles < 5) fail(`expected 5 layer toggles, found ${toggles}`);
  const legendItems = await page.locator('#legend .item').count();
  if (legendItems < 10) fail(`expected a legend of levels and pipeline kinds, found ${legendItems} items`);

  // A layer created from an upload: listed, in the legend, drawn, and its points open
  // a popup like the rest.
  const key = execFileSync(bin, ['keys', 'add', '--role', 'admin', '--name', 'browser', '--data', data],
    { env: { ...process.env, RISKMAP_LOG: 'warn' }, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  const shelters = {
    type: 'FeatureCollection',
    features: [0, 1, 2, 3].map((i) => ({
      type: 'Feature',
      geometry: { type: 'Point', coordinates: [106.53 + i * 0.012, 29.55 + i * 0.006] },
      properties: { id: `SH${i}`, name: `Shelter ${i}`, capacity: 100 * (i + 1) },
    })),
  };
  const created = await fetch(`${base}/collections?name=shelters&kind=reference&title=Shelters`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/geo+json' },
    body: JSON.stringify(shelters),
  });
  if (created.status !== 201) fail(`creating the shelters layer answered ${created.status}: ${await created.text()}`);
  navigating = true;
  await page.goto(`${base}/?reload#13/29.56/106.55`, { waitUntil: 'load' });
  navigating = false;
  await page.waitForFunction(() => {
    const m = window.riskmapMap;
    return m && m.areTilesLoaded() && m.getLayer('shelters')
      && m.queryRenderedFeatures({ layers: ['shelters'] }).length > 0;
  }, null, { timeout: 90_000 });
  const legendText = await page.locator('#legend').innerText();
  if (!legendText.includes('Shelters')) fail(`the legend does not list the new layer: ${legendText}`);
  const layerText = await page.locator('#layers').innerText();
  if (!layerText.includes('Shelters')) fail(`the layer list does not offer the new layer: ${layerText}`);
  const shelter = await drawnInside(page, 'shelters');
  if (!shelter) throw new Error('no shelter drawn inside the viewport');
  await page.keyboard.press('Escape');
  await page.mouse.click(shelter.x, shelter.y);
  const shelterPopup = page.locator('.maplibregl-popup .riskmap-popup');
  await shelterPopup.waitFor({ state: 'visible', timeout: 10_000 });
  const shelterText = await shelterPopup.innerText();
  if (!shelterText.includes('Shelter')) fail(`the shelter's popup shows: ${shelterText}`);

  const out = join(root, 'target', 'browser');
  mkdirSync(out, { recursive: true });
  await page.screenshot({ path: join(out, 'map.png') });

  // Level I above level IV: two risk points at one place, drawn in either order.
  const cliKey = (role) => execFileSync(bin, ['keys', 'add', '--role', role, '--name', role, '--data', data],
    { env: { ...process.env, RISKMAP_LOG: 'warn' }, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  for (const [id, level] of [['ZZ-IV', 'IV'], ['ZZ-I', 'I'], ['ZZ-IV2', 'IV']]) {
    const r = await fetch(`${base}/collections/risk_points/items`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/geo+json' },
      body: JSON.stringify({ type: 'Feature', id, geometry: { type: 'Point', coordinates: [106.5512, 29.5612] },
        properties: { name: `stacked ${level}`, category: 'landslide', level, district: 'Yuzhong' } }),
    });
    if (r.status !== 201) fail(`creating ${id} answered ${r.status}`);
  }
  navigating = true;
  await page.goto(`${base}/?stacked#17/29.5612/106.5512`, { waitUntil: 'load' });
  navigating = false;
  await page.waitForFunction(() => {
    const m = window.riskmapMap;
    return m && m.getLayer('risk-points') && m.areTilesLoaded()
      && m.queryRenderedFeatures({ layers: ['risk-points'] }).some((f) => f.properties.id === 'ZZ-I');
  }, null, { timeout: 60_000 });
  const top = await page.evaluate(() => {
    const m = window.riskmapMap;
    const p = m.project([106.5512, 29.5612]);
    return m.queryRenderedFeatures([p.x, p.y], { layers: ['risk-points'] }).map((f) => f.properties.level);
  });
  if (top[0] !== 'I') fail(`at one place, the topmost risk point is level ${top[0]}, not I (${top.join(', ')})`);

  // A warning, live: a reading over the threshold for a sensor of a risk point on screen.
  navigating = true;
  await page.goto(`${base}/?warnings#13/29.56/106.55`, { waitUntil: 'load' });
  navigating = false;
  await page.waitForFunction(() => {
    const m = window.riskmapMap;
    return m && m.getLayer('risk-points') && m.areTilesLoaded() && m.queryRenderedFeatures({ layers: ['risk-points'] }).length > 0
      && document.body.dataset.warnings !== undefined;
  }, null, { timeout: 60_000 });
  const before = Number(await page.evaluate(() => document.body.dataset.warnings));
  const rp = await drawnInside(page, 'risk-points', true);
  if (!rp) throw new Error('no risk point with a plan on screen for the warning');
  const sensors = await (await fetch(`${base}/collections/sensors/items?risk_point_id=${rp.id}&limit=1`)).json();
  if (!sensors.features.length) throw new Error(`no sensor on ${rp.id}`);
  const sensor = sensors.features[0].id;
  const sensorKey = cliKey('sensor');
  const officerKey = cliKey('duty_officer');
  const posted = await fetch(`${base}/readings`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${sensorKey}`, 'Content-Type': 'application/x-ndjson' },
    body: JSON.stringify({ sensor_id: sensor, ts: new Date().toISOString(), value: 1e6 }),
  });
  const answered = Date.now();
  const report = await posted.json();
  if (posted.status !== 200 || report.accepted !== 1 || report.transitions < 1) fail(`the reading: ${posted.status} ${JSON.stringify(report)}`);
  try {
    await page.waitForFunction(({ before, rp }) => {
      const m = window.riskmapMap;
      return Number(document.body.dataset.warnings) > before
        && document.querySelector('#warnings .warning-item')
        && m.queryRenderedFeatures({ layers: ['warning-points'] }).some((f) => f.properties.subject_id === rp);
    }, { before, rp: rp.id }, { timeout: 10_000, polling: 20 });
  } catch {
    const state = await page.evaluate(() => ({ listed: document.body.dataset.warnings,
      drawn: window.riskmapMap.queryRenderedFeatures({ layers: ['warning-points', 'warning-clusters'] }).map((f) => f.properties.subject_id || f.properties.count) }));
    throw new Error(`the warning on ${rp.id} was not listed and drawn within 10 s: ${JSON.stringify(state)}`);
  }
  const shown = Date.now() - answered;
  if (shown > 1000) fail(`the warning was listed and drawn ${shown} ms after the reading's answer, not within a second`);
  await page.screenshot({ path: join(out, 'warning.png') });
  // Its plan on click.
  const wpt = await page.evaluate((rp) => {
    const m = window.riskmapMap;
    const canvas = m.getCanvas().getBoundingClientRect();
    const f = m.queryRenderedFeatures({ layers: ['warning-points'] }).find((f) => f.properties.subject_id === rp);
    const p = m.project(f.geometry.coordinates);
    return { x: p.x + canvas.left, y: p.y + canvas.top };
  }, rp.id);
  await page.mouse.click(wpt.x, wpt.y);
  const wpop = page.locator('.maplibregl-popup .warning-popup');
  await wpop.waitFor({ state: 'visible', timeout: 5_000 });
  await page.waitForFunction(() => {
    const b = document.querySelector('.maplibregl-popup .warning-popup');
    return b && /Plan|No plan/.test(b.innerText);
  }, null, { timeout: 5_000 });
  const wtext = await wpop.innerText();
  if (!/Red \(I\)/.test(wtext)) fail(`the warning's popup does not say red: ${wtext}`);
  // The plan: its red steps, numbered, and whom to call.
  const plan = await (await fetch(`${base}/risk_points/${rp.id}/plan`)).json();
  const steps = await wpop.locator('ol.steps li').allInnerTexts();
  if (JSON.stringify(steps) !== JSON.stringify(plan.steps_text.red)) fail(`the popup's steps ${JSON.stringify(steps)} are not the plan's red steps ${JSON.stringify(plan.steps_text.red)}`);
  if (!wtext.includes(plan.contacts[0].phone)) fail(`the popup does not give the plan's contacts: ${wtext}`);
  // Acknowledged with the duty officer's key, entered in the panel.
  await page.locator('#officer summary').click();
  await page.locator('#key').fill(officerKey);
  await wpop.locator('button.ack').click();
  await page.waitForFunction(() => {
    const b = document.querySelector('.maplibregl-popup .warning-popup');
    return b && /Acknowledged/.test(b.innerText);
  }, null, { timeout: 5_000 });
  await page.waitForFunction(() => document.querySelector('#warnings .warning-item.state-acknowledged'), null, { timeout: 5_000 });
  await page.screenshot({ path: join(out, 'acknowledged.png') });
  console.log(`warning listed and drawn ${shown} ms after the reading's answer, its plan opened, acknowledged`);
  if (errors.length) fail(`console or network errors:\n  ${errors.join('\n  ')}`);
  console.log(`map drew ${tiles.ok} tiles (${tiles.empty} empty), popup for ${target.id} shown, an uploaded layer listed, drawn and clicked, screenshot in target/browser/map.png`);
} catch (e) {
  fail(e.stack || String(e));
} finally {
  await browser.close();
  proc.kill('SIGTERM');
  rmSync(data, { recursive: true, force: true });
}
