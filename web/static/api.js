// The manager's API, reached same-origin through the notifier's reverse
// proxy, and the API token: asked for in a dialog when a call answers 401
// (or 403 for a wrong token), kept in sessionStorage, sent as a Bearer
// token (and, by ws.js, as the WebSocket's token query parameter).

const TOKEN_KEY = 'jobboard.token';

// Used when sessionStorage is disabled.
let memoryToken = '';

/** token returns the saved API token, or "". */
export function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || memoryToken;
  } catch {
    return memoryToken;
  }
}

function saveToken(t) {
  try {
    sessionStorage.setItem(TOKEN_KEY, t);
  } catch {
    // Storage can be disabled; the token then lives until the page closes.
  }
  memoryToken = t;
}

let asking = null;

/**
 * reachability.onReachable, when set, runs whenever the server answers a
 * request: an error that said it could not be reached is stale then.
 */
export const reachability = { onReachable: null };

/**
 * askToken opens the token dialog and resolves to the new token, or null
 * when the user cancels. Concurrent callers share one dialog.
 */
export function askToken(rejected) {
  if (asking) return asking;
  const dialog = document.getElementById('token-dialog');
  const form = document.getElementById('token-form');
  const input = document.getElementById('token-input');
  const error = document.getElementById('token-error');
  const cancel = document.getElementById('token-cancel');
  const opener = document.activeElement;
  error.textContent = rejected ? 'The saved token was rejected. Enter a valid token.' : '';
  input.value = '';
  asking = new Promise((resolve) => {
    const done = (value) => {
      form.removeEventListener('submit', onSubmit);
      cancel.removeEventListener('click', onCancel);
      dialog.removeEventListener('cancel', onCancel);
      if (dialog.open) dialog.close();
      asking = null;
      if (opener instanceof HTMLElement && opener.isConnected) opener.focus();
      resolve(value);
    };
    const onSubmit = (e) => {
      e.preventDefault();
      const v = input.value.trim();
      if (!v) {
        error.textContent = 'Enter the token.';
        input.focus();
        return;
      }
      saveToken(v);
      done(v);
    };
    const onCancel = (e) => {
      e.preventDefault();
      done(null);
    };
    form.addEventListener('submit', onSubmit);
    cancel.addEventListener('click', onCancel);
    dialog.addEventListener('cancel', onCancel);
    dialog.showModal();
    input.focus();
  });
  return asking;
}

/**
 * request fetches url with the token, and on 401 asks for a token and
 * tries again. It resolves to {status, ok, body, headers} with the body parsed as
 * JSON when it is JSON; it rejects only when the server cannot be reached.
 */
export async function request(url, { method = 'GET', body, headers = {}, signal } = {}) {
  for (let tries = 0; ; tries++) {
    const h = { Accept: 'application/json', ...headers };
    const t = token();
    if (t) h.Authorization = `Bearer ${t}`;
    const res = await fetch(url, { method, body, headers: h, signal, cache: 'no-store' });
    // The proxy's 502 or 504 says the manager is not there: not an answer.
    if (res.status !== 502 && res.status !== 504) reachability.onReachable?.();
    // 401: no token; 403 naming the token: a wrong one. Another 403 (a
    // foreign origin, say) is not for the user to fix with a token.
    const refused = res.status === 401 || (res.status === 403 && /token/i.test(await res.clone().text()));
    if (refused && tries < 5) {
      const next = await askToken(Boolean(t));
      if (next) continue;
    }
    const text = await res.text();
    let parsed = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      // Not JSON: keep the text for the error message.
    }
    return { status: res.status, ok: res.ok, body: parsed, headers: res.headers };
  }
}

/** errorText returns a readable message for a failed API answer. */
export function errorText(res) {
  const b = res.body;
  if (b && typeof b === 'object' && b.error) return b.detail ? `${b.error}: ${b.detail}` : String(b.error);
  if (typeof b === 'string' && b.trim()) return `HTTP ${res.status}: ${b.trim().slice(0, 200)}`;
  return `HTTP ${res.status}`;
}

/** Api calls the manager at base (e.g. "/api"). */
export class Api {
  constructor(base) {
    this.base = String(base || '/api').replace(/\/+$/, '');
  }

  /** submit puts a job; text is sent as is, so its hash is the hash of what was typed. */
  submit(text, { tube, priority, delay }) {
    const q = new URLSearchParams({ tube, priority: String(priority), delay: String(delay) });
    return request(`${this.base}/?${q}`, {
      method: 'POST',
      body: text,
      headers: { 'Content-Type': 'application/json' },
    });
  }

  /** job returns a job's beanstalkd stats or its stored result. */
  job(id, signal) {
    return request(`${this.base}/${encodeURIComponent(id)}/`, { signal });
  }

  /** list returns a page of GET /jobs: {state, tube, after, limit}. */
  list({ state, tube = '', after = '', limit = 50 }, signal) {
    const q = new URLSearchParams({ state, limit: String(limit) });
    if (tube) q.set('tube', tube);
    if (after) q.set('after', after);
    return request(`${this.base}/jobs?${q}`, { signal });
  }

  /** tube returns a tube's stats and next jobs. */
  tube(name, signal) {
    return request(`${this.base}/tubes/${encodeURIComponent(name)}`, { signal });
  }

  /** changeTube sends PATCH /tubes/T: {kick: N} or {pause: "30s"}. */
  changeTube(name, change) {
    return request(`${this.base}/tubes/${encodeURIComponent(name)}`, {
      method: 'PATCH', body: JSON.stringify(change), headers: { 'Content-Type': 'application/json' },
    });
  }

  /** ready kicks a buried or delayed job, or runs a completed one again (201 with the new id). */
  ready(id) {
    return request(`${this.base}/${encodeURIComponent(id)}/`, {
      method: 'PATCH', body: '{"state":"ready"}', headers: { 'Content-Type': 'application/json' },
    });
  }

  /** remove deletes a job that no worker holds. */
  remove(id) {
    return request(`${this.base}/${encodeURIComponent(id)}/`, { method: 'DELETE' });
  }

  /** health asks the manager's /readyz. */
  health(signal) {
    return request(`${this.base}/readyz`, { signal });
  }
}

/** unreachable reports whether an answer means the manager itself could not be reached (the proxy's 502 or 504). */
export function unreachable(res) {
  return res.status === 502 || res.status === 504;
}
