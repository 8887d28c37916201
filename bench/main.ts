// The benchmark harness (bench/run.sh builds the store, starts docker-registry and runs this).
// Measures csreg against docker-registry, the Go tools and a plain read, and writes
// bench/results/latest.{json,md}. Every loop is bounded in count and every child in time.
// Inputs (env): W (bench dir), REG (docker-registry host:port), REG_PID, CSREG_PORT, SCALE,
// REPS, CONC_REPS, BENCH_TMP (scratch dir for pulled images), SECTIONS (comma list or "all").
import { createHash } from 'node:crypto';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync, rmSync, appendFileSync, openSync, closeSync } from 'node:fs';
import { cpus, totalmem, release, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { Store } from '../src/storage/store.js';
import { createPgzipStream } from '../src/compress/pgzip.js';
import { measure, poolFor, produce, type Measured } from '../src/compress/produce.js';
import { PROFILES } from '../src/compress/profiles.js';
import { ZlibDeflateEncoder } from '../src/compress/zlib-deflate.js';
import type { ClientResult } from './client.js';
import { manyName, TAGS_PER_REPO } from './make-many.js';

// ---------------------------------------------------------------- settings
const env = process.env;
const W = resolve(env.W ?? '/var/tmp/csreg-bench/full');
const REG = env.REG ?? '127.0.0.1:5761';
const REG_PID = Number(env.REG_PID ?? 0);
const CSREG_PORT = Number(env.CSREG_PORT ?? 5762);
const SCALE = env.SCALE ?? 'full';
const REPS = Math.max(1, Math.min(50, Number(env.REPS ?? (SCALE === 'small' ? 2 : 5))));
const CONC_REPS = Math.max(1, Math.min(REPS, Number(env.CONC_REPS ?? 5)));
/** A measure stops repeating (after at least one counted repetition) once it has run this long. */
const BUDGET_MS = 1000 * Math.max(5, Math.min(3600, Number(env.MEASURE_BUDGET_S ?? 120)));
/** true while repetition `rep` (0 = the unmeasured warm-up where there is one) may start */
function more(rep: number, max: number, t0: number, firstCounted: number): boolean {
  if (rep > max) return false;
  if (rep <= firstCounted) return true;
  if (now() - t0 > BUDGET_MS) {
    log(`  (time budget of ${BUDGET_MS / 1000} s used up after ${rep - firstCounted} counted repetitions)`);
    return false;
  }
  return true;
}
const TMP = resolve(env.BENCH_TMP ?? '/dev/shm');
const SECTIONS = (env.SECTIONS ?? 'all').split(',');
const want = (s: string) => SECTIONS.includes('all') || SECTIONS.includes(s);
const REPO = resolve(fileURLToPath(new URL('../..', import.meta.url)));
/**
 * csreg as users run it: the launcher (bin/csreg), which starts Node without NODE_EXTRA_CA_CERTS;
 * under BENCH_PROFILE, node with the profiler's flags (the launcher takes none, and NODE_OPTIONS
 * refuses --cpu-prof) and the same environment.
 */
function csregCommand(args: string[]): [string, string[]] {
  if (!PROFILE) return [join(REPO, 'bin/csreg'), args];
  return [process.execPath, ['--cpu-prof', `--cpu-prof-dir=${join(W, 'profiles')}`, join(REPO, 'dist/src/cli/main.js'), ...args]];
}
const CSREG_ENV = { ...process.env, NODE_EXTRA_CA_CERTS: '' };
const STORE = { root: join(W, 'store/root'), runroot: join(W, 'store/run') };
const MANY = { root: join(W, 'many/root'), runroot: join(W, 'many/run') };
/** the same images pulled back from docker-registry: csreg serves their original blobs (recipes) */
const MIRROR = { root: join(W, 'mirror/root'), runroot: join(W, 'mirror/run') };
/** bench/layered as docker or BuildKit push it (Go compress/gzip 6), pulled into a store of its own */
const MIRROR_GO6 = { root: join(W, 'mirror-go6/root'), runroot: join(W, 'mirror-go6/run') };
const IMAGES = ['small', 'large', 'layered'] as const;
type ImageKey = (typeof IMAGES)[number];
const DESCR: Record<ImageKey, string> = {
  small: 'many small files (/usr/share subset)',
  large: '3 large files (random, base64, log text)',
  layered: '5 layers (busybox + tree, 4 × files + random blob)',
};
const CMD_TIMEOUT_MS = 900_000;
const log = (msg: string) => process.stderr.write(`bench: ${new Date().toISOString().slice(11, 19)} ${msg}\n`);
const SCRATCH = join(TMP, `csreg-bench-${process.pid}`);
/** BENCH_PROFILE=1: csreg (serve and storage diff) runs under --cpu-prof, profiles in $W/profiles (slows it down: diagnosis only) */
const PROFILE = env.PROFILE === '1';

// ---------------------------------------------------------------- helpers
const now = () => Number(process.hrtime.bigint()) / 1e6;
function median(xs: number[]): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
/** nearest-rank percentile */
function pct(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}
const MB = 1e6;
const r2 = (x: number) => Math.round(x * 100) / 100;
const r1 = (x: number) => Math.round(x * 10) / 10;

const children = new Set<ChildProcess>();
const PIDS = join(W, 'pids');
function track(c: ChildProcess): void {
  children.add(c);
  if (c.pid) appendFileSync(PIDS, `${c.pid}\n`);
  c.on('exit', () => children.delete(c));
}
function killAll(): void {
  for (const c of children) c.kill('SIGKILL');
}
process.on('exit', () => {
  killAll();
  rmSync(SCRATCH, { recursive: true, force: true });
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));

/** Run a command to completion; stdin from a file, stdout to a file (or /dev/null), stderr kept for errors. Returns ms. */
function run(cmd: string, args: string[], opts: { stdin?: string; stdout?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<number> {
  return new Promise((res, rej) => {
    const fd = openSync(opts.stdout ?? '/dev/null', 'w');
    const inFd = opts.stdin ? openSync(opts.stdin, 'r') : 'ignore';
    const t0 = now();
    const c = spawn(cmd, args, { stdio: [inFd, fd, 'pipe'], env: opts.env ?? process.env });
    closeSync(fd);
    if (typeof inFd === 'number') closeSync(inFd);
    track(c);
    let err = '';
    c.stderr!.on('data', (d: Buffer) => { if (err.length < 4000) err += d.toString(); });
    const timer = setTimeout(() => c.kill('SIGKILL'), opts.timeoutMs ?? CMD_TIMEOUT_MS);
    c.on('error', rej);
    c.on('close', (code, signal) => {
      clearTimeout(timer);
      const ms = now() - t0;
      if (code === 0) res(ms);
      else rej(new Error(`${cmd} ${args.join(' ')}: ${signal ?? 'exit ' + code}: ${err.trim().slice(0, 1000)}`));
    });
  });
}
function out(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (e) {
    return `unavailable (${(e as Error).message.split('\n')[0]})`;
  }
}
function duBytes(path: string): number {
  let n = 0;
  const walk = (p: string, depth: number) => {
    if (depth > 20) return;
    const st = statSync(p);
    if (st.isDirectory()) for (const e of readdirSync(p)) walk(join(p, e), depth + 1);
    else n += st.size;
  };
  walk(path, 0);
  return n;
}
function procStatus(pid: number, key: 'VmHWM' | 'VmRSS'): number {
  try {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}
/** Reset the peak RSS (VmHWM) of a process to its current RSS (proc(5), clear_refs value 5). */
function resetPeak(pid: number): void {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
  } catch { /* not permitted: the peak is then since start */ }
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function httpStatus(url: string, timeoutMs = 5000): Promise<number> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), headers: { Accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' } });
    await r.arrayBuffer();
    return r.status;
  } catch {
    return 0;
  }
}

interface Csreg { pid: number; base: string; proc: ChildProcess; startMs: number; firstMs: number }
/** Start csreg serve on a store and wait (≤ 60 s) until `probe` answers 200. */
async function startCsreg(store: { root: string; runroot: string }, port: number, probe: string, extra: string[] = [], state = join(W, 'state')): Promise<Csreg> {
  const t0 = now();
  const proc = spawn(...csregCommand(['serve', '--root', store.root, '--runroot', store.runroot, '--storage-driver', 'overlay',
    '--addr', `127.0.0.1:${port}`, '--state-dir', state, '--log-level', 'warn', ...extra]), { stdio: ['ignore', 'ignore', 'pipe'], env: CSREG_ENV });
  track(proc);
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => { if (err.length < 4000) err += d.toString(); });
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 6000; i++) {
    if (proc.exitCode !== null) throw new Error(`csreg exited: ${err}`);
    if ((await httpStatus(base + probe, 2000)) === 200) return { pid: proc.pid!, base, proc, startMs: t0, firstMs: now() - t0 };
    if (now() - t0 > 60_000) break;
    await sleep(5);
  }
  proc.kill('SIGKILL');
  throw new Error(`csreg did not answer ${probe} within 60 s: ${err}`);
}
async function stopCsreg(c: Csreg): Promise<void> {
  c.proc.kill('SIGTERM');
  for (let i = 0; i < 100 && c.proc.exitCode === null && c.proc.signalCode === null; i++) await sleep(50);
  if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
}

/** Number of tar members in a layer (tar-split file entries). */
function tarEntries(store: Store, layer: { id: string; storeRoot: string }): number {
  const text = gunzipSync(readFileSync(join(layer.storeRoot, 'overlay-layers', `${layer.id}.tar-split.gz`))).toString('utf8');
  let n = 0;
  for (const line of text.split('\n')) if (line.startsWith('{"type":1')) n++;
  if (n === 0) for (const line of text.split('\n')) if (line && (JSON.parse(line) as { type: number }).type === 1) n++;
  void store;
  return n;
}

// ---------------------------------------------------------------- results
interface Target { section: string; what: string; measured: string; target: string; pass: boolean | null }
const results: Record<string, unknown> = {};
const targets: Target[] = [];
const md: string[] = [];
function table(head: string[], rows: (string | number)[][]): void {
  md.push(`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`);
  for (const r of rows) md.push(`| ${r.join(' | ')} |`);
  md.push('');
}
const mark = (p: boolean | null) => (p === null ? 'n/a' : p ? 'pass' : '**miss**');
const fmtMs = (ms: number) => (ms >= 1000 ? `${r2(ms / 1000)} s` : `${r1(ms)} ms`);
const fmtB = (b: number) => (b >= 1e9 ? `${r2(b / 1e9)} GB` : `${r1(b / MB)} MB`);

// ---------------------------------------------------------------- the store
interface ImageInfo { key: ImageKey; ref: string; layers: { id: string; diffSize: number; entries: number; storeRoot: string }[]; size: number; entries: number }
async function storeInfo(store: Store): Promise<Record<ImageKey, ImageInfo>> {
  const snap = await store.snapshot();
  const info = {} as Record<ImageKey, ImageInfo>;
  for (const key of IMAGES) {
    const ref = `localhost/bench/${key}:1`;
    const img = snap.image(ref);
    if (!img) throw new Error(`${ref} is not in ${STORE.root}: rebuild the bench store`);
    const chain = snap.layerChain(img.topLayer);
    if (chain.problem) throw new Error(`${ref}: ${chain.problem}`);
    const layers = chain.layers.map((l) => ({ id: l.id, diffSize: l.diffSize ?? 0, entries: tarEntries(store, l), storeRoot: l.storeRoot }));
    info[key] = { key, ref, layers, size: layers.reduce((a, l) => a + l.diffSize, 0), entries: layers.reduce((a, l) => a + l.entries, 0) };
  }
  return info;
}

/** A file of exactly `size` bytes for the plain-read ceiling (made once, kept in $W/plain). */
async function plainFile(size: number): Promise<string> {
  const dir = join(W, 'plain');
  mkdirSync(dir, { recursive: true });
  const f = join(dir, `${size}.bin`);
  if (!existsSync(f) || statSync(f).size !== size) {
    await run('sh', ['-c', `head -c ${size} /dev/urandom > '${f}'`]);
  }
  return f;
}

/** Bytes a client downloads for bench/IMG:1: the manifest (as skopeo asks for it) and every blob it names. */
async function wireBytes(base: string, img: string): Promise<number> {
  const r = await fetch(`${base}/v2/bench/${img}/manifests/1`, {
    signal: AbortSignal.timeout(30_000),
    headers: { Accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' },
  });
  const body = Buffer.from(await r.arrayBuffer());
  const m = JSON.parse(body.toString('utf8')) as { config: { size: number }; layers: { size: number }[] };
  return body.length + m.config.size + m.layers.reduce((a, l) => a + l.size, 0);
}

// ---------------------------------------------------------------- 1. pulls with skopeo
/** host:port of the csreg servers of each store in the pull section; "csreg" is the one the target is about. */
type PullServers = Record<'store' | 'mirror', Record<string, string>>;
async function benchPull(srv: PullServers): Promise<void> {
  log(`pull: skopeo copy, ${REPS} reps`);
  const rows: Record<string, unknown>[] = [];
  // "store": the buildah images (csreg: synthesized manifest, uncompressed layers); "mirror": the
  // same images pulled back from docker-registry (csreg: the original manifest and gzip blobs)
  for (const kind of ['store', 'mirror'] as const) {
    const others = Object.keys(srv[kind]).filter((n) => n !== 'csreg');
    if (!srv[kind].csreg) continue;
    for (const img of IMAGES) {
      for (const fmt of ['dir', 'oci'] as const) {
        const servers = [['csreg', srv[kind].csreg], ['docker-registry', REG], ...others.map((n) => [n, srv[kind][n]])] as [string, string][];
        const times: Record<string, number[]> = Object.fromEntries(servers.map(([n]) => [n, []]));
        const bytes: Record<string, number> = {};
        // rep 0 warms the page cache (and csreg's served-blob cache) and is not counted
        const tStart = now();
        for (let rep = 0; more(rep, REPS, tStart, 1); rep++) {
          for (const [name, addr] of rep % 2 ? [...servers].reverse() : servers) {
            const d = join(SCRATCH, `pull-${rep}`);
            const dest = fmt === 'dir' ? `dir:${d}` : `oci:${d}:latest`;
            const ms = await run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${addr}/bench/${img}:1`, dest]);
            if (rep > 0) times[name].push(ms);
            bytes[name] = duBytes(d);
            rmSync(d, { recursive: true, force: true });
          }
        }
        const c = median(times.csreg);
        const g = median(times['docker-registry']);
        const alt = Object.fromEntries(others.map((n) => [n, median(times[n])]));
        const wire = { csreg: await wireBytes(`http://${srv[kind].csreg}`, img), 'docker-registry': await wireBytes(`http://${REG}`, img) };
        rows.push({ kind, image: img, format: fmt, csregMs: c, registryMs: g, others: alt, ratio: c / g, csregWireBytes: wire.csreg, registryWireBytes: wire['docker-registry'], csregWrittenBytes: bytes.csreg, registryWrittenBytes: bytes['docker-registry'], runs: times });
        targets.push({ section: 'pull', what: `pull ${img} (${kind}) → ${fmt}: time csreg / docker-registry`, measured: `${r2(c / g)}×`, target: '≤ 1.0×', pass: c / g <= 1.0 });
        log(`  ${kind} ${img} ${fmt}: csreg ${fmtMs(c)} (${fmtB(wire.csreg)}), docker-registry ${fmtMs(g)} (${fmtB(wire['docker-registry'])})${others.map((n) => `, ${n} ${fmtMs(alt[n])}`).join('')}`);
      }
    }
  }
  results.pull = rows;
  md.push('## Pull: `skopeo copy docker://… dir:|oci:` (loopback)', '',
    '**store**: the buildah-committed images. csreg runs with `--synthesize gzip`: it serves them with their layers compressed as a push by skopeo/podman compresses them (pgzip), the very blobs skopeo pushed to docker-registry (same digests); ' +
    '"tar layers" = the default `--synthesize tar` (buildah\'s own manifest of uncompressed layers: 1.35–2.1× the bytes, and `oci:` makes skopeo gzip them itself). ' +
    '**mirror**: the same images pulled back from docker-registry into a second store (what a store of pulled images holds); csreg serves their original manifests and blobs, reproduced by recompression recipes (`csreg recipes scan` ran first). ' +
    'csreg runs with its default served-blob cache (`--serve-cache-max 1G`): the unmeasured first pull makes each blob once, later pulls read the kept file. ' +
    '"cache off" = `--serve-cache-max 0`: every pull makes every blob from the store again (rebuild + pgzip on 2 cores): what any first pull costs. ' +
    'Wire = manifest + config + layers as served; written = what skopeo wrote. Median of n (after one unmeasured warm-up each).', '');
  const otherNames = [...new Set(rows.flatMap((r) => Object.keys(r.others as Record<string, number>)))];
  table(['store', 'image', 'dest', 'n', 'csreg time', 'wire', 'docker-registry time', 'wire', 'time csreg/registry', ...otherNames.flatMap((n) => [`csreg ${n}`, `${n}/registry`])],
    rows.map((r) => {
      const o = r.others as Record<string, number>;
      return [r.kind as string, r.image as string, r.format as string, ((r.runs as Record<string, number[]>).csreg).length, fmtMs(r.csregMs as number), fmtB(r.csregWireBytes as number),
        fmtMs(r.registryMs as number), fmtB(r.registryWireBytes as number), `${r2(r.ratio as number)}×`,
        ...otherNames.flatMap((n) => (o[n] === undefined ? ['–', '–'] : [fmtMs(o[n]), `${r2(o[n] / (r.registryMs as number))}×`]))];
    }));
}

// ---------------------------------------------------------------- 2. layer rebuild
/** The ways of reading an image's layers (or as many bytes) that the rebuild sections time. */
async function rebuildMethods(store: Store, info: Record<ImageKey, ImageInfo>, img: ImageKey): Promise<[string, () => Promise<number>][]> {
  const cs = ['--root', STORE.root, '--runroot', STORE.runroot, '--storage-driver', 'overlay'];
  const gocs = ['-g', STORE.root, '-R', STORE.runroot, '-s', 'overlay'];
  const { layers, size } = info[img];
  const plain = await plainFile(size);
  return [
    ['csreg storage diff', async () => { let t = 0; for (const l of layers) t += await run(...csregCommand([...cs, 'storage', 'diff', l.id, '-o', '/dev/null']), { env: CSREG_ENV }); return t; }],
    ['csreg in-process', async () => {
      const t0 = now();
      for (const l of layers) {
        let n = 0;
        for await (const c of store.layerTarChunks(l.id)) n += c.length;
        if (n !== l.diffSize) throw new Error(`layer ${l.id}: ${n} bytes, expected ${l.diffSize}`);
      }
      return now() - t0;
    }],
    ['containers-storage diff -u', async () => { let t = 0; for (const l of layers) t += await run('containers-storage', [...gocs, 'diff', '-u', l.id]); return t; }],
    ['skopeo copy containers-storage: dir:', async () => {
      const d = join(SCRATCH, 'rebuild-skopeo');
      const ms = await run('skopeo', ['copy', '-q', `containers-storage:[overlay@${STORE.root}+${STORE.runroot}]localhost/bench/${img}:1`, `dir:${d}`]);
      rmSync(d, { recursive: true, force: true });
      return ms;
    }],
    ['plain read (cat)', () => run('cat', [plain])],
    // the same files read by GNU tar (through a pipe: tar skips reading them when its output is /dev/null)
    ['GNU tar -c of the layer directories', async () => { let t = 0; for (const l of layers) t += await run('sh', ['-c', `tar -cf - -C '${join(l.storeRoot, 'overlay', l.id, 'diff')}' . | cat`]); return t; }],
  ];
}

async function benchRebuild(store: Store, info: Record<ImageKey, ImageInfo>): Promise<void> {
  log(`rebuild: ${REPS} reps`);
  const rows: Record<string, unknown>[] = [];
  for (const img of IMAGES) {
    const { layers, size, entries } = info[img];
    const methods = await rebuildMethods(store, info, img);
    const times: Record<string, number[]> = {};
    const tStart = now();
    for (let rep = 0; more(rep, REPS, tStart, 1); rep++) {
      for (const [name, fn] of methods) {
        const ms = await fn();
        if (rep > 0) (times[name] ??= []).push(ms);
      }
    }
    const med = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
    const mbs = (k: string) => size / MB / (med[k] / 1000);
    const row = { image: img, layers: layers.length, bytes: size, entries, medianMs: med, runs: times };
    rows.push(row);
    const cli = mbs('csreg storage diff');
    const go = mbs('containers-storage diff -u');
    const cat = mbs('plain read (cat)');
    log(`  ${img}: csreg ${r1(cli)} MB/s, Go ${r1(go)} MB/s, cat ${r1(cat)} MB/s, tar -c ${r1(mbs('GNU tar -c of the layer directories'))} MB/s`);
    if (img === 'large') targets.push({ section: 'rebuild', what: 'rebuild, few large files: csreg storage diff / containers-storage diff -u', measured: `${r2(cli / go)}×`, target: '≥ 1.0×', pass: cli / go >= 1.0 });
    if (img === 'small') targets.push({ section: 'rebuild', what: 'rebuild, many small files: csreg storage diff / containers-storage diff -u', measured: `${r2(cli / go)}×`, target: '≥ 1.5×', pass: cli / go >= 1.5 });
    targets.push({ section: 'rebuild', what: `rebuild ${img}: csreg storage diff / plain read of as many bytes`, measured: `${Math.round((cli / cat) * 100)}%`, target: '≥ 70%', pass: cli / cat >= 0.7 });
  }
  results.rebuild = rows;
  md.push('## Layer rebuild throughput (uncompressed tar to /dev/null)', '',
    `MB/s (10^6 bytes) and tar members/s; for the layered image, its 5 layers one after the other (process start-up counted 5 times). Page cache warm (one unmeasured round first); median of n. ` +
    '`skopeo copy` also writes the tar to a tmpfs and hashes it; the plain read is `cat` of a file of the same size; ' +
    '`tar -c` is GNU tar archiving the layers\' directories (the same files, opened and read one by one, no check) into a pipe to `cat`.', '');
  const names = ['csreg storage diff', 'csreg in-process', 'containers-storage diff -u', 'skopeo copy containers-storage: dir:', 'plain read (cat)', 'GNU tar -c of the layer directories'];
  const trows: (string | number)[][] = [];
  for (const r of rows) {
    const med = r.medianMs as Record<string, number>;
    const size = r.bytes as number;
    for (const n of names) {
      trows.push([`${r.image} (${r.layers} layer${r.layers === 1 ? '' : 's'}, ${fmtB(size)}, ${r.entries} members)`, n, (r.runs as Record<string, number[]>)[n].length, fmtMs(med[n]), r1(size / MB / (med[n] / 1000)),
        Math.round((r.entries as number) / (med[n] / 1000)), `${r2(med['containers-storage diff -u'] / med[n])}×`, `${Math.round((med['plain read (cat)'] / med[n]) * 100)}%`]);
    }
  }
  table(['layer', 'method', 'n', 'time', 'MB/s', 'members/s', 'vs Go diff', 'vs plain read'], trows);
}

// ---------------------------------------------------------------- 9. layer rebuild, page cache dropped
/** Empty the page cache (root only): files, the tools' own programs included, come from the disk again. */
function dropCaches(): boolean {
  try {
    execFileSync('sync');
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    return false;
  }
}

/**
 * What a first pull after a reboot, or of an image not used for a while, reads: the rebuild
 * with nothing in the page cache, against the Go rebuild, GNU tar and a plain read, each run
 * right after the cache was dropped. Run last: it leaves the other sections' files out of cache.
 */
async function benchRebuildCold(store: Store, info: Record<ImageKey, ImageInfo>): Promise<void> {
  const reps = Math.max(1, Math.min(REPS, 3));
  const names = ['csreg storage diff', 'containers-storage diff -u', 'GNU tar -c of the layer directories', 'plain read (cat)'];
  md.push('## Layer rebuild, page cache dropped', '');
  if (!dropCaches()) {
    log('rebuild (page cache dropped): not measured (needs root)');
    md.push('Not measured: dropping the page cache (/proc/sys/vm/drop_caches) needs root.', '');
    return;
  }
  log(`rebuild, page cache dropped: ${reps} reps`);
  const rows: Record<string, unknown>[] = [];
  const trows: (string | number)[][] = [];
  for (const img of IMAGES) {
    const { layers, size, entries } = info[img];
    const methods = (await rebuildMethods(store, info, img)).filter(([n]) => names.includes(n));
    const times: Record<string, number[]> = {};
    for (let rep = 0; rep < reps; rep++) {
      for (const [name, fn] of methods) {
        dropCaches();
        (times[name] ??= []).push(await fn());
      }
    }
    const med = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
    rows.push({ image: img, layers: layers.length, bytes: size, entries, medianMs: med, runs: times });
    const vsGo = med['containers-storage diff -u'] / med['csreg storage diff'];
    log(`  ${img}: csreg ${fmtMs(med['csreg storage diff'])}, Go ${fmtMs(med['containers-storage diff -u'])}, tar -c ${fmtMs(med['GNU tar -c of the layer directories'])}, cat ${fmtMs(med['plain read (cat)'])}`);
    targets.push({ section: 'rebuild', what: `rebuild ${img}, page cache dropped: csreg storage diff / containers-storage diff -u (throughput)`, measured: `${r2(vsGo)}×`, target: 'report', pass: null });
    for (const n of names) {
      trows.push([`${img} (${layers.length} layer${layers.length === 1 ? '' : 's'}, ${fmtB(size)}, ${entries} members)`, n, times[n].length, fmtMs(med[n]), r1(size / MB / (med[n] / 1000)),
        `${r2(med['containers-storage diff -u'] / med[n])}×`, `${Math.round((med['plain read (cat)'] / med[n]) * 100)}%`]);
    }
  }
  results.rebuildCold = rows;
  md.push('Each run right after `sync; echo 3 > /proc/sys/vm/drop_caches`: the layer\'s files, the tar-split and the tool itself come from the disk (here a virtual disk, whose host may cache it: ' +
    'what a first pull after a reboot reads). Same commands as above; median of n.', '');
  table(['layer', 'method', 'n', 'time', 'MB/s', 'vs Go diff', 'vs plain read'], trows);
}

// ---------------------------------------------------------------- 3. concurrent pulls
function runClient(base: string, pulls: string[]): Promise<ClientResult> {
  return new Promise((res, rej) => {
    const c = spawn(process.execPath, [join(REPO, 'dist/bench/client.js'), JSON.stringify({ base, pulls, timeoutMs: 600_000 })], { stdio: ['ignore', 'pipe', 'pipe'] });
    track(c);
    let o = '';
    let e = '';
    c.stdout!.on('data', (d: Buffer) => { o += d.toString(); });
    c.stderr!.on('data', (d: Buffer) => { if (e.length < 4000) e += d.toString(); });
    const timer = setTimeout(() => c.kill('SIGKILL'), 660_000);
    c.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) return rej(new Error(`client failed: ${e}`));
      try {
        res(JSON.parse(o) as ClientResult);
      } catch (err) {
        rej(err as Error);
      }
    });
  });
}

async function benchConcurrency(csreg: Csreg): Promise<void> {
  log(`concurrency: 1/8/32 clients, ${CONC_REPS} reps`);
  const rows: Record<string, unknown>[] = [];
  const servers = [['csreg', csreg.base, csreg.pid], ['docker-registry', `http://${REG}`, REG_PID]] as const;
  // every image once from each server, unmeasured: csreg's served-blob cache holds its blobs
  // whether or not the pull section ran before (else a run alone measured their making)
  for (const [, base] of servers) await runClient(base, IMAGES.map((i) => `bench/${i}:1`));
  for (const mode of ['same', 'different'] as const) {
    for (const n of [1, 8, 32]) {
      const pulls = Array.from({ length: n }, (_, i) => `bench/${mode === 'same' ? 'layered' : IMAGES[i % IMAGES.length]}:1`);
      const acc: Record<string, { wall: number[]; rate: number[]; bytes: number; ttfb: number[]; hwm: number[]; before: number[]; errors: string[] }> = {};
      const tStart = now();
      for (let rep = 0; more(rep, CONC_REPS - 1, tStart, 0); rep++) {
        for (const [name, base, pid] of rep % 2 ? [...servers].reverse() : servers) {
          resetPeak(pid);
          const before = procStatus(pid, 'VmRSS');
          const r = await runClient(base, pulls);
          const a = (acc[name] ??= { wall: [], rate: [], bytes: 0, ttfb: [], hwm: [], before: [], errors: [] });
          a.before.push(before);
          a.wall.push(r.wallMs);
          a.rate.push(r.pulls / (r.wallMs / 1000));
          a.bytes = r.bytes;
          a.ttfb.push(...r.ttfbMs);
          a.hwm.push(procStatus(pid, 'VmHWM'));
          a.errors.push(...r.errors);
        }
      }
      const row: Record<string, unknown> = { mode, clients: n };
      for (const [name] of servers) {
        const a = acc[name];
        const wall = median(a.wall);
        row[name] = {
          wallMs: wall, bytes: a.bytes, mbPerS: a.bytes / MB / (wall / 1000), pullsPerS: median(a.rate), errorCount: a.errors.length,
          ttfbP50: pct(a.ttfb, 50), ttfbP99: pct(a.ttfb, 99), peakRss: Math.max(...a.hwm), rssBefore: Math.min(...a.before), errors: a.errors.slice(0, 5), runs: a.wall,
        };
      }
      rows.push(row);
      const c = row.csreg as Record<string, number>;
      const g = row['docker-registry'] as Record<string, number>;
      log(`  ${mode} ×${n}: csreg ${r1(c.pullsPerS)} pulls/s ${r1(c.mbPerS)} MB/s RSS ${fmtB(c.peakRss)}; docker-registry ${r1(g.pullsPerS)} pulls/s ${r1(g.mbPerS)} MB/s`);
      if (n === 32) {
        targets.push({ section: 'concurrency', what: `32 concurrent pulls, ${mode} image${mode === 'same' ? '' : 's'}: completed pulls/s csreg / docker-registry`, measured: `${r2(c.pullsPerS / g.pullsPerS)}×${c.errorCount ? ` (${c.errorCount} failed pulls)` : ''}`, target: '≥ 1.0×', pass: c.pullsPerS / g.pullsPerS >= 1.0 && !c.errorCount });
        targets.push({ section: 'concurrency', what: `32 concurrent pulls, ${mode} image${mode === 'same' ? '' : 's'}: csreg peak RSS`, measured: fmtB(c.peakRss), target: '< 256 MB', pass: c.peakRss < 256 * 1024 * 1024 });
      }
    }
  }
  results.concurrency = rows;
  md.push('## Concurrent pulls (Node HTTP client in its own process: manifest, then config and layers one at a time per client)', '',
    `"same": every client pulls bench/layered:1; "different": client i pulls small, large, layered in turn. Aggregate = all pulls done; MB/s counts the bytes each server sent (the same gzip blobs: csreg runs with --synthesize gzip and its served-blob cache, warmed by one unmeasured pull of each image from each server first). TTFB = request → first body byte of each blob, over all reps. Peak RSS = VmHWM, reset before each run (clear_refs 5), max over the n runs. Median of n.`, '');
  table(['images', 'clients', 'server', 'n', 'wall', 'pulls/s', 'MB/s', 'TTFB p50', 'TTFB p99', 'peak RSS', 'errors'],
    rows.flatMap((r) => ['csreg', 'docker-registry'].map((s) => {
      const x = r[s] as Record<string, number> & { errors: string[] };
      return [r.mode as string, r.clients as number, s, (x.runs as unknown as number[]).length, fmtMs(x.wallMs), r2(x.pullsPerS), r1(x.mbPerS), fmtMs(x.ttfbP50), fmtMs(x.ttfbP99), fmtB(x.peakRss), x.errorCount ? `${x.errorCount}: ${x.errors.join('; ').slice(0, 160)}` : 0];
    })));
}

// ---------------------------------------------------------------- 4. a store of many images
async function benchMany(): Promise<void> {
  const count = Number(readFileSync(join(W, 'many/count'), 'utf8').trim());
  const repo0 = manyName(0).replace(/^localhost\//, '').split(':')[0];
  const probe = `/v2/${repo0}/manifests/t0`;
  log(`many: ${count} images, ${REPS} starts`);
  const starts: number[] = [];
  const lat: Record<string, number[]> = { tags: [], catalog: [], catalog100: [] };
  const urls: Record<string, string> = { tags: `/v2/${repo0}/tags/list`, catalog: '/v2/_catalog', catalog100: '/v2/_catalog?n=100' };
  let rss = 0;
  let tagsCount = 0;
  let repoCount = 0;
  const tStart = now();
  for (let rep = 0; more(rep, REPS, tStart, 1); rep++) {
    const c = await startCsreg(MANY, CSREG_PORT + 1, probe, [], join(W, 'state-many')); // (ports +2.. : the pull section's other csregs)
    try {
      if (rep > 0) starts.push(c.firstMs);
      if (rep === 1) {
        const t = await (await fetch(c.base + urls.tags)).json() as { tags: string[] };
        const cat = await (await fetch(c.base + urls.catalog)).json() as { repositories: string[] };
        tagsCount = t.tags.length;
        repoCount = cat.repositories.length;
        for (const [k, u] of Object.entries(urls)) {
          for (let i = 0; i < 210; i++) {
            const t0 = now();
            const r = await fetch(c.base + u, { signal: AbortSignal.timeout(30_000) });
            await r.arrayBuffer();
            if (r.status !== 200) throw new Error(`${u}: ${r.status}`);
            if (i >= 10) lat[k].push(now() - t0); // 10 warm-up requests
          }
        }
        rss = procStatus(c.pid, 'VmHWM');
      }
    } finally {
      await stopCsreg(c);
    }
  }
  const first = median(starts);
  const row = {
    images: count, repositories: repoCount, tagsInRepo: tagsCount, startToFirstManifestMs: first, startRuns: starts, peakRss: rss,
    latency: Object.fromEntries(Object.entries(lat).map(([k, v]) => [k, { median: median(v), p99: pct(v, 99), n: v.length }])),
  };
  results.many = row;
  log(`  first manifest ${fmtMs(first)}; tags/list ${fmtMs(median(lat.tags))}, catalog ${fmtMs(median(lat.catalog))}`);
  targets.push({ section: 'many', what: `${count} images: csreg start → first manifest answered`, measured: fmtMs(first), target: '< 1 s', pass: first < 1000 });
  for (const [k, label] of [['tags', 'tags/list'], ['catalog', 'catalog (all repositories)']] as const) {
    targets.push({ section: 'many', what: `${count} images: ${label} median`, measured: fmtMs(median(lat[k])), target: '< 50 ms', pass: median(lat[k]) < 50 });
    targets.push({ section: 'many', what: `${count} images: ${label} p99`, measured: fmtMs(pct(lat[k], 99)), target: '< 50 ms', pass: pct(lat[k], 99) < 50 });
  }
  md.push(`## A store of ${count} images`, '',
    `${count} image records (names localhost/bench/many/rNNNN:t0..t${TAGS_PER_REPO - 1}; ${repoCount} repositories in the catalog) sharing the layered image's 5 layers, each with its own config and manifest. ` +
    `Start-up = spawn of \`csreg serve\` → first 200 on a manifest by tag (polled every 5 ms), median of ${starts.length} starts (one unmeasured first). Latency: 200 sequential requests after 10 warm-up ones. Peak RSS after the requests: ${fmtB(rss)}.`, '');
  table(['measure', 'median', 'p99'], [
    ['start → first manifest', fmtMs(first), fmtMs(Math.max(...starts))],
    [`tags/list (${tagsCount} tags)`, fmtMs(median(lat.tags)), fmtMs(pct(lat.tags, 99))],
    [`_catalog (${repoCount} repositories)`, fmtMs(median(lat.catalog)), fmtMs(pct(lat.catalog, 99))],
    ['_catalog?n=100', fmtMs(median(lat.catalog100)), fmtMs(pct(lat.catalog100, 99))],
  ]);
  md.push('(p99 of the start-up row = slowest start.)', '');
}

// ---------------------------------------------------------------- 5. recompression
async function benchRecompress(store: Store, info: Record<ImageKey, ImageInfo>): Promise<void> {
  md.push('## Recompression (pgzip, large-file layer)', '');
  log(`recompress: ${REPS} reps`);
  const layer = info.large.layers[0];
  const gocs = ['-g', STORE.root, '-R', STORE.runroot, '-s', 'overlay'];
  const profile = PROFILES[0]; // pgzip as containers/image compresses a push
  let recipe: Measured | undefined;
  const methods: [string, () => Promise<{ digest: string; size: number }>][] = [
    // (the pool's threads are kept between runs, as a server keeps them between pulls)
    // (as a recipe thread gives pgzip the tar: in reused chunks, since it copies each into its blocks)
    ['csreg as it serves: Store.layerTarChunks → pgzip blocks on a thread pool, output hashed', async () => (await measure(store.layerTarChunks(layer.id), profile, poolFor(profile, layer.diffSize)))!],
    ['csreg serving it as an original blob by its recipe (produce: no tar hash, the output checked against its digest)', async () => {
      recipe ??= (await measure(store.layerTarChunks(layer.id), profile, poolFor(profile, layer.diffSize)))!; // (in the unmeasured first round)
      let size = 0;
      for await (const b of produce(async (_, check) => store.layerTarChunks(layer.id, { check }), profile, recipe, recipe, undefined, poolFor(profile, layer.diffSize))) size += b.length;
      return { digest: recipe.digest, size }; // (produce throws on any other digest)
    }],
    ['csreg on one thread: Store.layerTar → createPgzipStream, output hashed', async () => {
      const h = createHash('sha256');
      let size = 0;
      await pipeline(await store.layerTar(layer.id), createPgzipStream(), new Writable({ write(ch: Buffer, _e, cb) { h.update(ch); size += ch.length; cb(); } }));
      return { digest: 'sha256:' + h.digest('hex'), size };
    }],
  ];
  const t: Record<string, number[]> = { go: [] };
  const digests = new Set<string>();
  let outBytes = 0;
  const tStart = now();
  for (let rep = 0; more(rep, REPS, tStart, 1); rep++) {
    for (const [name, m] of methods) {
      const t0 = now();
      const r = await m();
      const ms = now() - t0;
      digests.add(r.digest);
      outBytes = r.size;
      if (rep > 0) (t[name] ??= []).push(ms);
    }
    const go = await run('containers-storage', [...gocs, 'diff', '-c', layer.id]);
    if (rep > 0) t.go.push(go);
  }
  const g = median(t.go);
  // Same bytes as the Go tool's pgzip? (one more, unmeasured run)
  const goFile = join(SCRATCH, 'go.gz');
  await run('containers-storage', [...gocs, 'diff', '-c', layer.id], { stdout: goFile });
  const theirs = 'sha256:' + createHash('sha256').update(readFileSync(goFile)).digest('hex');
  rmSync(goFile, { force: true });
  const identical = digests.size === 1 && digests.has(theirs);
  const served = median(t[methods[0][0]]);
  results.recompress = { available: true, layerBytes: layer.diffSize, gzipBytes: outBytes, csregMs: served, goMs: g, runs: t, csregDigests: [...digests], goDigest: theirs, identical };
  targets.push({ section: 'recompress', what: 'recompression throughput csreg (as it serves) / containers-storage diff -c (pgzip)', measured: `${r2(g / served)}×`, target: 'report', pass: null });
  targets.push({ section: 'recompress', what: 'the same, serving it as an original blob by its recipe / containers-storage diff -c', measured: `${r2(g / median(t[methods[1][0]]))}×`, target: 'report', pass: null });
  table(['method', 'time', 'MB/s (input)'], [
    ...methods.map(([name]) => [name, fmtMs(median(t[name])), r1(layer.diffSize / MB / (median(t[name]) / 1000))]),
    ['containers-storage diff -c (pgzip)', fmtMs(g), r1(layer.diffSize / MB / (g / 1000))],
  ]);
  md.push(`Output ${fmtB(outBytes)} from ${fmtB(layer.diffSize)}; median of ${t.go.length}. Output identical to the Go tool's (every csreg run): ${identical ? 'yes' : `**no** (csreg ${[...digests].map((d) => d.slice(7, 19)).join(', ')}…, Go ${theirs.slice(7, 19)}…)`}.`, '');
}

// ---------------------------------------------------------------- 6. recompression by format

/**
 * csreg's single-stream encoders (each original-blob profile but pgzip, whose blocks run on a
 * pool: section 5) against the tool that wrote such layers, on the same bytes: the first
 * FORMAT_BYTES of the many-small-files layer's tar (text, as most layers hold).
 */
const FORMAT_BYTES = 32 << 20;

async function benchFormats(store: Store, info: Record<ImageKey, ImageInfo>): Promise<void> {
  md.push('## Recompression by format', '');
  const reps = Math.min(REPS, 3);
  log(`formats: ${reps} reps`);
  const chunks: Buffer[] = [];
  let have = 0;
  for await (const c of await store.layerTar(info.small.layers[0].id)) {
    chunks.push(c as Buffer);
    have += (c as Buffer).length;
    if (have >= FORMAT_BYTES) break;
  }
  const input = Buffer.concat(chunks).subarray(0, FORMAT_BYTES);
  const file = join(SCRATCH, 'format-input');
  writeFileSync(file, input);
  const gopath = join(SCRATCH, 'gopath');
  const gogzip = join(SCRATCH, 'gogzip');
  execFileSync('go', ['build', '-o', gogzip, '.'], {
    cwd: join(REPO, 'test', 'oracles', 'gogzip'),
    env: { ...process.env, GO111MODULE: 'off', GOPATH: `${gopath}:/usr/share/gocode`, GOCACHE: join(SCRATCH, 'gocache'), GOFLAGS: '' },
    stdio: 'pipe',
  });
  const python = (level: number) => ['python3', ['-c', `import sys,zlib; c=zlib.compressobj(${level},zlib.DEFLATED,-15); sys.stdout.buffer.write(c.compress(sys.stdin.buffer.read())+c.flush())`]] as const;
  const formats: { id: string; name: string; ours: () => Uint8Array[] | Promise<Uint8Array[]>; theirs: readonly [string, readonly string[]] }[] = [];
  const encode = (e: { push(c: Uint8Array): Uint8Array[]; finish(): Uint8Array[] }) => {
    const out: Uint8Array[] = [];
    for (let i = 0; i < input.length; i += 1 << 20) out.push(...e.push(input.subarray(i, i + (1 << 20))));
    out.push(...e.finish());
    return out;
  };
  for (const level of [1, 6, 9]) {
    const p = PROFILES.find((x) => x.id === `go1.19-gzip/${level}`)!;
    formats.push({ id: p.id, name: `Go compress/gzip level ${level} (test/oracles/gogzip)`, ours: () => encode(p.create()), theirs: [gogzip, ['-level', String(level)]] });
  }
  for (const level of [6, 9]) {
    // the same stream as csreg makes it when it serves or detects a layer: its parse in segments on the block pool
    const p = PROFILES.find((x) => x.id === `go1.19-gzip/${level}`)!;
    const pool = poolFor(p, input.length)!;
    formats.push({ id: `${p.id} on the pool`, name: `Go compress/gzip level ${level} (one stream: Go's is single-threaded)`, ours: async () => {
      const out: Uint8Array[] = [];
      for await (const b of p.onPool!((async function* () { for (let i = 0; i < input.length; i += 1 << 20) yield input.subarray(i, i + (1 << 20)); })(), pool)) out.push(b);
      return out;
    }, theirs: [gogzip, ['-level', String(level)]] });
  }
  for (const level of [1, 6, 9]) {
    const p = PROFILES.find((x) => x.id === `gnu-gzip-1.12/${level}`)!;
    formats.push({ id: p.id, name: `GNU gzip -n -${level}`, ours: () => encode(p.create()), theirs: ['gzip', ['-n', `-${level}`]] });
  }
  for (const level of [6, 9]) {
    // (one row for the profiles that differ only in their gzip header: their deflate is the same)
    const ids = PROFILES.filter((x) => x.id.startsWith(`zlib-1.2/${level}+`)).map((x) => x.id);
    formats.push({ id: `${ids.join(', ')} (deflate)`, name: `zlib level ${level}, raw deflate (Python's zlib module; Java's is the same zlib)`, ours: () => encode(new ZlibDeflateEncoder(level)), theirs: python(level) });
  }
  const rows: Record<string, unknown>[] = [];
  for (const f of formats) {
    const t: { ours: number[]; theirs: number[] } = { ours: [], theirs: [] };
    let oursDigest = '';
    for (let rep = 0; rep <= reps; rep++) {
      const t0 = now();
      const parts = await f.ours();
      const ms = now() - t0;
      oursDigest = createHash('sha256').update(Buffer.concat(parts)).digest('hex');
      const theirsMs = await run(f.theirs[0], [...f.theirs[1]], { stdin: file });
      if (rep > 0) {
        t.ours.push(ms);
        t.theirs.push(theirsMs);
      }
    }
    const outFile = join(SCRATCH, 'format-output');
    await run(f.theirs[0], [...f.theirs[1]], { stdin: file, stdout: outFile });
    const theirsDigest = createHash('sha256').update(readFileSync(outFile)).digest('hex');
    const o = median(t.ours);
    const g = median(t.theirs);
    rows.push({ id: f.id, tool: f.name, csregMs: o, toolMs: g, ratio: g / o, identical: oursDigest === theirsDigest, runs: t });
    log(`  ${f.id}: csreg ${fmtMs(o)}, ${f.name} ${fmtMs(g)}${oursDigest === theirsDigest ? '' : ' (OUTPUT DIFFERS)'}`);
  }
  results.formats = { inputBytes: input.length, rows };
  table(['profile', 'the tool', 'csreg MB/s', 'tool MB/s', 'csreg / tool', 'same bytes'], rows.map((r) => [
    r.id as string, r.tool as string, r1(input.length / MB / ((r.csregMs as number) / 1000)), r1(input.length / MB / ((r.toolMs as number) / 1000)), `${r2(r.ratio as number)}×`, r.identical ? 'yes' : '**no**',
  ]));
  md.push(`Input: the first ${fmtB(input.length)} of the small-file layer's tar; csreg in-process on one thread (encoder only; "on the pool": the parse in 1 MiB segments on the block pool's 2 threads, the blocks written on the calling thread), the tool as a process reading it from a page-cached file (start-up included: a few ms; Python's ~20 ms); median of ${reps} after one warm-up. "same bytes": csreg's output equals the tool's.`, '');
}

// ---------------------------------------------------------------- 7. first pull vs push + pull
/** A docker-registry of its own on an empty directory (a push to it uploads every blob), answering on 127.0.0.1:port. */
async function startRegistry(port: number, dir: string): Promise<ChildProcess> {
  mkdirSync(join(dir, 'data'), { recursive: true });
  const config = join(dir, 'config.yml');
  writeFileSync(config, `version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'data')}\nhttp:\n  addr: 127.0.0.1:${port}\n`);
  const proc = spawn('docker-registry', ['serve', config], { stdio: 'ignore' });
  track(proc);
  for (let i = 0; i < 600; i++) {
    if (proc.exitCode !== null) break;
    if ((await httpStatus(`http://127.0.0.1:${port}/v2/`, 2000)) === 200) return proc;
    await sleep(10);
  }
  proc.kill('SIGKILL');
  throw new Error(`docker-registry on ${dir} did not start`);
}

async function stopRegistry(reg: ChildProcess): Promise<void> {
  reg.kill('SIGTERM');
  await new Promise((r) => (reg.exitCode !== null || reg.signalCode !== null ? r(null) : reg.once('exit', r)));
}

/** Time of a pull (skopeo, into `dir:d`, removed after) of bench/IMG:1 from a csreg just started on `store` with an empty state. */
async function pullFromFreshCsreg(store: typeof STORE, args: string[], port: number, img: string, d: string): Promise<number> {
  const state = join(W, 'state-first-pull');
  rmSync(state, { recursive: true, force: true });
  const cs = await startCsreg(store, port, '/v2/', args, state);
  try {
    return await run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://127.0.0.1:${port}/bench/${img}:1`, `dir:${d}`]);
  } finally {
    await stopCsreg(cs);
    rmSync(d, { recursive: true, force: true });
  }
}

/**
 * The issue's premise: without csreg, an image built here reaches a client by `podman push` to a
 * registry and a pull from it; with csreg, by a pull alone. Both start from the store only: a
 * fresh docker-registry (empty) for each push, a fresh csreg (empty state: its first pull
 * compresses every layer once) for each pull.
 */
async function benchFirstPull(): Promise<void> {
  const reps = Math.min(REPS, 3);
  log(`first pull vs push + pull: ${reps} reps`);
  const port = CSREG_PORT + 20;
  const rows: { image: string; pushMs: number; pullMs: number; pushPullMs: number; csregFirstMs: number; csregTarFirstMs: number; runs: Record<'push' | 'pull' | 'csreg' | 'csregTar', number[]> }[] = [];
  for (const img of IMAGES) {
    const t = { push: [] as number[], pull: [] as number[], csreg: [] as number[], csregTar: [] as number[] };
    const tStart = now();
    for (let rep = 0; more(rep, reps, tStart, 1); rep++) {
      const d = join(SCRATCH, 'first-pull');
      const dir = join(W, 'first-pull-registry');
      rmSync(dir, { recursive: true, force: true });
      const reg = await startRegistry(port, dir);
      let push: number, pull: number;
      try {
        // (skopeo copy containers-storage: → docker:// is podman push: the same library, compression and all)
        push = await run('skopeo', ['copy', '-q', '--dest-tls-verify=false', `containers-storage:[overlay@${STORE.root}+${STORE.runroot}]localhost/bench/${img}:1`, `docker://127.0.0.1:${port}/bench/${img}:1`]);
        pull = await run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://127.0.0.1:${port}/bench/${img}:1`, `dir:${d}`]);
      } finally {
        await stopRegistry(reg);
        rmSync(dir, { recursive: true, force: true });
        rmSync(d, { recursive: true, force: true });
      }
      const first = await pullFromFreshCsreg(STORE, ['--synthesize', 'gzip'], port, img, d);
      // (default settings: the layers as buildah stored them, uncompressed tars)
      const firstTar = await pullFromFreshCsreg(STORE, [], port, img, d);
      if (rep > 0) {
        t.push.push(push);
        t.pull.push(pull);
        t.csreg.push(first);
        t.csregTar.push(firstTar);
      }
    }
    const sum = t.push.map((p, i) => p + t.pull[i]);
    const row = { image: img, pushMs: median(t.push), pullMs: median(t.pull), pushPullMs: median(sum), csregFirstMs: median(t.csreg), csregTarFirstMs: median(t.csregTar), runs: t };
    rows.push(row);
    log(`  ${img}: push ${fmtMs(row.pushMs)} + pull ${fmtMs(row.pullMs)}, csreg first pull ${fmtMs(row.csregFirstMs)} (tar layers ${fmtMs(row.csregTarFirstMs)})`);
  }
  // pulled images by their original digests: the first pull from a fresh csreg finds the recipes
  // (the manifest request waits for them) and keeps the blobs it reproduced, which the pull reads
  const mirrorRows: { image: string; registryMs: number; csregFirstMs: number; runs: Record<'registry' | 'csreg', number[]> }[] = [];
  if (existsSync(MIRROR.root)) {
    // (layered-go6: bench/layered as docker or BuildKit push it, Go compress/gzip level 6)
    for (const img of [...IMAGES, 'layered-go6']) {
      const t = { registry: [] as number[], csreg: [] as number[] };
      const tStart = now();
      for (let rep = 0; more(rep, reps, tStart, 1); rep++) {
        const d = join(SCRATCH, 'first-pull');
        const first = await pullFromFreshCsreg(img === 'layered-go6' ? MIRROR_GO6 : MIRROR, [], port, img, d);
        const reg = await run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${REG}/bench/${img}:1`, `dir:${d}`]);
        rmSync(d, { recursive: true, force: true });
        if (rep > 0) {
          t.csreg.push(first);
          t.registry.push(reg);
        }
      }
      const row = { image: img, registryMs: median(t.registry), csregFirstMs: median(t.csreg), runs: t };
      mirrorRows.push(row);
      log(`  mirror ${img}: docker-registry ${fmtMs(row.registryMs)}, csreg first pull (recipes found on it) ${fmtMs(row.csregFirstMs)}`);
    }
  }
  results.firstPull = { built: rows, pulled: mirrorRows };
  md.push('## First pull: csreg against podman push + pull', '',
    'Without csreg, an image built on this machine reaches a client through a registry: `podman push` (here `skopeo copy containers-storage:… docker://…`, the same library: rebuild, pgzip, upload), then the client\'s pull. ' +
    'With csreg the client pulls from the store. Each measure starts from the store alone: a fresh, empty docker-registry for each push; a fresh csreg (`--synthesize gzip`, empty state) for each pull, which then compresses every layer once to learn its digest for the manifest and serves the kept blobs. ' +
    '"tar layers": a fresh csreg with default settings (`--synthesize tar`: the layers as buildah stored them, uncompressed, rebuilt from the store as they are sent and kept by the served-blob cache; more bytes on the wire, none compressed). ' +
    `Pulls with \`skopeo copy … dir:\`; median of n after one unmeasured warm-up (page cache).`, '');
  table(['image', 'n', 'push', 'pull from docker-registry', 'push + pull', 'csreg first pull', 'csreg / (push + pull)', 'csreg first pull, tar layers', 'tar layers / (push + pull)'], rows.map((r) => [
    r.image, r.runs.push.length, fmtMs(r.pushMs), fmtMs(r.pullMs), fmtMs(r.pushPullMs), fmtMs(r.csregFirstMs), `${r2(r.csregFirstMs / r.pushPullMs)}×`,
    fmtMs(r.csregTarFirstMs), `${r2(r.csregTarFirstMs / r.pushPullMs)}×`,
  ]));
  if (mirrorRows.length) {
    md.push('Pulled images (the mirror store) by their original digests: the first pull from a fresh csreg (default settings, empty state: the manifest request finds each layer\'s recipe, keeping the blobs it reproduces, and the pull reads them), against a pull of the same image from docker-registry, which holds the blobs. small, large, layered were pushed by skopeo (pgzip); layered-go6 is bench/layered as docker or BuildKit push it (Go compress/gzip level 6, BuildKit\'s config), the commonest kind of layer on public registries.', '');
    table(['image', 'n', 'docker-registry pull', 'csreg first pull', 'csreg / docker-registry'], mirrorRows.map((r) => [
      r.image, r.runs.csreg.length, fmtMs(r.registryMs), fmtMs(r.csregFirstMs), `${r2(r.csregFirstMs / r.registryMs)}×`,
    ]));
  }
}

// ---------------------------------------------------------------- 8. push
/**
 * A push into csreg (its layers extracted into the store, where podman finds the image) against
 * the same push into docker-registry (which keeps the blobs as files), and against the Go tools
 * putting the same image into an empty store (`skopeo copy dir: containers-storage:`, what
 * `podman pull` does after the download). The source is the image as docker-registry holds it
 * (skopeo's gzip layers, pushed as they are); each push goes to an empty store or registry.
 */
async function benchPush(): Promise<void> {
  const reps = Math.min(REPS, 3);
  log(`push: ${reps} reps`);
  const port = CSREG_PORT + 21;
  // A new store for each push, all removed at the end: removing 34k files just before a push
  // slowed the next one 2-3x here (ext4 mounted with discard); and a `sync` before each push.
  let stores = 0;
  const emptyStore = () => {
    const dir = join(W, 'push', `store-${stores++}`);
    mkdirSync(join(dir, 'run'), { recursive: true });
    mkdirSync(join(dir, 'root'), { recursive: true });
    execFileSync('sync');
    return { root: join(dir, 'root'), runroot: join(dir, 'run') };
  };
  const removeAll = () => {
    // the Go tools leave the overlay driver's own mount of root/overlay behind
    const mounts = readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1]).filter((m) => m?.startsWith(join(W, 'push') + '/'));
    for (const m of mounts.sort().reverse()) execFileSync('umount', ['-l', m]);
    rmSync(join(W, 'push'), { recursive: true, force: true });
  };
  removeAll();
  const rows: { image: string; csregMs: number; registryMs: number; goMs: number; runs: Record<'csreg' | 'registry' | 'go', number[]> }[] = [];
  try {
    for (const img of IMAGES) {
      const src = join(SCRATCH, `push-${img}`);
      await run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${REG}/bench/${img}:1`, `dir:${src}`]);
      const dest = `docker://127.0.0.1:${port}/bench/${img}:1`;
      const t = { csreg: [] as number[], registry: [] as number[], go: [] as number[] };
      const tStart = now();
      for (let rep = 0; more(rep, reps, tStart, 1); rep++) {
        let target = emptyStore();
        const cs = await startCsreg(target, port, '/v2/', ['--allow-push'], join(target.root, '..', 'state'));
        let c: number;
        try {
          c = await run('skopeo', ['copy', '-q', '--dest-tls-verify=false', `dir:${src}`, dest]);
        } finally {
          await stopCsreg(cs);
        }
        // the pushed image is in the store, as podman sees it
        execFileSync('podman', ['--root', target.root, '--runroot', target.runroot, '--storage-driver', 'overlay', 'image', 'exists', `localhost/bench/${img}:1`]);
        target = emptyStore();
        const go = await run('skopeo', ['copy', '-q', `dir:${src}`, `containers-storage:[overlay@${target.root}+${target.runroot}]localhost/bench/${img}:1`]);
        const reg = await startRegistry(port, join(emptyStore().root, 'registry'));
        let r: number;
        try {
          r = await run('skopeo', ['copy', '-q', '--dest-tls-verify=false', `dir:${src}`, dest]);
        } finally {
          await stopRegistry(reg);
        }
        if (rep > 0) {
          t.csreg.push(c);
          t.go.push(go);
          t.registry.push(r);
        }
      }
      rmSync(src, { recursive: true, force: true });
      const row = { image: img, csregMs: median(t.csreg), registryMs: median(t.registry), goMs: median(t.go), runs: t };
      rows.push(row);
      log(`  ${img}: csreg ${fmtMs(row.csregMs)}, docker-registry ${fmtMs(row.registryMs)}, skopeo into containers-storage ${fmtMs(row.goMs)}`);
      targets.push({ section: 'push', what: `push ${img} (skopeo, gzip layers): time csreg (into its store) / docker-registry (blob files)`, measured: `${r2(row.csregMs / row.registryMs)}×`, target: 'report', pass: null });
    }
  } finally {
    removeAll();
  }
  results.push = rows;
  md.push('## Push: `skopeo copy dir:… docker://…`', '',
    'The image as docker-registry holds it (gzip layers) pushed to an empty csreg store, which extracts each layer and records its tar-split (the image then in `podman images`), and to an empty docker-registry, which keeps the blobs as files; beside them, the Go tools putting the same image into an empty store (`skopeo copy dir: containers-storage:`, what `podman pull` does once the blobs are downloaded). Median of n after one unmeasured warm-up.', '');
  table(['image', 'n', 'csreg push', 'docker-registry push', 'csreg / docker-registry', 'skopeo → containers-storage (Go)', 'csreg / Go'], rows.map((r) => [
    r.image, r.runs.csreg.length, fmtMs(r.csregMs), fmtMs(r.registryMs), `${r2(r.csregMs / r.registryMs)}×`, fmtMs(r.goMs), `${r2(r.csregMs / r.goMs)}×`,
  ]));
}

// ---------------------------------------------------------------- machine
function machine(): Record<string, string | number> {
  const ver = (c: string, a: string[]) => out(c, a).split('\n')[0];
  return {
    date: new Date().toISOString(),
    nproc: cpus().length,
    cpu: cpus()[0]?.model ?? '?',
    memory: `${Math.round(totalmem() / 2 ** 30)} GiB`,
    kernel: release(),
    loadavgAtStart: loadavg().map(r2).join(' '),
    node: process.version,
    skopeo: ver('skopeo', ['--version']),
    podman: ver('podman', ['--version']),
    buildah: ver('buildah', ['--version']),
    'containers-storage': ver('dpkg-query', ['-W', '-f=${Version}', 'containers-storage']),
    'docker-registry': ver('docker-registry', ['--version']),
    scale: SCALE + (PROFILE ? ' (under --cpu-prof: timings not comparable)' : ''),
    reps: REPS,
    concurrencyReps: CONC_REPS,
    measureBudgetS: BUDGET_MS / 1000,
  };
}

async function main(): Promise<void> {
  mkdirSync(SCRATCH, { recursive: true });
  const m = machine();
  const store = Store.open({ root: STORE.root, runroot: STORE.runroot, driver: 'overlay' });
  const info = await storeInfo(store);
  results.images = Object.fromEntries(IMAGES.map((k) => [k, { ref: info[k].ref, layers: info[k].layers.length, bytes: info[k].size, members: info[k].entries }]));
  let csreg: Csreg | undefined;
  const t0 = now();
  try {
    // each csreg starts with an empty state directory: no recipes, nothing kept
    const fresh = (name: string) => {
      const d = join(W, `state-${name}`);
      rmSync(d, { recursive: true, force: true });
      return d;
    };
    const probe = '/v2/bench/layered/manifests/1';
    if (want('pull') || want('concurrency')) csreg = await startCsreg(STORE, CSREG_PORT, probe, ['--synthesize', 'gzip'], fresh('store'));
    if (want('pull')) {
      const extra: Csreg[] = [];
      try {
        const start = async (store: typeof STORE, args: string[], state: string) => {
          const c = await startCsreg(store, CSREG_PORT + 2 + extra.length, probe, args, state);
          extra.push(c);
          return c.base.slice(7);
        };
        const srv: PullServers = { store: { csreg: csreg!.base.slice(7) }, mirror: {} };
        srv.store['tar layers'] = await start(STORE, [], fresh('store-tar'));
        srv.store['cache off'] = await start(STORE, ['--synthesize', 'gzip', '--serve-cache-max', '0'], fresh('store-uncached'));
        if (existsSync(MIRROR.root)) {
          const state = fresh('mirror');
          log('mirror store: csreg recipes scan');
          await run(...csregCommand(['--root', MIRROR.root, '--runroot', MIRROR.runroot, '--storage-driver', 'overlay', 'recipes', 'scan', '--state-dir', state]));
          execFileSync('cp', ['-a', state, fresh('mirror-uncached')]);
          srv.mirror.csreg = await start(MIRROR, [], state);
          srv.mirror['cache off'] = await start(MIRROR, ['--serve-cache-max', '0'], join(W, 'state-mirror-uncached'));
        }
        await benchPull(srv);
      } finally {
        for (const c of extra) await stopCsreg(c);
      }
    }
    if (want('rebuild')) await benchRebuild(store, info);
    if (want('concurrency')) await benchConcurrency(csreg!);
    if (want('recompress')) await benchRecompress(store, info);
    if (want('formats')) await benchFormats(store, info);
    if (want('first')) await benchFirstPull();
    if (want('push')) await benchPush();
    if (csreg) await stopCsreg(csreg);
    csreg = undefined;
    if (want('many')) await benchMany();
    if (want('cold')) await benchRebuildCold(store, info);
  } finally {
    if (csreg) await stopCsreg(csreg);
  }
  m.loadavgAtEnd = loadavg().map(r2).join(' ');
  m.durationS = Math.round((now() - t0) / 1000);
  results.machine = m;
  results.targets = targets;

  const head: string[] = [`# csreg benchmark (${m.date.toString().slice(0, 16).replace('T', ' ')} UTC, scale ${SCALE})`, ''];
  head.push('| machine | |', '|---|---|');
  for (const [k, v] of Object.entries(m)) head.push(`| ${k} | ${v} |`);
  head.push('', '## Images', '');
  head.push('| image | layers | uncompressed | tar members | content |', '|---|---|---|---|---|');
  for (const k of IMAGES) head.push(`| bench/${k}:1 | ${info[k].layers.length} | ${fmtB(info[k].size)} | ${info[k].entries} | ${DESCR[k]} |`);
  head.push('', '## Targets', '', '| section | what | measured | target | result |', '|---|---|---|---|---|');
  for (const t of targets) head.push(`| ${t.section} | ${t.what} | ${t.measured} | ${t.target} | ${mark(t.pass)} |`);
  head.push('');
  const dir = join(REPO, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const base = env.RESULTS_NAME ?? 'latest';
  writeFileSync(join(dir, `${base}.json`), JSON.stringify(results, null, 2) + '\n');
  writeFileSync(join(dir, `${base}.md`), [...head, ...md].join('\n'));
  process.stdout.write([...head].join('\n') + '\n');
  log(`wrote bench/results/${base}.json and ${base}.md (${m.durationS} s)`);
}

main().then(() => process.exit(0), (e: Error) => {
  log(`failed: ${e.stack ?? e.message}`);
  process.exit(1);
});
void createReadStream;
