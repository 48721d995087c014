// The fleet API from the page: the session token (per browser tab), JSON in and out, and
// problem+json errors turned into ApiError carrying the server's status, code and detail.

const TOKEN_KEY = "edgefleet.token";
export const API = "/api/v1";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    // problem+json: the stable reason is the last part of "type" (urn:edgefleet:problem:<code>).
    this.code = String(problem.type || "").split(":").pop();
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

let onUnauthorized = () => {};
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const bearer = token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(API + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    if (response.status === 401 && bearer) onUnauthorized();
    throw new ApiError(response.status, problem);
  }
  return response.status === 204 ? null : response.json();
}
