// Lock compatibility with containers/storage: podman and csreg exclude each other through
// the same fcntl locks, and a change made by podman is seen through the lock-file token.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LockFile } from '../src/storage/lockfile.js';
import { Store } from '../src/storage/store.js';
import { copyStore, loadFixtures, storeArgs } from './fixtures.js';

const fx = loadFixtures();

test('podman waits while csreg holds the images lock for writing', async (t) => {
  const c = copyStore(fx.stores.vfs);
  t.after(() => rmSync(c.dir, { recursive: true, force: true }));
  const lock = new LockFile(join(c.root, 'vfs-images', 'images.lock'));
  await lock.lockWrite();
  const started = Date.now();
  const podman = spawn('podman', [...storeArgs(c), 'images', '-q'], { stdio: 'ignore' });
  const exited = new Promise<number>((res) => podman.on('exit', (code) => res(code ?? -1)));
  await new Promise((r) => setTimeout(r, 1500));
  lock.unlockWrite();
  assert.equal(await exited, 0);
  assert.ok(Date.now() - started >= 1500, 'podman finished while csreg held the lock');
});

test('csreg waits while another process holds a POSIX write lock (as the Go library takes)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'csreg-lock-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'layers.lock');
  // Python's lockf is the same fcntl(F_SETLKW) record lock c/storage uses.
  const holder = spawn('python3', ['-c', `import fcntl,time,sys\nf=open(${JSON.stringify(path)},'a+')\nfcntl.lockf(f,fcntl.LOCK_EX)\nprint('locked',flush=True)\ntime.sleep(1.2)`], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((res) => holder.stdout.once('data', () => res()));
  const lock = new LockFile(path);
  const started = Date.now();
  await lock.lockRead();
  const waited = Date.now() - started;
  lock.unlockRead();
  assert.ok(waited >= 800, `read lock taken after ${waited} ms while a writer held it`);
  // Readers in one process share the OS lock; a writer waits for all of them.
  await lock.lockRead();
  await lock.lockRead();
  let wrote = false;
  const w = lock.lockWrite().then(() => { wrote = true; });
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(wrote, false);
  lock.unlockRead();
  lock.unlockRead();
  await w;
  lock.touch();
  assert.equal(lock.token().length, 64);
  lock.unlockWrite();
});

test('a tag added and an image removed by podman show up on the next snapshot, without reopening', async (t) => {
  const c = copyStore(fx.stores.vfs);
  t.after(() => rmSync(c.dir, { recursive: true, force: true }));
  const store = Store.open(c);
  const before = await store.snapshot();
  const img = before.images.find((i) => i.names.length > 0 && !before.containers.some((k) => k.image === i.id))!;
  assert.equal(await store.snapshot(), before, 'an unchanged store is not reloaded');
  execFileSync('podman', [...storeArgs(c), 'tag', img.id, 'localhost/csreg/retagged:7']);
  const after = await store.snapshot();
  assert.equal(after.image('localhost/csreg/retagged:7')?.id, img.id);
  execFileSync('podman', [...storeArgs(c), 'rmi', '-f', 'localhost/csreg/retagged:7', ...img.names]);
  const gone = await store.snapshot();
  assert.equal(gone.image(img.id), undefined);
});
