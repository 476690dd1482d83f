// The built-in map page: MapLibre GL JS (vendored from npm, served by riskmap) over our
// vector tiles and style. No network access beyond this server.
//
// Duty officers: active warnings are listed beside the map and pulse on it by level;
// the list and the map follow /warnings/stream live; a warning opens with its plan's
// steps and contacts, and a duty officer's key (kept in this tab only) acknowledges
// and resolves it.
import { Map, NavigationControl, ScaleControl, Popup } from '/vendor/maplibre-gl/maplibre-gl.mjs';

const GROUPS = [
  ['warnings', 'Warnings'],
  ['risk_points', 'Risk points'],
  ['sensors', 'Sensors'],
  ['pipelines', 'Pipelines'],
  ['rivers', 'Rivers'],
  ['boundary', 'Municipality boundary'],
];
const BUILT_IN = GROUPS.length;
// Warnings first: a click on a warned point opens the warning, not the point under it.
const INTERACTIVE = ['warning-points', 'warning-clusters', 'risk-points', 'risk-clusters', 'sensors',
  'sensor-clusters', 'pipelines'];
const LEVEL_COLOURS = { red: '#c92a2a', orange: '#f76707', yellow: '#f59f00', blue: '#1c7ed6' };
const LEVEL_NAMES = { red: 'Red (I)', orange: 'Orange (II)', yellow: 'Yellow (III)', blue: 'Blue (IV)' };
const RANK = { red: 4, orange: 3, yellow: 2, blue: 1 };
const STATE_NAMES = { active: 'Not acknowledged', acknowledged: 'Acknowledged', resolved: 'Resolved' };

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k === 'style') e.style.cssText = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// Words for a code (`verify_on_site` → "Verify on site"); other text as written.
function words(s) {
  if (!/^[a-z0-9_]+$/.test(s)) return s;
  const t = s.replace(/_/g, ' ');
  return t.charAt(0).toUpperCase() + t.slice(1);
}

function ago(iso) {
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(iso).toLocaleString();
}

async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${r.status} ${url}`);
  return r.json();
}

// What people read instead of raw names and codes: property titles per layer, sensor
// types by id, plan titles by id (fetched once each).
const titles = {};
let sensorTypes = {};
const planTitles = {};

async function loadTitles(layer) {
  if (titles[layer]) return titles[layer];
  try {
    const q = await getJSON(`/collections/${layer}/queryables`);
    titles[layer] = Object.fromEntries(Object.entries(q.properties || {}).map(([k, v]) => [k, v.title || k]));
  } catch { titles[layer] = {}; }
  return titles[layer];
}

async function planTitle(id) {
  if (!(id in planTitles)) {
    try { planTitles[id] = (await getJSON(`/plan-templates/${encodeURIComponent(id)}`)).title; } catch { planTitles[id] = null; }
  }
  return planTitles[id];
}

function levelBadge(level) {
  return el('span', { class: `badge level-${level}`, style: `background:${LEVEL_COLOURS[level] || '#888'}` }, LEVEL_NAMES[level] || level);
}

async function main() {
  const style = await (await fetch('/styles/riskmap.json')).json();
  const map = new Map({
    container: 'map',
    style,
    center: style.center,
    zoom: style.zoom,
    hash: true,
    attributionControl: { compact: true },
  });
  window.riskmapMap = map; // for the browser test and for curious users
  map.addControl(new NavigationControl(), 'top-right');
  map.addControl(new ScaleControl({ unit: 'metric' }), 'bottom-right');
  getJSON('/sensor-types').then((t) => {
    sensorTypes = Object.fromEntries(t.sensor_types.map((s) => [s.type_id, s]));
  }).catch(() => {});

  // Layers created from uploads: a toggle, popups, and their legend entry, like the rest.
  const known = new Set(GROUPS.map(([g]) => g));
  for (const layer of style.layers) {
    const group = layer.metadata && layer.metadata['riskmap:group'];
    if (group && !known.has(group)) {
      known.add(group);
      GROUPS.push([group, layer.metadata['riskmap:title'] || group]);
    }
    if (group && !GROUPS.slice(0, BUILT_IN).some(([g]) => g === group)) INTERACTIVE.push(layer.id);
  }

  // Layer toggles, one per group of style layers.
  const layersBox = document.getElementById('layers');
  for (const [group, title] of GROUPS) {
    const input = el('input', { type: 'checkbox', 'data-group': group });
    input.checked = true;
    input.addEventListener('change', () => {
      for (const layer of style.layers) {
        if (layer.metadata && layer.metadata['riskmap:group'] === group) {
          map.setLayoutProperty(layer.id, 'visibility', input.checked ? 'visible' : 'none');
        }
      }
    });
    layersBox.append(el('label', {}, input, title));
  }

  // Legend from the style's metadata.
  const legendBox = document.getElementById('legend');
  const legend = (style.metadata || {})['riskmap:legend'] || {};
  for (const [layer, spec] of Object.entries(legend)) {
    const group = el('div', { class: 'group' }, el('div', { class: 'title' }, spec.title));
    for (const [, color, label] of spec.items) {
      const mark = (layer === 'pipelines' || spec.mark === 'line')
        ? el('span', { class: 'line', style: `background:${color}` })
        : el('span', { class: 'swatch', style: `background:${color}` });
      group.append(el('div', { class: 'item' }, mark, label));
    }
    legendBox.append(group);
  }

  // The duty officer's key: this tab only (sessionStorage), never in the URL.
  const keyInput = document.getElementById('key');
  keyInput.value = sessionStorage.getItem('riskmap-key') || '';
  keyInput.addEventListener('input', () => sessionStorage.setItem('riskmap-key', keyInput.value.trim()));

  // Popups. `closeOnClick: false`: a click elsewhere is ours to handle (opening the next
  // feature's popup); with MapLibre's own close-on-click, every second click was lost.
  const popup = new Popup({ maxWidth: '340px', closeOnClick: false });
  let openSeq = 0;
  const show = (lngLat, content) => {
    popup.setLngLat(lngLat).setDOMContent(content).addTo(map);
  };

  let warnings = []; // the open warnings, newest first

  async function warningPopup(id, lngLat) {
    const seq = ++openSeq;
    const box = el('div', { class: 'riskmap-popup warning-popup' }, el('div', { class: 'hint' }, 'Loading…'));
    show(lngLat, box);
    let w;
    try { w = await getJSON(`/warnings/${id}`); } catch (e) { box.replaceChildren(el('div', {}, `Cannot read warning ${id}: ${e.message}`)); return; }
    if (seq !== openSeq) return;
    box.replaceChildren(...warningContent(w));
    // A warning's popup is tall (steps, contacts, sensors, buttons): bring the point
    // down the screen so all of it shows.
    map.easeTo({ center: lngLat, offset: [0, Math.min(220, map.getCanvas().clientHeight / 4)], duration: 300 });
  }

  function warningContent(w) {
    const s = w.subject || {};
    const out = [
      el('h3', {}, levelBadge(w.level), ' ', s.name || s.id),
      el('div', { class: 'meta' }, `${STATE_NAMES[w.state] || w.state} · raised ${ago(w.raised_at)}`
        + (s.district ? ` · ${s.district}` : '') + (s.category ? ` · ${words(s.category)}` : '')),
    ];
    if (w.acknowledged) out.push(el('div', { class: 'meta' }, `Acknowledged by ${w.acknowledged.by}: ${w.acknowledged.note || '(no note)'}`));
    if (w.plan && w.plan.steps) {
      out.push(el('div', { class: 'section' }, `Plan: ${w.plan.title} — steps for ${w.plan.level}`));
      out.push(el('ol', { class: 'steps' }, ...w.plan.steps.map((t) => el('li', {}, t))));
      if (w.plan.contacts && w.plan.contacts.length) {
        out.push(el('div', { class: 'section' }, 'Call'));
        out.push(el('ul', { class: 'contacts' }, ...w.plan.contacts.map((c) => el('li', {},
          `${words(c.role)}${c.name ? ` ${c.name}` : ''} `,
          c.phone ? el('a', { href: `tel:${c.phone.replace(/[^0-9+]/g, '')}` }, c.phone) : null))));
      }
      if (w.plan.notes) out.push(el('div', { class: 'meta' }, w.plan.notes));
    } else if (w.plan && w.plan.missing) {
      out.push(el('div', { class: 'error' }, `No plan: ${w.plan.missing}`));
    }
    if (w.sensors && w.sensors.length) {
      out.push(el('div', { class: 'section' }, 'Sensors'));
      const t = el('table');
      for (const x of w.sensors) {
        const ty = x.type || {};
        const latest = x.latest ? `${x.latest.value} ${ty.unit || ''}` : 'no reading';
        t.append(el('tr', {}, el('th', {}, x.id), el('td', {}, `${ty.name || `type ${x.type_id}`}: ${latest} (${x.state.replace('_', ' ')})`)));
      }
      out.push(t);
    }
    if (w.state !== 'resolved') out.push(actions(w));
    return out;
  }

  // Acknowledge and resolve, with the key from the panel.
  function actions(w) {
    const note = el('input', { type: 'text', class: 'note', placeholder: 'Note (needed to resolve)', 'aria-label': 'Note' });
    const msg = el('div', { class: 'msg', role: 'status' });
    const act = async (what) => {
      const key = keyInput.value.trim();
      if (!key) {
        msg.textContent = 'Enter a duty officer key in the panel first.';
        document.getElementById('officer').open = true;
        keyInput.focus();
        return;
      }
      msg.textContent = '…';
      const r = await fetch(`/warnings/${w.id}/${what}`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ note: note.value }),
      });
      const body = await r.json().catch(() => ({}));
      if (!r.ok) { msg.textContent = body.description || `Refused (${r.status})`; return; }
      msg.textContent = what === 'ack' ? 'Acknowledged.' : 'Resolved.';
      refreshSoon();
      const lngLat = popup.getLngLat();
      if (lngLat && what === 'ack') warningPopup(w.id, lngLat);
    };
    const ack = el('button', { type: 'button', class: 'ack', onclick: () => act('ack') }, 'Acknowledge');
    const resolve = el('button', { type: 'button', class: 'resolve', onclick: () => act('resolve') }, 'Resolve');
    return el('div', { class: 'actions' }, note, el('div', { class: 'buttons' }, w.state === 'active' ? ack : null, resolve), msg);
  }

  // A feature's popup: titles instead of names, plan titles instead of plan ids, sensor
  // types by name and unit, links between a sensor and its risk point or pipeline.
  async function featurePopup(f, lngLat) {
    const seq = ++openSeq;
    const p = f.properties;
    const layer = f.sourceLayer;
    const box = el('div', { class: 'riskmap-popup' });
    if (p.cluster) {
      const what = { risk_points: 'risk points', sensors: 'sensors', warnings: 'warnings' }[layer] || 'features';
      box.append(el('h3', {}, `${p.count} ${what}`));
      if (layer === 'warnings' && p.level) box.append(el('div', {}, 'Highest level: ', levelBadge(p.level)));
      else if (p.level) box.append(el('div', {}, `Most severe risk level: ${p.level}`));
      if (p.warning_level) box.append(el('div', {}, 'Warnings inside, up to ', levelBadge(p.warning_level)));
      box.append(el('div', { class: 'hint' }, 'Zoom in to see them one by one.'));
      show(lngLat, box);
      return;
    }
    if (layer === 'warnings') { warningPopup(p.id, lngLat); return; }
    const names = await loadTitles(layer);
    if (seq !== openSeq) return;
    box.append(el('h3', {}, p.name || p.id || layer));
    if (p.warning_level) {
      const w = warnings.find((x) => x.subject && x.subject.id === p.id && x.subject.layer === layer);
      const line = el('div', { class: 'warned' }, levelBadge(p.warning_level), ' warning');
      if (w) line.append(' · ', el('a', { href: '#', onclick: (e) => { e.preventDefault(); warningPopup(w.id, lngLat); } }, 'open it'));
      box.append(line);
    }
    const table = el('table');
    const row = (k, v) => table.append(el('tr', {}, el('th', {}, names[k] || words(k)), el('td', {}, v)));
    const link = (text, go) => el('a', { href: '#', onclick: (e) => { e.preventDefault(); go(); } }, text);
    for (const [k, v] of Object.entries(p)) {
      if (v === null || v === undefined || v === '' || k === 'name' || k === 'warning_level') continue;
      if (k === 'plan_id') {
        const cell = el('span', {}, String(v));
        row(k, cell);
        planTitle(v).then((t) => { if (t) cell.textContent = t; });
      } else if (k === 'type_id') {
        const t = sensorTypes[v];
        row(k, t ? `${words(t.name)} (${t.unit})` : `type ${v}`);
      } else if (k === 'risk_point_id' || k === 'pipeline_id') {
        const target = k === 'risk_point_id' ? 'risk_points' : 'pipelines';
        row(k, link(String(v), () => goTo(target, v)));
      } else if (k === 'category' || k === 'kind' || k === 'material') {
        row(k, words(String(v)));
      } else {
        row(k, String(v));
      }
    }
    box.append(table);
    if (layer === 'risk_points' && !p.plan_id) {
      box.append(el('div', { class: 'error' }, 'No response plan: a gap to close.'));
    } else if (layer === 'risk_points') {
      const plan = el('div', { class: 'plan' });
      box.append(plan);
      getJSON(`/risk_points/${encodeURIComponent(p.id)}/plan`).then((pl) => {
        const level = p.warning_level || 'blue';
        plan.append(el('div', { class: 'section' }, `Plan steps for ${level}`),
          el('ol', { class: 'steps' }, ...(pl.steps_text[level] || []).map((t) => el('li', {}, t))));
      }).catch(() => plan.append(el('div', { class: 'error' }, 'No response plan: a gap to close.')));
    }
    if (layer === 'sensors') {
      const state = el('div', { class: 'meta' });
      box.append(state);
      getJSON(`/sensors/${encodeURIComponent(p.id)}`).then((s) => {
        const unit = (s.type && s.type.unit) || '';
        state.textContent = s.latest
          ? `Latest: ${s.latest.value} ${unit} at ${new Date(s.latest.ts).toLocaleString()} (${s.state.replace('_', ' ')})`
          : 'No reading yet (no data)';
      }).catch(() => {});
    }
    show(lngLat, box);
  }

  // Flies to a feature by layer and id and opens its popup.
  async function goTo(layer, id) {
    let f;
    try { f = await getJSON(`/collections/${layer}/items/${encodeURIComponent(id)}`); } catch { return; }
    const g = f.geometry;
    const c = g.type === 'Point' ? g.coordinates : (g.type === 'LineString' ? g.coordinates[Math.floor(g.coordinates.length / 2)] : null);
    if (!c) return;
    map.easeTo({ center: c, zoom: Math.max(map.getZoom(), 15) });
    featurePopup({ properties: { ...f.properties, id: f.id }, sourceLayer: layer }, { lng: c[0], lat: c[1] });
  }

  map.on('click', (e) => {
    const hits = map.queryRenderedFeatures(e.point, { layers: INTERACTIVE.filter((id) => map.getLayer(id)) });
    if (!hits.length) { popup.remove(); return; }
    const f = hits[0];
    featurePopup(f, e.lngLat);
    if (f.properties.cluster) map.easeTo({ center: e.lngLat, zoom: Math.min(map.getZoom() + 2, 18) });
  });
  for (const id of INTERACTIVE) {
    map.on('mouseenter', id, () => { map.getCanvas().style.cursor = 'pointer'; });
    map.on('mouseleave', id, () => { map.getCanvas().style.cursor = ''; });
  }
  map.on('idle', () => { document.body.dataset.mapIdle = String(Date.now()); });

  // The list of open warnings, most severe first, newest first within a level.
  const list = document.getElementById('warnings');
  const count = document.getElementById('warning-count');
  async function refresh() {
    let data;
    try { data = await getJSON('/warnings?limit=200'); } catch { return; }
    warnings = data.warnings;
    count.textContent = String(data.numberMatched);
    count.className = `count${data.numberMatched ? ' hot' : ''}`;
    const sorted = [...warnings].sort((a, b) => (RANK[b.level] - RANK[a.level]) || (b.id - a.id));
    list.replaceChildren(...sorted.map((w) => {
      const s = w.subject || {};
      return el('button', {
        type: 'button', class: `warning-item state-${w.state}`, 'data-id': String(w.id), role: 'listitem',
        onclick: () => {
          if (s.position) {
            map.easeTo({ center: s.position, zoom: Math.max(map.getZoom(), 14) });
            warningPopup(w.id, { lng: s.position[0], lat: s.position[1] });
          }
        },
      }, levelBadge(w.level), el('span', { class: 'what' }, s.name || s.id),
      el('span', { class: 'when' }, `${s.district ? `${s.district} · ` : ''}${ago(w.raised_at)}${w.state === 'acknowledged' ? ' · ack' : ''}`));
    }));
    if (!warnings.length) list.replaceChildren(el('div', { class: 'hint' }, 'No active warning.'));
    document.body.dataset.warnings = String(data.numberMatched);
    // The warnings' tiles again, under a new URL so nothing cached is reused (the
    // server draws again only the tiles that changed).
    const src = map.getSource('riskmap-warnings');
    if (src && src.setTiles) {
      version += 1;
      src.setTiles(style.sources['riskmap-warnings'].tiles.map((t) => `${t}?v=${version}`));
    }
  }
  let version = 0;
  let pending = null;
  function refreshSoon() {
    if (pending) return;
    pending = setTimeout(() => { pending = null; refresh(); }, 150);
  }
  refresh();
  // Live: every transition on the stream refreshes the list and the warnings' tiles.
  const stream = new EventSource('/warnings/stream');
  for (const kind of ['raised', 'escalated', 'de_escalated', 'acknowledged', 'resolved']) {
    stream.addEventListener(kind, refreshSoon);
  }

  // Warned points pulse, faster for higher levels: one halo layer per level, each with
  // a constant radius changed over time (a data-driven value would make MapLibre parse
  // the warnings' tiles again at every frame).
  const PULSE = { red: [10, 10, 700], orange: [9, 8, 1000], yellow: [8, 6, 1400], blue: [7, 5, 1800] };
  const pulse = (t) => {
    // Only while there are warnings: an idle map is not repainted for nothing.
    for (const [level, [base, amp, period]] of Object.entries(warnings.length ? PULSE : {})) {
      const id = `warning-halo-${level}`;
      if (!map.getLayer(id)) continue;
      const phase = 0.5 + 0.5 * Math.sin((t / period) * 2 * Math.PI);
      map.setPaintProperty(id, 'circle-radius', base + amp * phase);
    }
    setTimeout(() => requestAnimationFrame(pulse), 60);
  };
  map.once('load', () => requestAnimationFrame(pulse));
}

main().catch((err) => {
  console.error(err);
  document.getElementById('subtitle').textContent = `The map could not start: ${err.message}`;
});
