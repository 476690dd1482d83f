// The built-in map page: MapLibre GL JS (vendored from npm, served by riskmap) over our
// vector tiles and style. No network access beyond this server.
import { Map, NavigationControl, ScaleControl, Popup } from '/vendor/maplibre-gl/maplibre-gl.mjs';

const GROUPS = [
  ['risk_points', 'Risk points'],
  ['sensors', 'Sensors'],
  ['pipelines', 'Pipelines'],
  ['rivers', 'Rivers'],
  ['boundary', 'Municipality boundary'],
];
const BUILT_IN = GROUPS.length;
const INTERACTIVE = ['risk-points', 'risk-clusters', 'sensors', 'sensor-clusters', 'pipelines'];

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v; else if (k === 'style') e.style.cssText = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function popupContent(f) {
  const p = f.properties;
  const box = el('div', { class: 'riskmap-popup' });
  if (p.cluster) {
    const what = f.sourceLayer === 'risk_points' ? 'risk points' : 'sensors';
    box.append(el('h3', {}, `${p.count} ${what}`));
    if (p.level) box.append(el('div', {}, `Most severe level: ${p.level}`));
    box.append(el('div', { class: 'hint' }, 'Zoom in to see them one by one.'));
    return box;
  }
  box.append(el('h3', {}, p.name || p.id || f.sourceLayer));
  const table = el('table');
  for (const [k, v] of Object.entries(p)) {
    if (v === null || v === undefined || v === '') continue;
    table.append(el('tr', {}, el('th', {}, k), el('td', {}, String(v))));
  }
  box.append(table);
  return box;
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

  // Details on click; clusters zoom in.
  const popup = new Popup({ maxWidth: '320px' });
  map.on('click', (e) => {
    const hits = map.queryRenderedFeatures(e.point, { layers: INTERACTIVE });
    if (!hits.length) return;
    const f = hits[0];
    popup.setLngLat(e.lngLat).setDOMContent(popupContent(f)).addTo(map);
    if (f.properties.cluster) map.easeTo({ center: e.lngLat, zoom: Math.min(map.getZoom() + 2, 18) });
  });
  for (const id of INTERACTIVE) {
    map.on('mouseenter', id, () => { map.getCanvas().style.cursor = 'pointer'; });
    map.on('mouseleave', id, () => { map.getCanvas().style.cursor = ''; });
  }
  map.on('idle', () => { document.body.dataset.mapIdle = String(Date.now()); });
}

main().catch((err) => {
  console.error(err);
  document.getElementById('subtitle').textContent = `The map could not start: ${err.message}`;
});
