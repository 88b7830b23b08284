// The session record's fields as both SQL adapters store them: [record field, column, to column].
export const UPDATABLE = [
  ['type', 'type', (v) => v],
  ['agentProfileReference', 'agent_profile_reference', (v) => v],
  ['name', 'name', (v) => v],
  ['sessionOptions', 'session_options', json],
  ['metadata', 'metadata', json],
  ['createdAt', 'created_at', (v) => v],
  ['lastActivity', 'last_activity', (v) => v],
];

/** A JSON column's value (null stays null). */
export function json(value) {
  return value == null ? null : JSON.stringify(value);
}
