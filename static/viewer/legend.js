/**
 * The vertebra legend: the vertebrae present, grouped by region, with the colours the API gives.
 * Each vertebra can be hidden or shown alone; its name jumps every view to its centroid. Group
 * checkboxes hide or show all cervical, thoracic or lumbar vertebrae at once. The vertebra under
 * the mouse (from `viewer:probe`) is highlighted.
 */

const REGIONS = [
  ["cervical", "Cervical"],
  ["thoracic", "Thoracic"],
  ["lumbar", "Lumbar"],
];

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

/**
 * Build the legend into `container` and keep it in step with the state.
 * @param {HTMLElement} container
 * @param {{root: HTMLElement, store: import("./state.js").Store, volume: object}} ctx
 */
export function createLegend(container, { root, store, volume }) {
  container.replaceChildren();
  if (!volume.vertebrae.length) {
    const text = volume.has_labels
      ? "The labels are drawn, but this volume has no vertebra list (label statistics)."
      : "No vertebra labels for this volume.";
    container.append(element("p", { class: "legend-empty", text }));
    return;
  }
  const items = new Map();
  const groups = [];
  for (const [region, title] of REGIONS) {
    const members = volume.vertebrae.filter((v) => v.region === region);
    if (!members.length) continue;
    const toggle = element("input", { type: "checkbox", "data-region": region });
    const span = `${members[0].name}–${members[members.length - 1].name}`;
    const heading = element(
      "label",
      { class: "legend-group-toggle" },
      toggle,
      ` ${title} `,
      element("span", { class: "count", text: members.length > 1 ? span : members[0].name }),
    );
    const list = element("ul", { class: "legend-list" });
    for (const vertebra of members) {
      const visible = element("input", { type: "checkbox", "aria-label": `Show ${vertebra.name}` });
      const jump = element(
        "button",
        { type: "button", class: "legend-jump", title: `Go to ${vertebra.name}`, "data-role": "jump" },
        element("span", { class: "swatch", "aria-hidden": "true" }),
        vertebra.name,
      );
      const solo = element("button", {
        type: "button",
        class: "legend-solo",
        "aria-pressed": "false",
        "aria-label": `Show ${vertebra.name} alone`,
        title: "Show alone",
        text: "◎",
      });
      const attributes = { "data-label": vertebra.value, "data-name": vertebra.name };
      const item = element("li", attributes, visible, jump, solo);
      item.style.setProperty("--swatch", vertebra.colour);
      visible.addEventListener("change", () => {
        const hidden = store.state.hidden.filter((value) => value !== vertebra.value);
        if (!visible.checked) hidden.push(vertebra.value);
        store.set({ hidden, solo: null, overlay: true });
      });
      jump.addEventListener("click", () => store.set({ cursor: [...vertebra.voxel] }));
      solo.addEventListener("click", () => {
        const alone = store.state.solo === vertebra.value;
        if (alone) store.set({ solo: null });
        else store.set({ solo: vertebra.value, overlay: true, cursor: [...vertebra.voxel] });
      });
      items.set(vertebra.value, { item, visible, solo });
      list.append(item);
    }
    toggle.addEventListener("change", () => {
      const values = members.map((v) => v.value);
      const hidden = store.state.hidden.filter((value) => !values.includes(value));
      if (!toggle.checked) hidden.push(...values);
      store.set({ hidden, solo: null, overlay: true });
    });
    groups.push({ toggle, members });
    container.append(element("div", { class: "legend-group", "data-region": region }, heading, list));
  }

  const render = (state) => {
    for (const [value, { item, visible, solo }] of items) {
      const shown = state.solo === null ? !state.hidden.includes(value) : state.solo === value;
      visible.checked = shown;
      item.classList.toggle("off", !shown || !state.overlay);
      solo.setAttribute("aria-pressed", String(state.solo === value));
    }
    for (const { toggle, members } of groups) {
      const shown = members.filter((v) => items.get(v.value).visible.checked).length;
      toggle.checked = shown === members.length;
      toggle.indeterminate = shown > 0 && shown < members.length;
    }
  };
  store.on(["hidden", "solo", "overlay"], render);
  render(store.state);

  root.addEventListener("viewer:probe", (event) => {
    const value = event.detail.result?.label?.value;
    for (const [label, { item }] of items) item.classList.toggle("under-pointer", label === value);
  });
}
