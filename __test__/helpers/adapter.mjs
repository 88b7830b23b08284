// A real in-memory PersistenceAdapter that records every call, with per-method fault injection.
export const PROFILE = {
  id: 'default',
  name: 'Default Agent',
  systemPrompt: 'You are a helpful assistant.',
  tools: ['Read', 'Write', 'Edit', 'Bash'],
};

/** faults: { [method]: 'throw' | 'reject' | 'hang' | (args) => value } applied while set. */
export function recordingAdapter({ profiles = [PROFILE] } = {}) {
  const sessions = new Map();
  const calls = [];
  const faults = {};
  const impl = {
    listAllSessions: () =>
      [...sessions.values()].map(({ rawTranscript, workspaceFiles, ...rec }) => rec),
    loadSession: (id) => {
      const s = sessions.get(id);
      return s ? { ...s, workspaceFiles: [...s.workspaceFiles] } : null;
    },
    createSessionRecord: (rec) => {
      sessions.set(rec.sessionId, { ...rec, workspaceFiles: [], rawTranscript: undefined });
    },
    updateSessionRecord: (id, updates) => {
      Object.assign(sessions.get(id), updates);
    },
    saveTranscript: (id, raw) => {
      sessions.get(id).rawTranscript = raw;
    },
    saveWorkspaceFile: (id, file) => {
      const s = sessions.get(id);
      s.workspaceFiles = s.workspaceFiles.filter((f) => f.path !== file.path).concat([file]);
    },
    deleteSessionFile: (id, path) => {
      const s = sessions.get(id);
      s.workspaceFiles = s.workspaceFiles.filter((f) => f.path !== path);
    },
    listAgentProfiles: () => profiles.map(({ id, name, description }) => ({ id, name, description })),
    loadAgentProfile: (id) => profiles.find((p) => p.id === id) ?? null,
  };
  const adapter = {};
  for (const [name, fn] of Object.entries(impl)) {
    adapter[name] = async (...args) => {
      calls.push([name, ...args]);
      const fault = faults[name];
      if (fault === 'throw') throw new Error(`${name} exploded`);
      if (fault === 'reject') return Promise.reject(new Error(`${name} rejected`));
      if (fault === 'hang') return new Promise(() => {});
      if (typeof fault === 'function') return fault(...args);
      return fn(...args);
    };
  }
  return { adapter, calls, faults, sessions, names: () => calls.map((c) => c[0]) };
}
