// The Models page's Deployment panel (admin): the running deployment file, read through the gateway's
// GET /admin/deployment (the running `model-service up`'s control endpoint). Scale a model, remove one, add
// one, or edit the whole file: every action builds the changed file text and applies it through the same
// POST /admin/deployment/apply that `model-service apply FILE` uses, showing the plan and each replica's
// progress as the JSON lines arrive, then the new state. The file is parsed and written with js-yaml
// (vendored): the buttons rewrite it without its comments; the editor sends exactly what it holds.
import { api, h, postStream, table } from "./api.js";
import { dump, load as parseYaml } from "./vendor/js-yaml.js";

const TYPES = ["llm", "embedding", "multimodal", "transcription", "rerank"];
const STARTERS = ["llm", "embedding", "transcription"];
const served = (model) => model.served_name || model.id;

// One progress event as a line of text: the same words `model-service apply` prints.
export function describe(event) {
  if (event.event === "plan") {
    const steps = event.steps.map((s) => `  ${s.action} ${s.model} replica ${s.replica} (${s.why})`);
    const notes = (event.notes || []).map((n) => `note: ${n}`);
    return [steps.length ? `Plan (${steps.length} step(s)):` : "Plan: nothing to change.", ...steps, ...notes].join("\n");
  }
  if (event.event === "done") return event.ok ? "Applied." : `error: ${event.error || "the apply stopped; the replicas already running keep serving"}`;
  return `${event.event} ${event.model} replica ${event.replica} ${event.url || ""}${event.error ? `: ${event.error}` : ""}`;
}

// POST the file and hand each JSON line to onEvent as it arrives; an error answer (400 with every problem
// of the file, 409 while another apply rolls) throws with its message.
function applyText(text, onEvent) {
  return postStream("/admin/deployment/apply", { text, source: "deployment.yaml" }, "\n",
    (line) => line.trim() && onEvent(JSON.parse(line)));
}

function addForm(change) {
  const id = h("input", { id: "deploy-add-id", required: true, placeholder: "org/model", size: 30 });
  const type = h("select", { id: "deploy-add-type" }, TYPES.map((t) => h("option", { value: t }, t)));
  const kind = h("select", { id: "deploy-add-kind" }, h("option", { value: "store" }, "store alias or revision"),
    h("option", { value: "starter" }, "starter model"));
  const value = h("input", { id: "deploy-add-source", required: true, value: "current", size: 14,
    title: `an alias or revision in the store, or a starter: ${STARTERS.join(", ")}` });
  const replicas = h("input", { id: "deploy-add-replicas", type: "number", min: "1", value: "1", size: 4 });
  const submit = (event) => {
    event.preventDefault();
    const model = { id: id.value.trim(), type: type.value, source: { [kind.value]: value.value.trim() } };
    if (Number(replicas.value) > 1) model.replicas = Number(replicas.value);
    change(`add ${model.id}`, (doc) => { doc.models.push(model); });
  };
  return h("form", { id: "deploy-add", class: "card row", onsubmit: submit },
    h("label", {}, "model id (in the store)", id), h("label", {}, "type", type), h("label", {}, "source", kind),
    h("label", {}, "alias / revision / starter", value), h("label", {}, "replicas", replicas),
    h("button", { type: "submit", id: "deploy-add-start" }, "Add model"));
}

function modelRows(doc, workers, change) {
  return doc.models.map((model) => {
    const name = served(model);
    const running = workers.filter((w) => w.model === name);
    const count = h("input", { type: "number", min: "1", value: String(model.replicas || 1), "data-scale": name, size: 4 });
    const scale = () => change(`scale ${name} to ${count.value}`, (d) => {
      const m = d.models.find((x) => served(x) === name);
      if (Number(count.value) > 1) m.replicas = Number(count.value);
      else delete m.replicas;
    });
    const remove = () => confirm(`Remove ${name} from the deployment? Its replicas drain and stop.`)
      && change(`remove ${name}`, (d) => { d.models = d.models.filter((x) => served(x) !== name); });
    return [name, model.type, Object.entries(model.source).map(([k, v]) => `${k}: ${typeof v === "object" ? v.repo : v}`).join(""),
      model.engine || "auto", `${running.length} running`, running.map((w) => w.url).join(", ") || "–",
      h("span", { class: "row" }, count, h("button", { class: "secondary", "data-scale-apply": name, onclick: scale }, "Scale"),
        h("button", { class: "secondary", "data-remove": name, onclick: remove }, "Remove"))];
  });
}

export function deploymentPanel() {
  const status = h("p", { class: "muted", id: "deploy-status" }, "Loading…");
  const models = h("div", { id: "deploy-models" });
  const editor = h("textarea", { id: "deploy-text", rows: "14", spellcheck: "false", class: "code" });
  const problem = h("p", { class: "error", id: "deploy-error" });
  const progress = h("pre", { id: "deploy-progress", hidden: true });
  const controls = h("div", { id: "deploy-controls" });
  let busy = false;

  const run = async (what, text) => {
    if (busy) return;
    busy = true;
    problem.textContent = "";
    progress.hidden = false;
    progress.removeAttribute("data-done");
    progress.textContent = `${what}…\n`;
    let ok = false;
    try {
      await applyText(text, (event) => {
        progress.textContent += `${describe(event)}\n`;
        if (event.event === "done") ok = event.ok;
      });
    } catch (err) { problem.textContent = err.message; }
    progress.dataset.done = ok ? "ok" : "failed";
    busy = false;
    await load();
  };
  // Build the changed file from the running one (parsed), show it in the editor, then apply it.
  const change = (what, edit) => {
    const doc = parseYaml(editor.dataset.running);
    edit(doc);
    editor.value = dump(doc, { lineWidth: 120, noRefs: true });
    return run(what, editor.value);
  };
  const refresh = async () => {
    const got = await api("/admin/deployment");
    if (!got.configured) {
      status.textContent = got.message;
      controls.hidden = true;
      return;
    }
    const doc = parseYaml(got.text);
    editor.dataset.running = got.text;
    if (!busy) editor.value = got.text;
    status.textContent = `${doc.models.length} models, ${got.workers.length} replicas running; read ${new Date().toLocaleTimeString()}`;
    models.replaceChildren(table(["model", "type", "source", "engine", "replicas", "where", "scale / remove"],
      modelRows(doc, got.workers, change)));
  };
  controls.append(models, h("h3", {}, "Add a model"), addForm(change),
    h("h3", {}, "The whole file"), editor,
    h("div", { class: "row" }, h("button", { id: "deploy-apply", onclick: () => run("apply the file", editor.value) }, "Apply file"),
      h("button", { class: "secondary", id: "deploy-reload", onclick: () => load() }, "Reload")));
  const load = () => refresh().catch((err) => { status.textContent = `Could not read the deployment: ${err.message}`; });
  const element = h("section", { id: "deployment" }, h("h2", {}, "Deployment"), status, problem, progress, controls);
  return { element, load };
}
