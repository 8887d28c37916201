// What zlib's deflate.c and GNU gzip 1.12's deflate.c share about the sliding window, since
// both keep the 1990s layout: the per-level search limits and how the hash tables slide.
// Window geometry and hash constants stay in each encoder, where V8 folds them into the
// hot loops.

/** configuration_table: good_length, max_lazy (max_insert_length at levels 1-3), nice_length, max_chain. */
export const LEVEL_CONFIG: ReadonlyArray<readonly [number, number, number, number]> = [
  [0, 0, 0, 0],
  [4, 4, 8, 4],
  [4, 5, 16, 8],
  [4, 6, 32, 32],
  [4, 4, 16, 16],
  [8, 16, 32, 32],
  [8, 16, 128, 128],
  [8, 32, 128, 256],
  [32, 128, 258, 1024],
  [32, 258, 258, 4096],
];

const W_SIZE = 1 << 15;

/**
 * slide_hash: positions in a head/prev table move down by the 32 KiB the window slid; those
 * that fall out become 0, which both libraries read as "no entry".
 */
export function slideHash(t: Uint16Array): void {
  for (let i = 0, n = t.length; i < n; i++) {
    const v = t[i] - W_SIZE;
    t[i] = v & ~(v >> 31); // max(v, 0) without a branch: the outcome is data-dependent
  }
}
