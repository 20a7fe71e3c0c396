// The job service's /v1 API as the page uses it: the API key (session storage) and errors in words.

const KEY = "ipfvr.apiKey";

export const apiKey = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (value) => (value ? sessionStorage.setItem(KEY, value) : sessionStorage.removeItem(KEY)),
};

// An error answer of the API ({"error": {"code", "message", "field"?}}), or a failure to reach it.
export class ApiError extends Error {
  constructor(status, code, message, field = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }

  // One sentence for people: the service's message, the field it concerns, the stable code.
  get words() {
    const hint = this.status === 401 ? " Check the API key above." : "";
    const field = this.field ? ` (field "${this.field}")` : "";
    return `${this.message}${field}.${hint} [${this.code}]`;
  }
}

function errorOf(status, statusText, text) {
  try {
    const body = JSON.parse(text);
    if (body && body.error && body.error.code) {
      return new ApiError(status, body.error.code, body.error.message, body.error.field ?? null);
    }
  } catch (_) {
    // not the API's envelope: a proxy's page, or a cut connection; described below
  }
  return new ApiError(status, `http_${status}`, `the service answered ${status} ${statusText}`.trim());
}

function headers() {
  return { authorization: `Bearer ${apiKey.get()}` };
}

export async function request(path, { method = "GET" } = {}) {
  let response;
  try {
    response = await fetch(path, { method, headers: headers(), cache: "no-store" });
  } catch (exc) {
    throw new ApiError(0, "network_error", `cannot reach the service (${exc.message})`);
  }
  if (!response.ok) throw errorOf(response.status, response.statusText, await response.text());
  return response.status === 204 ? null : response.json();
}

// POST /v1/jobs as multipart/form-data; XMLHttpRequest for its upload progress (fetch has none).
export function createJob(form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/jobs");
    xhr.setRequestHeader("authorization", headers().authorization);
    xhr.upload.onprogress = (event) => event.lengthComputable && onProgress(event.loaded / event.total);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(JSON.parse(xhr.responseText));
      else reject(errorOf(xhr.status, xhr.statusText, xhr.responseText));
    };
    xhr.onerror = () => reject(new ApiError(0, "network_error", "the upload was cut off before the service answered"));
    xhr.send(form);
  });
}
