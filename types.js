'use strict';
// Browser-safe runtime part of the "./types" subpath: the block type guards. Never loads the addon.
const guard = (type) => (block) => block.type === type;
module.exports = {
  isUserMessageBlock: guard('user_message'),
  isAssistantTextBlock: guard('assistant_text'),
  isToolUseBlock: guard('tool_use'),
  isToolResultBlock: guard('tool_result'),
  isThinkingBlock: guard('thinking'),
  isSystemBlock: guard('system'),
  isSubagentBlock: guard('subagent'),
  isErrorBlock: guard('error'),
};
