// Models (admin): what the model store holds and what serves it; pull from Hugging Face or import a folder
// with the registry job's live progress; move an alias (roll back); delete a revision no worker serves.
// Everything goes through the gateway's /admin/store routes, polled every 2 s while the page is open.
// Below, the Deployment panel (deployment.js): scale, add and remove models through the running stack's apply.
import { api, h, poll, table } from "./api.js";
import { deploymentPanel } from "./deployment.js";

const NUMERIC = new Set(["size MB", "files"]);
const mb = (bytes) => (bytes / 1e6).toFixed(1);
const TYPES = ["", "llm", "embedding", "multimodal", "transcription", "rerank"];
const path = (id) => id.split("/").map(encodeURIComponent).join("/");

function progress(job) {
  const percent = job.bytes_total ? Math.round((100 * job.bytes_done) / job.bytes_total)
    : job.state === "done" ? 100 : 0;
  return h("span", { class: "progress", "data-job": job.id, "data-percent": String(percent) },
    h("progress", { max: "100", value: String(percent) }),
    ` ${percent}% (${job.files_done}/${job.files_total} files, ${mb(job.bytes_done)}/${mb(job.bytes_total)} MB)`);
}

function typeSelect(id) {
  return h("select", { id }, TYPES.map((t) => h("option", { value: t }, t || "type: from the model")));
}

// The pull and import forms: each starts a registry job; the jobs table below shows its progress.
function jobForms(problem, refresh) {
  const repo = h("input", { id: "pull-repo", required: true, placeholder: "org/model", size: 32 });
  const revision = h("input", { id: "pull-revision", placeholder: "main" });
  const pullType = typeSelect("pull-type");
  const importId = h("input", { id: "import-id", required: true, placeholder: "org/model", size: 28 });
  const folder = h("input", { id: "import-path", required: true, placeholder: "/models/incoming/org-model", size: 36 });
  const importType = typeSelect("import-type");
  const start = (kind, id, body) => async (event) => {
    event.preventDefault();
    problem.textContent = "";
    try {
      await api(`/admin/store/models/${path(id())}/${kind}`, { method: "POST", body: body() });
      event.target.reset();
      await refresh();
    } catch (err) { problem.textContent = err.message; }
  };
  return [
    h("form", { id: "pull-form", class: "card row", onsubmit: start("download", () => repo.value.trim(),
      () => ({ revision: revision.value.trim() || null, model_type: pullType.value || null })) },
    h("label", {}, "Hugging Face repo", repo), h("label", {}, "revision", revision), h("label", {}, "type", pullType),
    h("button", { type: "submit", id: "pull-start" }, "Pull")),
    h("form", { id: "import-form", class: "card row", onsubmit: start("import", () => importId.value.trim(),
      () => ({ path: folder.value.trim(), model_type: importType.value || null })) },
    h("label", {}, "model id", importId), h("label", {}, "folder or GGUF file on the registry host", folder),
    h("label", {}, "type", importType), h("button", { type: "submit", id: "import-start" }, "Import")),
  ];
}

// One row per revision: its aliases, whether it is verified, and the actions on it.
function revisionRows(model, served, act) {
  return model.revisions.map((rev) => {
    const aliases = Object.entries(model.aliases).filter(([, r]) => r === rev.revision).map(([a]) => a);
    const current = aliases.includes("current");
    return [model.id, rev.revision, aliases.join(", ") || "–", mb(rev.size), rev.files,
      // The registry lists a revision only once every file is stored and its sha256 checked.
      h("span", { class: "ok" }, "verified"), rev.source, rev.created_at,
      // In use: what the gateway refuses to delete (an alias target of a model replicas serve).
      served.length && aliases.length ? h("span", { class: "warn" }, `in use: ${served.length} replica(s)`) : "unused",
      h("span", {},
        current ? "" : h("button", { class: "secondary", "data-make-current": rev.revision, onclick: () => act.alias(model, rev.revision) }, "Make current"),
        " ",
        h("button", { class: "secondary", "data-delete": rev.revision, onclick: () => act.remove(model, rev.revision) }, "Delete"))];
  });
}

export function render(element) {
  const status = h("p", { class: "muted", id: "store-status" }, "Loading…");
  const models = h("div", { id: "store-models" });
  const revisions = h("div", { id: "store-revisions" });
  const jobs = h("div", { id: "store-jobs" });
  const problem = h("p", { class: "error", id: "store-error" });
  const act = {
    alias: async (model, revision) => {
      if (!confirm(`Point "current" of ${model.id} at ${revision}? Workers started from now on load it.`)) return;
      await change(() => api(`/admin/store/models/${path(model.id)}/aliases/current`, { method: "PUT", body: { revision } }));
    },
    remove: async (model, revision) => {
      if (!confirm(`Delete revision ${revision} of ${model.id}? Its files are removed from the store.`)) return;
      await change(() => api(`/admin/store/models/${path(model.id)}/revisions/${encodeURIComponent(revision)}`, { method: "DELETE" }));
    },
  };
  const refresh = async () => {
    const store = await api("/admin/store");
    if (!store.configured) {
      status.textContent = "The gateway does not know the model registry (set GATEWAY_MODEL_REGISTRY_URL).";
      return;
    }
    status.textContent = `${store.models.length} models in the store; refreshed ${new Date().toLocaleTimeString()}`;
    models.replaceChildren(table(["model", "type", "current revision", "aliases", "revisions", "size MB", "status", "served by"],
      store.models.map((m) => [m.id, m.type, m.current, Object.entries(m.aliases).map(([a, r]) => `${a} → ${r}`).join(", "),
        m.revisions.length, mb(m.size), m.status, (store.served[m.id] || []).join(", ") || "–"]), NUMERIC));
    revisions.replaceChildren(table(["model", "revision", "aliases", "size MB", "files", "sha256", "source", "created", "served", ""],
      store.models.flatMap((m) => revisionRows(m, store.served[m.id] || [], act)), NUMERIC));
    jobs.replaceChildren(store.jobs.length ? table(["job", "kind", "model", "state", "progress", "error"],
      store.jobs.map((j) => [j.id, j.kind, j.model_id, j.state, progress(j), j.error]))
      : h("p", { class: "muted" }, "No jobs since the model registry started."));
  };
  const change = async (call) => {
    problem.textContent = "";
    try { await call(); } catch (err) { problem.textContent = err.message; }
    await refresh();
  };
  const deployment = deploymentPanel();
  element.append(h("h1", {}, "Models"), status, problem, ...jobForms(problem, refresh),
    h("h2", {}, "Download and import jobs"), jobs, h("h2", {}, "In the store"), models, h("h2", {}, "Revisions"), revisions,
    deployment.element);
  deployment.load();
  return poll(refresh, 2000, (err) => { problem.textContent = `Could not refresh: ${err.message}`; });
}
