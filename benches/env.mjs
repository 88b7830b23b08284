// Numeric settings of the benchmarks, from the environment.

/** `process.env[name]` as a non-negative number, `dflt` when unset; anything else is an error. */
export function num(name, dflt) {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, got ${JSON.stringify(v)}`);
  return n;
}
