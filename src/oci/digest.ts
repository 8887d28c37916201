// Digests as the distribution spec writes them: algorithm ":" encoded.
import { createHash } from 'node:crypto';

const PATTERNS: Record<string, RegExp> = { sha256: /^[a-f0-9]{64}$/, sha512: /^[a-f0-9]{128}$/ };

/** A well-formed digest of an algorithm we can verify. */
export function isValidDigest(d: string): boolean {
  const i = d.indexOf(':');
  if (i < 0) return false;
  const re = PATTERNS[d.slice(0, i)];
  return !!re && re.test(d.slice(i + 1));
}

/** Looks like a digest at all (an algorithm and an encoded part), valid or not. */
export function looksLikeDigest(ref: string): boolean {
  return /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(ref) || ref.includes(':');
}

export function sha256(data: Uint8Array | string): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex');
}
