// The gateway's JSON API with the signed-in key, and small DOM helpers the pages share.
const KEY = "model-service-key";

export const session = {
  key: () => sessionStorage.getItem(KEY),
  set: (key) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
};

export function authHeaders() {
  const key = session.key();
  return key ? { authorization: `Bearer ${key}` } : {};
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// fetch() with the key; JSON in and out; an OpenAI-style error becomes an ApiError with its message.
export async function api(path, { method = "GET", body, form } = {}) {
  const headers = authHeaders();
  let payload;
  if (form) payload = form;
  else if (body !== undefined) {
    headers["content-type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const resp = await fetch(path, { method, headers, body: payload });
  return readAnswer(resp);
}

// POST JSON and hand each complete part of a streamed answer (parts end with ``separator``: "\n\n" for
// server-sent events, "\n" for JSON lines) to onPart as it arrives; an error answer throws an ApiError.
export async function postStream(path, body, separator, onPart) {
  const resp = await fetch(path, {
    method: "POST", headers: { ...authHeaders(), "content-type": "application/json" }, body: JSON.stringify(body),
  });
  if (!resp.ok) await readAnswer(resp);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const parts = buffer.split(separator);
    buffer = parts.pop();
    for (const part of parts) onPart(part);
  }
}

export async function readAnswer(resp) {
  const text = await resp.text();
  let data = text;
  try { data = JSON.parse(text); } catch { /* a text answer (transcription formats) */ }
  if (!resp.ok) {
    const message = data && data.error ? data.error.message : `HTTP ${resp.status}`;
    throw new ApiError(resp.status, message);
  }
  return data;
}

// h("td", {class: "num"}, "3"): an element with attributes and children (strings become text).
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

export function table(headers, rows, numeric = new Set()) {
  return h("table", {},
    h("thead", {}, h("tr", {}, headers.map((name) => h("th", { class: numeric.has(name) ? "num" : null }, name)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, row.map((cell, i) =>
      h("td", { class: numeric.has(headers[i]) ? "num" : null }, cell ?? "–"))))));
}

export const fmt = (value, digits = 0) =>
  value === null || value === undefined ? "–" : Number(value).toFixed(digits);

// Poll fn every interval ms until the returned stop() is called; errors are shown, polling goes on.
export function poll(fn, interval, onError) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    try { await fn(); } catch (err) { onError(err); }
    if (!stopped) timer = setTimeout(tick, interval);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}
