// ESM entry: the same objects as the CommonJS entry.
import api from './index.js';
export const { createAgentRuntime, createRestServer, createConsole, errorResponse, EventBus, SessionManager, AgentSession } = api;
export * from './types.mjs';
export default api;
