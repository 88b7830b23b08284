// The benchmarks' persistence: an in-memory adapter with one agent profile.

/** `{ persistence, clear }`: a `PersistenceAdapter` over a Map (`tools`: the profile's), and a
 *  way to forget every stored session between rounds. */
export function memoryAdapter(tools = ['Read', 'Write', 'Edit', 'Bash']) {
  const store = new Map();
  const profile = { id: 'default', name: 'Bench Agent', systemPrompt: 'You are a helpful assistant.', tools };
  const persistence = {
    listAllSessions: async () => [...store.values()].map(({ rawTranscript, workspaceFiles, ...rec }) => rec),
    loadSession: async (id) => store.get(id) ?? null,
    createSessionRecord: async (rec) => void store.set(rec.sessionId, { ...rec, workspaceFiles: [] }),
    updateSessionRecord: async (id, updates) => void (store.has(id) && Object.assign(store.get(id), updates)),
    saveTranscript: async (id, raw) => void (store.has(id) && (store.get(id).rawTranscript = raw)),
    saveWorkspaceFile: async (id, file) => {
      const s = store.get(id);
      if (s) s.workspaceFiles = s.workspaceFiles.filter((f) => f.path !== file.path).concat([file]);
    },
    deleteSessionFile: async (id, p) => {
      const s = store.get(id);
      if (s) s.workspaceFiles = s.workspaceFiles.filter((f) => f.path !== p);
    },
    listAgentProfiles: async () => [{ id: profile.id, name: profile.name }],
    loadAgentProfile: async () => ({ ...profile }),
  };
  return { persistence, clear: () => store.clear() };
}
