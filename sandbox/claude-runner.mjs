// Runs inside a sandbox, in the workspace: the session's long-lived Claude Agent SDK runner.
// It speaks the runner protocol of docs/RUNNER.md: one JSON line per host message on stdin
// (start, turn, steer, interrupt, kill, permission, policy), and on stdout every SDK message as
// one JSON line plus the runner's own control lines ({ type: "runner", event, ... }).
// One SDK query lives across turns (streaming input), so Node, the SDK and Claude Code start once.
// A failure to start is one line { type: "system", subtype: "error", error: { message, name } }
// and exit 1; a failed turn ends with turn_end status "error" and the runner stays.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const control = (event, fields = {}) => emit({ type: 'runner', event, ...fields });
const errorLine = (err) =>
  emit({ type: 'system', subtype: 'error', error: { message: err?.message ?? String(err), name: err?.name ?? 'Error' }, timestamp: Date.now() });
for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]]) {
  process.on(sig, () => {
    process.stderr.write(JSON.stringify({ type: sig === 'SIGINT' ? 'interrupted' : 'terminated', timestamp: Date.now() }) + '\n');
    process.exit(code);
  });
}

// Claude Code keeps a session's transcript at ~/.claude/projects/<encoded cwd>/<id>.jsonl; if one
// exists anywhere there, the session is resumed, else started with that id.
// Claude Code only resumes from the folder named after the current directory, so a transcript
// restored under another name (the workspace path differs between providers) is moved there.
function hasTranscript(sessionId) {
  const projects = join(process.env.HOME ?? '', '.claude', 'projects');
  if (!existsSync(projects)) return false;
  const folder = readdirSync(projects).find((d) => existsSync(join(projects, d, `${sessionId}.jsonl`)));
  if (folder === undefined) return false;
  const own = process.cwd().replace(/[^a-zA-Z0-9]/g, '-');
  if (folder !== own && own.length <= 200) {
    mkdirSync(join(projects, own), { recursive: true });
    for (const name of [`${sessionId}.jsonl`, sessionId]) {
      const from = join(projects, folder, name);
      if (existsSync(from) && !existsSync(join(projects, own, name))) renameSync(from, join(projects, own, name));
    }
  }
  return true;
}

/** SIGKILL every descendant of this process (the agent CLI and whatever its tools started). */
function killDescendants() {
  const children = new Map();
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(pid));
    } catch {}
  }
  const todo = [...(children.get(process.pid) ?? [])];
  while (todo.length) {
    const pid = todo.pop();
    todo.push(...(children.get(pid) ?? []));
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
}

/** The SDK's prompt: user messages pushed by turns and steers, for as long as the runner lives. */
class Input {
  #items = [];
  #wake;
  #ended = false;
  /** Resolves once the SDK has taken `item`. */
  push(item) {
    return new Promise((taken) => {
      this.#items.push({ item, taken });
      this.#wake?.();
    });
  }
  end() {
    this.#ended = true;
    this.#wake?.();
  }
  async *[Symbol.asyncIterator]() {
    for (;;) {
      while (this.#items.length) {
        const { item, taken } = this.#items.shift();
        yield item;
        taken();
      }
      if (this.#ended) return;
      await new Promise((r) => (this.#wake = r));
      this.#wake = undefined;
    }
  }
}
const userMessage = (text, extra = {}) => ({ type: 'user', message: { role: 'user', content: text }, parent_tool_use_id: null, session_id: '', ...extra });

const input = new Input();
let query; // the SDK query, once started
let turn; // { turnId, interrupted } while a turn runs
let ask = false; // tool calls wait for the host
let stdinEnded = false;
/** Steers waiting for the running turn's next step (delivered when a tool call finishes). */
let steers = [];
/** Permission requests waiting for the host: requestId → resolve. */
const waiting = new Map();

function endTurn(status, error) {
  if (!turn) return;
  for (const s of steers) control('steered', { messageId: s.messageId, delivered: false });
  steers = [];
  control('turn_end', { turnId: turn.turnId, status, ...(error ? { error: { message: error } } : {}) });
  turn = undefined;
  if (stdinEnded) finish(0);
}

function finish(code) {
  input.end();
  process.exitCode = code;
  // The SDK's child would keep the event loop alive after the input ends; leave now.
  setImmediate(() => process.exit(code));
}

let nextRequest = 0;
/** Ask the host about a tool call; resolves to its `permission` line. */
function askHost(kind, toolName, toolUseId, toolInput) {
  const requestId = `${process.pid}-${++nextRequest}-${Date.now().toString(36)}`;
  return new Promise((resolve) => {
    waiting.set(requestId, resolve);
    control('permission', { requestId, kind, toolName, toolUseId, input: toolInput });
  });
}

/** PreToolUse: with `ask`, every call waits for the host (Claude Code would let read-only ones
 *  through on its own); a question (AskUserQuestion) always does, its answers come back as the
 *  tool's updated input. */
async function preToolUse(hook) {
  const question = hook.tool_name === 'AskUserQuestion';
  if (!ask && !question) return {};
  const answer = await askHost(question ? 'question' : 'tool', hook.tool_name, hook.tool_use_id, hook.tool_input);
  const out = { hookEventName: 'PreToolUse', permissionDecision: answer.behavior === 'allow' ? 'allow' : 'deny' };
  if (answer.message) out.permissionDecisionReason = answer.message;
  else if (answer.behavior !== 'allow') out.permissionDecisionReason = 'The user denied this tool call.';
  if (answer.behavior === 'allow' && answer.updatedInput && typeof answer.updatedInput === 'object') out.updatedInput = answer.updatedInput;
  return { hookSpecificOutput: out };
}

/** PostToolUse: the running turn's next step is about to be taken; steers go in now, so the model
 *  reads them with this tool's result. */
async function postToolUse() {
  const now = steers;
  steers = [];
  for (const s of now) {
    // Written to Claude Code before this hook's answer (the pipe keeps the order), so it is
    // read with this tool's result: wait until the SDK took it, and a turn of the event loop
    // for its write.
    await input.push(userMessage(s.prompt, { priority: 'next' }));
    await new Promise((r) => setImmediate(r));
    control('steered', { messageId: s.messageId, delivered: true });
  }
  return {};
}

async function start(req) {
  if (typeof req.sessionId !== 'string') throw new Error('runner start needs a string "sessionId"');
  ask = req.ask === true;
  const entry = process.env.CLAUDE_AGENT_SDK_ENTRY;
  const sdk = await import(entry ? pathToFileURL(entry).href : '@anthropic-ai/claude-agent-sdk');
  const forever = 7 * 24 * 3600; // the host times requests out (permissionTimeoutMs)
  const options = {
    cwd: process.cwd(),
    settingSources: ['project', 'user'],
    includePartialMessages: true,
    maxBudgetUsd: 5.0,
    permissionMode: 'bypassPermissions',
    allowDangerouslySkipPermissions: true,
    allowedTools: [...(req.tools ?? []), 'Skill'],
    env: { ...process.env },
    // Decisions are made in the PreToolUse hook; this only has to exist, since without it the
    // SDK does not offer the model AskUserQuestion (measured with 0.3.332).
    canUseTool: async (_name, toolInput) => ({ behavior: 'allow', updatedInput: toolInput }),
    hooks: {
      PreToolUse: [{ hooks: [preToolUse], timeout: forever }],
      PostToolUse: [{ hooks: [postToolUse], timeout: 60 }],
    },
  };
  if (req.mcpServers && Object.keys(req.mcpServers).length) options.mcpServers = req.mcpServers;
  if (req.model) options.model = req.model;
  if (hasTranscript(req.sessionId)) options.resume = req.sessionId;
  else options.extraArgs = { 'session-id': req.sessionId };
  query = sdk.query({ prompt: input, options });
  control('ready', { pid: process.pid });
  consume();
}

async function consume() {
  // Read to the end: a background subagent produces a second init/result after the first.
  try {
    for await (const message of query) {
      emit(message);
      if (message.type === 'result' && turn) {
        // An API failure can come back as subtype "success" with is_error set.
        const failed = message.subtype !== 'success' || message.is_error === true;
        const status = turn.interrupted ? 'interrupted' : failed ? 'error' : 'completed';
        const why = (message.errors ?? []).join('; ') || (typeof message.result === 'string' && message.result) || `the agent ended with ${message.subtype}`;
        const error = status === 'error' ? why : undefined;
        endTurn(status, error);
      }
    }
    endTurn('error', 'the agent stopped');
    finish(0);
  } catch (err) {
    if (turn?.interrupted) {
      endTurn('interrupted');
      finish(0);
      return;
    }
    errorLine(err);
    endTurn('error', err?.message ?? String(err));
    finish(1);
  }
}

async function handle(msg) {
  switch (msg.type) {
    case 'start':
      if (query) throw new Error('runner already started');
      return start(msg);
    case 'turn':
      if (!query) throw new Error('turn before start');
      if (turn) throw new Error(`turn ${msg.turnId} sent while turn ${turn.turnId} runs`);
      turn = { turnId: msg.turnId, interrupted: false };
      input.push(userMessage(String(msg.prompt ?? '')));
      return;
    case 'steer':
      if (!turn) return control('steered', { messageId: msg.messageId, delivered: false });
      return steers.push({ messageId: msg.messageId, prompt: String(msg.prompt ?? '') });
    case 'interrupt':
      if (!turn || turn.interrupted) return;
      turn.interrupted = true;
      // Not awaited: a wedged agent must not hold up the `kill` that may follow.
      query?.interrupt().catch(() => {});
      return;
    case 'kill':
      killDescendants();
      return process.exit(137);
    case 'permission': {
      const resolve = waiting.get(msg.requestId);
      waiting.delete(msg.requestId);
      return resolve?.(msg);
    }
    case 'policy':
      ask = msg.ask === true;
      return;
    default:
      throw new Error(`unknown host message type ${JSON.stringify(msg.type)}`);
  }
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on('line', (line) => {
  if (!line.trim()) return;
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (err) {
    return errorLine(new Error(`host sent a line that is not JSON: ${err.message}`));
  }
  // One at a time, in order: a turn sent right after start waits for the SDK to load.
  queue = queue
    .then(() => handle(msg))
    .catch((err) => {
      errorLine(err);
      if (msg.type === 'start') finish(1);
    });
});
let queue = Promise.resolve();
lines.on('close', () => {
  queue = queue.then(() => {
    stdinEnded = true;
    if (!turn) finish(0);
  });
});
