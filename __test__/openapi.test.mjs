// The OpenAPI document: served without a key on both the fetch app and the native listener,
// a valid OpenAPI 3.1 document (checked offline by @apidevtools/swagger-parser), and listing the
// routes clients rely on with the bearer key and the `{ error, code }` envelope.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import SwaggerParser from '@apidevtools/swagger-parser';
import { agentRuntime } from './helpers/agent.mjs';
import { API_KEY } from './helpers/http.mjs';

test('GET /api/openapi.json is a valid OpenAPI 3.1 document of the REST API', { timeout: 60_000 }, async () => {
  const h = await agentRuntime();
  const listener = await h.rt.listen({ apiKey: API_KEY });
  try {
    const app = h.rt.createRestServer({ apiKey: API_KEY });
    const res = await app.fetch(new Request('http://localhost/api/openapi.json'));
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^application\/json/);
    const doc = await res.json();
    const viaListen = await (await fetch(`http://127.0.0.1:${listener.port}/api/openapi.json`)).json();
    assert.deepEqual(viaListen, doc, 'runtime.listen() serves the same document');

    assert.match(doc.openapi, /^3\.1\./);
    // Validates the schema and every $ref; the document has no external references.
    const api = await SwaggerParser.validate(structuredClone(doc));
    assert.equal(api.info.title, 'agent-runtime-native REST API');

    const ops = Object.entries(doc.paths).flatMap(([p, item]) => Object.keys(item).map((m) => `${m.toUpperCase()} ${p}`));
    for (const op of [
      'GET /health', 'GET /api/openapi.json', 'POST /api/sessions', 'GET /api/sessions', 'GET /api/sessions/{id}',
      'DELETE /api/sessions/{id}', 'POST /api/sessions/{id}/messages', 'DELETE /api/sessions/{id}/messages/{message_id}',
      'POST /api/sessions/{id}/interrupt', 'GET /api/sessions/{id}/events', 'GET /api/sessions/{id}/events/stream',
      'POST /api/sessions/{id}/permissions/{request_id}', 'POST /api/sessions/{id}/questions/{request_id}',
      'PATCH /api/sessions/{id}/options', 'POST /api/sessions/{id}/sync', 'GET /api/sessions/{id}/files',
      'GET /api/sessions/{id}/files/{path}', 'PUT /api/sessions/{id}/files/{path}', 'DELETE /api/sessions/{id}/files/{path}',
      'GET /api/sessions/{id}/archive', 'GET /api/agent-profiles', 'POST /sessions/create', 'GET /sessions',
      'GET /sessions/{id}', 'POST /sessions/{id}/message', 'GET /agent-profiles', 'GET /metrics',
    ]) {
      assert.ok(ops.includes(op), `${op} is documented`);
    }
    assert.equal(ops.length, 27);
    const ids = ops.map((op) => { const [m, p] = op.split(' '); return doc.paths[p][m.toLowerCase()].operationId; });
    assert.equal(new Set(ids).size, ids.length, 'operation ids are unique');

    assert.equal(doc.components.securitySchemes.bearer.type, 'http');
    assert.equal(doc.components.securitySchemes.bearer.scheme, 'bearer');
    // The validator does catch a broken document (a dangling reference).
    const broken = structuredClone(doc);
    broken.paths['/health'].get.responses['200'].content['application/json'].schema = { $ref: '#/components/schemas/Nope' };
    await assert.rejects(SwaggerParser.validate(broken));
    assert.deepEqual(doc.security, [{ bearer: [] }]);
    assert.deepEqual(doc.paths['/health'].get.security, []);
    assert.deepEqual(doc.components.schemas.ErrorBody.required, ['error', 'code']);
    const put = doc.paths['/api/sessions/{id}/files/{path}'].put;
    assert.ok(put.responses['413'] && put.responses['404'] && put.responses['400']);
    assert.equal(doc.paths['/api/sessions/{id}/events/stream'].get.responses['200'].content['text/event-stream'].schema.type, 'string');
    assert.ok(doc.paths['/api/sessions/{id}/archive'].get.responses['200'].content['application/x-tar']);
  } finally {
    listener.close();
    await h.close();
  }
});
