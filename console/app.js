// The agent runtime's web console: plain DOM code, no framework, no build step. It talks to the
// runtime's REST API (with the API key as a Bearer token) and to its Socket.IO server (the key
// as the auth token). Everything it shows that came from the server or the agent is set as text
// (textContent / text nodes), never parsed as HTML.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const KEYS = { base: 'agentConsole.apiBase', key: 'agentConsole.apiKey', session: 'agentConsole.session' };

  let apiBase = '';
  let apiKey = '';
  let socket = null;
  let serverDisconnects = 0;
  /** The open session: its id and what is rendered for it. */
  let current = null;

  // ---- small helpers ----------------------------------------------------------------------

  /** An element with attributes and children; strings become text nodes (never HTML). */
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'className') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  const json = (v) => {
    try {
      return JSON.stringify(v, null, 2) ?? '';
    } catch {
      return String(v);
    }
  };

  /** Tool output as text: strings as they are, Anthropic content arrays as their text. */
  function outputText(output) {
    if (typeof output === 'string') return output;
    if (Array.isArray(output) && output.every((p) => p && typeof p === 'object' && p.type === 'text')) {
      return output.map((p) => p.text).join('\n');
    }
    return json(output);
  }

  function contentText(content) {
    if (typeof content === 'string') return content;
    if (Array.isArray(content)) return content.map((p) => (p && p.type === 'text' ? p.text : `[${p && p.type}]`)).join('\n');
    return json(content);
  }

  /** The one input field that says what a tool call is about (a path, a command, ...). */
  function toolSubject(input) {
    if (!input || typeof input !== 'object') return '';
    for (const k of ['file_path', 'filePath', 'path', 'notebook_path', 'command', 'pattern', 'url', 'query', 'description', 'prompt']) {
      if (typeof input[k] === 'string' && input[k]) return input[k];
    }
    return '';
  }

  const time = (ms) => (typeof ms === 'number' ? new Date(ms).toLocaleString() : '');

  let noticeTimer = null;
  function notice(text) {
    const n = $('notice');
    n.textContent = text;
    n.hidden = !text;
    clearTimeout(noticeTimer);
    if (text) noticeTimer = setTimeout(() => (n.hidden = true), 8000);
  }

  function setConnection(text) {
    $('connection').textContent = text;
  }

  // ---- REST ---------------------------------------------------------------------------------

  const url = (path) => (apiBase || location.origin).replace(/\/+$/, '') + path;
  const sessionPath = (id, rest = '') => `/api/sessions/${encodeURIComponent(id)}${rest}`;

  async function api(method, path, body) {
    const headers = { authorization: `Bearer ${apiKey}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(url(path), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = { error: text };
    }
    if (!res.ok) {
      const message = data && typeof data.error === 'string' ? data.error : `HTTP ${res.status}`;
      const err = new Error(message);
      err.status = res.status;
      err.code = data && data.code;
      throw err;
    }
    return data;
  }

  // ---- connecting ---------------------------------------------------------------------------

  async function start() {
    setConnection('Connecting…');
    let list;
    try {
      list = await api('GET', '/api/sessions');
    } catch (err) {
      setConnection('Not connected');
      notice(err.status === 401 ? `The API key was refused: ${err.message}` : `Could not reach the API: ${err.message}`);
      showConnect();
      return;
    }
    notice('');
    $('connect-view').hidden = true;
    $('app-view').hidden = false;
    $('forget').hidden = false;
    setConnection('Connected (REST)');
    renderSessions(list.sessions || []);
    loadProfiles();
    connectSocket();
    const last = sessionStorage.getItem(KEYS.session);
    if (last) openSession(last);
  }

  function showConnect() {
    $('connect-view').hidden = false;
    $('app-view').hidden = true;
    $('forget').hidden = true;
    $('api-base').value = apiBase;
    $('api-key').focus();
  }

  async function loadProfiles() {
    const select = $('create-profile');
    try {
      const { profiles } = await api('GET', '/api/agent-profiles');
      select.replaceChildren(...profiles.map((p) => h('option', { value: p.id, text: p.name ? `${p.name} (${p.id})` : p.id })));
    } catch (err) {
      select.replaceChildren(h('option', { value: 'default', text: 'default' }));
      notice(`Could not list agent profiles: ${err.message}`);
    }
  }

  function connectSocket() {
    if (typeof io !== 'function') {
      setConnection('Connected (REST only: the Socket.IO client did not load)');
      return;
    }
    socket = io(apiBase || location.origin, { auth: { token: apiKey }, transports: ['websocket', 'polling'] });
    socket.on('connect', () => {
      setConnection('Connected (live)');
      if (current && current.loaded) joinCurrent();
    });
    socket.on('connect_error', (err) => setConnection(`Live updates unavailable: ${err.message}`));
    socket.on('disconnect', (reason) => {
      setConnection(`Live updates paused (${reason})`);
      // The server ends a client that fell too far behind; come back (a few times) and resume.
      if (reason === 'io server disconnect' && serverDisconnects++ < 5) socket.connect();
    });
    socket.on('sessions:list', (list) => Array.isArray(list) && renderSessions(list));
    // The newest event seen, to resume from after a reconnect.
    socket.onAny((_name, p) => {
      if (current && p && p.sessionId === current.id && typeof p.eventId === 'string') current.lastEventId = p.eventId;
    });
    const on = (name, handler) =>
      socket.on(name, (p) => {
        if (current && p && p.sessionId === current.id) handler(p);
      });
    on('session:status', (p) => renderSandbox(p.runtime));
    on('session:block:start', onBlockStart);
    on('session:block:delta', onBlockDelta);
    on('session:block:update', onBlockUpdate);
    on('session:block:complete', onBlockComplete);
    on('session:usage', (p) => renderUsage(p.total, p));
    on('session:file:created', (p) => renderFile(p.file));
    on('session:file:modified', (p) => renderFile(p.file));
    on('session:file:deleted', (p) => removeFile(p.path));
    on('session:permission:requested', (p) => showRequest({ ...p, type: 'permission' }));
    on('session:question:requested', (p) => showRequest({ ...p, type: 'question' }));
    on('session:permission:resolved', (p) => resolveRequest(p, 'permission'));
    on('session:question:resolved', (p) => resolveRequest(p, 'question'));
    on('session:queue:changed', (p) => renderQueue(p.queue));
    on('session:subagent:discovered', (p) => p.subagent && conversationList(p.subagent.id));
    on('error', (p) => showError(p.message, p.code));
  }

  async function joinCurrent() {
    const c = current;
    const arg = c.lastEventId ? { sessionId: c.id, since: c.lastEventId } : { sessionId: c.id };
    let ack;
    try {
      ack = await socket.timeout(15000).emitWithAck('session:join', arg);
    } catch (err) {
      ack = { success: false, error: err.message };
    }
    if (c !== current) return;
    if (!ack || !ack.success) {
      showError(`Live updates for this session failed: ${(ack && ack.error) || 'no answer'}`);
      return;
    }
    serverDisconnects = 0;
    // The log no longer reaches back to what we showed: start again from the state.
    if (ack.reset) openSession(c.id, { rejoin: false });
  }

  // ---- sessions -----------------------------------------------------------------------------

  function sandboxText(runtime) {
    const s = runtime && runtime.sandbox;
    if (!s) return runtime && runtime.isLoaded === false ? 'not loaded' : 'none (starts with the first message)';
    const restarts = s.restartCount ? `, restarted ${s.restartCount}×` : '';
    return `${s.status}${s.statusMessage ? `: ${s.statusMessage}` : ''}${restarts}`;
  }

  function renderSessions(sessions) {
    const list = $('session-list');
    const sorted = [...sessions].sort((a, b) => (b.lastActivity || b.createdAt || 0) - (a.lastActivity || a.createdAt || 0));
    if (!sorted.length) {
      list.replaceChildren(h('li', { className: 'empty', text: 'No sessions yet.' }));
      return;
    }
    list.replaceChildren(
      ...sorted.map((s) =>
        h(
          'li',
          {},
          h(
            'button',
            {
              type: 'button',
              className: 'session-item',
              'data-session-id': s.sessionId,
              'aria-current': current && current.id === s.sessionId ? 'true' : null,
              onclick: () => openSession(s.sessionId),
            },
            h('span', { className: 'session-name', text: s.name || s.sessionId }),
            h('span', {
              className: 'session-meta',
              text: [s.type, s.agentProfileReference, s.runtime && s.runtime.isLoaded ? 'loaded' : 'stored', time(s.lastActivity)].filter(Boolean).join(' · '),
            }),
          ),
        ),
      ),
    );
  }

  async function refreshSessions() {
    try {
      renderSessions((await api('GET', '/api/sessions')).sessions || []);
    } catch (err) {
      notice(`Could not list sessions: ${err.message}`);
    }
  }

  async function createSession(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const sessionOptions = {};
    const model = $('create-model').value.trim();
    if (model) sessionOptions.model = model;
    const mode = $('create-permission').value;
    if (mode !== 'bypass') sessionOptions.permissionMode = mode;
    const body = { agentProfileRef: $('create-profile').value, architecture: $('create-architecture').value };
    if (Object.keys(sessionOptions).length) body.sessionOptions = sessionOptions;
    form.querySelector('button[type=submit]').disabled = true;
    try {
      const created = await api('POST', '/api/sessions', body);
      await refreshSessions();
      await openSession(created.sessionId);
    } catch (err) {
      notice(`Could not create the session: ${err.message}`);
    } finally {
      form.querySelector('button[type=submit]').disabled = false;
    }
  }

  async function openSession(id, { rejoin = true } = {}) {
    if (current && current.id !== id && socket && socket.connected) socket.emit('session:leave', current.id, () => {});
    const view = {
      id,
      lastEventId: null,
      loaded: false,
      entries: new Map(), // block id → { block, li }
      streaming: new Map(), // conversationId → li of the block streaming now
      tools: new Map(), // toolUseId → li of the tool call or subagent
      conversations: new Map(), // conversationId (not main) → its <ol>
      files: new Map(), // path → li
      requests: new Map(), // requestId → element
      sandboxSeconds: null,
    };
    current = view;
    sessionStorage.setItem(KEYS.session, id);
    for (const b of document.querySelectorAll('.session-item')) {
      if (b.dataset.sessionId === id) b.setAttribute('aria-current', 'true');
      else b.removeAttribute('aria-current');
    }
    $('session-view').hidden = false;
    $('session-title').textContent = `Session ${id}`;
    for (const list of ['conversation', 'files', 'errors', 'request-list', 'queue']) $(list).replaceChildren();
    $('requests').hidden = true;
    $('queue-section').hidden = true;
    $('errors-section').hidden = true;
    let state;
    try {
      state = await api('GET', sessionPath(id));
    } catch (err) {
      if (current !== view) return;
      if (err.status === 404) sessionStorage.removeItem(KEYS.session);
      showError(`Could not open the session: ${err.message}`, err.code);
      return;
    }
    if (current !== view) return;
    renderState(state);
    view.lastEventId = state.lastEventId || null;
    view.loaded = true;
    if (rejoin && socket && socket.connected) joinCurrent();
  }

  function renderState(state) {
    $('session-title').textContent = state.name ? `${state.name} (${state.sessionId})` : `Session ${state.sessionId}`;
    $('session-profile').textContent = [state.agentProfileReference, state.type, state.sessionOptions && state.sessionOptions.permissionMode && `approvals: ${state.sessionOptions.permissionMode}`]
      .filter(Boolean)
      .join(' · ');
    renderSandbox(state.runtime);
    const usage = state.runtime && state.runtime.usage;
    if (usage) current.sandboxSeconds = usage.sandboxSeconds;
    renderUsage(usage);
    for (const block of state.blocks || []) placeBlock(block, 'main');
    for (const sub of state.subagents || []) for (const block of sub.blocks || []) placeBlock(block, sub.id);
    for (const file of state.workspaceFiles || []) renderFile(file);
    for (const r of (state.runtime && state.runtime.pendingRequests) || []) showRequest(r);
    renderQueue((state.runtime && state.runtime.queue) || []);
  }

  function renderSandbox(runtime) {
    $('sandbox-status').textContent = sandboxText(runtime);
  }

  function renderUsage(sum, event) {
    const out = $('usage');
    if (!sum) {
      out.textContent = 'no model calls yet';
      return;
    }
    const tokens = (sum.inputTokens || 0) + (sum.outputTokens || 0) + (sum.cacheReadTokens || 0) + (sum.cacheWriteTokens || 0);
    const cost = sum.costUsd === null || sum.costUsd === undefined ? 'cost unknown (model not priced)' : `$${sum.costUsd.toFixed(4)}`;
    const parts = [
      `${tokens.toLocaleString()} tokens (input ${sum.inputTokens || 0}, output ${sum.outputTokens || 0}, cache read ${sum.cacheReadTokens || 0}, cache write ${sum.cacheWriteTokens || 0})`,
      cost,
      `${sum.calls || 0} model call${sum.calls === 1 ? '' : 's'}`,
    ];
    // Sandbox time is in the state only (not in usage events): shown as of the last load.
    if (!event && current && typeof current.sandboxSeconds === 'number') parts.push(`sandbox time ${Math.round(current.sandboxSeconds)} s`);
    if (event && event.call && event.call.model) parts.push(`last model ${event.call.model}`);
    out.textContent = parts.join(' · ');
  }

  // ---- blocks -------------------------------------------------------------------------------

  /** The list a conversation's blocks go into: main, or a subagent's, nested under the call that
   *  started it when that call is shown. */
  function conversationList(conversationId) {
    if (!conversationId || conversationId === 'main') return $('conversation');
    let ol = current.conversations.get(conversationId);
    if (ol) return ol;
    ol = h('ol', { className: 'conversation nested', 'aria-label': `Subagent conversation ${conversationId}` });
    current.conversations.set(conversationId, ol);
    const parent = current.tools.get(conversationId);
    if (parent) parent.querySelector('.extras').append(ol);
    else $('conversation').append(h('li', { className: 'block group', 'data-type': 'subagent-conversation' }, h('p', { className: 'label', text: `Subagent conversation ${conversationId}` }), ol));
    return ol;
  }

  const LABELS = {
    user_message: 'You',
    assistant_text: 'Assistant',
    thinking: 'Thinking',
    tool_use: 'Tool',
    tool_result: 'Result',
    subagent: 'Subagent',
    system: 'System',
    error: 'Error',
  };

  /** Fill `li` (its .body) with what `block` shows. */
  function paint(li, block, streaming) {
    li.dataset.type = block.type;
    if (block.id) li.dataset.blockId = block.id;
    li.classList.toggle('streaming', !!streaming);
    const body = li.querySelector('.body');
    const label = h('p', { className: 'label' }, LABELS[block.type] || block.type);
    switch (block.type) {
      case 'user_message':
      case 'assistant_text': {
        const text = h('div', { className: 'text' });
        text.append(li._text = document.createTextNode(contentText(block.content || '')));
        body.replaceChildren(label, text);
        break;
      }
      case 'thinking': {
        const text = h('div', { className: 'text' });
        text.append(li._text = document.createTextNode(block.content || ''));
        body.replaceChildren(h('details', { open: streaming }, h('summary', {}, 'Thinking'), text));
        break;
      }
      case 'tool_use': {
        const subject = toolSubject(block.input);
        body.replaceChildren(
          h('p', { className: 'label' }, `Tool: ${block.displayName || block.toolName}`, ' ', h('span', { className: `status status-${block.status}`, text: block.status || '' })),
          subject ? h('p', { className: 'subject' }, h('code', { text: subject })) : null,
          h('details', {}, h('summary', {}, 'Input'), h('pre', { text: json(block.input || {}) })),
        );
        li.dataset.toolName = block.toolName || '';
        break;
      }
      case 'tool_result':
        body.replaceChildren(resultView(block));
        break;
      case 'subagent':
        body.replaceChildren(
          h('p', { className: 'label' }, `Subagent: ${block.name || block.subagentId || ''}`, ' ', h('span', { className: `status status-${block.status}`, text: block.status || '' })),
          block.input ? h('div', { className: 'text' }, block.input) : null,
          block.output ? h('details', {}, h('summary', {}, 'Output'), h('div', { className: 'text' }, block.output)) : null,
        );
        break;
      case 'system': {
        const reason = block.metadata && block.metadata.stopReason;
        body.replaceChildren(h('p', { className: 'label' }, block.subtype === 'session_end' ? `Turn ended${reason ? `: ${reason}` : ''}` : `System (${block.subtype || 'note'})`, block.message && block.subtype !== 'session_end' ? ` ${block.message}` : ''));
        break;
      }
      case 'error':
        body.replaceChildren(h('p', { className: 'label' }, `Error${block.code ? ` (${block.code})` : ''}: `, block.message || ''));
        break;
      default:
        body.replaceChildren(label, h('pre', { text: json(block) }));
    }
  }

  function resultView(block) {
    return h(
      'div',
      { className: `result${block.isError ? ' is-error' : ''}`, 'data-type': 'tool_result' },
      h('p', { className: 'label', text: block.isError ? 'Result (error)' : 'Result' }),
      h('pre', { text: outputText(block.output) }),
    );
  }

  function newBlockElement(block) {
    return h('li', { className: 'block' }, h('div', { className: 'body' }), h('div', { className: 'extras' }));
  }

  /** Show a complete block (from the state or a complete event), replacing what was streamed. */
  function placeBlock(block, conversationId, fallback) {
    if (block.type === 'tool_result') {
      const call = current.tools.get(block.toolUseId);
      if (call) {
        const extras = call.querySelector('.extras');
        const old = extras.querySelector(':scope > .result');
        const view = resultView(block);
        if (old) old.replaceWith(view);
        else extras.prepend(view);
        if (fallback && fallback.parentNode) fallback.remove();
        return;
      }
    }
    const known = block.id && current.entries.get(block.id);
    let li = (known && known.li) || fallback;
    if (!li) {
      li = newBlockElement(block);
      conversationList(conversationId).append(li);
    }
    paint(li, block, false);
    if (block.id) current.entries.set(block.id, { block, li });
    registerCall(block, li);
  }

  /** Remember where a tool call or subagent is shown, so its result and its subagent's
   *  conversation (keyed by the subagent's id, or the call's toolUseId) go under it. */
  function registerCall(block, li) {
    const keys = [];
    if (block.type === 'tool_use' && block.toolUseId) keys.push(block.toolUseId);
    if (block.type === 'subagent') keys.push(block.subagentId, block.toolUseId);
    for (const key of keys) {
      if (!key) continue;
      current.tools.set(key, li);
      // A subagent conversation shown before its call: move it under the call.
      const ol = current.conversations.get(key);
      if (ol && !li.contains(ol)) {
        const group = ol.parentElement && ol.parentElement.classList.contains('group') ? ol.parentElement : null;
        li.querySelector('.extras').append(ol);
        if (group) group.remove();
      }
    }
  }

  function onBlockStart(p) {
    const block = p.block || {};
    const known = block.id && current.entries.get(block.id);
    let li = known && known.li;
    if (!li) {
      li = newBlockElement(block);
      conversationList(p.conversationId).append(li);
    }
    paint(li, block, true);
    if (block.id) current.entries.set(block.id, { block: { ...block }, li });
    registerCall(block, li);
    current.streaming.set(p.conversationId || 'main', li);
  }

  function onBlockDelta(p) {
    const known = p.blockId && current.entries.get(p.blockId);
    let li = (known && known.li) || current.streaming.get(p.conversationId || 'main');
    if (!li) {
      // A delta without its start (joined mid-block): show the text anyway.
      onBlockStart({ conversationId: p.conversationId, block: { type: 'assistant_text', id: p.blockId || undefined, content: '' } });
      li = current.streaming.get(p.conversationId || 'main');
    }
    if (li._text) li._text.appendData(p.delta || '');
    const entry = p.blockId && current.entries.get(p.blockId);
    if (entry && typeof entry.block.content === 'string') entry.block.content += p.delta || '';
  }

  function onBlockUpdate(p) {
    const entry = current.entries.get(p.blockId);
    if (!entry) return;
    Object.assign(entry.block, p.updates || {});
    if (entry.block.type !== 'tool_result') paint(entry.li, entry.block, entry.li.classList.contains('streaming'));
    registerCall(entry.block, entry.li);
  }

  function onBlockComplete(p) {
    const conversationId = p.conversationId || 'main';
    const block = p.block || {};
    const streaming = current.streaming.get(conversationId);
    // A block streamed without an id is the one streaming in its conversation.
    const fallback = !block.id && !p.blockId && streaming && streaming.dataset.type === block.type ? streaming : null;
    if (!block.id && p.blockId) block.id = p.blockId;
    placeBlock(block, conversationId, fallback);
    if (streaming && (streaming === fallback || streaming.dataset.blockId === block.id)) current.streaming.delete(conversationId);
  }

  // ---- requests (approvals and questions) ---------------------------------------------------

  function showRequest(r) {
    if (!r || current.requests.has(r.requestId)) return;
    const card = r.type === 'question' ? questionCard(r) : permissionCard(r);
    current.requests.set(r.requestId, card);
    $('request-list').append(card);
    $('requests').hidden = false;
  }

  function dropRequest(requestId) {
    const card = current.requests.get(requestId);
    if (card) card.remove();
    current.requests.delete(requestId);
    $('requests').hidden = current.requests.size === 0;
  }

  function resolveRequest(p, kind) {
    const card = current.requests.get(p.requestId);
    const what = card ? card.dataset.summary : kind;
    dropRequest(p.requestId);
    const verdict = kind === 'question' ? 'answered' : p.behavior === 'allow' ? 'allowed' : 'denied';
    const by = p.resolvedBy && p.resolvedBy !== 'user' ? ` (${p.resolvedBy})` : '';
    $('conversation').append(h('li', { className: 'block note', 'data-type': 'request-resolved' }, h('p', { className: 'label' }, `${what}: ${verdict}${by}`)));
  }

  async function answer(card, path, body) {
    const buttons = card.querySelectorAll('button');
    buttons.forEach((b) => (b.disabled = true));
    const status = card.querySelector('.request-status');
    status.textContent = 'Sending…';
    try {
      await api('POST', path, body);
      status.textContent = 'Sent';
    } catch (err) {
      if (err.code === 'ALREADY_RESOLVED' || err.status === 404) {
        dropRequest(card.dataset.requestId);
        notice(`That request was already settled: ${err.message}`);
        return;
      }
      status.textContent = `Not sent: ${err.message}`;
      buttons.forEach((b) => (b.disabled = false));
    }
  }

  function expiry(r) {
    return r.expiresAt ? h('p', { className: 'hint', text: `Denied automatically at ${new Date(r.expiresAt).toLocaleTimeString()} if nobody answers.` }) : null;
  }

  function permissionCard(r) {
    const subject = toolSubject(r.input);
    const id = `req-${r.requestId}`.replace(/[^\w-]/g, '_');
    const summary = `${r.toolName}${subject ? ` ${subject}` : ''}`;
    const reason = h('input', { id: `${id}-reason`, type: 'text', placeholder: 'optional' });
    const remember = h('input', { id: `${id}-remember`, type: 'checkbox' });
    const card = h(
      'article',
      { className: 'request permission', 'data-request-id': r.requestId, 'data-summary': summary, 'aria-labelledby': `${id}-title` },
      h('h4', { id: `${id}-title` }, 'Allow ', h('code', { text: r.toolName }), subject ? ' on ' : '', subject ? h('code', { className: 'subject', text: subject }) : null, '?'),
      h('details', {}, h('summary', {}, 'Input'), h('pre', { text: json(r.input) })),
      expiry(r),
      h('div', { className: 'row' }, h('label', { for: `${id}-reason`, text: 'Message to the agent' }), reason),
      h('div', { className: 'row' }, remember, h('label', { for: `${id}-remember`, text: `Remember for ${r.toolName} in this session` })),
      h(
        'div',
        { className: 'row' },
        h('button', { type: 'button', className: 'allow', onclick: () => answer(card, sessionPath(current.id, `/permissions/${encodeURIComponent(r.requestId)}`), permissionBody('allow')) }, 'Allow'),
        h('button', { type: 'button', className: 'deny', onclick: () => answer(card, sessionPath(current.id, `/permissions/${encodeURIComponent(r.requestId)}`), permissionBody('deny')) }, 'Deny'),
        h('span', { className: 'request-status', role: 'status' }),
      ),
    );
    const permissionBody = (behavior) => {
      const body = { behavior };
      if (reason.value.trim()) body.message = reason.value.trim();
      if (remember.checked) body.remember = true;
      return body;
    };
    return card;
  }

  function questionCard(r) {
    const id = `req-${r.requestId}`.replace(/[^\w-]/g, '_');
    const questions = Array.isArray(r.questions) ? r.questions : [];
    const fields = questions.map((q, qi) => {
      const name = `${id}-q${qi}`;
      const options = (q.options || []).map((o, oi) =>
        h(
          'div',
          { className: 'option' },
          h('input', { type: q.multiSelect ? 'checkbox' : 'radio', name, id: `${name}-o${oi}`, value: o.label }),
          h('label', { for: `${name}-o${oi}` }, h('strong', { text: o.label }), o.description ? ` — ${o.description}` : ''),
        ),
      );
      const other = h('input', { type: 'text', id: `${name}-other`, className: 'other' });
      return h(
        'fieldset',
        { 'data-question': q.question },
        h('legend', {}, q.header ? `${q.header}: ` : '', q.question),
        ...options,
        h('div', { className: 'row' }, h('label', { for: `${name}-other`, text: 'Or answer in your own words' }), other),
      );
    });
    const collect = () => {
      const answers = {};
      for (const f of fields) {
        const other = f.querySelector('input.other').value.trim();
        const chosen = [...f.querySelectorAll('input:checked')].map((i) => i.value);
        const multi = f.querySelector('input[type=checkbox]');
        answers[f.dataset.question] = other || (multi ? chosen : chosen[0] || '');
      }
      return { answers };
    };
    const card = h(
      'article',
      { className: 'request question', 'data-request-id': r.requestId, 'data-summary': 'Question', 'aria-labelledby': `${id}-title` },
      h('h4', { id: `${id}-title`, text: 'The agent asks' }),
      ...fields,
      expiry(r),
      h(
        'div',
        { className: 'row' },
        h('button', { type: 'button', onclick: () => answer(card, sessionPath(current.id, `/questions/${encodeURIComponent(r.requestId)}`), collect()) }, 'Send answer'),
        h('span', { className: 'request-status', role: 'status' }),
      ),
    );
    return card;
  }

  // ---- files, queue, errors -----------------------------------------------------------------

  function renderFile(file) {
    if (!file || typeof file.path !== 'string') return;
    const content = typeof file.content === 'string' ? file.content : '(content not sent: binary or too large)';
    const li = h('li', { 'data-path': file.path }, h('details', {}, h('summary', {}, h('code', { text: file.path })), h('pre', { text: content })));
    const old = current.files.get(file.path);
    if (old) {
      li.querySelector('details').open = old.querySelector('details').open;
      old.replaceWith(li);
    } else {
      $('files').append(li);
    }
    current.files.set(file.path, li);
  }

  function removeFile(path) {
    const li = current.files.get(path);
    if (li) li.remove();
    current.files.delete(path);
  }

  function renderQueue(queue) {
    const list = $('queue');
    list.replaceChildren(
      ...(queue || []).map((m) =>
        h(
          'li',
          {},
          h('span', { text: `${m.preview}${m.mode && m.mode !== 'queue' ? ` (${m.mode})` : ''}` }),
          ' ',
          h('button', {
            type: 'button',
            onclick: async () => {
              try {
                await api('DELETE', sessionPath(current.id, `/messages/${encodeURIComponent(m.messageId)}`));
              } catch (err) {
                notice(`Could not remove the message: ${err.message}`);
              }
            },
          }, 'Remove'),
        ),
      ),
    );
    $('queue-section').hidden = !(queue && queue.length);
  }

  function showError(message, code) {
    const text = `${message || 'Unknown error'}${code ? ` (${code})` : ''}`;
    $('errors').append(h('li', { text: `${new Date().toLocaleTimeString()} ${text}` }));
    $('errors-section').hidden = false;
    if (current) $('conversation').append(h('li', { className: 'block error', 'data-type': 'error' }, h('p', { className: 'label', text: `Error: ${text}` })));
  }

  // ---- sending ------------------------------------------------------------------------------

  async function sendMessage(event) {
    event.preventDefault();
    if (!current) return;
    const box = $('message');
    const content = box.value;
    if (!content.trim()) return;
    const body = { content };
    const mode = $('message-mode').value;
    if (mode !== 'queue') body.mode = mode;
    const button = event.currentTarget.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const sent = await api('POST', sessionPath(current.id, '/messages'), body);
      box.value = '';
      if (sent && sent.queued) notice(`Queued: ${sent.position} turn${sent.position === 1 ? '' : 's'} ahead of it.`);
    } catch (err) {
      notice(`Not sent: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  }

  async function interrupt() {
    if (!current) return;
    try {
      const r = await api('POST', sessionPath(current.id, '/interrupt'), {});
      notice(r.interrupted ? 'Interrupted.' : 'Nothing was running.');
    } catch (err) {
      notice(`Could not interrupt: ${err.message}`);
    }
  }

  // ---- wiring -------------------------------------------------------------------------------

  $('connect-form').addEventListener('submit', (event) => {
    event.preventDefault();
    apiBase = $('api-base').value.trim();
    apiKey = $('api-key').value;
    sessionStorage.setItem(KEYS.base, apiBase);
    sessionStorage.setItem(KEYS.key, apiKey);
    $('api-key').value = '';
    start();
  });
  $('forget').addEventListener('click', () => {
    for (const k of Object.values(KEYS)) sessionStorage.removeItem(k);
    apiKey = '';
    if (socket) socket.disconnect();
    socket = null;
    current = null;
    $('session-view').hidden = true;
    setConnection('Not connected');
    showConnect();
  });
  $('refresh-sessions').addEventListener('click', refreshSessions);
  $('create-form').addEventListener('submit', createSession);
  $('message-form').addEventListener('submit', sendMessage);
  $('message').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) $('message-form').requestSubmit();
  });
  $('interrupt').addEventListener('click', interrupt);

  apiBase = sessionStorage.getItem(KEYS.base) || '';
  apiKey = sessionStorage.getItem(KEYS.key) || '';
  if (apiKey) start();
  else showConnect();
})();
