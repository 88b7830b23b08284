// What the benchmarks' reports share: quantiles of samples and plain-text tables.

/** Linear-interpolated quantile (q in [0, 1]); NaN for no samples. */
export function quantile(xs, q) {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

/** The median of the finite samples; NaN for none. */
export const median = (xs) => quantile(xs.filter((x) => typeof x === 'number' && Number.isFinite(x)), 0.5);

/** Milliseconds, one decimal below 100; '-' for no value. */
export function ms(x) {
  return Number.isFinite(x) ? (x >= 100 ? x.toFixed(0) : x.toFixed(1)) : '-';
}

/** `x` with `d` decimals; '-' for no value. */
export function fixed(x, d) {
  return Number.isFinite(x) ? x.toFixed(d) : '-';
}

/** Rows of cells as aligned columns: the first `left` columns to the left, the rest to the right. */
export function printTable(rows, { left = 1, indent = '' } = {}) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  for (const r of rows) console.log(indent + r.map((c, i) => (i < left ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  '));
}
