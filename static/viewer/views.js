/**
 * The four image panels: axial, sagittal and coronal slices and a projection (MIP / MinIP / mean,
 * whole volume or a slab). Each panel draws its latest tile at the physical aspect ratio given by
 * the tile's `X-Pixel-Spacing`, with the crosshair on a second canvas above it, and turns the
 * wheel, clicks and right-drags into state changes. Tiles near the shown slice are prefetched;
 * a tile nobody waits for any more is cancelled.
 *
 * Events dispatched on the viewer root: `viewer:drawn` ({plane, first}) after a panel draws a
 * tile, `viewer:probe` ({plane, result | null}) with the HU and label under the mouse.
 */

import {
  NORMAL_AXIS,
  ORIENTATION,
  PROJECTION_MODES,
  cursorAtSlice,
  sliceOf,
  tileToVoxel,
  voxelToTile,
} from "./state.js";

/** Keys of the state that change the pixels of every tile. */
export const DISPLAY_KEYS = ["window", "overlay", "opacity", "outline", "layer", "hidden", "solo"];

const TITLES = { axial: "Axial", sagittal: "Sagittal", coronal: "Coronal" };
const AXIS_LETTERS = ["x", "y", "z"];
const WHEEL_STEP_PX = 100; // one wheel notch
const PREFETCH_AHEAD = 10; // slices prefetched in the direction of scrolling, and behind
const PREFETCH_BEHIND = 3;
const WINDOW_DRAG_INTERVAL_MS = 60;
const PROBE_DELAY_MS = 40;

/** Shared behaviour of a panel: canvases, fitting, loading a tile URL, errors, crosshair. */
class Panel {
  /**
   * @param {object} ctx {root, api, volume, store, prefetcher, template}
   * @param {string} plane the tile geometry ("axial", "coronal" or "sagittal")
   * @param {string} key the panel's name ("axial", ... or "projection")
   */
  constructor(ctx, plane, key) {
    Object.assign(this, ctx);
    this.plane = plane;
    this.key = key;
    this.element = ctx.template.content.firstElementChild.cloneNode(true);
    this.element.dataset.panel = key;
    const part = (role) => this.element.querySelector(`[data-role="${role}"]`);
    this.canvas = part("image");
    this.marks = part("marks");
    this.stage = part("stage");
    this.info = part("slice-info");
    this.slider = part("slider");
    this.tools = part("tools");
    this.error = part("error");
    this.errorText = part("error-text");
    this.title = part("title");
    this.maximize = part("maximize");
    this.tile = null; // {bitmap, spacing, url, slab}
    this.controller = null;
    this.wantedUrl = null;
    this.drawnOnce = false;
    part("retry").addEventListener("click", () => this.load(true));
    this.maximize.addEventListener("click", () =>
      this.store.set({ maximized: this.store.state.maximized === key ? null : key }),
    );
    this.stage.addEventListener("dblclick", () =>
      this.store.set({ maximized: this.store.state.maximized === key ? null : key }),
    );
    this.stage.addEventListener("contextmenu", (event) => event.preventDefault());
    new ResizeObserver(() => this.resize()).observe(this.stage);
    this.setOrientation(plane);
  }

  setOrientation(plane) {
    for (const [edge, letter] of Object.entries(ORIENTATION[plane])) {
      this.element.querySelector(`[data-role="orient-${edge}"]`).textContent = letter;
    }
  }

  /** The tile URL this panel should show now (subclasses). */
  url() {
    throw new Error("not implemented");
  }

  /** Load and draw `url()` unless it is already shown; cancels the previous request. */
  async load(force = false) {
    const url = this.url();
    if (!force && url === this.wantedUrl) return;
    this.controller?.abort();
    this.wantedUrl = url;
    if (url === this.tile?.url) {
      this.setStatus("ready");
      return;
    }
    const controller = (this.controller = new AbortController());
    this.setStatus("loading");
    try {
      const tile = await this.api.tiles.get(url, { signal: controller.signal, priority: "high" });
      const bitmap = await createImageBitmap(tile.blob);
      if (controller.signal.aborted) {
        bitmap.close();
        return;
      }
      this.tile?.bitmap.close();
      this.tile = { ...tile, bitmap };
      this.draw();
      this.drawMarks();
      this.setStatus("ready");
      this.drawn(tile);
      this.root.dispatchEvent(
        new CustomEvent("viewer:drawn", { detail: { plane: this.key, first: !this.drawnOnce } }),
      );
      this.drawnOnce = true;
    } catch (error) {
      if (error.name === "AbortError") return;
      if (this.controller === controller) {
        this.wantedUrl = null;
        this.showError(error);
      }
    }
  }

  /** Hook after a tile is drawn (prefetch, captions). */
  drawn() {}

  setStatus(status) {
    this.element.dataset.state = status;
    this.error.hidden = status !== "error";
    this.element.setAttribute("aria-busy", String(status === "loading"));
  }

  showError(error) {
    this.errorText.textContent = `Could not load this image: ${error.message}`;
    this.setStatus("error");
  }

  resize() {
    const box = this.stage.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    this.cssSize = { width: box.width, height: box.height, ratio };
    for (const canvas of [this.canvas, this.marks]) {
      canvas.width = Math.max(1, Math.round(box.width * ratio));
      canvas.height = Math.max(1, Math.round(box.height * ratio));
    }
    this.draw();
    this.drawMarks();
  }

  /** Where the tile goes in CSS pixels: fitted into the stage at its physical aspect ratio. */
  layout() {
    if (!this.tile || !this.cssSize) return null;
    const { bitmap, spacing } = this.tile;
    const widthMm = bitmap.width * spacing[0];
    const heightMm = bitmap.height * spacing[1];
    const scale = Math.min(this.cssSize.width / widthMm, this.cssSize.height / heightMm);
    const width = widthMm * scale;
    const height = heightMm * scale;
    return {
      x: (this.cssSize.width - width) / 2,
      y: (this.cssSize.height - height) / 2,
      width,
      height,
      cols: bitmap.width,
      rows: bitmap.height,
    };
  }

  draw() {
    const context = this.canvas.getContext("2d");
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.fillStyle = "#000";
    context.fillRect(0, 0, this.canvas.width, this.canvas.height);
    const box = this.layout();
    if (!box) return;
    const ratio = this.cssSize.ratio;
    context.imageSmoothingEnabled = true;
    const [x, y, width, height] = [box.x, box.y, box.width, box.height].map((v) => v * ratio);
    context.drawImage(this.tile.bitmap, x, y, width, height);
  }

  /** The crosshair through the cursor voxel, with a gap around the point itself. */
  drawMarks() {
    const context = this.marks.getContext("2d");
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.clearRect(0, 0, this.marks.width, this.marks.height);
    const box = this.layout();
    if (!box) return;
    const ratio = this.cssSize.ratio;
    context.scale(ratio, ratio);
    const at = voxelToTile(this.volume.shape, this.plane, this.store.state.cursor);
    const x = box.x + ((at.col + 0.5) * box.width) / box.cols;
    const y = box.y + ((at.row + 0.5) * box.height) / box.rows;
    const gap = 8;
    context.strokeStyle = "rgba(255, 214, 10, 0.8)";
    context.lineWidth = 1;
    context.beginPath();
    context.moveTo(box.x, y);
    context.lineTo(x - gap, y);
    context.moveTo(x + gap, y);
    context.lineTo(box.x + box.width, y);
    context.moveTo(x, box.y);
    context.lineTo(x, y - gap);
    context.moveTo(x, y + gap);
    context.lineTo(x, box.y + box.height);
    context.stroke();
  }

  /** Tile pixel {col, row} under a pointer event, or null outside the image. */
  pixelAt(event) {
    const box = this.layout();
    if (!box) return null;
    const rect = this.stage.getBoundingClientRect();
    const col = Math.floor(((event.clientX - rect.left - box.x) / box.width) * box.cols);
    const row = Math.floor(((event.clientY - rect.top - box.y) / box.height) * box.rows);
    if (col < 0 || row < 0 || col >= box.cols || row >= box.rows) return null;
    return { col, row };
  }

  /** Pointer handling shared by all panels: left button moves the crosshair (click or drag),
   * right button drags the window (horizontal: width, vertical: level). */
  bindPointer() {
    let drag = null;
    this.stage.addEventListener("pointerdown", (event) => {
      if (event.target.closest("[data-role=error]")) return; // the Retry button, not the image
      this.store.set({ active: this.key === "projection" ? this.store.state.active : this.key });
      if (event.button === 2) {
        const { width, level } = this.store.state.window;
        drag = { kind: "window", x: event.clientX, y: event.clientY, width, level };
      } else if (event.button === 0) {
        drag = { kind: "cursor" };
        this.moveCursor(event);
      } else return;
      this.stage.setPointerCapture(event.pointerId);
      event.preventDefault();
    });
    // A window drag asks for new tiles of all four panels: at most one change per interval.
    let pending = null;
    let timer = null;
    const applyWindow = () => {
      timer = null;
      if (pending) this.store.set({ window: pending });
      pending = null;
    };
    this.stage.addEventListener("pointermove", (event) => {
      if (drag?.kind === "window") {
        const [low, high] = this.volume.intensity_range;
        const perPixel = Math.max(1, (high - low) / 600);
        pending = {
          preset: null,
          width: Math.max(1, Math.round(drag.width + (event.clientX - drag.x) * perPixel)),
          level: Math.round(drag.level + (event.clientY - drag.y) * perPixel),
        };
        timer ??= setTimeout(applyWindow, WINDOW_DRAG_INTERVAL_MS);
      } else if (drag?.kind === "cursor") this.moveCursor(event);
      this.probe(event);
    });
    const end = () => {
      if (drag?.kind === "window") {
        clearTimeout(timer);
        applyWindow();
      }
      drag = null;
    };
    this.stage.addEventListener("pointerup", end);
    this.stage.addEventListener("pointercancel", end);
    this.stage.addEventListener("pointerleave", () => {
      this.cancelProbe();
      this.announceProbe({ plane: this.key, result: null });
    });
  }

  /** Set the crosshair to the voxel under the pointer (this panel's depth stays). */
  moveCursor(event) {
    const pixel = this.pixelAt(event);
    if (!pixel) return;
    const state = this.store.state;
    const index = sliceOf(state, this.plane);
    this.store.set({ cursor: tileToVoxel(this.volume.shape, this.plane, index, pixel.col, pixel.row) });
  }

  probe() {}

  cancelProbe() {}

  /** Dispatch `viewer:probe` with `detail` ({plane, result, error?}). */
  announceProbe(detail) {
    this.root.dispatchEvent(new CustomEvent("viewer:probe", { detail }));
  }
}

/** A slice panel: one plane at the cursor's slice, scrolled by wheel and slider. */
export class SliceView extends Panel {
  constructor(ctx, plane) {
    super(ctx, plane, plane);
    const count = this.volume.planes[plane].slices;
    this.title.textContent = TITLES[plane];
    this.slider.max = String(count - 1);
    this.slider.setAttribute("aria-label", `${TITLES[plane]} slice`);
    this.canvas.setAttribute("aria-label", `${TITLES[plane]} slice image`);
    this.direction = 1;
    this.wheelRest = 0;
    this.probeTimer = null;
    this.probeController = null;
    this.slider.addEventListener("input", () => this.goTo(Number(this.slider.value)));
    this.stage.addEventListener("wheel", (event) => this.wheel(event), { passive: false });
    this.bindPointer();
    this.store.on(["cursor"], (state) => {
      this.drawMarks();
      if (this.index !== sliceOf(state, plane)) this.update();
    });
    this.store.on(DISPLAY_KEYS, () => this.load());
  }

  /** Move this plane to slice `index` (clamped); the other views keep their slices. */
  goTo(index) {
    const state = this.store.state;
    this.direction = index >= sliceOf(state, this.plane) ? 1 : -1;
    const cursor = cursorAtSlice(state.cursor, this.volume.shape, this.plane, index);
    this.store.set({ cursor, active: this.plane });
  }

  /** Step `delta` slices (the keyboard and wheel use this). */
  step(delta) {
    this.goTo(sliceOf(this.store.state, this.plane) + delta);
  }

  wheel(event) {
    event.preventDefault();
    const perUnit = { 0: 1, 1: 33, 2: 400 }[event.deltaMode] ?? 1; // pixels, lines, pages
    const pixels = event.deltaY * perUnit;
    this.wheelRest += pixels;
    let steps = Math.trunc(this.wheelRest / WHEEL_STEP_PX);
    if (!steps && Math.abs(pixels) >= WHEEL_STEP_PX / 2) steps = Math.sign(pixels);
    if (!steps) return;
    this.wheelRest = 0;
    this.step(-steps); // wheel up (negative deltaY): up the body, to higher indices
  }

  update() {
    const state = this.store.state;
    this.index = sliceOf(state, this.plane);
    const count = this.volume.planes[this.plane].slices;
    this.element.dataset.index = String(this.index);
    this.slider.value = String(this.index);
    this.slider.setAttribute("aria-valuetext", `slice ${this.index + 1} of ${count}`);
    const axis = NORMAL_AXIS[this.plane];
    let text = `${this.index + 1} / ${count}`;
    if (this.origin) {
      const mm = this.origin[axis] + this.index * this.volume.spacing_mm[axis];
      text += ` · ${AXIS_LETTERS[axis]} ${mm.toFixed(1)} mm`;
    }
    this.info.textContent = text;
    this.load();
  }

  /** World position (mm) of voxel (0, 0, 0): turns slice indices into positions. */
  setOrigin(origin) {
    this.origin = origin;
    this.update();
  }

  url() {
    const state = this.store.state;
    return this.api.sliceUrl(this.plane, sliceOf(state, this.plane), state, this.volume);
  }

  drawn() {
    const state = this.store.state;
    const index = sliceOf(state, this.plane);
    const count = this.volume.planes[this.plane].slices;
    const urls = [];
    const ahead = this.direction;
    const add = (n) => {
      if (n >= 0 && n < count) urls.push(this.api.sliceUrl(this.plane, n, state, this.volume));
    };
    for (let d = 1; d <= PREFETCH_AHEAD; d += 1) {
      add(index + ahead * d);
      if (d <= PREFETCH_BEHIND) add(index - ahead * d);
    }
    this.prefetcher.want(this, urls);
  }

  cancelProbe() {
    clearTimeout(this.probeTimer);
    this.probeController?.abort();
  }

  /** Ask the API for the HU and label under the pointer (one request at a time, the latest). */
  probe(event) {
    const pixel = this.pixelAt(event);
    this.cancelProbe();
    if (!pixel) return;
    const index = sliceOf(this.store.state, this.plane);
    this.probeTimer = setTimeout(async () => {
      const controller = (this.probeController = new AbortController());
      try {
        const where = { plane: this.plane, index, x: pixel.col, y: pixel.row };
        const result = await this.api.voxel(where, controller.signal);
        this.announceProbe({ plane: this.plane, result });
      } catch (error) {
        if (error.name !== "AbortError") {
          this.announceProbe({ plane: this.plane, result: null, error });
        }
      }
    }, PROBE_DELAY_MS);
  }
}

/** The projection panel: MIP / MinIP / mean of a plane, whole volume or a slab at the cursor. */
export class ProjectionView extends Panel {
  constructor(ctx) {
    super(ctx, ctx.store.state.projection.plane, "projection");
    this.slider.remove();
    this.canvas.setAttribute("aria-label", "Projection image");
    this.bindPointer();
    this.stage.addEventListener("wheel", (event) => this.wheel(event), { passive: false });
    this.store.on(["cursor"], (state, keys) => {
      this.drawMarks();
      if (state.projection.slabMm > 0 && keys.includes("cursor")) this.update();
    });
    this.store.on(["projection", ...DISPLAY_KEYS], () => this.update());
  }

  wheel(event) {
    const { plane, slabMm } = this.store.state.projection;
    if (!slabMm) return;
    event.preventDefault();
    const state = this.store.state;
    const delta = -Math.sign(event.deltaY);
    const index = sliceOf(state, plane) + delta;
    this.store.set({ cursor: cursorAtSlice(state.cursor, this.volume.shape, plane, index) });
  }

  update() {
    const { plane } = this.store.state.projection;
    if (plane !== this.plane) {
      this.plane = plane;
      this.setOrientation(plane);
    }
    this.caption();
    this.load();
  }

  caption(slab) {
    const { mode, plane, slabMm } = this.store.state.projection;
    this.title.textContent = "Projection";
    this.canvas.setAttribute("aria-label", `${PROJECTION_MODES[mode]} of the ${plane} plane`);
    let text = slabMm > 0 ? `slab ${slabMm} mm` : "whole volume";
    if (slab && slabMm > 0) text += ` · ${slab[0] + 1}–${slab[1]}`;
    this.info.textContent = text;
    const range = slab ? `slices ${slab[0] + 1} to ${slab[1]} of the ${plane} plane` : "";
    this.info.title = slabMm > 0 ? range : "";
  }

  url() {
    const state = this.store.state;
    return this.api.projectionUrl(state, this.volume, sliceOf(state, state.projection.plane));
  }

  drawn(tile) {
    this.caption(tile.slab);
  }
}
