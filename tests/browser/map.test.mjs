// Browser test of the built-in map page: headless Chromium (Debian's, driven by
// playwright-core) opens `/` on a demo server, waits until the map has drawn our vector
// tiles, finds no console errors, clicks a risk point and sees its popup, creates a layer
// from an upload and finds it in the layer list and legend, drawn, with its popup, and
// saves a screenshot to target/browser/map.png.
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
function drawnInside(page, layer) {
  return page.evaluate((layer) => {
    const m = window.riskmapMap;
    const canvas = m.getCanvas().getBoundingClientRect();
    for (const f of m.queryRenderedFeatures({ layers: [layer] })) {
      const p = m.project(f.geometry.coordinates);
      if (p.x > 300 && p.x < canvas.width - 80 && p.y > 80 && p.y < canvas.height - 80) {
        return { id: f.properties.id, x: p.x + canvas.left, y: p.y + canvas.top };
      }
    }
    return null;
  }, layer);
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
    return m && m.loaded() && m.areTilesLoaded() && m.queryRenderedFeatures({ layers: ['risk-points'] }).length > 0;
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
  if (!/level/.test(text)) fail(`popup lacks the level: ${text}`);

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
    return m && m.loaded() && m.areTilesLoaded() && m.getLayer('shelters')
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
  if (errors.length) fail(`console or network errors:\n  ${errors.join('\n  ')}`);
  console.log(`map drew ${tiles.ok} tiles (${tiles.empty} empty), popup for ${target.id} shown, an uploaded layer listed, drawn and clicked, screenshot in target/browser/map.png`);
} catch (e) {
  fail(e.stack || String(e));
} finally {
  await browser.close();
  proc.kill('SIGTERM');
  rmSync(data, { recursive: true, force: true });
}
