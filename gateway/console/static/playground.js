// Playground: chat (streamed), vision, embeddings similarity, speech-to-text, rerank; each shows its request as curl and
// as OpenAI SDK code, so what works here can be pasted into a script.
import { api, h } from "./api.js";
import { BASE, codeBlocks, curlJson, modelSelect, py, sdk, streamAnswer } from "./snippets.js";
import { rerankPanel, visionPanel } from "./playground_more.js";

function chatPanel(models) {
  const model = modelSelect(models, "llm", "chat-model");
  const temperature = h("input", { id: "chat-temperature", type: "number", step: "0.1", min: "0", max: "2", value: "0" });
  const maxTokens = h("input", { id: "chat-max-tokens", type: "number", min: "1", value: "64" });
  const prompt = h("textarea", { id: "chat-prompt" }, "What is the capital of France?");
  const answer = h("div", { id: "chat-answer", class: "answer" });
  const stats = h("p", { id: "chat-stats", class: "muted" });
  const code = h("div", {});
  const body = () => ({ model: model.value, messages: [{ role: "user", content: prompt.value }], stream: true,
    temperature: Number(temperature.value), max_tokens: Number(maxTokens.value), stream_options: { include_usage: true } });
  const showCode = () => {
    const b = body();
    code.replaceChildren(...codeBlocks(curlJson("/chat/completions", b),
      sdk(`stream = client.chat.completions.create(**${py(b)})\nfor chunk in stream:\n    if chunk.choices:\n` +
        `        print(chunk.choices[0].delta.content or "", end="", flush=True)`)));
  };
  const send = async (event) => {
    event.preventDefault();
    showCode();
    await streamAnswer(body(), answer, stats);
  };
  [model, temperature, maxTokens, prompt].forEach((input) => input.addEventListener("change", showCode));
  showCode();
  return h("form", { id: "chat-form", onsubmit: send },
    h("div", { class: "row" }, h("label", {}, "model", model), h("label", {}, "temperature", temperature),
      h("label", {}, "max_tokens", maxTokens)),
    h("label", {}, "message", prompt), h("p", {}, h("button", { type: "submit", id: "chat-send" }, "Send")),
    answer, stats, code);
}

function embeddingsPanel(models) {
  const model = modelSelect(models, "embedding", "embed-model");
  const first = h("textarea", { id: "embed-a" }, "A cat sits on the mat.");
  const second = h("textarea", { id: "embed-b" }, "A kitten is resting on a rug.");
  const result = h("p", { id: "embed-result", class: "answer" });
  const code = h("div", {});
  const send = async (event) => {
    event.preventDefault();
    const body = { model: model.value, input: [first.value, second.value] };
    code.replaceChildren(...codeBlocks(curlJson("/embeddings", body),
      sdk(`result = client.embeddings.create(**${py(body)})\nprint(len(result.data[0].embedding))`)));
    result.textContent = "…";
    try {
      const answer = await api("/v1/embeddings", { method: "POST", body });
      const [a, b] = answer.data.map((d) => d.embedding);
      const dot = a.reduce((sum, x, i) => sum + x * b[i], 0);
      const norm = (v) => Math.sqrt(v.reduce((sum, x) => sum + x * x, 0));
      result.textContent = `cosine similarity: ${(dot / (norm(a) * norm(b))).toFixed(4)} (${a.length} dimensions)`;
    } catch (err) { result.textContent = err.message; }
  };
  return h("form", { id: "embed-form", onsubmit: send }, h("label", {}, "model", model),
    h("div", { class: "grid2" }, h("label", {}, "text A", first), h("label", {}, "text B", second)),
    h("p", {}, h("button", { type: "submit", id: "embed-send" }, "Compare")), result, code);
}

function speechPanel(models) {
  const model = modelSelect(models, "transcription", "stt-model");
  const file = h("input", { id: "stt-file", type: "file", accept: "audio/*" });
  const result = h("div", { id: "stt-result", class: "answer" });
  const code = h("div", {});
  const send = async (event) => {
    event.preventDefault();
    if (!file.files.length) { result.textContent = "Choose an audio file first."; return; }
    const name = file.files[0].name;
    code.replaceChildren(...codeBlocks(
      `curl ${BASE}/audio/transcriptions \\\n  -H "Authorization: Bearer $OPENAI_API_KEY" \\\n` +
      `  -F model=${model.value} \\\n  -F file=@${name}`,
      sdk(`with open(${JSON.stringify(name)}, "rb") as audio:\n    result = client.audio.transcriptions.create(` +
        `model=${JSON.stringify(model.value)}, file=audio)\nprint(result.text)`)));
    const form = new FormData();
    form.append("model", model.value);
    form.append("file", file.files[0]);
    result.textContent = "transcribing…";
    delete result.dataset.done;
    try {
      result.textContent = (await api("/v1/audio/transcriptions", { method: "POST", form })).text;
    } catch (err) { result.textContent = err.message; }
    result.dataset.done = "true";
  };
  return h("form", { id: "stt-form", onsubmit: send }, h("div", { class: "row" }, h("label", {}, "model", model),
    h("label", {}, "audio file", file), h("button", { type: "submit", id: "stt-send" }, "Transcribe")), result, code);
}

export async function render(element) {
  element.append(h("h1", {}, "Playground"));
  let models = [];
  try { models = (await api("/v1/models")).data; } catch (err) {
    element.append(h("p", { class: "error" }, err.message));
  }
  const panels = { chat: chatPanel(models), vision: visionPanel(models), embeddings: embeddingsPanel(models),
    speech: speechPanel(models), rerank: rerankPanel(models) };
  const body = h("div", { class: "card" });
  const buttons = Object.keys(panels).map((name) => h("button", {
    type: "button", class: "secondary", "data-tab": name, onclick: () => show(name),
  }, name === "speech" ? "speech to text" : name));
  const show = (name) => {
    body.replaceChildren(panels[name]);
    buttons.forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  };
  element.append(h("p", { class: "tabs" }, buttons), body);
  show("chat");
}
