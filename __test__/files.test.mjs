// The workspace file API: list, read, write, delete and archive a session's files, without a
// sandbox (the stored files) and with one (the sandbox's files, through the watcher); path
// escapes, links, limits and unknown sessions refused with `{ error, code }`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { agentRuntime, eventually } from './helpers/agent.mjs';
import { client, API_KEY } from './helpers/http.mjs';
import { serve, connect } from './helpers/server.mjs';

const CLAUDE = { agentProfileRef: 'default', architecture: 'claude-agent-sdk' };
const KEY = { Authorization: `Bearer ${API_KEY}` };

/** A raw request to the fetch app: the body as bytes, the answer's bytes kept. */
function raw(app) {
  return async (method, p, body, headers = KEY) => {
    const res = await app.fetch(new Request(`http://localhost${p}`, { method, headers, body }));
    const bytes = Buffer.from(await res.arrayBuffer());
    let json;
    try {
      json = JSON.parse(bytes.toString('utf8'));
    } catch {}
    return { status: res.status, type: res.headers.get('content-type'), bytes, text: bytes.toString('utf8'), json };
  };
}

/** Entries of a ustar/GNU tar archive: name → content. */
function untar(buf) {
  const out = new Map();
  for (let off = 0; off + 512 <= buf.length; ) {
    const header = buf.subarray(off, off + 512);
    if (header.every((b) => b === 0)) break;
    const field = (a, n) => header.subarray(a, a + n).toString('latin1').replace(/\0.*$/s, '');
    const name = field(0, 100);
    const size = parseInt(field(124, 12).trim() || '0', 8);
    const type = field(156, 1);
    off += 512;
    if (type === '0' || type === '') out.set(name, Buffer.from(buf.subarray(off, off + size)));
    off += Math.ceil(size / 512) * 512;
  }
  return out;
}

/** A request sent as written (no URL normalization), through `runtime.listen()`. */
function literal(port, method, p) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: p, headers: KEY }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode, text }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('files of a session without a sandbox, then in its sandbox', { timeout: 240_000 }, async () => {
  const h = await agentRuntime();
  try {
    const app = h.rt.createRestServer({ apiKey: API_KEY });
    const json = client(app.fetch);
    const req = raw(app);
    const created = await json('POST', '/api/sessions', { ...CLAUDE, defaultWorkspaceFiles: [{ path: 'seed.txt', content: 'seed' }] });
    const id = created.body.sessionId;
    const files = `/api/sessions/${id}/files`;

    // Stored files: listed with sizes, no times.
    assert.deepEqual((await json('GET', files)).body, { files: [{ path: 'seed.txt', size: 4, modifiedAt: null }] });

    // PUT without a sandbox: stored, announced, persisted.
    let r = await req('PUT', `${files}/notes/a.txt`, 'hello from put');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, { success: true, sessionId: id, path: 'notes/a.txt', size: 14, created: true });
    const [, ev] = await h.waitFor((n, p) => n === 'session:file:created' && p.sessionId === id && p.file.path === 'notes/a.txt');
    assert.equal(ev.file.content, 'hello from put');
    await eventually(() => h.rec.calls.some(([m, sid, f]) => m === 'saveWorkspaceFile' && sid === id && f.path === 'notes/a.txt' && f.content === 'hello from put'), 15_000, 'saveWorkspaceFile');
    r = await req('GET', `${files}/notes/a.txt`);
    assert.equal(r.status, 200);
    assert.equal(r.type, 'text/plain; charset=utf-8');
    assert.equal(r.text, 'hello from put');

    // Replacing it is a modification; deleting one is announced and reaches the adapter.
    r = await req('PUT', `${files}/seed.txt`, 'seed, changed');
    assert.equal(r.json.created, false);
    await h.waitFor((n, p) => n === 'session:file:modified' && p.sessionId === id && p.file.path === 'seed.txt' && p.file.content === 'seed, changed');
    r = await req('PUT', `${files}/gone.txt`, 'soon gone');
    assert.equal(r.status, 200);
    r = await req('DELETE', `${files}/gone.txt`);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, { success: true, sessionId: id, path: 'gone.txt' });
    await h.waitFor((n, p) => n === 'session:file:deleted' && p.sessionId === id && p.path === 'gone.txt');
    await eventually(() => h.rec.calls.some(([m, sid, p]) => m === 'deleteSessionFile' && sid === id && p === 'gone.txt'), 15_000, 'deleteSessionFile');
    for (const method of ['GET', 'DELETE']) {
      r = await req(method, `${files}/gone.txt`);
      assert.equal(r.status, 404, method);
      assert.equal(r.json.code, 'FILE_NOT_FOUND');
    }

    // Stored files are text: binary content waits for a sandbox. The agent's own folder is not writable.
    r = await req('PUT', `${files}/blob.bin`, new Uint8Array([0, 255, 1]));
    assert.equal(r.status, 400);
    assert.match(r.json.error, /binary content can only be written while the session's sandbox runs/);
    r = await req('PUT', `${files}/notes`, 'a file where a directory is');
    assert.equal(r.status, 400);
    assert.match(r.json.error, /it is a directory in the workspace \(it holds notes\/a\.txt\)/);
    r = await req('PUT', `${files}/seed.txt/x`, 'under a file');
    assert.equal(r.status, 400);
    assert.match(r.json.error, /seed\.txt is a file, not a directory/);
    r = await req('PUT', `${files}/.claude/settings.json`, '{}');
    assert.equal(r.status, 400);
    assert.match(r.json.error, /\.claude\/ belongs to the agent's configuration/);

    r = await req('GET', `/api/sessions/${id}/archive`);
    assert.equal(r.status, 200);
    assert.equal(r.type, 'application/x-tar');
    const stored = untar(r.bytes);
    assert.deepEqual([...stored.keys()].sort(), ['notes/a.txt', 'seed.txt']);
    assert.equal(stored.get('notes/a.txt').toString(), 'hello from put');

    // The agent sees the file on its next turn (materialized into the new sandbox).
    await json('POST', `/api/sessions/${id}/messages`, { content: 'read notes/a.txt' });
    await h.turnEnd(id);
    const afterRead = h.fake.requests.filter((q) => q.path === '/v1/messages').pop();
    assert.ok(JSON.stringify(afterRead.body.messages).includes('hello from put'), 'the Read tool returned the PUT content');

    // With a sandbox: the listing comes from it, with times.
    const listed = (await json('GET', files)).body.files;
    assert.deepEqual(listed.map((f) => f.path), ['notes/a.txt', 'seed.txt']);
    assert.equal(listed[0].size, 14);
    assert.ok(!Number.isNaN(Date.parse(listed[0].modifiedAt)), listed[0].modifiedAt);

    // Binary round trip through the sandbox.
    const bytes = new Uint8Array(256).map((_, i) => i);
    r = await req('PUT', `${files}/bin/blob.bin`, bytes);
    assert.equal(r.status, 200, r.text);
    r = await req('GET', `${files}/bin/blob.bin`);
    assert.equal(r.type, 'application/octet-stream');
    assert.deepEqual(new Uint8Array(r.bytes), bytes);

    // A text file PUT into the sandbox goes the agent's way: the watcher announces and persists it.
    r = await req('PUT', `${files}/live.txt`, 'written while it runs');
    assert.equal(r.json.created, true);
    await h.waitFor((n, p) => n === 'session:file:created' && p.sessionId === id && p.file.path === 'live.txt' && p.file.content === 'written while it runs');
    await eventually(() => h.rec.calls.some(([m, sid, f]) => m === 'saveWorkspaceFile' && sid === id && f.path === 'live.txt'), 15_000, 'saveWorkspaceFile live.txt');
    r = await req('DELETE', `${files}/live.txt`);
    assert.equal(r.status, 200, r.text);
    await h.waitFor((n, p) => n === 'session:file:deleted' && p.sessionId === id && p.path === 'live.txt');
    await eventually(() => h.rec.calls.some(([m, sid, p]) => m === 'deleteSessionFile' && sid === id && p === 'live.txt'), 15_000, 'deleteSessionFile live.txt');
    assert.equal((await req('GET', `${files}/live.txt`)).status, 404);

    const archived = untar((await req('GET', `/api/sessions/${id}/archive`)).bytes);
    assert.deepEqual([...archived.keys()].sort(), ['bin/blob.bin', 'notes/a.txt', 'seed.txt']);
    assert.deepEqual(new Uint8Array(archived.get('bin/blob.bin')), bytes);

    // Links the agent plants are never followed, for reading, writing or deleting.
    const outsideDir = fs.mkdtempSync(path.join(os.tmpdir(), 'arn-outside-'));
    const outside = path.join(outsideDir, 'secret.txt');
    fs.writeFileSync(outside, 'host secret');
    await json('POST', `/api/sessions/${id}/messages`, { content: `run: ln -s ${outside} link.txt; ln -s ${outsideDir} linkdir` });
    await h.turnEnd(id, 2);
    r = await req('GET', `${files}/link.txt`);
    assert.equal(r.status, 400);
    assert.match(r.json.error, /symbolic link/);
    r = await req('GET', `${files}/linkdir/secret.txt`);
    assert.notEqual(r.status, 200);
    assert.ok(!r.text.includes('host secret'));
    r = await req('PUT', `${files}/linkdir/x.txt`, 'escaped?');
    assert.equal(r.status, 400);
    assert.match(r.json.error, /symbolic link/);
    r = await req('DELETE', `${files}/linkdir/secret.txt`);
    assert.notEqual(r.status, 200);
    r = await req('PUT', `${files}/link.txt`, 'replaces the link');
    assert.equal(r.status, 200);
    assert.equal(fs.readFileSync(outside, 'utf8'), 'host secret', 'never written through the link');
    assert.deepEqual(fs.readdirSync(outsideDir), ['secret.txt']);
    assert.ok(!(await json('GET', files)).body.files.some((f) => f.path.startsWith('linkdir')), 'links are not listed');
    fs.rmSync(outsideDir, { recursive: true, force: true });
  } finally {
    await h.close();
  }
});

test('escapes, limits, unknown sessions and the key', { timeout: 120_000 }, async () => {
  const h = await agentRuntime({ maxWorkspaceFileBytes: 4096, maxBodyBytes: 8192 });
  const listener = await h.rt.listen({ apiKey: API_KEY });
  try {
    const app = h.rt.createRestServer({ apiKey: API_KEY });
    const req = raw(app);
    const id = (await client(app.fetch)('POST', '/api/sessions', CLAUDE)).body.sessionId;
    const files = `/api/sessions/${id}/files`;
    const refused = [
      [`${files}/..%2fx`, /'\.\.' would leave the workspace/],
      [`${files}/%2e%2e%2fetc%2fpasswd`, /'\.\.' would leave the workspace/],
      [`${files}/a/..%2f..%2fx`, /'\.\.' would leave the workspace/],
      [`${files}//etc/passwd`, /not absolute/],
      [`${files}/%2fetc%2fpasswd`, /not absolute/],
      [`${files}/a%00b`, /NUL/],
      [`${files}/a//b`, /empty or '\.' segments/],
      [`${files}/dir/`, /names a directory/],
    ];
    for (const [p, why] of refused) {
      for (const method of ['GET', 'PUT', 'DELETE']) {
        const r = await req(method, p, method === 'PUT' ? 'x' : undefined);
        assert.equal(r.status, 400, `${method} ${p}: ${r.text}`);
        assert.equal(r.json.code, 'INVALID_REQUEST');
        assert.match(r.json.error, why, `${method} ${p}`);
      }
    }
    // Sent literally (a client that does not normalize the URL), on the native listener.
    for (const p of [`${files}/../x`, `${files}/%2e%2e/x`, `${files}/a/../../x`]) {
      const r = await literal(listener.port, 'GET', p);
      assert.equal(r.status, 400, `${p}: ${r.text}`);
      assert.match(JSON.parse(r.text).error, /'\.\.' would leave the workspace/);
    }
    assert.deepEqual((await req('GET', files)).json, { files: [] }, 'nothing was written');

    // Over maxWorkspaceFileBytes, and over maxBodyBytes.
    let r = await req('PUT', `${files}/big.txt`, 'a'.repeat(5000));
    assert.equal(r.status, 413);
    assert.equal(r.json.code, 'PAYLOAD_TOO_LARGE');
    assert.match(r.json.error, /maxWorkspaceFileBytes \(4096 bytes\)/);
    r = await req('PUT', `${files}/bigger.txt`, 'a'.repeat(10_000));
    assert.equal(r.status, 413);
    assert.equal(r.json.code, 'PAYLOAD_TOO_LARGE');

    // Unknown sessions.
    for (const [method, p] of [
      ['GET', '/api/sessions/nope/files'],
      ['GET', '/api/sessions/nope/files/a.txt'],
      ['PUT', '/api/sessions/nope/files/a.txt'],
      ['DELETE', '/api/sessions/nope/files/a.txt'],
      ['GET', '/api/sessions/nope/archive'],
    ]) {
      r = await req(method, p, method === 'PUT' ? 'x' : undefined);
      assert.equal(r.status, 404, `${method} ${p}`);
      assert.equal(r.json.code, 'SESSION_NOT_FOUND');
    }

    // Behind the key, on both the fetch app and the native listener.
    r = await req('GET', files, undefined, {});
    assert.equal(r.status, 401);
    const noKey = await new Promise((resolve) => {
      http.get({ host: '127.0.0.1', port: listener.port, path: files }, (res) => {
        res.resume();
        resolve(res.statusCode);
      });
    });
    assert.equal(noKey, 401);
    assert.equal((await literal(listener.port, 'PUT', `${files}/via-listen.txt`)).status, 200);
  } finally {
    listener.close();
    await h.close();
  }
});

test('Socket.IO clients in the room see PUT and DELETE as file events', { timeout: 120_000 }, async () => {
  const h = await agentRuntime();
  const srv = await serve(h.rt);
  const c = await connect(srv.url, { transports: ['websocket'] });
  try {
    const id = (await srv.rest('POST', '/api/sessions', CLAUDE)).body.sessionId;
    assert.deepEqual(await c.emitWithAck('session:join', id), { success: true });
    const created = new Promise((resolve) => c.once('session:file:created', resolve));
    const req = raw(srv.app);
    assert.equal((await req('PUT', `/api/sessions/${id}/files/doc/readme.md`, '# hi')).status, 200);
    const ev = await created;
    assert.equal(ev.sessionId, id);
    assert.deepEqual(ev.file, { path: 'doc/readme.md', content: '# hi' });
    const modified = new Promise((resolve) => c.once('session:file:modified', resolve));
    await req('PUT', `/api/sessions/${id}/files/doc/readme.md`, '# hello');
    assert.equal((await modified).file.content, '# hello');
    const deleted = new Promise((resolve) => c.once('session:file:deleted', resolve));
    assert.equal((await req('DELETE', `/api/sessions/${id}/files/doc/readme.md`)).status, 200);
    const gone = await deleted;
    assert.equal(gone.sessionId, id);
    assert.equal(gone.path, 'doc/readme.md');
  } finally {
    c.close();
    await srv.close();
    await h.close();
  }
});
