// Playground panels for vision (an attached image goes as an image_url data: URL part, the one form a
// worker accepts offline) and rerank (Cohere/Jina shape, which the OpenAI SDK reaches with client.post).
import { api, h } from "./api.js";
import { codeBlocks, curlJson, modelSelect, py, sdk, streamAnswer } from "./snippets.js";

const IMAGE = "IMAGE_DATA_URL";  // stands for the data: URL in the code shown; the request carries the real one

const readDataUrl = (file) => new Promise((resolve, reject) => {
  const reader = new FileReader();
  reader.onload = () => resolve(reader.result);
  reader.onerror = () => reject(reader.error);
  reader.readAsDataURL(file);
});

function visionBody(model, prompt, temperature, maxTokens, url) {
  return { model, stream: true, temperature, max_tokens: maxTokens, stream_options: { include_usage: true },
    messages: [{ role: "user", content: [{ type: "text", text: prompt }, { type: "image_url", image_url: { url } }] }] };
}

// The code to repeat the request from a shell or a script, reading the same image file there.
function visionCode(body, file) {
  const mime = file.type || "image/png";
  const curl = curlJson("/chat/completions", body).replace(IMAGE, `data:${mime};base64,'"$(base64 -w0 ${file.name})"'`);
  const python = sdk(`\nwith open(${JSON.stringify(file.name)}, "rb") as image:\n` +
    `    image_url = "data:${mime};base64," + base64.b64encode(image.read()).decode()\n` +
    `stream = client.chat.completions.create(**${py(body).replace(`"${IMAGE}"`, "image_url")})\n` +
    `for chunk in stream:\n    if chunk.choices:\n        print(chunk.choices[0].delta.content or "", end="")`, ["base64"]);
  return codeBlocks(curl, python);
}

export function visionPanel(models) {
  const model = modelSelect(models, "multimodal", "vision-model");
  const file = h("input", { id: "vision-file", type: "file", accept: "image/*" });
  const prompt = h("textarea", { id: "vision-prompt" }, "What is in this picture?");
  const temperature = h("input", { id: "vision-temperature", type: "number", step: "0.1", min: "0", max: "2", value: "0" });
  const maxTokens = h("input", { id: "vision-max-tokens", type: "number", min: "1", value: "64" });
  const preview = h("img", { id: "vision-preview", alt: "", style: "max-height: 160px; display: block" });
  const answer = h("div", { id: "vision-answer", class: "answer" });
  const stats = h("p", { id: "vision-stats", class: "muted" });
  const code = h("div", {});
  const send = async (event) => {
    event.preventDefault();
    if (!file.files.length) { answer.textContent = "Attach an image first."; return; }
    const url = await readDataUrl(file.files[0]);
    preview.src = url;
    const body = (image) => visionBody(model.value, prompt.value, Number(temperature.value), Number(maxTokens.value), image);
    code.replaceChildren(...visionCode(body(IMAGE), file.files[0]));
    await streamAnswer(body(url), answer, stats);
  };
  return h("form", { id: "vision-form", onsubmit: send },
    h("div", { class: "row" }, h("label", {}, "model", model), h("label", {}, "image", file),
      h("label", {}, "temperature", temperature), h("label", {}, "max_tokens", maxTokens)),
    h("label", {}, "message", prompt), preview, h("p", {}, h("button", { type: "submit", id: "vision-send" }, "Send")),
    answer, stats, code);
}

export function rerankPanel(models) {
  const model = modelSelect(models, "rerank", "rerank-model");
  const query = h("input", { id: "rerank-query", size: 50, value: "Where do cats sleep?" });
  const documents = h("textarea", { id: "rerank-documents" },
    "Cats often sleep on warm windowsills.\nThe stock market closed higher today.\nA kitten naps in a basket by the fire.");
  const result = h("div", { id: "rerank-result" });
  const code = h("div", {});
  const send = async (event) => {
    event.preventDefault();
    const docs = documents.value.split("\n").map((d) => d.trim()).filter(Boolean);
    const body = { model: model.value, query: query.value, documents: docs };
    code.replaceChildren(...codeBlocks(curlJson("/rerank", body),
      sdk(`result = client.post("/rerank", cast_to=object, body=${py(body)})\nfor hit in result["results"]:\n` +
        `    print(hit["index"], round(hit["relevance_score"], 4))`)));
    result.textContent = "…";
    try {
      const answer = await api("/v1/rerank", { method: "POST", body });
      result.replaceChildren(h("ol", {}, answer.results.map((hit) =>
        h("li", {}, `${hit.relevance_score.toFixed(4)}  ${docs[hit.index]}`))));
      result.dataset.done = "true";
    } catch (err) { result.textContent = err.message; }
  };
  return h("form", { id: "rerank-form", onsubmit: send }, h("div", { class: "row" }, h("label", {}, "model", model),
    h("label", {}, "query", query)), h("label", {}, "documents (one per line)", documents),
    h("p", {}, h("button", { type: "submit", id: "rerank-send" }, "Rank")), result, code);
}
