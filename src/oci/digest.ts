// Digests as the distribution spec writes them: algorithm ":" encoded.
import { createHash } from 'node:crypto';
import { Transform } from 'node:stream';

const PATTERNS: Record<string, RegExp> = { sha256: /^[a-f0-9]{64}$/, sha512: /^[a-f0-9]{128}$/ };

/** A well-formed digest of an algorithm we can verify. */
export function isValidDigest(d: string): boolean {
  const i = d.indexOf(':');
  if (i < 0) return false;
  // own keys only: "constructor:…" must not find Object's constructor (a TypeError on .test)
  const alg = d.slice(0, i);
  return Object.hasOwn(PATTERNS, alg) && PATTERNS[alg].test(d.slice(i + 1));
}

/** Looks like a digest at all (an algorithm and an encoded part), valid or not. */
export function looksLikeDigest(ref: string): boolean {
  return /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(ref) || ref.includes(':');
}

export function sha256(data: Uint8Array | string): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex');
}

export class DigestMismatchError extends Error {
  override name = 'DigestMismatchError';
}

/**
 * Pass bytes through, hashing them; the last chunk is held back until the whole content is
 * known to have the digest, so a client never receives a complete wrong blob (the transfer
 * fails instead).
 */
export function verifying(digest: string): Transform {
  const h = createHash('sha256');
  let held: Buffer | undefined;
  return new Transform({
    transform(chunk: Buffer, _e, cb) {
      h.update(chunk);
      const out = held;
      held = chunk;
      cb(null, out);
    },
    flush(cb) {
      const got = 'sha256:' + h.digest('hex');
      if (got !== digest) return cb(new DigestMismatchError(`content is ${got}, not ${digest}`));
      cb(null, held);
    },
  });
}
