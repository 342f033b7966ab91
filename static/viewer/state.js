/**
 * The viewer's state: one plain object held by a {@link Store}, changed only through
 * `store.set(patch)`, which announces every change as a `viewer:change` CustomEvent on the
 * viewer's root element (`detail.keys` names what changed, `detail.state` is the new state).
 *
 * Also here: the display convention (which RAS voxel a tile pixel shows; the same rules as
 * ctspine/imaging/display.py) and the state <-> URL query mapping, so a link reproduces a view.
 *
 * State fields
 * - `cursor`: [i, j, k] RAS voxel of the crosshair. The slice shown in each plane is the cursor's
 *   coordinate along that plane's normal (axial k, coronal j, sagittal i).
 * - `window`: {preset: name | null, width, level} in HU; `preset` null for a custom window.
 * - `overlay`, `opacity` (0-1), `outline`, `layer` ("labels" | "reference" | "compare").
 * - `hidden`: label values not drawn; `solo`: a label value drawn alone, or null.
 * - `projection`: {mode: "mip" | "minip" | "mean", plane, slabMm: 0 (whole volume) or a thickness}.
 * - `active`: the plane that keyboard shortcuts scroll.
 */

/** The three slice planes, in the order their panels appear. */
export const PLANES = ["axial", "sagittal", "coronal"];

/** The RAS axis each plane's slice index runs along (its normal). */
export const NORMAL_AXIS = { axial: 2, coronal: 1, sagittal: 0 };

/** Projection modes the API offers, with their display titles. */
export const PROJECTION_MODES = { mip: "MIP", minip: "MinIP", mean: "Mean" };

const DEFAULT_OPACITY = 0.5;

/** Holds the state object and announces its changes as `viewer:change` events on `target`. */
export class Store {
  /**
   * @param {EventTarget} target element the events are dispatched on (the viewer root)
   * @param {object} initial the first state
   */
  constructor(target, initial) {
    this.target = target;
    this.state = Object.freeze({ ...initial });
  }

  /**
   * Merge `patch` into the state; fields whose value is unchanged (by JSON comparison) are
   * ignored. Dispatches one `viewer:change` event listing the changed keys, if any.
   * @param {object} patch
   * @returns {string[]} the keys that changed
   */
  set(patch) {
    const keys = Object.keys(patch).filter(
      (key) => JSON.stringify(patch[key]) !== JSON.stringify(this.state[key]),
    );
    if (!keys.length) return keys;
    this.state = Object.freeze({ ...this.state, ...patch });
    this.target.dispatchEvent(
      new CustomEvent("viewer:change", { bubbles: true, detail: { keys, state: this.state } }),
    );
    return keys;
  }

  /**
   * Call `handler(state, keys)` whenever one of `keys` changes (all changes if `keys` is empty).
   * @param {string[]} keys
   * @param {(state: object, keys: string[]) => void} handler
   */
  on(keys, handler) {
    this.target.addEventListener("viewer:change", (event) => {
      const changed = event.detail.keys;
      if (!keys.length || changed.some((key) => keys.includes(key))) {
        handler(event.detail.state, changed);
      }
    });
  }
}

/** Clamp `value` to the integers 0..count-1. */
export function clampIndex(value, count) {
  return Math.min(Math.max(Math.round(value), 0), count - 1);
}

/** Slice index of `plane` for the cursor voxel. */
export function sliceOf(state, plane) {
  return state.cursor[NORMAL_AXIS[plane]];
}

/**
 * The cursor moved to slice `index` of `plane` (clamped to the volume `shape` [X, Y, Z]).
 * @returns {number[]} the new cursor
 */
export function cursorAtSlice(cursor, shape, plane, index) {
  const axis = NORMAL_AXIS[plane];
  const next = [...cursor];
  next[axis] = clampIndex(index, shape[axis]);
  return next;
}

/**
 * RAS voxel [i, j, k] shown at tile pixel (`col`, `row`) of `plane` slice `index`, for a RAS+
 * volume of `shape` [X, Y, Z] (radiological display; see ctspine/imaging/display.py).
 */
export function tileToVoxel(shape, plane, index, col, row) {
  const [x, y, z] = shape;
  if (plane === "axial") return [x - 1 - col, y - 1 - row, index];
  if (plane === "coronal") return [x - 1 - col, index, z - 1 - row];
  return [index, y - 1 - col, z - 1 - row];
}

/** Where RAS voxel [i, j, k] appears on `plane`: {index, col, row}. */
export function voxelToTile(shape, plane, voxel) {
  const [x, y, z] = shape;
  const [i, j, k] = voxel;
  if (plane === "axial") return { index: k, col: x - 1 - i, row: y - 1 - j };
  if (plane === "coronal") return { index: j, col: x - 1 - i, row: z - 1 - k };
  return { index: i, col: y - 1 - j, row: z - 1 - k };
}

/** Orientation letters at the top, right, bottom and left edge of each plane's tiles. */
export const ORIENTATION = {
  axial: { top: "A", right: "L", bottom: "P", left: "R" },
  coronal: { top: "S", right: "L", bottom: "I", left: "R" },
  sagittal: { top: "S", right: "P", bottom: "I", left: "A" },
};

/**
 * The first state for `volume` (the API's volume description): crosshair on the middle labelled
 * vertebra (or the volume centre), the first window preset, overlay on.
 */
export function defaultState(volume, options = {}) {
  const middle = volume.vertebrae[Math.floor(volume.vertebrae.length / 2)];
  const cursor = middle ? [...middle.voxel] : volume.shape.map((n) => Math.floor(n / 2));
  const preset = volume.windows[0];
  return {
    cursor,
    window: { preset: preset.name, width: preset.width, level: preset.level },
    overlay: volume.has_labels,
    opacity: DEFAULT_OPACITY,
    outline: false,
    layer: volume.layers[0],
    hidden: [],
    solo: null,
    projection: { mode: "mip", plane: options.projectionPlane || "coronal", slabMm: 0 },
    active: "axial",
    maximized: null,
  };
}

function labelValue(volume, token) {
  const match = volume.vertebrae.find((v) => v.name === token || String(v.value) === token);
  return match ? match.value : null;
}

/**
 * The state a URL query describes, on top of `defaultState(volume)`. Unknown or out-of-range
 * values fall back to the defaults (a link from another case still opens something sensible).
 * @param {URLSearchParams} query
 */
export function stateFromQuery(query, volume, options = {}) {
  const state = defaultState(volume, options);
  const number = (name) => {
    const raw = query.get(name);
    const value = raw === null || raw === "" ? NaN : Number(raw);
    return Number.isFinite(value) ? value : null;
  };
  const cursor = [...state.cursor];
  for (const [name, plane] of [["sa", "sagittal"], ["co", "coronal"], ["ax", "axial"]]) {
    const value = number(name);
    const axis = NORMAL_AXIS[plane];
    if (value !== null) cursor[axis] = clampIndex(value, volume.shape[axis]);
  }
  state.cursor = cursor;
  const preset = volume.windows.find((w) => w.name === query.get("w"));
  const width = number("ww");
  const level = number("wl");
  if (preset) state.window = { preset: preset.name, width: preset.width, level: preset.level };
  else if (width !== null && width > 0 && level !== null) state.window = { preset: null, width, level };
  if (query.get("ov") === "0") state.overlay = false;
  const opacity = number("op");
  if (opacity !== null) state.opacity = Math.min(Math.max(opacity, 0), 1);
  if (query.get("ol") === "1") state.outline = true;
  if (volume.layers.includes(query.get("layer"))) state.layer = query.get("layer");
  state.hidden = (query.get("hide") || "")
    .split(",")
    .map((token) => labelValue(volume, token))
    .filter((value) => value !== null);
  state.solo = query.get("solo") ? labelValue(volume, query.get("solo")) : null;
  const mode = query.get("pm");
  const plane = query.get("pp");
  const slab = number("slab");
  state.projection = {
    mode: mode in PROJECTION_MODES ? mode : state.projection.mode,
    plane: PLANES.includes(plane) ? plane : state.projection.plane,
    slabMm: slab !== null && slab > 0 ? slab : 0,
  };
  if (PLANES.includes(query.get("active"))) state.active = query.get("active");
  return state;
}

/**
 * The URL query of `state`: slices always, everything else only where it differs from the
 * defaults, so links stay short.
 * @returns {URLSearchParams}
 */
export function stateToQuery(state, volume, options = {}) {
  const base = defaultState(volume, options);
  const query = new URLSearchParams();
  query.set("ax", state.cursor[2]);
  query.set("co", state.cursor[1]);
  query.set("sa", state.cursor[0]);
  if (state.window.preset) {
    if (state.window.preset !== base.window.preset) query.set("w", state.window.preset);
  } else {
    query.set("ww", Math.round(state.window.width));
    query.set("wl", Math.round(state.window.level));
  }
  if (!state.overlay && volume.has_labels) query.set("ov", "0");
  if (state.opacity !== base.opacity) query.set("op", state.opacity);
  if (state.outline) query.set("ol", "1");
  if (state.layer !== base.layer) query.set("layer", state.layer);
  const names = (values) =>
    values.map((value) => volume.vertebrae.find((v) => v.value === value)?.name).filter(Boolean);
  if (state.hidden.length) query.set("hide", names(state.hidden).join(","));
  if (state.solo !== null) query.set("solo", names([state.solo])[0] || "");
  if (state.projection.mode !== base.projection.mode) query.set("pm", state.projection.mode);
  if (state.projection.plane !== base.projection.plane) query.set("pp", state.projection.plane);
  if (state.projection.slabMm > 0) query.set("slab", state.projection.slabMm);
  return query;
}

/**
 * Label values to draw: the solo vertebra, or those present and not hidden.
 * @returns {number[]}
 */
export function visibleLabels(state, volume) {
  if (state.solo !== null) return [state.solo];
  return volume.vertebrae.map((v) => v.value).filter((value) => !state.hidden.includes(value));
}
