// Talking to the daemon: the `api` and `events` websocket subprotocols (protocol.md §4), logged
// in with the challenge/response of §2.1 computed by WebCrypto (or sha1.js where the page is
// not a secure context). Queries are XML documents built with the DOM, one in flight per api
// socket as the original's front-end does.
import { hmacSha1, sha1 } from "./sha1.js";

const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
const unhex = (s) => new Uint8Array((s.match(/../g) || []).map((h) => parseInt(h, 16)));

/** SHA-1 of the clear password, as hex: the HMAC key, the only thing kept after login. */
export async function passwordKey(password) {
  const bytes = new TextEncoder().encode(password);
  return hex(crypto.subtle ? await crypto.subtle.digest("SHA-1", bytes) : sha1(bytes));
}

async function authResponse(keyHex, challenge) {
  if (!crypto.subtle) return hex(hmacSha1(unhex(keyHex), unhex(challenge)));
  const key = await crypto.subtle.importKey("raw", unhex(keyHex), { name: "HMAC", hash: "SHA-1" },
    false, ["sign"]);
  return hex(await crypto.subtle.sign("HMAC", key, unhex(challenge)));
}

/** The daemon serving this page also serves the websockets, on the same port. */
function socketUrl() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;
}

export class EvqError extends Error {
  constructor(message, code = "") {
    super(message);
    this.code = code;
  }
}

/** A query document: root = group, `action`, attributes, and `<parameter name value/>`
 * children for workflow parameters. */
export function buildQuery(group, action, attrs = {}, parameters = null) {
  const doc = document.implementation.createDocument(null, group, null);
  const root = doc.documentElement;
  if (action) root.setAttribute("action", action);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null && v !== "") root.setAttribute(k, String(v));
  }
  for (const [name, value] of Object.entries(parameters || {})) {
    const p = doc.createElement("parameter");
    p.setAttribute("name", name);
    p.setAttribute("value", value);
    root.appendChild(p);
  }
  return new XMLSerializer().serializeToString(doc);
}

function parse(text) {
  return new DOMParser().parseFromString(text, "application/xml").documentElement;
}

function base64Utf8(text) {
  let binary = "";
  for (const b of new TextEncoder().encode(text)) binary += String.fromCharCode(b);
  return btoa(binary);
}

/** A KO response as an error, else the response element. */
export function checked(doc) {
  if (doc.getAttribute("status") === "KO") {
    throw new EvqError(doc.getAttribute("error") || "Error", doc.getAttribute("error-code") || "");
  }
  return doc;
}

/** Opens a socket of `protocol` and logs in; resolves with the socket and its greeting. A close
 * before the greeting is a login failure (the daemon closes with the reason). */
function openSocket(protocol, user, keyHex, onMessage, onClose) {
  return new Promise((resolve, reject) => {
    let ws;
    try {
      ws = new WebSocket(socketUrl(), protocol);
    } catch (e) {
      reject(new EvqError(String(e)));
      return;
    }
    let state = "CONNECTING";
    ws.onmessage = async (msg) => {
      if (state === "READY") {
        onMessage(parse(msg.data));
        return;
      }
      const doc = parse(msg.data);
      if (doc.tagName === "auth") {
        state = "AUTHENTICATING";
        const auth = document.implementation.createDocument(null, "auth", null).documentElement;
        auth.setAttribute("response", await authResponse(keyHex, doc.getAttribute("challenge")));
        auth.setAttribute("user", user);
        ws.send(new XMLSerializer().serializeToString(auth));
      } else if (doc.tagName === "ready") {
        state = "READY";
        resolve({ ws, ready: doc });
      }
    };
    ws.onclose = (e) => {
      if (state === "READY") {
        onClose(e);
      } else if (state === "AUTHENTICATING") {
        reject(new EvqError(e.reason || "Invalid authentication", "AUTH_ERROR"));
      } else {
        reject(new EvqError("Cannot connect to the evQueue daemon", "CONNECTION"));
      }
    };
  });
}

/** One logged-in user: an `api` socket for queries and an `events` socket for subscriptions,
 * both reopened when they drop. */
export class Session {
  constructor(user, keyHex) {
    this.user = user;
    this.key = keyHex;
    this.ready = null;
    this.api = null;
    this.chain = Promise.resolve();
    this.pending = [];
    this.events = null;
    this.subscriptions = new Map();
    this.nextExternalId = 1;
    this.closed = false;
    this.onStateChange = () => {};
    this.clockOffset = 0;
  }

  /** Logs in (the api socket) and opens the events socket. */
  async start() {
    await this.openApi();
    const t = this.ready.getAttribute("time");
    if (t) this.clockOffset = parseTime(t).getTime() - Date.now();
    await this.openEvents();
  }

  get node() { return this.ready?.getAttribute("node") || ""; }
  get profile() { return this.ready?.getAttribute("profile") || ""; }
  get isAdmin() { return this.profile === "ADMIN"; }
  /** The daemon's current local time (its timestamps are naive local times). */
  serverNow() { return new Date(Date.now() + this.clockOffset); }

  async openApi() {
    const { ws, ready } = await openSocket("api", this.user, this.key,
      (doc) => this.pending.shift()?.resolve(doc),
      () => {
        this.api = null;
        for (const p of this.pending.splice(0)) p.reject(new EvqError("Connection lost", "CONNECTION"));
      });
    this.api = ws;
    this.ready = ready;
  }

  /** Runs a query; resolves with the response element, rejects with EvqError on KO. */
  query(group, action, attrs = {}, parameters = null) {
    const xml = buildQuery(group, action, attrs, parameters);
    const run = async () => {
      if (this.closed) throw new EvqError("Logged out");
      if (!this.api) await this.openApi();
      const answer = new Promise((resolve, reject) => this.pending.push({ resolve, reject }));
      this.api.send(xml);
      return checked(await answer);
    };
    const result = this.chain.then(run);
    this.chain = result.catch(() => {});
    return result;
  }

  async openEvents() {
    const { ws } = await openSocket("events", this.user, this.key, (doc) => this.onPush(doc),
      () => this.eventsLost());
    this.events = ws;
    this.onStateChange("live");
    for (const sub of this.subscriptions.values()) this.sendSubscribe(sub);
  }

  eventsLost() {
    this.events = null;
    if (this.closed) return;
    this.onStateChange("reconnecting");
    setTimeout(() => this.openEvents().catch(() => this.eventsLost()), 5000);
  }

  onPush(doc) {
    const eventId = doc.getAttribute("event-id");
    if (eventId) this.events?.send(buildQuery("event", "ack", { event_id: eventId }));
    const sub = this.subscriptions.get(Number(doc.getAttribute("external-id")));
    if (!sub) return;
    let error = null;
    try {
      checked(doc);
    } catch (e) {
      error = e;
    }
    sub.callback(error ? null : doc, error);
  }

  sendSubscribe(sub) {
    if (!this.events) return;
    sub.types.forEach((type, i) => {
      this.events.send(buildQuery("event", "subscribe", {
        type, api_cmd: base64Utf8(sub.command), external_id: sub.id,
        object_id: sub.objectId || undefined,
        send_now: i === sub.types.length - 1 ? "yes" : "no",
      }));
    });
  }

  /** Runs `command` (a query built by buildQuery) now and again whenever one of `types` fires
   * (for `objectId` only if given): `callback(responseElement, error)`. Returns a cancel
   * function. */
  subscribe(types, command, callback, objectId = 0) {
    const sub = { id: this.nextExternalId++, types, command, callback, objectId };
    this.subscriptions.set(sub.id, sub);
    this.sendSubscribe(sub);
    return () => {
      this.subscriptions.delete(sub.id);
      for (const type of types) {
        this.events?.send(buildQuery("event", "unsubscribe", {
          type, external_id: sub.id, object_id: objectId || undefined }));
      }
    };
  }

  close() {
    this.closed = true;
    this.subscriptions.clear();
    this.api?.close();
    this.events?.close();
  }
}

/** "YYYY-MM-DD HH:MM:SS" (a daemon timestamp) as a Date in the browser's zone. */
export function parseTime(text) {
  const m = /^(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+)/.exec(text || "");
  return m ? new Date(m[1], m[2] - 1, m[3], m[4], m[5], m[6]) : null;
}

/** A Date as the daemon's "YYYY-MM-DD HH:MM:SS". */
export function formatTime(date) {
  const p = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${p(date.getMonth() + 1)}-${p(date.getDate())} `
    + `${p(date.getHours())}:${p(date.getMinutes())}:${p(date.getSeconds())}`;
}
