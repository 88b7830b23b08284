import type { AgentProfile, PersistenceAdapter } from '../../types.js';

/** The profiles the contract seeds by default. */
export const CONTRACT_PROFILES: AgentProfile[];

export interface AdapterContractOptions {
  /** node:test's `test` (or `it`). */
  test: (name: string, fn: () => Promise<void>) => unknown;
  /** The profiles makeAdapter must seed (default CONTRACT_PROFILES). */
  profiles?: AgentProfile[];
  /** Closes `adapter` and opens a new one on the same storage; adds a durability test. */
  reopen?: (adapter: PersistenceAdapter & { close?(): unknown }) => Promise<PersistenceAdapter & { close?(): unknown }>;
}

/** Registers the contract's tests (one fresh adapter per test, closed with its `close()` if any). */
export function adapterContract(
  makeAdapter: (args: { profiles: AgentProfile[] }) => Promise<PersistenceAdapter & { close?(): unknown }> | (PersistenceAdapter & { close?(): unknown }),
  options: AdapterContractOptions,
): void;
