/**
 * The job page: follows a queued or running job through the API (progress bar and stage) and
 * reloads the page once it has finished; makes each metrics-table row a jump to its vertebra.
 *
 * The jump moves the crosshair of the viewer on the page (its store, `element.viewer.store`) to
 * the vertebra's centroid voxel, and announces a `viewer:goto` CustomEvent
 * ({detail: {voxel: [i, j, k], label}}) on the viewer's element. Without a started viewer the
 * row's link is followed: it carries the viewer's own URL state (`?ax=&co=&sa=`).
 */

const POLL_MS = 1500;
const FINAL = new Set(["succeeded", "failed", "cancelled"]);

function follow(root) {
  const progress = document.getElementById("job-progress");
  const stage = document.getElementById("job-stage");
  const state = document.getElementById("job-state");
  const tick = async () => {
    let job;
    try {
      const response = await fetch(root.dataset.api, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(String(response.status));
      job = await response.json();
    } catch {
      setTimeout(tick, POLL_MS * 4); // the server may be restarting: try again later
      return;
    }
    if (FINAL.has(job.status) || job.status !== root.dataset.status) {
      window.location.reload();
      return;
    }
    if (progress) progress.value = job.progress;
    if (stage) stage.textContent = job.stage;
    if (state) state.textContent = job.status;
    setTimeout(tick, POLL_MS);
  };
  setTimeout(tick, POLL_MS);
}

function jumps(root) {
  const table = document.getElementById("metrics-table");
  if (!table) return;
  table.addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-voxel]");
    if (!row) return;
    const viewer = root.querySelector("[data-viewer]");
    const store = viewer?.viewer?.store;
    const voxel = row.dataset.voxel.split(",").map(Number);
    for (const other of table.querySelectorAll("tr.active")) other.classList.remove("active");
    row.classList.add("active");
    if (!store) {
      // No viewer running: a click anywhere in the row follows its link.
      if (!event.target.closest("a")) row.querySelector("a.jump")?.click();
      return;
    }
    event.preventDefault();
    store.set({ cursor: voxel });
    viewer.dispatchEvent(
      new CustomEvent("viewer:goto", { detail: { voxel, label: Number(row.dataset.label) } }),
    );
    viewer.scrollIntoView({ block: "nearest", behavior: "smooth" });
  });
}

const root = document.getElementById("job");
if (root) {
  if (!FINAL.has(root.dataset.status)) follow(root);
  jumps(root);
}
