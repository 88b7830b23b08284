// Runs inside a sandbox. Reads one JSON request from stdin:
//   { prompt, sessionId, tools?, mcpServers?, model? }
// and works in its current directory (the workspace).
// runs the Claude Agent SDK, and writes every SDK message as one JSON line on stdout.
// A failure is one line { type: "system", subtype: "error", error: { message, name } } and exit 1.
// The prompt travels on stdin, so no argv size limit and no option parsing of its text.
import { existsSync, mkdirSync, readdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const fail = (err) => {
  emit({
    type: 'system',
    subtype: 'error',
    error: { message: err?.message ?? String(err), name: err?.name ?? 'Error' },
    timestamp: Date.now(),
  });
  process.exitCode = 1;
};
for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]]) {
  process.on(sig, () => {
    process.stderr.write(JSON.stringify({ type: sig === 'SIGINT' ? 'interrupted' : 'terminated', timestamp: Date.now() }) + '\n');
    process.exit(code);
  });
}

async function readRequest() {
  let text = '';
  for await (const chunk of process.stdin) text += chunk;
  const req = JSON.parse(text);
  if (typeof req.prompt !== 'string' || typeof req.sessionId !== 'string') {
    throw new Error('runner request needs string "prompt" and "sessionId"');
  }
  return req;
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

try {
  const req = await readRequest();
  const entry = process.env.CLAUDE_AGENT_SDK_ENTRY;
  const { query } = await import(entry ? pathToFileURL(entry).href : '@anthropic-ai/claude-agent-sdk');
  const options = {
    cwd: process.cwd(),
    settingSources: ['project', 'user'],
    includePartialMessages: true,
    maxBudgetUsd: 5.0,
    permissionMode: 'bypassPermissions',
    allowDangerouslySkipPermissions: true,
    allowedTools: [...(req.tools ?? []), 'Skill'],
    env: { ...process.env },
  };
  if (req.mcpServers && Object.keys(req.mcpServers).length) options.mcpServers = req.mcpServers;
  if (req.model) options.model = req.model;
  if (hasTranscript(req.sessionId)) options.resume = req.sessionId;
  else options.extraArgs = { 'session-id': req.sessionId };
  // Read to the end: a background subagent produces a second init/result after the first.
  for await (const message of query({ prompt: req.prompt, options })) emit(message);
} catch (err) {
  fail(err);
}
