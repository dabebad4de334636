// Talking to the API: the key the user signed in with (this tab's sessionStorage),
// sent as `Authorization: Bearer` on every call, and the API's JSON error body turned
// into an ApiError. URLs are relative to the page, so a proxy may serve the service under
// a prefix.

const KEY_ITEM = "ftsvc.apiKey";
export const JOBS = "v1/fine_tuning/jobs";

export class ApiError extends Error {
  /** `error`: the API's `{message, type, param, code, details}`; status 0: no answer. */
  constructor(status, error) {
    super(error.message);
    this.status = status;
    this.type = error.type ?? null;
    this.param = error.param ?? null;
    this.code = error.code ?? null;
    this.details = error.details ?? null;
  }
}

export const session = {
  get key() {
    return sessionStorage.getItem(KEY_ITEM);
  },
  signIn(key) {
    sessionStorage.setItem(KEY_ITEM, key);
  },
  signOut() {
    sessionStorage.removeItem(KEY_ITEM);
  },
};

let unauthorized = () => {};

/** What to do when the signed-in key is refused (revoked meanwhile): sign out. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

/** The error of an answer that is not a success, from its body when that is the API's
 * error shape (a proxy's HTML page says only its status). */
function answerError(status, statusText, body) {
  const error = body?.error ?? { message: `HTTP ${status} ${statusText}`.trim() };
  return new ApiError(status, error);
}

function refused(error, key) {
  if (error.status === 401 && key === session.key) unauthorized(error);
  return error;
}

const UNREACHABLE = { message: "The service cannot be reached: is it running?", code: "network_error" };

export function url(path, query = {}) {
  const target = new URL(path, document.baseURI);
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") target.searchParams.set(name, value);
  }
  return target;
}

/** A successful Response, or an ApiError. `key` defaults to the signed-in one. */
export async function request(path, { method = "GET", query, json, key = session.key } = {}) {
  const init = { method, headers: { Authorization: `Bearer ${key}` } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(url(path, query), init);
  } catch {
    throw new ApiError(0, UNREACHABLE);
  }
  if (response.ok) return response;
  const body = await response.json().catch(() => null);
  throw refused(answerError(response.status, response.statusText, body), key);
}

export async function getJson(path, query) {
  return (await request(path, { query })).json();
}

export async function postJson(path, json) {
  return (await request(path, { method: "POST", json })).json();
}

function filenameOf(disposition) {
  const encoded = /filename\*=UTF-8''([^;]+)/i.exec(disposition ?? "");
  if (encoded) return decodeURIComponent(encoded[1]);
  return /filename="([^"]+)"/i.exec(disposition ?? "")?.[1] ?? null;
}

/** Download with the key (a plain link cannot send it): the body as a blob, saved under
 * the name the API gives in Content-Disposition. */
export async function download(path) {
  const response = await request(path);
  const blob = await response.blob();
  const name = filenameOf(response.headers.get("Content-Disposition")) ?? path.split("/").pop();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  return { name, bytes: blob.size, sha256: response.headers.get("X-Artifact-SHA256") };
}

/** Upload a training file (multipart, as `POST /v1/files` takes it), reporting the share
 * sent so far to `progress` (fetch cannot tell upload progress; XMLHttpRequest can). */
export function uploadFile(file, format, progress) {
  const key = session.key;
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url("v1/files"));
    xhr.setRequestHeader("Authorization", `Bearer ${key}`);
    xhr.responseType = "json";
    xhr.upload.onprogress = (event) => event.lengthComputable && progress(event.loaded / event.total);
    xhr.onload = () =>
      xhr.status === 200
        ? resolve(xhr.response)
        : reject(refused(answerError(xhr.status, xhr.statusText, xhr.response), key));
    xhr.onerror = () => reject(new ApiError(0, UNREACHABLE));
    const form = new FormData();
    form.append("purpose", "fine-tune");
    form.append("format", format);
    form.append("file", file);
    xhr.send(form);
  });
}
