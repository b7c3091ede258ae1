// Models (admin): what the model store holds and the model registry's download/import jobs with their
// progress, polled through the gateway (GET /admin/store). Read-only for now.
import { api, h, poll, table } from "./api.js";

const NUMERIC = new Set(["size MB", "revisions"]);
const mb = (bytes) => (bytes / 1e6).toFixed(1);

function progress(job) {
  const percent = job.bytes_total ? Math.round((100 * job.bytes_done) / job.bytes_total)
    : job.state === "succeeded" ? 100 : 0;
  return h("span", {}, h("progress", { max: "100", value: String(percent), "data-job": job.id }),
    ` ${percent}% (${job.files_done}/${job.files_total} files)`);
}

export function render(element) {
  const status = h("p", { class: "muted", id: "store-status" }, "Loading…");
  const models = h("div", { id: "store-models" });
  const jobs = h("div", { id: "store-jobs" });
  const problem = h("p", { class: "error" });
  element.append(h("h1", {}, "Models"), status, problem, h("h2", {}, "In the store"), models,
    h("h2", {}, "Download and import jobs"), jobs);
  return poll(async () => {
    const store = await api("/admin/store");
    problem.textContent = "";
    if (!store.configured) {
      status.textContent = "The gateway does not know the model registry (set GATEWAY_MODEL_REGISTRY_URL).";
      return;
    }
    status.textContent = `${store.models.length} models in the store; refreshed ${new Date().toLocaleTimeString()}`;
    models.replaceChildren(table(["model", "type", "current revision", "aliases", "revisions", "size MB", "status"],
      store.models.map((m) => [m.id, m.type, m.current, Object.entries(m.aliases).map(([a, r]) => `${a} → ${r}`).join(", "),
        m.revisions.length, mb(m.size), m.status]), NUMERIC));
    jobs.replaceChildren(store.jobs.length ? table(["job", "kind", "model", "state", "progress", "error"],
      store.jobs.map((j) => [j.id, j.kind, j.model_id, j.state, progress(j), j.error]))
      : h("p", { class: "muted" }, "No jobs since the model registry started."));
  }, 2000, (err) => { problem.textContent = `Could not refresh: ${err.message}`; });
}
