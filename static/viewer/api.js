/**
 * Talking to the tile API of one volume (a dataset case `/api/cases/<id>` or an inference job,
 * which exposes the same endpoints): JSON requests, tile URLs, a tile cache that shares one
 * download between everyone who wants a tile and cancels it when nobody wants it any more, and a
 * prefetcher that fills the cache with the tiles likely to be wanted next.
 */

import { visibleLabels } from "./state.js";

/** A request the API answered with an error; `message` is the API's own explanation. */
export class ApiError extends Error {
  constructor(message, status, url) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.url = url;
  }
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body.error) message = body.error;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(message, response.status, response.url);
}

async function getJson(url, signal) {
  // No extra headers: the page preloads the volume JSON and this request must match it.
  const response = await fetch(url, { signal });
  if (!response.ok) throw await failure(response);
  return response.json();
}

function abortError() {
  return new DOMException("The request was cancelled", "AbortError");
}

/**
 * Display parameters of a tile request for `state` (window, overlay, labels, opacity, outline,
 * layer) plus the volume version `v` that makes the response immutable-cacheable. Parameters are
 * added in a fixed order, so equal displays give equal URLs (and hit the caches).
 * @returns {URLSearchParams}
 */
export function displayQuery(state, volume) {
  const query = new URLSearchParams();
  if (state.window.preset) query.set("window", state.window.preset);
  else {
    query.set("ww", String(Math.round(state.window.width)));
    query.set("wl", String(Math.round(state.window.level)));
  }
  // Without a vertebra list (no label statistics) every label is drawn.
  const visible = visibleLabels(state, volume);
  const subset = volume.vertebrae.length > 0 && visible.length < volume.vertebrae.length;
  if (!state.overlay || !volume.has_labels || (subset && !visible.length)) {
    query.set("overlay", "0");
  } else {
    if (subset) query.set("labels", visible.join(","));
    if (state.opacity !== 0.5) query.set("opacity", String(state.opacity));
    if (state.outline) query.set("outline", "1");
    if (state.layer !== volume.layers[0]) query.set("layer", state.layer);
  }
  query.set("v", volume.version);
  return query;
}

/**
 * A downloaded tile: the encoded image, its pixel spacing in mm from `X-Pixel-Spacing`
 * ([column mm, row mm]) and, for projections, the slab from `X-Slab` ([start, stop]).
 * @typedef {{blob: Blob, spacing: number[], slab: number[] | null, url: string}} Tile
 */

async function fetchTile(url, signal, priority) {
  const response = await fetch(url, { signal, priority });
  if (!response.ok) throw await failure(response);
  const spacing = (response.headers.get("X-Pixel-Spacing") || "1,1").split(",").map(Number);
  const slabHeader = response.headers.get("X-Slab");
  const blob = await response.blob();
  return { blob, spacing, slab: slabHeader ? slabHeader.split(",").map(Number) : null, url };
}

/**
 * Tiles by URL: an LRU of downloaded blobs (up to `maxBytes`) and the downloads in flight.
 * A download in flight is shared; it is cancelled once every caller's signal has aborted.
 */
export class TileCache {
  constructor(maxBytes = 96 * 1024 * 1024) {
    this.maxBytes = maxBytes;
    this.bytes = 0;
    this.entries = new Map();
  }

  /** Whether `url` is downloaded (not merely in flight). */
  has(url) {
    return Boolean(this.entries.get(url)?.tile);
  }

  /**
   * The tile at `url`, downloaded once. Rejects with an AbortError when `signal` aborts first.
   * @param {string} url
   * @param {{signal?: AbortSignal, priority?: "high" | "low" | "auto"}} options
   * @returns {Promise<Tile>}
   */
  get(url, { signal, priority = "auto" } = {}) {
    let entry = this.entries.get(url);
    if (entry?.tile) {
      this.entries.delete(url); // re-insert: most recently used last
      this.entries.set(url, entry);
      return Promise.resolve(entry.tile);
    }
    if (!entry) entry = this.start(url, priority);
    entry.users += 1;
    return new Promise((resolve, reject) => {
      let settled = false;
      const release = () => {
        if (settled) return false;
        settled = true;
        entry.users -= 1;
        return true;
      };
      const onAbort = () => {
        if (!release()) return;
        if (entry.users === 0 && !entry.tile) {
          entry.controller.abort();
          if (this.entries.get(url) === entry) this.entries.delete(url);
        }
        reject(abortError());
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      entry.promise.then(
        (tile) => {
          signal?.removeEventListener("abort", onAbort);
          if (release()) resolve(tile);
        },
        (error) => {
          signal?.removeEventListener("abort", onAbort);
          if (release()) reject(error);
        },
      );
    });
  }

  start(url, priority) {
    const entry = { controller: new AbortController(), users: 0, tile: null };
    entry.promise = fetchTile(url, entry.controller.signal, priority).then(
      (tile) => {
        entry.tile = tile;
        this.bytes += tile.blob.size;
        this.evict();
        return tile;
      },
      (error) => {
        if (this.entries.get(url) === entry) this.entries.delete(url);
        throw error;
      },
    );
    entry.promise.catch(() => {}); // callers handle errors; nobody may be left to listen
    this.entries.set(url, entry);
    return entry;
  }

  evict() {
    for (const [url, entry] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      if (!entry.tile) continue;
      this.entries.delete(url);
      this.bytes -= entry.tile.blob.size;
    }
  }
}

/**
 * Downloads tiles the user is likely to want next, at low priority and at most `limit` at a
 * time. `want(owner, urls)` replaces what `owner` wants; downloads nobody wants are cancelled.
 * It starts `paused` (call `resume()`), so that the first images of all panels come first.
 */
export class Prefetcher {
  constructor(tiles, limit = 2) {
    this.tiles = tiles;
    this.limit = limit;
    this.paused = true;
    this.wanted = new Map();
    this.running = new Map();
    this.failed = new Set();
  }

  resume() {
    this.paused = false;
    this.pump();
  }

  want(owner, urls) {
    this.wanted.delete(owner);
    this.wanted.set(owner, urls); // the latest owner goes first
    this.pump();
  }

  pump() {
    if (this.paused) return;
    const order = [...this.wanted.values()].reverse().flat();
    const wanted = new Set(order);
    for (const [url, controller] of this.running) {
      if (!wanted.has(url)) {
        controller.abort();
        this.running.delete(url);
      }
    }
    for (const url of order) {
      if (this.running.size >= this.limit) break;
      if (this.running.has(url) || this.failed.has(url) || this.tiles.has(url)) continue;
      const controller = new AbortController();
      this.running.set(url, controller);
      this.tiles
        .get(url, { signal: controller.signal, priority: "low" })
        .catch((error) => {
          if (error.name !== "AbortError") this.failed.add(url);
        })
        .finally(() => {
          if (this.running.get(url) !== controller) return;
          this.running.delete(url);
          this.pump();
        });
    }
  }
}

/**
 * The API of one volume.
 * @param {string} base e.g. "/api/cases/liver_106" (a trailing slash is removed)
 */
export function createApi(base) {
  const root = base.replace(/\/+$/, "");
  const tiles = new TileCache();
  return {
    root,
    tiles,
    /** The volume description: shape, planes, vertebrae, windows, layers, version. */
    volume: (signal) => getJson(`${root}/volume/`, signal),
    /** HU, voxel, world position and labels under tile pixel (`x`, `y`) of a slice. */
    voxel: ({ plane, index, x, y }, signal) =>
      getJson(`${root}/voxel/?${new URLSearchParams({ plane, index, x, y })}`, signal),
    /** URL of slice `index` of `plane` drawn as `state` says. */
    sliceUrl: (plane, index, state, volume) =>
      `${root}/slices/${plane}/${index}.png?${displayQuery(state, volume)}`,
    /** URL of the projection panel: whole volume, or a slab centred on the cursor's slice. */
    projectionUrl: (state, volume, center) => {
      const { mode, plane, slabMm } = state.projection;
      const query = new URLSearchParams({ mode });
      if (slabMm > 0) {
        query.set("center", String(center));
        query.set("slab_mm", String(slabMm));
      }
      for (const [name, value] of displayQuery(state, volume)) query.set(name, value);
      return `${root}/projections/${plane}.png?${query}`;
    },
  };
}
