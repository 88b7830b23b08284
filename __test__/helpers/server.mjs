// A seed-style Node server around a runtime (REST through the user's handler, Socket.IO
// attached to the same server) and a socket.io-client connection to it.
import http from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { io } from 'socket.io-client';
import { client, API_KEY } from './http.mjs';

/** Answer a Node request with a fetch handler, as the seed's server does: the body read whole,
 *  the response piped, so an event stream flows as it comes and a closed connection cancels it. */
export async function answer(fetch, req, res) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const response = await fetch(
    new Request(`http://${req.headers.host}${req.url}`, {
      method: req.method,
      headers: req.headers,
      body: req.method !== 'GET' && req.method !== 'HEAD' ? Buffer.concat(chunks) : undefined,
    }),
  );
  res.writeHead(response.status, Object.fromEntries(response.headers));
  if (response.body) await pipeline(Readable.fromWeb(response.body), res).catch(() => {});
  else res.end();
}

/** A seed-style server: the user's own handler answers everything that is not Socket.IO.
 *  `mounts` routes path prefixes to other fetch handlers (e.g. `{ '/console': console.fetch }`). */
export async function serve(rt, { secure, rest: restOptions, ws: wsOptions, mounts = {} } = {}) {
  const app = rt.createRestServer({ apiKey: API_KEY, ...restOptions });
  const route = (url) => {
    for (const [prefix, fetch] of Object.entries(mounts)) if (url === prefix || url.startsWith(prefix + '/') || url.startsWith(prefix + '?')) return fetch;
    return app.fetch;
  };
  const handler = (req, res) => answer(route(req.url), req, res);
  const server = secure ? https.createServer(secure, handler) : http.createServer(handler);
  const ws = rt.createWebSocketServer(server, wsOptions);
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const url = `${secure ? 'https' : 'http'}://127.0.0.1:${server.address().port}`;
  return { server, ws, url, app, rest: client(app.fetch), close: () => (ws.close(), new Promise((r) => server.close(r))) };
}

export async function connect(url, opts = {}) {
  const c = io(url, { reconnection: false, ...opts });
  await new Promise((resolve, reject) => {
    c.once('connect', resolve);
    c.once('connect_error', reject);
  });
  return c;
}
