// The fixture stores built by test/fixtures/build.sh with buildah, skopeo, podman and docker-registry.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFile, execFileSync, spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { promisify } from 'node:util';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';

export interface FixtureStore { root: string; runroot: string; driver: string }

export interface Fixtures {
  stores: { overlay: FixtureStore; vfs: FixtureStore; pulled: FixtureStore; zstd: FixtureStore };
  registry: { addr: string; config: string; data: string };
  images: { store: keyof Fixtures['stores']; name: string; id: string }[];
  pushed: { ref: string; format: 'v2s2' | 'oci' | 'list'; compression: 'gzip' | 'zstd'; manifestDigest: string }[];
  /** images whose layers other compressors made (Go compress/gzip -level 6 and 1, GNU gzip -n -6, GNU gzip -1 with a name), each pulled by podman into its own store */
  /** reused: the go6 image pulled into a store that had its tars already, uncompressed (then the gnu6 image, then it: all share the layers) */
  recipes: { variant: 'go6' | 'go1' | 'gnu1' | 'gnu6' | 'py9' | 'reused'; ref: string; manifestDigest: string; store: FixtureStore }[];
  /** the Go compress/gzip oracle program (test/oracles/gogzip) */
  gogzip: string;
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

/** `127.0.0.1:5701/recipes/go6:1` → repository `127.0.0.1_5701/recipes/go6` as csreg serves it. */
export const repoOf = (ref: string) => ref.slice(0, ref.lastIndexOf(':')).replace(/^([^/]*):(\d+)\//, '$1_$2/');

export function csRef(s: FixtureStore, name: string): string {
  return `containers-storage:[${s.driver}@${s.root}+${s.runroot}]${name}`;
}

const execAsync = promisify(execFile);
/** Run a tool without blocking the event loop (an in-process registry may be its peer); its stdout. */
export async function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  const { stdout } = await execAsync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 26, env: env ?? process.env });
  return stdout.trim();
}

/**
 * `buildah run --isolation chroot` of cmd in the working container; its stdout. buildah runs a
 * sealed memfd copy of itself, and sealing it failed once in CI with EBUSY ("Close_Fd sealing
 * memfd copy: Device or resource busy", the kernel refusing while the copy's pages are still
 * referenced): that alone is tried again.
 */
export async function buildahRun(s: FixtureStore, ctr: string, cmd: string[]): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await run('buildah', [...storeArgs(s), 'run', '--isolation', 'chroot', ctr, '--', ...cmd]);
    } catch (e) {
      if (attempt >= 3 || !String((e as { stderr?: string }).stderr).includes('sealing memfd')) throw e;
    }
  }
}

export const sha = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** A private copy of a fixture store that a test may damage (remove `dir` after). */
export function copyStore(s: FixtureStore): FixtureStore & { dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'csreg-copy-'));
  execFileSync('cp', ['-a', s.root, join(dir, 'root')]);
  // podman's own database records the store path it was made for; a copy needs a fresh one
  rmSync(join(dir, 'root', 'libpod'), { recursive: true, force: true });
  execFileSync('mkdir', ['-p', join(dir, 'run')]);
  return { root: join(dir, 'root'), runroot: join(dir, 'run'), driver: s.driver, dir };
}

/** The descriptors this process has open now (a leak test compares before and after). */
export const openDescriptors = (): number => readdirSync('/proc/self/fd').length;

/** The paths of the files this process has open now. */
export function openPaths(): string[] {
  return readdirSync('/proc/self/fd').map((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      return ''; // (closed meanwhile)
    }
  }).filter(Boolean);
}

/** Whether another process could take the write lock at `path` now, without waiting, as a podman writer takes it (python's lockf is the same fcntl lock). */
export function writerCouldLock(path: string): boolean {
  const py = `import fcntl,sys\nf=open(${JSON.stringify(path)},'a+')\ntry:\n  fcntl.lockf(f,fcntl.LOCK_EX|fcntl.LOCK_NB)\nexcept OSError:\n  sys.exit(1)`;
  return spawnSync('python3', ['-c', py]).status === 0;
}

/** Every byte of a stream. */
export async function collect(r: AsyncIterable<unknown>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** Wait until a URL answers 2xx (a registry coming up), at most ~10 s. */
export async function waitFor(url: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(url)).ok) return;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not come up`);
}

/** The fixture docker-registries (gzip pushes on fx.registry.addr, zstd on 127.0.0.1:5702), restarted on their kept data. */
export async function startFixtureRegistries(): Promise<ChildProcess[]> {
  const fx = loadFixtures();
  const zstdConfig = join(dirname(dirname(fx.registry.config)), 'registry-zstd', 'config.yml');
  const procs = [fx.registry.config, zstdConfig].map((conf) => spawn('docker-registry', ['serve', conf], { stdio: 'ignore' }));
  await waitFor(`http://${fx.registry.addr}/v2/`);
  await waitFor('http://127.0.0.1:5702/v2/');
  return procs;
}

/** An image as skopeo writes it to dir: (uncompressed layers, made by Go code). */
export function exportImage(s: FixtureStore, name: string): { dir: string; manifest: Buffer; config: Buffer; layers: string[] } {
  const dir = mkdtempSync(join(tmpdir(), 'csreg-export-'));
  execFileSync('skopeo', ['copy', '-q', csRef(s, name), `dir:${dir}`]);
  const manifest = readFileSync(join(dir, 'manifest.json'));
  const m = JSON.parse(manifest.toString()) as { config: { digest: string }; layers: { digest: string }[] };
  return { dir, manifest, config: readFileSync(join(dir, m.config.digest.slice(7))), layers: m.layers.map((l) => join(dir, l.digest.slice(7))) };
}

export function freshStore(driver: 'overlay' | 'vfs'): FixtureStore & { dir: string } {
  const dir = mkdtempSync(join(tmpdir(), `csreg-w-${driver}-`));
  return { root: join(dir, 'root'), runroot: join(dir, 'run'), driver, dir };
}

/** The Go overlay driver bind-mounts its home on itself: unmount before removing a test store. */
export function removeStore(s: { root: string; dir: string }): void {
  try {
    execFileSync('umount', ['-l', join(s.root, 'overlay')], { stdio: 'ignore' });
  } catch { /* not mounted */ }
  rmSync(s.dir, { recursive: true, force: true });
}

/** A tar with one entry, written by hand: name, type and link name as given. */
/** One PAX extended-header record ("LEN key=value\n", LEN counting itself). */
export function paxRecord(key: string, value: string | Buffer): Buffer {
  const v = Buffer.isBuffer(value) ? value : Buffer.from(value);
  const rest = Buffer.byteLength(` ${key}=`) + v.length + 1;
  let len = rest + 1;
  while (String(len).length + rest !== len) len++;
  return Buffer.concat([Buffer.from(`${len} ${key}=`), v, Buffer.from('\n')]);
}

export function tarEntry(name: string, type: string, body: Buffer = Buffer.alloc(0), link = ''): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0);
  h.write('0000644\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(body.length.toString(8).padStart(11, '0') + '\0', 124);
  h.write('00000000000\0', 136);
  h.write(type, 156);
  h.write(link, 157);
  h.write('ustar\x0000', 257, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  const pad = Buffer.alloc((512 - (body.length % 512)) % 512);
  return Buffer.concat([h, body, pad]);
}


/** Why the served-blob cache would keep nothing under dir (it leaves 1 GiB or 5 % of a file system free: src/oci/served.ts), or undefined. */
export function roomToKeep(dir: string): string | undefined {
  const fs = statfsSync(dir);
  const free = fs.bavail * fs.bsize;
  const need = Math.max(1 << 30, fs.blocks * fs.bsize * 0.05) + (64 << 20);
  return free > need ? undefined : `only ${Math.round(free / 2 ** 20)} MiB free under ${dir}: the served-blob cache keeps nothing below ${Math.round(need / 2 ** 20)} MiB`;
}

export interface ServeProcess { proc: ChildProcess; url: string; host: string; exited: Promise<unknown>; output: () => string }

/** `csreg serve` run as a command (cmd: bin/csreg or node with main.js); resolves once it listens. */
export async function startServe(cmd: string, args: string[], opts: SpawnOptions = {}): Promise<ServeProcess> {
  const proc = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise((r) => proc.once('close', r));
  let out = '';
  let err = '';
  proc.stderr!.on('data', (c) => { err += String(c); });
  const url = await new Promise<string>((resolve, reject) => {
    proc.stdout!.on('data', (c) => {
      out += String(c);
      const m = /listening on (https?:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]);
    });
    void exited.then(() => reject(new Error(`csreg exited before listening: ${err}`)));
  });
  return { proc, url, host: url.replace(/^https?:\/\//, ''), exited, output: () => out + err };
}

/** A `dir:` copy of an image (skopeo's): its layers uncompressed, each checked against its blob digest and the config's diff ID. */
export function checkedDirLayers(dir: string): Buffer[] {
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { config: { digest: string }; layers: { digest: string }[] };
  const config = JSON.parse(readFileSync(join(dir, manifest.config.digest.slice(7)), 'utf8')) as { rootfs: { diff_ids: string[] } };
  return manifest.layers.map((l, i) => {
    const blob = readFileSync(join(dir, l.digest.slice(7)));
    assert.equal(sha(blob), l.digest, 'blob digest');
    const tar = blob[0] === 0x1f && blob[1] === 0x8b ? gunzipSync(blob) : blob;
    assert.equal(sha(tar), config.rootfs.diff_ids[i], `layer ${i} against its diff ID`);
    return tar;
  });
}
