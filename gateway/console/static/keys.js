// Keys (admin): create with model scopes and rpm/tpm limits (the secret is shown once), list, revoke.
import { api, h, table } from "./api.js";

const optionalInt = (input) => (input.value.trim() ? Number(input.value) : null);

export async function render(element) {
  const name = h("input", { id: "key-name", required: true, placeholder: "team-a" });
  const models = h("input", { id: "key-models", placeholder: "all models", size: 30 });
  const rpm = h("input", { id: "key-rpm", type: "number", min: "1", placeholder: "unlimited" });
  const tpm = h("input", { id: "key-tpm", type: "number", min: "1", placeholder: "unlimited" });
  const created = h("div", { id: "key-created" });
  const problem = h("p", { class: "error", id: "key-error" });
  const list = h("div", { id: "key-list" });

  const refresh = async () => {
    const keys = (await api("/admin/keys")).data;
    list.replaceChildren(table(["id", "name", "prefix", "models", "rpm", "tpm", "created", "state", ""],
      keys.map((key) => [key.id, key.name, `${key.prefix}…`, key.models ? key.models.join(", ") : "all",
        key.rpm ?? "unlimited", key.tpm ?? "unlimited", key.created_at,
        key.revoked_at ? h("span", { class: "bad" }, `revoked ${key.revoked_at}`) : h("span", { class: "ok" }, "active"),
        key.revoked_at ? "" : h("button", { class: "secondary", "data-revoke": key.id, onclick: () => revoke(key) }, "Revoke"),
      ])));
  };
  const revoke = async (key) => {
    if (!confirm(`Revoke key ${key.name} (${key.id})? Its next request gets 401.`)) return;
    try { await api(`/admin/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" }); } catch (err) {
      problem.textContent = err.message;
    }
    await refresh();
  };
  const create = async (event) => {
    event.preventDefault();
    problem.textContent = "";
    const scope = models.value.split(",").map((m) => m.trim()).filter(Boolean);
    const body = { name: name.value.trim(), models: scope.length ? scope : null, rpm: optionalInt(rpm), tpm: optionalInt(tpm) };
    try {
      const key = await api("/admin/keys", { method: "POST", body });
      created.replaceChildren(h("div", { class: "card" }, h("strong", {}, `Key "${key.name}" created (${key.id}). `),
        "Copy the secret now: it is shown this once and cannot be shown again.",
        h("p", { class: "secret", id: "key-secret" }, key.key)));
      event.target.reset();
      await refresh();
    } catch (err) { problem.textContent = err.message; }
  };

  element.append(h("h1", {}, "API keys"),
    h("form", { id: "key-form", class: "card row", onsubmit: create }, h("label", {}, "name", name),
      h("label", {}, "models (comma-separated; empty: all)", models), h("label", {}, "requests/min", rpm),
      h("label", {}, "tokens/min", tpm), h("button", { type: "submit", id: "key-create" }, "Create key")),
    problem, created, h("h2", {}, "Keys"), list);
  try { await refresh(); } catch (err) { problem.textContent = err.message; }
}
