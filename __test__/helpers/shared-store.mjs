// A PersistenceAdapter over a directory that several processes (the cluster's nodes) share, the
// way several servers share one database. Every write is a whole file written next to its target
// and renamed over it, so a reader in another process sees the old or the new file, never half.
//
// Each write also appends one JSON line to `<dir>/writes.log`:
//   { t: Date.now(), hr: process.hrtime.bigint() as a string, node, pid, op, sessionId }
// `hr` is CLOCK_MONOTONIC, the same clock in every process of the machine, so lines from
// different nodes can be ordered, and compared with the moments the tests sent signals. The
// line is appended after the write has landed, in the same synchronous stretch of code (a
// process stopped by a signal cannot have written data without its line, or the reverse, except
// within those few microseconds).
//
// Calls are synchronous underneath (the runtime accepts plain return values): one process never
// interleaves two writes, and a read-modify-write of a record cannot race another call of the same
// process. Between processes nothing is locked: that only one node writes a session at a time is
// what the cluster must guarantee, and what writes.log lets the tests check.
//
// Layout: <dir>/sessions/<hash of id>/record.json, transcript.json, files/<hash of path>.json.
// Values are stored as { text } or { base64 } (a Buffer), so nothing is mangled.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const hash = (s) => crypto.createHash('sha256').update(s).digest('hex').slice(0, 40);

const encode = (v) => (Buffer.isBuffer(v) ? { base64: v.toString('base64') } : v === undefined || v === null ? {} : { text: String(v) });
const decode = (o) => (o.base64 !== undefined ? Buffer.from(o.base64, 'base64') : o.text);

function readJson(file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    if (e.code === 'ENOENT') return null;
    throw e;
  }
}

/**
 * @param {{ dir: string, node: string, profiles?: object[] }} options
 *   `dir` is shared by every process, `node` names this process in writes.log, `profiles` are the
 *   agent profiles it serves (read-only).
 */
export function sharedStore({ dir, node, profiles = [] }) {
  if (!dir || !node) throw new TypeError('sharedStore needs { dir, node }');
  const sessionsDir = path.join(dir, 'sessions');
  fs.mkdirSync(sessionsDir, { recursive: true });
  const logFile = path.join(dir, 'writes.log');
  let tmpCount = 0;

  const sessionDir = (id) => path.join(sessionsDir, hash(String(id)));
  const recordFile = (id) => path.join(sessionDir(id), 'record.json');
  const transcriptFile = (id) => path.join(sessionDir(id), 'transcript.json');
  const filesDir = (id) => path.join(sessionDir(id), 'files');

  function writeAtomic(file, value) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.${++tmpCount}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(value));
    fs.renameSync(tmp, file);
  }
  function logWrite(op, sessionId) {
    const line = { t: Date.now(), hr: process.hrtime.bigint().toString(), node, pid: process.pid, op, sessionId };
    // O_APPEND with one short write per line: lines of different processes never mix.
    fs.appendFileSync(logFile, JSON.stringify(line) + '\n');
  }
  /** Writes to a session that does not exist are refused (never invent half a session). */
  function existing(op, id) {
    const rec = readJson(recordFile(id));
    if (!rec) throw new Error(`shared store: ${op} for unknown session ${id}`);
    return rec;
  }
  const record = (rec) => {
    const { rawTranscript, workspaceFiles, subagents, ...rest } = rec;
    return rest;
  };

  return {
    listAllSessions() {
      const out = [];
      for (const d of fs.readdirSync(sessionsDir)) {
        const rec = readJson(path.join(sessionsDir, d, 'record.json'));
        if (rec) out.push(rec);
      }
      return out.sort((a, b) => (a.createdAt ?? 0) - (b.createdAt ?? 0));
    },
    loadSession(id) {
      const rec = readJson(recordFile(id));
      if (!rec) return null;
      const transcript = readJson(transcriptFile(id));
      let names = [];
      try {
        names = fs.readdirSync(filesDir(id)).filter((n) => n.endsWith('.json'));
      } catch (e) {
        if (e.code !== 'ENOENT') throw e;
      }
      const workspaceFiles = names
        .map((n) => readJson(path.join(filesDir(id), n)))
        .filter(Boolean)
        .map((f) => ({ path: f.path, content: decode(f) }))
        .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
      return { ...rec, ...(transcript && { rawTranscript: decode(transcript) }), workspaceFiles };
    },
    createSessionRecord(rec) {
      writeAtomic(recordFile(rec.sessionId), record(rec));
      logWrite('createSessionRecord', rec.sessionId);
    },
    updateSessionRecord(id, updates) {
      const rec = existing('updateSessionRecord', id);
      writeAtomic(recordFile(id), record({ ...rec, ...updates, sessionId: id }));
      logWrite('updateSessionRecord', id);
    },
    saveTranscript(id, raw) {
      existing('saveTranscript', id);
      writeAtomic(transcriptFile(id), encode(raw));
      logWrite('saveTranscript', id);
    },
    saveWorkspaceFile(id, file) {
      existing('saveWorkspaceFile', id);
      writeAtomic(path.join(filesDir(id), `${hash(file.path)}.json`), { path: file.path, ...encode(file.content) });
      logWrite('saveWorkspaceFile', id);
    },
    deleteSessionFile(id, filePath) {
      existing('deleteSessionFile', id);
      try {
        fs.unlinkSync(path.join(filesDir(id), `${hash(filePath)}.json`));
      } catch (e) {
        if (e.code !== 'ENOENT') throw e;
      }
      logWrite('deleteSessionFile', id);
    },
    listAgentProfiles: () => profiles.map(({ id, name, description }) => ({ id, name, ...(description !== undefined && { description }) })),
    loadAgentProfile: (id) => structuredClone(profiles.find((p) => p.id === id) ?? null),
  };
}

/** Every line of `<dir>/writes.log`, ordered by `hr` (each line's `hr` as a BigInt too: `hrn`). */
export function readWrites(dir) {
  let text = '';
  try {
    text = fs.readFileSync(path.join(dir, 'writes.log'), 'utf8');
  } catch (e) {
    if (e.code !== 'ENOENT') throw e;
  }
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const w = JSON.parse(l);
      return { ...w, hrn: BigInt(w.hr) };
    })
    .sort((a, b) => (a.hrn < b.hrn ? -1 : a.hrn > b.hrn ? 1 : 0));
}

/** The writes of one session as runs of one writing process: [{ node, pid, count, first, last, ops }]
 *  (`first`/`last`: hr BigInts), in order. Two runs of one pid mean its writes interleaved with
 *  another's. */
export function writeRuns(writes, sessionId) {
  const runs = [];
  for (const w of writes) {
    if (w.sessionId !== sessionId) continue;
    const run = runs.at(-1);
    if (run && run.pid === w.pid) {
      run.count++;
      run.last = w.hrn;
      run.ops.push(w.op);
    } else runs.push({ node: w.node, pid: w.pid, count: 1, first: w.hrn, last: w.hrn, ops: [w.op] });
  }
  return runs;
}
