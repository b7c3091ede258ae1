// What the playground panels share: model pickers for the key's models, the request shown as curl and
// as OpenAI SDK code, and the SSE reader for streamed chat answers.
import { h, postStream } from "./api.js";

export const BASE = `${location.origin}/v1`;

export function modelSelect(models, type, id) {
  const usable = models.filter((m) => m.type === type || (type === "llm" && m.type === "multimodal"));
  return h("select", { id }, usable.length ? usable.map((m) => h("option", { value: m.id }, m.id))
    : h("option", { value: "" }, `no ${type} model for this key`));
}

export function curlJson(path, body) {
  return `curl ${BASE}${path} \\\n  -H "Authorization: Bearer $OPENAI_API_KEY" \\\n` +
    `  -H "Content-Type: application/json" \\\n  -d '${JSON.stringify(body, null, 2).replaceAll("'", "'\\''")}'`;
}

export const py = (value) => JSON.stringify(value, null, 4).replaceAll("true", "True").replaceAll("false", "False")
  .replaceAll("null", "None");

// A runnable Python script: the standard-library ``modules`` it needs, the client, then ``call``.
export function sdk(call, modules = []) {
  const imports = ["os", ...modules].sort().map((m) => `import ${m}\n`).join("");
  return `${imports}from openai import OpenAI\n\nclient = OpenAI(base_url="${BASE}", api_key=os.environ["OPENAI_API_KEY"])\n${call}`;
}

export function codeBlocks(curl, python) {
  return [h("h2", {}, "This request as curl"), h("pre", { class: "curl" }, curl),
    h("h2", {}, "… and with the OpenAI SDK (Python)"), h("pre", { class: "sdk" }, python)];
}

// The SSE stream of /v1/chat/completions, read chunk by chunk; each delta is appended as it arrives.
export async function streamChat(body, onDelta) {
  await postStream("/v1/chat/completions", body, "\n\n", (event) => {
    const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("");
    if (!data || data === "[DONE]") return;
    const chunk = JSON.parse(data);
    if (chunk.error) throw new Error(chunk.error.message);
    onDelta(chunk.choices?.[0]?.delta?.content || "", chunk.usage);
  });
}

// Stream a chat answer into ``answer``, with tokens and time to first token in ``stats``.
export async function streamAnswer(body, answer, stats) {
  answer.textContent = "";
  stats.textContent = "streaming…";
  const started = performance.now();
  let first = null;
  try {
    await streamChat(body, (text, usage) => {
      if (text && first === null) first = performance.now() - started;
      answer.textContent += text;
      if (usage) stats.textContent = `${usage.completion_tokens} tokens; first token after ${Math.round(first)} ms; ` +
        `${Math.round(performance.now() - started)} ms in all`;
    });
    if (stats.textContent === "streaming…") stats.textContent = "done";
  } catch (err) {
    stats.textContent = "";
    answer.append(h("span", { class: "error" }, `\n${err.message}`));
  }
}
