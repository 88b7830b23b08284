// Reduces the fake control plane's request log (one JSON line per call: method, headers,
// request) to what a client must get right: which calls it makes, the distinct request bodies of
// each (ids and resume positions scrubbed), and the headers of unary and streaming calls.
const IDS = new Set(['app_id', 'image_id', 'secret_ids', 'sandbox_id', 'task_id', 'exec_id', 'file_descriptor']);
const POSITIONS = new Set(['last_entry_id', 'last_batch_index']);

function scrub(value, key) {
  if (IDS.has(key) && value !== null && value !== '') return Array.isArray(value) ? value.map(() => '<id>') : '<id>';
  if (POSITIONS.has(key)) return '<position>';
  if (Array.isArray(value)) return value.map((v) => scrub(v));
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, scrub(v, k)]));
  return value;
}

const headerShape = (h) =>
  Object.fromEntries(
    Object.keys(h)
      .sort()
      .map((k) => [k, ['x-modal-client-type', 'x-modal-client-version'].includes(k) ? h[k] : '<set>']),
  );

const UNARY_SAMPLE = 'AppGetOrCreate';
const STREAM_SAMPLE = 'ContainerExecGetOutput';

export function summarize(calls) {
  const methods = [];
  const requests = {};
  for (const c of calls) {
    if (!methods.includes(c.method)) methods.push(c.method);
    const body = JSON.stringify(scrub(c.request));
    (requests[c.method] ??= []).includes(body) || requests[c.method].push(body);
  }
  const first = (m) => calls.find((c) => c.method === m)?.headers ?? {};
  return {
    methods: methods.sort(), // the order of first calls depends on timing (exec output vs wait)
    headers: { unary: headerShape(first(UNARY_SAMPLE)), stream: headerShape(first(STREAM_SAMPLE)) },
    requests: Object.fromEntries(Object.entries(requests).map(([m, list]) => [m, list.map((b) => JSON.parse(b))])),
  };
}

/** JSON with object keys sorted: a request's fields compare whatever order they were recorded in. */
function canonical(v) {
  const sort = (x) => (Array.isArray(x) ? x.map(sort) : x && typeof x === 'object' ? Object.fromEntries(Object.keys(x).sort().map((k) => [k, sort(x[k])])) : x);
  return JSON.stringify(sort(v));
}

/** Where `ours` departs from `golden`: golden calls we never make, or request bodies we never send.
 *  `ignoreRequests(method, request)` names golden requests we deliberately do not send. */
export function departures(golden, ours, { ignoreMethods = [], extraMethods = [], ignoreRequests = () => false } = {}) {
  const out = [];
  for (const m of golden.methods) {
    if (ignoreMethods.includes(m)) continue;
    if (!ours.requests[m]) {
      out.push(`never calls ${m}`);
      continue;
    }
    for (const r of golden.requests[m]) {
      if (ignoreRequests(m, r)) continue;
      const want = canonical(r);
      if (!ours.requests[m].some((o) => canonical(o) === want)) out.push(`${m}: no request like ${want}; ours: ${JSON.stringify(ours.requests[m])}`);
    }
  }
  for (const m of ours.methods) if (!golden.methods.includes(m) && !extraMethods.includes(m)) out.push(`calls ${m}, which the official client does not`);
  return out;
}
