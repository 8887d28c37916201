// The served-blob cache (oci/served.ts): a layer rebuilt from the store is made once for all
// concurrent requests, kept for later ones, and never served when it misses its digest.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, fsyncSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statfsSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { Store } from '../src/storage/store.js';
import { startRegistry, type RunningRegistry } from '../src/registry/server.js';
import { createLogger } from '../src/log.js';
import { ServedBlobs, servedSpoolReads } from '../src/oci/served.js';
import { collect, loadFixtures, openPaths, repoRoot, roomToKeep, run, sha, storeArgs, type FixtureStore } from './fixtures.js';
import { readCached, returnFreedBuffers } from '../src/storage/syscalls.js';
import { KeptFile } from '../src/oci/blob-cache.js';
import { sendFile } from '../src/registry/send-file.js';
import { createServer, get as httpGet } from 'node:http';
import type { AddressInfo } from 'node:net';

const fx = loadFixtures();
const work = mkdtempSync(join(tmpdir(), 'csreg-served-'));
const servers: RunningRegistry[] = [];
after(async () => {
  for (const s of servers) await s.close(100);
  rmSync(work, { recursive: true, force: true });
});

/** A private copy of the vfs fixture store (tests change its files). */
function copyStore(name: string): FixtureStore {
  const d = join(work, name);
  execFileSync('mkdir', ['-p', d]);
  execFileSync('cp', ['-a', fx.stores.vfs.root, join(d, 'root')]);
  rmSync(join(d, 'root', 'libpod'), { recursive: true, force: true });
  return { root: join(d, 'root'), runroot: join(d, 'run'), driver: 'vfs' };
}

/** csreg on a store with the served cache on; counts how often a layer tar is made from the store. */
async function serve(s: FixtureStore, maxBytes = 1 << 30) {
  const logs: string[] = [];
  const store = Store.open(s);
  const made = { count: 0 };
  const layerTar = store.layerTar.bind(store);
  store.layerTar = (id, opts) => {
    made.count++;
    return layerTar(id, opts);
  };
  const state = join(work, `state-${servers.length}`);
  const out = new Writable({ write(c, _e, cb) { logs.push(String(c)); cb(); } });
  const reg = await startRegistry({ store, log: createLogger({ out, level: 'debug' }), addr: '127.0.0.1:0', stateDir: state, servedCacheMaxBytes: maxBytes });
  servers.push(reg);
  const snap = await store.snapshot();
  const layer = snap.layerChain(snap.image('localhost/csreg/base:1')!.topLayer).layers[0];
  const url = `${reg.url}/v2/localhost/csreg/base/blobs/${layer.diffDigest}`;
  const kept = join(state, 'served', 'blobs', 'sha256', layer.diffDigest!.slice(7));
  const scratch = join(state, 'served', 'blobs', 'tmp');
  return { reg, store, made, logs, layer, url, kept, scratch, state };
}

async function body(url: string, headers: Record<string, string> = {}): Promise<Buffer> {
  const r = await fetch(url, { headers });
  assert.ok(r.ok, `${url}: ${r.status}`);
  return Buffer.from(await r.arrayBuffer());
}

const settle = () => new Promise((r) => setTimeout(r, 100));
const empty = (dir: string) => !existsSync(dir) || readdirSync(dir).length === 0;

test('concurrent pulls of a layer make it once; later pulls, ranges and skopeo read the kept file', { skip: roomToKeep(work) }, async () => {
  const s = await serve(fx.stores.vfs);
  const bodies = await Promise.all(Array.from({ length: 8 }, () => body(s.url)));
  for (const b of bodies) assert.equal(sha(b), s.layer.diffDigest);
  assert.equal(s.made.count, 1, 'one rebuild for 8 concurrent requests');
  await settle();
  assert.ok(existsSync(s.kept), 'the rebuilt tar is kept');
  assert.ok(empty(s.scratch), 'no file left half-made');
  const shown = JSON.parse(await run(process.execPath, [join(repoRoot(), 'dist', 'src', 'cli', 'main.js'), ...storeArgs(fx.stores.vfs), 'cache', '--state-dir', s.state, '--json'])) as { served: { blobs: number; items: { digest: string; size: number }[] } };
  assert.deepEqual(shown.served.items.map((b) => [b.digest, b.size]), [[s.layer.diffDigest, s.layer.diffSize]], 'csreg cache shows what is kept');
  assert.equal(sha(await body(s.url)), s.layer.diffDigest);
  const mid = Math.floor(bodies[0].length / 2);
  assert.ok((await body(s.url, { Range: `bytes=${mid}-${mid + 99_999}` })).equals(bodies[0].subarray(mid, mid + 100_000)));
  assert.equal(s.made.count, 1, 'repeat and range pulls come from the kept file');
  const host = s.reg.url.slice('http://'.length);
  const dest = join(work, 'pulled');
  await run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${host}/localhost/csreg/base:1`, `dir:${dest}`]);
  assert.equal(sha(readFileSync(join(dest, s.layer.diffDigest!.slice(7)))), s.layer.diffDigest, 'skopeo verified and wrote the layer');
});

test('a layer that fails verification while being made: every transfer breaks, nothing is kept, the next request makes it again', { skip: roomToKeep(work) }, async () => {
  const st = copyStore('bad-layer');
  const s = await serve(st);
  const victim = join(s.store.contentRoots(s.layer)[0], 'data', 'large.bin');
  const good = readFileSync(victim);
  const bad = Buffer.from(good);
  bad[bad.length - 5] ^= 1;
  writeFileSync(victim, bad);
  const results = await Promise.allSettled(Array.from({ length: 4 }, () => body(s.url)));
  assert.ok(results.every((r) => r.status === 'rejected'), 'no reader gets a clean end');
  await settle();
  assert.ok(!existsSync(s.kept) && empty(s.scratch), 'nothing kept, nothing left behind');
  assert.ok(s.logs.some((l) => l.includes('did not verify') && l.includes(s.layer.id)), 'the log names the layer');
  writeFileSync(victim, good);
  assert.equal(sha(await body(s.url)), s.layer.diffDigest);
  await settle();
  assert.ok(existsSync(s.kept));
});

test('a kept file changed on disk is never served; it is made again from the store', { skip: roomToKeep(work) }, async () => {
  const s = await serve(fx.stores.vfs);
  assert.equal(sha(await body(s.url)), s.layer.diffDigest);
  await settle();
  assert.equal(sha(await body(s.url)), s.layer.diffDigest, 'read (and trusted) from the kept file');
  assert.equal(s.made.count, 1);
  const fd = openSync(s.kept, 'r+');
  writeSync(fd, Buffer.from('tampered'), 0, 8, 4096);
  closeSync(fd);
  await assert.rejects(body(s.url), 'a broken transfer, not wrong bytes');
  await settle();
  assert.equal(sha(await body(s.url)), s.layer.diffDigest, 'made again');
  assert.equal(s.made.count, 2);
});

test('a blob larger than the cache limit is made for each request and not kept', async () => {
  const s = await serve(fx.stores.vfs, 1 << 20);
  assert.ok(s.layer.diffSize! > 1 << 20);
  const bodies = await Promise.all([body(s.url), body(s.url)]);
  for (const b of bodies) assert.equal(sha(b), s.layer.diffDigest);
  assert.equal(s.made.count, 2);
  await settle();
  assert.ok(!existsSync(s.kept));
});

test('a reader of a blob being made gets its last byte only once the maker has ended cleanly', { skip: roomToKeep(work) }, async () => {
  const served = new ServedBlobs(join(work, 'unit'), { maxBytes: 1 << 30 });
  const data = randomBytes(1 << 20);
  const maker = new Readable({ read() {} });
  const reader = (await served.open(sha(data), data.length, async () => maker)) as Readable;
  let received = 0;
  reader.on('data', (c: Buffer) => (received += c.length));
  const ended = new Promise<void>((resolve, reject) => reader.on('end', resolve).on('error', reject));
  maker.push(data); // every byte, but the maker has not said it is done
  await settle();
  assert.equal(received, data.length - 1, 'all but the last byte');
  maker.destroy(new Error('failed after its last byte'));
  await assert.rejects(ended, /failed after its last byte/);
  assert.equal(received, data.length - 1);
});

/**
 * A maker giving `data` in 1 MiB chunks as they are asked for (as a layer rebuild does); it
 * stops after `holdAt` chunks until release().
 */
function chunkMaker(data: Buffer, holdAt = Infinity) {
  let given = 0;
  let held = false;
  let released = false;
  const next = () => {
    if (given * (1 << 20) >= data.length) return void maker.push(null);
    maker.push(data.subarray(given << 20, (given + 1) << 20));
    given++;
  };
  const maker = new Readable({
    highWaterMark: 1 << 20,
    read() {
      if (given === holdAt && !released) held = true;
      else next();
    },
  });
  return {
    maker,
    given: () => given,
    release: () => {
      released = true;
      if (held) next();
    },
  };
}

test('a layer of a buildah store, made for its first request: that request reads it from memory, verified, and it is kept', { skip: roomToKeep(work) }, async () => {
  const s = await serve(fx.stores.vfs);
  const before = servedSpoolReads();
  assert.equal(sha(await body(s.url)), s.layer.diffDigest);
  const after = servedSpoolReads();
  assert.ok(after.memory > before.memory, `reads from memory: ${after.memory - before.memory} (from the file: ${after.file - before.file})`);
  await settle();
  assert.ok(existsSync(s.kept), 'kept');
  assert.equal(s.made.count, 1);
  assert.equal(servedSpoolReads().held, 0, 'nothing held once made');
});

test('a reader close behind the maker takes its bytes from memory, a late one reads the file; both get every byte', { skip: roomToKeep(work) }, async () => {
  const served = new ServedBlobs(join(work, 'unit-window'), { maxBytes: 1 << 30 });
  const data = randomBytes(24 << 20);
  const digest = sha(data);
  const m = chunkMaker(data, 16);
  const before = servedSpoolReads();
  const first = (await served.open(digest, data.length, async () => m.maker)) as Readable;
  const firstBytes = collect(first);
  while (m.given() < 16) await settle();
  await settle(); // written, and the first chunks out of the 8 MiB window
  const late = (await served.open(digest, data.length, async () => assert.fail('made twice'))) as Readable;
  const lateBytes = collect(late);
  m.release();
  assert.ok((await firstBytes).equals(data), 'the first reader has every byte');
  assert.ok((await lateBytes).equals(data), 'the late reader has every byte');
  const after = servedSpoolReads();
  assert.ok(after.memory - before.memory >= 16, `reads from memory: ${after.memory - before.memory}`);
  assert.ok(after.file - before.file >= 1, `reads from the file: ${after.file - before.file}`);
  await settle();
  assert.equal(served.cache.size(digest), data.length, 'kept');
});

test('the maker waits for a reader that falls a window behind, but not for one that left, nor past its time budget', { skip: roomToKeep(work) }, async () => {
  const served = new ServedBlobs(join(work, 'unit-pace'), { maxBytes: 1 << 30 });
  for (const ending of ['reader leaves', 'budget runs out'] as const) {
    const data = randomBytes(32 << 20);
    const digest = sha(data);
    const m = chunkMaker(data);
    const reader = (await served.open(digest, data.length, async () => m.maker)) as Readable;
    reader.pause(); // (it takes nothing)
    await settle();
    assert.ok(m.given() <= 12, `${ending}: the maker waits for its reader (${m.given()} of 32 chunks made)`);
    assert.equal(served.cache.size(digest), undefined, `${ending}: not kept yet`);
    if (ending === 'reader leaves') reader.destroy();
    const t0 = Date.now();
    while (served.cache.size(digest) === undefined && Date.now() - t0 < 5000) await settle();
    assert.equal(served.cache.size(digest), data.length, `${ending}: made and kept`);
    if (ending === 'budget runs out') {
      assert.ok(Date.now() - t0 < 3000, `${ending}: within the 2 s budget (${Date.now() - t0} ms)`);
      reader.destroy();
    }
  }
});

test('many blobs made at once share a bounded memory: their readers read the file beyond it, and all get every byte', { skip: roomToKeep(work) }, async () => {
  const served = new ServedBlobs(join(work, 'unit-many'), { maxBytes: 1 << 30 });
  const blobs = Array.from({ length: 8 }, () => randomBytes(24 << 20));
  const readers: Readable[] = [];
  for (const data of blobs) {
    const r = (await served.open(sha(data), data.length, async () => chunkMaker(data).maker)) as Readable;
    r.pause(); // slow clients: every maker would wait for its reader with a full window
    readers.push(r);
  }
  await settle();
  let most = servedSpoolReads().held;
  assert.ok(most <= 48 << 20, `held ${most >> 20} MiB for 8 blobs being made (32 MiB for all, one window over it, a chunk each)`);
  const got = await Promise.all(readers.map(async (r) => {
    const watch = setInterval(() => (most = Math.max(most, servedSpoolReads().held)), 5);
    try {
      return await collect(r.resume());
    } finally {
      clearInterval(watch);
    }
  }));
  got.forEach((b, i) => assert.ok(b.equals(blobs[i]), `blob ${i}: every byte`));
  assert.ok(most <= 48 << 20, `at most ${most >> 20} MiB held`);
  await settle();
  assert.equal(servedSpoolReads().held, 0, 'nothing held once made');
  blobs.forEach((b) => assert.equal(served.cache.size(sha(b)), b.length, 'kept'));
});

test('csreg serve can tell glibc to return freed buffers (the mallopt binding works)', () => {
  assert.equal(returnFreedBuffers(), true);
});

/** A directory on a disk (not tmpfs, whose pages are never evicted), for the page-cache tests. */
const diskDir = mkdtempSync(join('/var/tmp', 'csreg-served-'));
after(() => rmSync(diskDir, { recursive: true, force: true }));
const TMPFS_MAGIC = 0x01021994;
const onTmpfs = statfsSync(diskDir).type === TMPFS_MAGIC;

/** Write a file and have its pages dropped from the page cache (written back first: dirty pages stay). */
function writeEvicted(path: string, data: Buffer): void {
  writeFileSync(path, data);
  const fd = openSync(path, 'r+');
  fsyncSync(fd);
  closeSync(fd);
  execFileSync('dd', [`if=${path}`, 'iflag=nocache', 'count=0'], { stdio: 'ignore' }); // posix_fadvise(DONTNEED)
}

/** Read a file whole (into the page cache), then drop MiBs [skip, skip + count) of it again. */
function evictMiB(path: string, skip: number, count: number): void {
  readFileSync(path);
  execFileSync('dd', [`if=${path}`, 'of=/dev/null', 'iflag=nocache', 'bs=1M', `skip=${skip}`, `count=${count}`, 'status=none']);
}

test('readCached reads what the page cache holds, and nothing that would wait for the disk', (t) => {
  const path = join(diskDir, 'cached');
  const data = randomBytes(3 << 20);
  writeFileSync(path, data);
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(1 << 20);
    assert.equal(readCached(fd, buf, buf.length, 1 << 20), 1 << 20);
    assert.ok(buf.equals(data.subarray(1 << 20, 2 << 20)), 'the bytes at that offset');
    assert.equal(readCached(fd, buf, 100, data.length - 10), 10, 'up to the end');
    assert.ok(buf.subarray(0, 10).equals(data.subarray(-10)));
    assert.equal(readCached(fd, buf, 10, data.length), 0, 'at the end');
    if (onTmpfs) return t.skip(`${diskDir} is on tmpfs: its pages cannot be evicted`);
    writeEvicted(path, data);
    assert.equal(readCached(fd, buf, buf.length, 0), -1, 'evicted: nothing read (the kernel would have waited for the disk)');
    // only the second MiB evicted: a read across it gets the cached part before it
    evictMiB(path, 1, 1);
    const two = Buffer.alloc(2 << 20);
    assert.equal(readCached(fd, two, two.length, 512 << 10), 512 << 10, 'the cached half MiB before the evicted one');
    assert.ok(two.subarray(0, 512 << 10).equals(data.subarray(512 << 10, 1 << 20)));
  } finally {
    closeSync(fd);
  }
});

test('kept files sent with reused buffers: concurrent transfers, ranges and clients that leave all get exactly their bytes', async () => {
  const files = [randomBytes(12 << 20), randomBytes((1 << 20) + 123), randomBytes(5000)].map((data, i) => {
    const path = join(i ? work : diskDir, `send-${i}`);
    writeFileSync(path, data);
    return { path, data };
  });
  const server = createServer((req, res) => {
    const f = files[Number(req.url!.slice(1, 2))];
    const [start, end] = req.url!.slice(3).split('-').map(Number);
    res.writeHead(200, { 'Content-Length': end - start });
    void sendFile(res, new KeptFile(f.path, start, end)).catch(() => res.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  try {
    const get = (i: number, start: number, end: number) => fetch(`http://127.0.0.1:${port}/${i}/${start}-${end}`);
    // clients that leave mid-transfer: their buffers must not come back while in use
    for (let k = 0; k < 6; k++) {
      const r = await get(0, 0, files[0].data.length);
      const reader = r.body!.getReader();
      await reader.read();
      await reader.cancel();
    }
    // the largest file out of the page cache: its transfers start with reads through the thread pool
    if (!onTmpfs) {
      // (once the transfers whose clients left have closed it: a read of theirs still in flight
      // would bring its pages back)
      const openHere = () => openPaths().includes(files[0].path);
      for (let i = 0; i < 500 && openHere(); i++) await new Promise((r) => setTimeout(r, 10));
      writeEvicted(files[0].path, files[0].data);
      const fd = openSync(files[0].path, 'r');
      assert.equal(readCached(fd, Buffer.alloc(4096), 4096, 0), -1, 'evicted before the transfers');
      closeSync(fd);
    }
    const jobs: Promise<void>[] = [];
    for (let k = 0; k < 24; k++) {
      const i = k % 3;
      const size = files[i].data.length;
      const start = k < 12 ? 0 : (k * 7919) % size;
      const end = k < 12 ? size : Math.min(size, start + 1 + ((k * 104729) % size));
      jobs.push(get(i, start, end).then(async (r) => {
        const got = Buffer.from(await r.arrayBuffer());
        assert.equal(sha(got), sha(files[i].data.subarray(start, end)), `file ${i} [${start}, ${end})`);
      }));
    }
    // a slow client: the socket takes a write only later, and its buffer must wait for that
    jobs.push(new Promise<void>((resolve, reject) => {
      httpGet(`http://127.0.0.1:${port}/0/0-${files[0].data.length}`, (r) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => {
          chunks.push(c);
          r.pause();
          setTimeout(() => r.resume(), 2);
        });
        r.on('end', () => {
          try {
            assert.equal(sha(Buffer.concat(chunks)), sha(files[0].data), 'slow client');
            resolve();
          } catch (e) {
            reject(e as Error);
          }
        });
      }).on('error', reject);
    }));
    await Promise.all(jobs);
    if (!onTmpfs) {
      // pieces partly cached: the rest of each read through the thread pool, at the right place
      evictMiB(files[0].path, 1, 1);
      evictMiB(files[0].path, 10, 1);
      const start = (512 << 10) + 77;
      const got = Buffer.from(await (await get(0, start, files[0].data.length)).arrayBuffer());
      assert.equal(sha(got), sha(files[0].data.subarray(start)), 'a transfer over a partly evicted file');
    }
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});
