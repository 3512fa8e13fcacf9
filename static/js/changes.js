// Requests that change the server, shared by the Train page's scripts (train.js, import.js):
// a 401 (a server where only its admin uploads and trains, or a wrong token) opens the token
// dialog once per tab and tries again; refusals become one readable message, a 503's or 429's
// in plain words as everywhere (common.js refusal).
import { api, formatDetail, refusal } from "./common.js";

const TOKEN_KEY = "rnnscope-token";
const $ = (id) => document.getElementById(id);

export function bytes(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}

function askToken(message = "") {
  const dialog = $("token-dialog"), form = $("token-form"), input = $("token-input"), cancel = $("token-cancel");
  const error = $("token-error");
  error.hidden = !message;
  error.textContent = message;
  input.value = "";
  dialog.showModal();
  return new Promise((resolve) => {
    const done = (value) => {
      dialog.close();
      form.onsubmit = null;
      cancel.onclick = null;
      resolve(value);
    };
    form.onsubmit = (e) => { e.preventDefault(); done(input.value.trim() || null); };
    cancel.onclick = () => done(null);
    dialog.oncancel = () => done(null);
  });
}

/** A refusal's detail as one line; a message about one of `ownFields` (the upload's own
 * fields, whose messages already name them) is shown as it is. */
function explain(detail, ownFields) {
  if (!Array.isArray(detail)) return formatDetail(detail);
  return detail.map((d) => (ownFields.includes(d.loc?.at(-1)) ? d.msg : formatDetail([d]))).join("; ");
}

/**
 * fetch() a JSON API route with the tab's token, if any; a 401 asks for it and tries again.
 * A GET (no token, nothing changed) goes through api(): given its page's `status` panel, a 503
 * is tried again once after Retry-After, counting down there. A POST or DELETE is never sent
 * twice by itself (a second upload or run): its refusal says when to try again.
 */
export async function request(path, { method = "GET", json, form, ownFields = [], status = null } = {}) {
  if (method === "GET") return api(path, undefined, { status });
  for (let attempt = 0; ; attempt++) {
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    let body;
    if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
    if (form !== undefined) body = form;
    let response;
    try {
      response = await fetch(path, { method, headers, body });
    } catch {
      throw new Error("The server did not answer. Is `rnnscope serve` still running?");
    }
    if (response.status === 401 && attempt < 3) {
      const next = await askToken(token ? "That token was not accepted; try again." : "");
      if (next === null) throw Object.assign(new Error("This server needs its token for changes."), { status: 401 });
      sessionStorage.setItem(TOKEN_KEY, next);
      continue;
    }
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) throw refusal(response, data, { detail: explain(data?.detail, ownFields) });
    return data;
  }
}
