// The fixture stores built by test/fixtures/build.sh with buildah, skopeo, podman and docker-registry.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface FixtureStore { root: string; runroot: string; driver: string }

export interface Fixtures {
  stores: { overlay: FixtureStore; vfs: FixtureStore; pulled: FixtureStore; zstd: FixtureStore };
  registry: { addr: string; config: string; data: string };
  images: { store: keyof Fixtures['stores']; name: string; id: string }[];
  pushed: { ref: string; format: 'v2s2' | 'oci' | 'list'; compression: 'gzip' | 'zstd'; manifestDigest: string }[];
}

export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('package.json not found above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
  return dir;
}

let cached: Fixtures | undefined;
export function loadFixtures(): Fixtures {
  if (!cached) {
    const dir = process.env.CSREG_FIXTURES ?? join(repoRoot(), '.fixtures');
    const file = join(dir, 'fixtures.json');
    if (!existsSync(file)) throw new Error(`${file} is missing: run bash test/fixtures/build.sh (npm test does)`);
    cached = JSON.parse(readFileSync(file, 'utf8')) as Fixtures;
  }
  return cached;
}

export function storeArgs(s: FixtureStore): string[] {
  return ['--root', s.root, '--runroot', s.runroot, '--storage-driver', s.driver];
}

export function csRef(s: FixtureStore, name: string): string {
  return `containers-storage:[${s.driver}@${s.root}+${s.runroot}]${name}`;
}
