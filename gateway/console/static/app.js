// The console shell: sign-in, the page switcher (#overview, #playground, ...) and the one API helper.
// Each page module exports render(element, ctx) and may return a function that stops its timers.
import { api, session } from "./api.js";

const PAGES = {
  overview: () => import("./overview.js"),
  playground: () => import("./playground.js"),
  models: () => import("./models.js"),
  keys: () => import("./keys.js"),
  usage: () => import("./usage.js"),
};
const ADMIN_PAGES = new Set(["overview", "models", "keys"]);  // a user key: playground and its own usage
let stopPage = null;
let routes = 0;  // route() calls so far
const ctx = { role: null, auth: false };

async function whoAmI() {
  // Which pages this key may see: the API's own guards answer (403 on an admin route: a user key).
  try {
    await api("/v1/models");
  } catch (err) {
    if (err.status === 401) return null;
  }
  try {
    await api("/admin/keys");
    return "admin";
  } catch (err) {
    return err.status === 403 ? "user" : err.status === 401 ? null : "admin";
  }
}

function showSignIn(message) {
  document.getElementById("sign-in").hidden = false;
  document.getElementById("page").hidden = true;
  document.getElementById("nav").hidden = true;
  document.getElementById("sign-in-error").textContent = message || "";
}

async function start() {
  const config = await (await fetch("config.json")).json();
  ctx.auth = config.auth;
  document.getElementById("api-docs").href = "/docs";
  if (ctx.auth && !session.key()) return showSignIn();
  ctx.role = ctx.auth ? await whoAmI() : "admin";
  if (!ctx.role) {
    session.clear();
    return showSignIn("That key was not accepted (unknown or revoked).");
  }
  document.getElementById("sign-in").hidden = true;
  document.getElementById("page").hidden = false;
  document.getElementById("nav").hidden = false;
  document.getElementById("who").textContent = ctx.auth ? `signed in: ${ctx.role} key` : "API keys are off";
  document.getElementById("sign-out").hidden = !ctx.auth;
  for (const link of document.querySelectorAll("#nav a[data-admin]")) link.hidden = ctx.role !== "admin";
  route();
}

async function route() {
  let name = location.hash.slice(1) || (ctx.role === "admin" ? "overview" : "playground");
  if (!PAGES[name] || (ADMIN_PAGES.has(name) && ctx.role !== "admin")) name = "playground";
  if (stopPage) stopPage();
  stopPage = null;
  for (const link of document.querySelectorAll("#nav a[data-page]")) {
    link.classList.toggle("active", link.dataset.page === name);
  }
  // A hash change during sign-in starts a second route() while the first awaits its module: only the
  // newest one draws, or the page would hold two copies of itself.
  const mine = ++routes;
  const module = await PAGES[name]();
  if (mine !== routes) return;
  const element = document.getElementById("page");
  element.replaceChildren();
  const stop = (await module.render(element, ctx)) || null;
  if (mine === routes) stopPage = stop;
  else if (stop) stop();  // a newer route() took the page while this one drew
}

document.getElementById("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  session.set(document.getElementById("sign-in-key").value.trim());
  document.getElementById("sign-in-key").value = "";
  start();
});
document.getElementById("sign-out").addEventListener("click", () => {
  session.clear();
  location.hash = "";
  location.reload();
});
window.addEventListener("hashchange", () => ctx.role && route());
start();
