/** Range checks for request fields: each error names the field and the allowed range. */
import { invalidArgument } from "../../util/errors.ts";

export function intIn(
  value: unknown,
  field: string,
  lo: number,
  hi: number,
  fallback: number,
): number {
  const v = value === undefined || value === null || value === 0 ? fallback : Number(value);
  if (!Number.isInteger(v) || v < lo || v > hi) {
    throw invalidArgument(`${field}: ${value} is outside ${lo}..${hi}`);
  }
  return v;
}

/** A number in [lo, hi] (or (lo, hi] when `openLow`); `fallback` when unset. */
export function numberIn(
  value: unknown,
  field: string,
  lo: number,
  hi: number,
  fallback: number,
  openLow = false,
): number {
  const v = value === undefined || value === null ? fallback : Number(value);
  if (!Number.isFinite(v) || v > hi || (openLow ? v <= lo : v < lo)) {
    throw invalidArgument(`${field}: ${value} is outside ${openLow ? "(" : "["}${lo}, ${hi}]`);
  }
  return v;
}
