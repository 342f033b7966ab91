/**
 * Starts a viewer on every `[data-viewer]` element of the page. The element says where its API is
 * and how to behave, so the dataset case page and an inference job page share this code:
 *
 *   data-api="/api/cases/<id>"      base of the volume / slices / projections / voxel endpoints
 *   data-sync-url="true"            keep the view state in the page URL (default true)
 *   data-layer-titles='{"labels": "Prediction", "reference": "Ground truth"}'   (optional)
 *   data-projection-plane="coronal" plane of the projection panel at first (optional)
 *
 * When all four panels have drawn their first image, the viewer sets
 * `document.body.dataset.viewsReady` (and `viewsReadyMs`, ms since navigation start) and
 * dispatches `viewer:ready` on its element.
 */

import { Prefetcher, createApi } from "./api.js";
import { createControls } from "./controls.js";
import { createLegend } from "./legend.js";
import { PLANES, Store, defaultState, stateFromQuery, stateToQuery } from "./state.js";
import { ProjectionView, SliceView } from "./views.js";

/** State keys that belong in the URL (the rest is about the session, not the view). */
const URL_KEYS = [
  "cursor", "window", "overlay", "opacity", "outline", "layer", "hidden", "solo", "projection",
];
const URL_DELAY_MS = 250;

function readOptions(root) {
  let layerTitles = {};
  try {
    layerTitles = JSON.parse(root.dataset.layerTitles || "{}");
  } catch {
    layerTitles = {};
  }
  return {
    api: root.dataset.api,
    syncUrl: root.dataset.syncUrl !== "false",
    layerTitles,
    projectionPlane: root.dataset.projectionPlane,
  };
}

function showMessage(root, text, retry) {
  const box = root.querySelector('[data-role="message"]');
  box.querySelector('[data-role="message-text"]').textContent = text;
  const button = box.querySelector('[data-role="message-retry"]');
  button.hidden = !retry;
  button.onclick = retry;
  box.hidden = false;
  root.dataset.state = "error";
}

function trackReady(root) {
  const drawn = new Set();
  root.addEventListener("viewer:drawn", (event) => {
    drawn.add(event.detail.plane);
    if (drawn.size < 4 || root.dataset.viewsReady) return;
    root.dataset.viewsReady = "true";
    requestAnimationFrame(() => {
      const ms = performance.now();
      performance.mark("viewer:views-ready");
      document.body.dataset.viewsReadyMs = ms.toFixed(1);
      document.body.dataset.viewsReady = "true";
      root.dispatchEvent(new CustomEvent("viewer:ready", { bubbles: true, detail: { ms } }));
    });
  });
}

function syncUrl(store, volume, options) {
  let timer = null;
  store.on(URL_KEYS, (state) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const query = stateToQuery(state, volume, options).toString();
      history.replaceState(history.state, "", `${location.pathname}?${query}${location.hash}`);
    }, URL_DELAY_MS);
  });
}

/** Start the viewer on `root`; on a failed volume request, show why with a retry button. */
export async function startViewer(root) {
  const options = readOptions(root);
  const api = createApi(options.api);
  root.dataset.state = "loading";
  root.querySelector('[data-role="message"]').hidden = true;
  let volume;
  try {
    volume = await api.volume();
  } catch (error) {
    showMessage(root, `This volume cannot be shown: ${error.message}`, () => startViewer(root));
    return null;
  }
  const query = new URLSearchParams(location.search);
  const initial = options.syncUrl
    ? stateFromQuery(query, volume, options)
    : defaultState(volume, options);
  const store = new Store(root, initial);
  const template = root.querySelector('[data-role="panel-template"]');
  const ctx = { root, api, volume, store, options, template, prefetcher: new Prefetcher(api.tiles) };
  const panels = root.querySelector('[data-role="panels"]');
  panels.replaceChildren();
  const views = {};
  for (const plane of PLANES) views[plane] = new SliceView(ctx, plane);
  views.projection = new ProjectionView(ctx);
  for (const view of Object.values(views)) panels.append(view.element);
  trackReady(root);
  ctx.views = views;
  createControls(ctx);
  createLegend(root.querySelector('[data-role="legend"]'), ctx);
  if (options.syncUrl) syncUrl(store, volume, options);
  root.dataset.state = "ready";
  root.viewer = ctx; // for the console and tests: store, volume, views
  for (const view of Object.values(views)) view.update();
  // Positions in mm need the world position of voxel (0, 0, 0); ask once the images are up.
  root.addEventListener("viewer:ready", () => ctx.prefetcher.resume(), { once: true });
  root.addEventListener(
    "viewer:ready",
    async () => {
      const [x, y] = volume.shape;
      try {
        const origin = await api.voxel({ plane: "axial", index: 0, x: x - 1, y: y - 1 });
        for (const plane of PLANES) views[plane].setOrigin(origin.world_mm);
      } catch {
        // positions stay as slice numbers only
      }
    },
    { once: true },
  );
  return ctx;
}

for (const root of document.querySelectorAll("[data-viewer]")) startViewer(root);
