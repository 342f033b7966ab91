/**
 * The viewer's controls: window presets (from the API) and width/level inputs, overlay switch,
 * opacity, outline, layer switch, the projection panel's mode / plane / slab inputs, keyboard
 * shortcuts with their help overlay, the HU / vertebra read-out and the enlarged-panel layout.
 * Controls only read and set the state; the views react to its `viewer:change` events.
 */

import { PLANES, PROJECTION_MODES, cursorAtSlice } from "./state.js";

const DEFAULT_LAYER_TITLES = { labels: "Labels", reference: "Reference", compare: "Compare" };
const OPACITY_STEP = 0.1;

/** Find `[data-role=role]` inside `root`. */
const part = (root, role) => root.querySelector(`[data-role="${role}"]`);

/**
 * One row of the shortcut table: `keys` as shown in the help, what it does, the `event.key`
 * values it answers to (letters in either case; none for mouse gestures) and `run(key)`.
 */
const shortcut = (keys, text, eventKeys = [], run = null) => ({ keys, text, eventKeys, run });

/** Whether `item` answers to the keyboard event. */
const matches = (item, event) =>
  item.eventKeys.some(
    (key) => key === event.key || (key.length === 1 && key === event.key.toLowerCase()),
  );

/** Keyboard and mouse shortcuts: the help overlay lists exactly these. */
function shortcuts(ctx) {
  const { store, volume, views } = ctx;
  const step = (delta) => views[store.state.active].step(delta);
  const toEnd = (last) => {
    const plane = store.state.active;
    const index = last ? volume.planes[plane].slices - 1 : 0;
    store.set({ cursor: cursorAtSlice(store.state.cursor, volume.shape, plane, index) });
  };
  const toggle = (key, extra = {}) => store.set({ [key]: !store.state[key], ...extra });
  const planes = { a: "axial", s: "sagittal", c: "coronal" };
  return [
    shortcut(
      ["Wheel", "↑", "↓"],
      "next / previous slice of the view under the mouse " +
        "(up: higher number, toward superior, anterior or the patient’s right)",
      ["ArrowUp", "ArrowDown"],
      (key) => step(key === "ArrowUp" ? 1 : -1),
    ),
    shortcut(["→", "←"], "next / previous slice", ["ArrowRight", "ArrowLeft"], (key) =>
      step(key === "ArrowRight" ? 1 : -1),
    ),
    shortcut(["PgUp", "PgDn"], "10 slices up / down", ["PageUp", "PageDown"], (key) =>
      step(key === "PageUp" ? 10 : -10),
    ),
    shortcut(["Home", "End"], "first / last slice", ["Home", "End"], (key) => toEnd(key === "End")),
    shortcut(
      ["A", "S", "C"],
      "scroll the axial, sagittal or coronal view with the keys",
      ["a", "s", "c"],
      (key) => store.set({ active: planes[key.toLowerCase()] }),
    ),
    shortcut(["Click"], "move the crosshair there; the other views follow"),
    shortcut(["Right-drag"], "window: left / right changes the width, up / down the level"),
    ...volume.windows.map((preset, n) =>
      shortcut(
        [String(n + 1)],
        `${preset.title} window (W ${preset.width} / L ${preset.level})`,
        [String(n + 1)],
        () => ctx.setPreset(preset),
      ),
    ),
    shortcut(["O"], "labels overlay on / off", ["o"], () => toggle("overlay")),
    shortcut(["L"], "outlined / filled labels", ["l"], () => toggle("outline", { overlay: true })),
    shortcut(["[", "]"], "overlay opacity down / up", ["[", "]"], (key) =>
      ctx.setOpacity(store.state.opacity + (key === "]" ? OPACITY_STEP : -OPACITY_STEP)),
    ),
    shortcut(["M"], "next projection mode (MIP, MinIP, mean)", ["m"], () => ctx.nextMode()),
    shortcut(["F", "Double-click"], "enlarge the active view / back to four views", ["f"], () =>
      store.set({ maximized: store.state.maximized ? null : store.state.active }),
    ),
    shortcut(["Esc"], "show all vertebrae again, back to four views", ["Escape"], () =>
      store.set({ solo: null, maximized: null }),
    ),
    shortcut(["?"], "this help", ["?"], () => ctx.help.showModal()),
  ];
}

function fillHelp(help, list) {
  const table = part(help, "shortcuts");
  table.replaceChildren();
  for (const item of list) {
    const row = document.createElement("tr");
    const keys = document.createElement("th");
    keys.scope = "row";
    item.keys.forEach((key, n) => {
      if (n) keys.append(" ");
      const kbd = document.createElement("kbd");
      kbd.textContent = key;
      keys.append(kbd);
    });
    const text = document.createElement("td");
    text.textContent = item.text;
    row.append(keys, text);
    table.append(row);
  }
}

function bindWindow(ctx) {
  const { root, store, volume } = ctx;
  const presets = part(root, "presets");
  const width = root.querySelector("#window-width");
  const level = root.querySelector("#window-level");
  const buttons = volume.windows.map((preset) => {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.window = preset.name;
    button.textContent = preset.title;
    button.title = `W ${preset.width} / L ${preset.level}`;
    button.addEventListener("click", () => ctx.setPreset(preset));
    presets.append(button);
    return button;
  });
  const custom = () => {
    const w = Number(width.value);
    const l = Number(level.value);
    if (Number.isFinite(w) && w > 0 && Number.isFinite(l)) {
      store.set({ window: { preset: null, width: w, level: l } });
    }
  };
  width.addEventListener("change", custom);
  level.addEventListener("change", custom);
  const render = (state) => {
    for (const button of buttons) {
      button.setAttribute("aria-pressed", String(button.dataset.window === state.window.preset));
    }
    width.value = String(Math.round(state.window.width));
    level.value = String(Math.round(state.window.level));
  };
  store.on(["window"], render);
  render(store.state);
}

function bindOverlay(ctx) {
  const { root, store, volume, options } = ctx;
  const toggle = root.querySelector("#overlay-toggle");
  const opacity = root.querySelector("#overlay-opacity");
  const outline = root.querySelector("#overlay-outline");
  const layers = part(root, "layers");
  for (const input of [toggle, opacity, outline]) input.disabled = !volume.has_labels;
  toggle.addEventListener("change", () => store.set({ overlay: toggle.checked }));
  opacity.addEventListener("input", () => ctx.setOpacity(Number(opacity.value)));
  outline.addEventListener("change", () => store.set({ outline: outline.checked, overlay: true }));
  const titles = { ...DEFAULT_LAYER_TITLES, ...(options.layerTitles || {}) };
  const radios = [];
  if (volume.layers.length > 1) {
    layers.hidden = false;
    for (const layer of volume.layers) {
      const label = document.createElement("label");
      const radio = document.createElement("input");
      radio.type = "radio";
      radio.name = "viewer-layer";
      radio.value = layer;
      radio.addEventListener("change", () => store.set({ layer, overlay: true }));
      label.append(radio, ` ${titles[layer] || layer}`);
      layers.append(label);
      radios.push(radio);
    }
  }
  const render = (state) => {
    toggle.checked = state.overlay;
    opacity.value = String(state.opacity);
    part(root, "opacity-value").textContent = `${Math.round(state.opacity * 100)}%`;
    outline.checked = state.outline;
    for (const radio of radios) radio.checked = radio.value === state.layer;
  };
  store.on(["overlay", "opacity", "outline", "layer"], render);
  render(store.state);
}

function bindProjection(ctx, tools) {
  const { store } = ctx;
  const template = ctx.root.querySelector('[data-role="projection-tools"]');
  tools.replaceChildren(template.content.cloneNode(true));
  const mode = tools.querySelector("#projection-mode");
  const plane = tools.querySelector("#projection-plane");
  const slab = tools.querySelector("#projection-slab");
  for (const [value, title] of Object.entries(PROJECTION_MODES)) mode.append(new Option(title, value));
  for (const value of PLANES) plane.append(new Option(value, value));
  const set = (patch) => store.set({ projection: { ...store.state.projection, ...patch } });
  mode.addEventListener("change", () => set({ mode: mode.value }));
  plane.addEventListener("change", () => set({ plane: plane.value }));
  slab.addEventListener("change", () => {
    const value = Number(slab.value);
    set({ slabMm: Number.isFinite(value) && value > 0 ? value : 0 });
  });
  const render = (state) => {
    mode.value = state.projection.mode;
    plane.value = state.projection.plane;
    slab.value = state.projection.slabMm ? String(state.projection.slabMm) : "";
  };
  store.on(["projection"], render);
  render(store.state);
}

function bindProbe(ctx) {
  const readout = part(ctx.root, "probe");
  ctx.root.addEventListener("viewer:probe", (event) => {
    const { result, error } = event.detail;
    if (error) {
      readout.textContent = `No value under the cursor: ${error.message}`;
      return;
    }
    if (!result) {
      readout.textContent = "";
      return;
    }
    const [x, y, z] = result.world_mm.map((v) => v.toFixed(1));
    const label = result.label?.name ? ` · ${result.label.name}` : result.label ? " · no vertebra" : "";
    const reference = result.reference ? ` · reference ${result.reference.name || "none"}` : "";
    const voxel = result.voxel.join(", ");
    readout.textContent = `HU ${Math.round(result.hu)}${label}${reference} · voxel ${voxel} · ${x}, ${y}, ${z} mm`;
    readout.dataset.hu = String(result.hu);
    readout.dataset.label = result.label?.name || "";
  });
}

function bindLayout(ctx) {
  const { root, store } = ctx;
  const panels = part(root, "panels");
  const render = (state) => {
    panels.classList.toggle("has-maximized", Boolean(state.maximized));
    for (const panel of panels.querySelectorAll("[data-panel]")) {
      const key = panel.dataset.panel;
      panel.classList.toggle("active", key === state.active);
      panel.classList.toggle("maximized", key === state.maximized);
      const button = panel.querySelector('[data-role="maximize"]');
      button.setAttribute("aria-pressed", String(key === state.maximized));
    }
  };
  store.on(["maximized", "active"], render);
  render(store.state);
}

/**
 * Wire all controls of the viewer rooted at `ctx.root`.
 * @param {object} ctx {root, store, volume, views: {axial, sagittal, coronal, projection}, options}
 */
export function createControls(ctx) {
  const { root, store } = ctx;
  ctx.setPreset = ({ name, width, level }) => store.set({ window: { preset: name, width, level } });
  ctx.setOpacity = (value) => {
    const opacity = Math.round(Math.min(Math.max(value, 0), 1) * 100) / 100;
    store.set({ opacity, overlay: true });
  };
  ctx.nextMode = () => {
    const modes = Object.keys(PROJECTION_MODES);
    const next = modes[(modes.indexOf(store.state.projection.mode) + 1) % modes.length];
    store.set({ projection: { ...store.state.projection, mode: next } });
  };
  ctx.help = root.querySelector("#viewer-help");
  bindWindow(ctx);
  bindOverlay(ctx);
  bindProjection(ctx, ctx.views.projection.tools);
  bindProbe(ctx);
  bindLayout(ctx);

  const list = shortcuts(ctx);
  fillHelp(ctx.help, list);
  root.querySelector("#help-button").addEventListener("click", () => ctx.help.showModal());
  part(ctx.help, "close").addEventListener("click", () => ctx.help.close());
  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target.closest?.("input, select, textarea, [contenteditable]") && event.key !== "Escape") return;
    if (ctx.help.open) return;
    const item = list.find((candidate) => matches(candidate, event));
    if (!item) return;
    event.preventDefault();
    item.run(event.key);
  });
  // The view under the mouse is the one the keys scroll.
  for (const plane of PLANES) {
    ctx.views[plane].stage.addEventListener("pointerenter", () => store.set({ active: plane }));
  }
}
