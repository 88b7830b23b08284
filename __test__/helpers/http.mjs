// Small helpers to drive a fetch-style REST app in tests.
export const API_KEY = 'test-key';
export const AUTH = { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' };

export function client(fetchFn, base = 'http://localhost') {
  return async (method, path, body, headers = AUTH) => {
    const init = { method, headers };
    if (body !== undefined) init.body = typeof body === 'string' ? body : JSON.stringify(body);
    const res = await fetchFn(new Request(base + path, init));
    const text = await res.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: res.status, body: json, headers: res.headers };
  };
}
