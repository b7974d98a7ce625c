// Entry point: login, the header, and a hash router over the pages. Each page's render
// returns a clean-up function that cancels its subscriptions.
import { EvqError, Session, passwordKey } from "./evq.js";
import { fill, h } from "./ui.js";
import * as dashboard from "./dashboard.js";
import * as instances from "./instances.js";
import * as instance from "./instance.js";
import * as workflows from "./workflows.js";
import * as schedules from "./schedules.js";
import * as statistics from "./statistics.js";

const PAGES = { dashboard, instances, instance, workflows, schedules, statistics };
const STORAGE = "evqueue-console";

let session = null;
let cleanup = () => {};

const $ = (id) => document.getElementById(id);

function showLogin(message = "") {
  $("top").hidden = true;
  fill($("page"));
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("login-user").focus();
}

async function startSession(user, key) {
  const s = new Session(user, key);
  s.onStateChange = (state) => {
    $("live").textContent = state === "live" ? "● live" : "○ reconnecting…";
    $("live").className = state;
  };
  await s.start();
  session = s;
  $("login").hidden = true;
  $("top").hidden = false;
  $("who").textContent = `${user} (${s.profile.toLowerCase()}) on ${s.node}`;
  for (const a of document.querySelectorAll("[data-admin]")) a.hidden = !s.isAdmin;
  route();
}

$("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const user = $("login-user").value;
  const key = await passwordKey($("login-password").value);
  $("login-error").textContent = "";
  try {
    await startSession(user, key);
    sessionStorage.setItem(STORAGE, JSON.stringify({ user, key }));
    $("login-password").value = "";
  } catch (err) {
    showLogin(err instanceof EvqError ? err.message : String(err));
  }
});

$("logout").addEventListener("click", () => {
  cleanup();
  cleanup = () => {};
  session?.close();
  session = null;
  sessionStorage.removeItem(STORAGE);
  showLogin();
});

function route() {
  if (!session) return;
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const [name, arg] = path.split("/");
  const page = PAGES[name] ? name : "dashboard";
  cleanup();
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === `#/${page}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const root = h("div", { class: `page page-${page}`, "data-page": page });
  fill($("page"), root);
  document.title = `evQueue — ${page}`;
  cleanup = PAGES[page].render(root, session, { arg, params: new URLSearchParams(query) })
    || (() => {});
}

window.addEventListener("hashchange", route);

const saved = JSON.parse(sessionStorage.getItem(STORAGE) || "null");
if (saved) startSession(saved.user, saved.key).catch((e) => showLogin(e.message));
else showLogin();
