/**
 * The batch page: follows a running batch through its progress endpoint (counts, progress bar,
 * throughput and time left) and reloads the page when a case ends or the batch changes state,
 * so the case table and the evaluation link are the server's.
 */

const POLL_MS = 2000;

function follow(root) {
  const text = (id, value) => {
    const element = document.getElementById(id);
    if (element) element.textContent = value;
  };
  const tick = async () => {
    let batch;
    try {
      const response = await fetch(root.dataset.api, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(String(response.status));
      batch = await response.json();
    } catch {
      setTimeout(tick, POLL_MS * 4); // the server may be restarting: try again later
      return;
    }
    if (batch.status !== root.dataset.status || String(batch.ended) !== root.dataset.ended) {
      window.location.reload();
      return;
    }
    for (const status of ["succeeded", "running", "failed", "queued"]) {
      text(`count-${status}`, batch.counts[status]);
    }
    if (batch.cases_per_minute) {
      const left = batch.eta_s ? ` · ${batch.eta_text}` : ""; // eta_text: the server's wording
      text("batch-rate", `${batch.cases_per_minute.toFixed(2)} cases per minute${left}`);
    }
    setTimeout(tick, POLL_MS);
  };
  setTimeout(tick, POLL_MS);
}

const root = document.getElementById("batch");
if (root) follow(root);
