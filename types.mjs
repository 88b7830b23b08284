// ESM twin of types.js for browsers and bundlers (no CommonJS, no addon).
const guard = (type) => (block) => block.type === type;
export const isUserMessageBlock = guard('user_message');
export const isAssistantTextBlock = guard('assistant_text');
export const isToolUseBlock = guard('tool_use');
export const isToolResultBlock = guard('tool_result');
export const isThinkingBlock = guard('thinking');
export const isSystemBlock = guard('system');
export const isSubagentBlock = guard('subagent');
export const isErrorBlock = guard('error');
