// The compressors whose output csreg reproduces bit for bit, each a named profile (program,
// library version, level, block size), tried in order of how likely they made a layer.
import type { BlockPool } from './block-pool.js';
import { GoGzipEncoder } from './go-gzip.js';
import { goGzipParallel } from './go-parallel.js';
import { GnuGzipEncoder } from './gnu-gzip.js';
import { ZlibGzipEncoder } from './zlib-gzip.js';
import { PgzipEncoder, PGZIP_BLOCK_SIZE } from './pgzip.js';

/** push() returns the output ready so far, finish() the rest; output independent of chunking. */
export interface Encoder {
  push(chunk: Uint8Array): Uint8Array[];
  finish(): Uint8Array[];
  /** block formats: the compressed offset at which each block starts */
  readonly blockOffsets?: number[];
}

export interface Profile {
  /** stable: kept in recipes */
  id: string;
  /** who writes layers this way */
  who: string;
  create(): Encoder;
  /** pgzip's format: independent blocks of this many input bytes, made by pgzipBlock (in parallel, and a Range can start at any block) */
  blockSize?: number;
  /** the same bytes as create()'s, with most of the work on the pool's threads */
  onPool?(tar: AsyncIterable<Uint8Array>, pool: BlockPool): AsyncGenerator<Uint8Array>;
}

export const PROFILES: Profile[] = [
  {
    id: 'pgzip-1.2.5/flate-1.15.12/default',
    who: 'containers/image 5.23–5.34 pushes (podman, buildah, skopeo, CRI-O)',
    create: () => new PgzipEncoder(),
    blockSize: PGZIP_BLOCK_SIZE,
  },
  { id: 'go1.19-gzip/6', who: 'Go compress/gzip default level (docker push, BuildKit, containerd)', create: () => new GoGzipEncoder({ level: 6 }), onPool: (tar, pool) => goGzipParallel(tar, 6, pool) },
  { id: 'go1.19-gzip/1', who: 'Go compress/gzip BestSpeed (go-containerregistry: crane, ko)', create: () => new GoGzipEncoder({ level: 1 }) },
  { id: 'go1.19-gzip/9', who: 'Go compress/gzip BestCompression', create: () => new GoGzipEncoder({ level: 9 }), onPool: (tar, pool) => goGzipParallel(tar, 9, pool) },
  { id: 'gnu-gzip-1.12/6', who: 'GNU gzip -n (tar czf, hand-built layers)', create: () => new GnuGzipEncoder({ level: 6 }) },
  { id: 'gnu-gzip-1.12/9', who: 'GNU gzip -n -9', create: () => new GnuGzipEncoder({ level: 9 }) },
  { id: 'gnu-gzip-1.12/1', who: 'GNU gzip -n -1', create: () => new GnuGzipEncoder({ level: 1 }) },
  // zlib 1.2.8–1.3.1 (one output class), fed in one piece; the header says who framed it
  { id: 'zlib-1.2/6+java', who: 'Java GZIPOutputStream default level, JDK 16+ (Jib)', create: () => new ZlibGzipEncoder({ level: 6, header: 'java' }) },
  { id: 'zlib-1.2/6+java-legacy', who: 'Java GZIPOutputStream default level, JDK ≤ 15', create: () => new ZlibGzipEncoder({ level: 6, header: 'java-legacy' }) },
  { id: 'zlib-1.2/9+zlib', who: "Python 3.11–3.12 gzip.compress (default level 9, mtime=0)", create: () => new ZlibGzipEncoder({ level: 9, header: 'zlib' }) },
  { id: 'zlib-1.2/9+python', who: 'Python gzip.GzipFile / gzip.compress of other versions (level 9, mtime=0)', create: () => new ZlibGzipEncoder({ level: 9, header: 'python' }) },
];

export function profileById(id: string): Profile | undefined {
  return PROFILES.find((p) => p.id === id);
}

/** Candidates for a layer: profiles that reproduced other layers first (most often first), then the rest. */
export function orderProfiles(matches: Map<string, number>): Profile[] {
  return [...PROFILES].sort((a, b) => (matches.get(b.id) ?? 0) - (matches.get(a.id) ?? 0));
}
