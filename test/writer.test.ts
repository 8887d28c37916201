// The store writer: a store written only by csreg must be read by podman, skopeo, buildah and
// the Go containers-storage tool as if podman had pulled the image; hostile input leaves
// nothing behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createReadStream, linkSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, readdirSync, existsSync, utimesSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { Readable } from 'node:stream';
import { Store } from '../src/storage/store.js';
import { StoreWriter, chainLayerId } from '../src/storage/writer.js';
import { ExtractError } from '../src/storage/extract.js';
import { ThreadedExtractor } from '../src/storage/extract-thread.js';
import { readTar } from '../src/storage/tar.js';
import type { Worker } from 'node:worker_threads';
import { SyscallError } from '../src/storage/syscalls.js';
import { buildahRun, copyStore, loadFixtures, storeArgs, csRef, exportImage, freshStore, removeStore, tarEntry, paxRecord, sha } from './fixtures.js';

const fx = loadFixtures();

for (const driver of ['overlay', 'vfs'] as const) {
  test(`a store written by csreg (${driver}) is read by podman, skopeo, buildah and containers-storage`, async (t) => {
    const src = exportImage(fx.stores.overlay, 'localhost/csreg/derived:1');
    const s = freshStore(driver);
    t.after(() => {
      rmSync(src.dir, { recursive: true, force: true });
      removeStore(s);
    });
    execFileSync('mkdir', ['-p', s.root, s.runroot]);
    const store = Store.open(s);
    const w = new StoreWriter(store);
    const config = JSON.parse(src.config.toString()) as { rootfs: { diff_ids: string[] } };
    let parent: string | undefined;
    for (const [i, file] of src.layers.entries()) {
      const diffId = config.rootfs.diff_ids[i];
      const id = chainLayerId(parent, diffId);
      // The first layer goes in gzip-compressed (by Node), the others as plain tars.
      const blob = i === 0 ? Readable.from([gzipSync(readFileSync(file))]) : createReadStream(file);
      const layer = await w.createLayer(blob, { id, parent, expectedDiffDigest: diffId });
      assert.equal(layer.diffDigest, diffId);
      assert.equal(layer.compression, i === 0 ? 2 : 0);
      parent = id;
    }
    const imageId = sha(src.config).slice(7);
    const manifestDigest = sha(src.manifest);
    await w.createImage({
      id: imageId, topLayer: parent, names: ['localhost/written/derived:1'],
      bigData: [
        { key: `sha256:${imageId}`, data: src.config },
        { key: `manifest-${manifestDigest}`, data: src.manifest },
        { key: 'manifest', data: src.manifest },
      ],
    });
    const c = await w.createContainer({ image: imageId, names: ['csreg-written-ctr'] });

    // podman and the Go tool see it all
    const images = JSON.parse(execFileSync('podman', [...storeArgs(s), 'images', '--format', 'json'], { encoding: 'utf8' })) as { Id: string; Names: string[] }[];
    assert.deepEqual(images.map((i) => [i.Id, i.Names]), [[imageId, ['localhost/written/derived:1']]]);
    const goLayers = JSON.parse(execFileSync('containers-storage', ['--graph', s.root, '--run', s.runroot, '--storage-driver', driver, 'layers', '--json'], { encoding: 'utf8' })) as { id: string }[];
    assert.equal(goLayers.length, src.layers.length + 1, 'image layers and the container layer');
    const goContainers = JSON.parse(execFileSync('containers-storage', ['--graph', s.root, '--run', s.runroot, '--storage-driver', driver, 'containers', '--json'], { encoding: 'utf8' })) as { id: string }[];
    assert.deepEqual(goContainers.map((x) => x.id), [c.id]);
    for (const [i, file] of src.layers.entries()) {
      const id = chainLayerId(i === 0 ? undefined : chainLayerId(undefined, config.rootfs.diff_ids[0]), config.rootfs.diff_ids[i]);
      if (i > 1) break; // chain IDs beyond the second are checked through skopeo below
      const out = execFileSync('containers-storage', ['--graph', s.root, '--run', s.runroot, '--storage-driver', driver, 'diff', '-u', id], { maxBuffer: 1 << 28 });
      assert.equal(sha(out), sha(readFileSync(file)), `Go rebuilds layer ${i} from our tar-split`);
    }
    // skopeo reads the image back with the same diff IDs, and buildah runs a command in it
    const out = mkdtempSync(join(tmpdir(), 'csreg-back-'));
    t.after(() => rmSync(out, { recursive: true, force: true }));
    execFileSync('skopeo', ['copy', '-q', csRef(s, 'localhost/written/derived:1'), `oci:${out}`]);
    const index = JSON.parse(readFileSync(join(out, 'index.json'), 'utf8'));
    const om = JSON.parse(readFileSync(join(out, 'blobs', 'sha256', index.manifests[0].digest.slice(7)), 'utf8'));
    const oc = JSON.parse(readFileSync(join(out, 'blobs', 'sha256', om.config.digest.slice(7)), 'utf8'));
    assert.deepEqual(oc.rootfs.diff_ids, config.rootfs.diff_ids);
    const ctr = execFileSync('buildah', [...storeArgs(s), 'from', '-q', 'localhost/written/derived:1'], { encoding: 'utf8' }).trim();
    const said = await buildahRun(s, ctr, ['sh', '-c', 'cat /etc/derived /data/opaque/new; ls /data/opaque; test -e /data/gone-file || echo gone; test -u /bin/suid && echo suid']);
    assert.deepEqual(said.trim().split('\n'), ['derived', 'new', 'new', 'gone', 'suid']);
    execFileSync('buildah', [...storeArgs(s), 'rm', ctr]);

    // deleting the container and the image leaves an empty, consistent store
    await w.deleteContainer(c.id);
    const del = await w.deleteImage(imageId);
    assert.equal(del.layers.length, src.layers.length);
    assert.deepEqual(JSON.parse(execFileSync('podman', [...storeArgs(s), 'images', '-a', '--format', 'json'], { encoding: 'utf8' })), []);
    assert.deepEqual(JSON.parse(execFileSync('containers-storage', ['--graph', s.root, '--run', s.runroot, '--storage-driver', driver, 'layers', '--json'], { encoding: 'utf8' })) ?? [], []);
  });
}

test('hostile layers are refused and leave nothing in the store', async (t) => {
  const s = freshStore('overlay');
  t.after(() => removeStore(s));
  execFileSync('mkdir', ['-p', s.root]);
  const w = new StoreWriter(Store.open(s));
  const end = Buffer.alloc(1024);
  const cases: [string, Buffer, RegExp][] = [
    ['dot-dot', Buffer.concat([tarEntry('../evil', '0', Buffer.from('x')), end]), /leaves the layer/],
    ['absolute', Buffer.concat([tarEntry('/etc/evil', '0', Buffer.from('x')), end]), /absolute/],
    ['symlink escape', Buffer.concat([tarEntry('up', '2', Buffer.alloc(0), '../../../../../tmp'), end]), /points out of the layer/],
    ['write through symlink', Buffer.concat([tarEntry('lnk', '2', Buffer.alloc(0), '/tmp'), tarEntry('lnk/evil', '0', Buffer.from('x')), end]), /goes through the symlink/],
    ['corrupt', Buffer.concat([Buffer.from('not a tar at all'.padEnd(512, '!')), end]), /checksum/],
    ['wrong digest', Buffer.concat([tarEntry('ok', '0', Buffer.from('x')), end]), /expected sha256:0{64}/],
  ];
  for (const [what, tar, re] of cases) {
    await assert.rejects(w.createLayer(Readable.from([tar]), { expectedDiffDigest: what === 'wrong digest' ? 'sha256:' + '0'.repeat(64) : undefined }), re, what);
  }
  assert.ok(!existsSync('/tmp/evil'));
  const layers = JSON.parse(execFileSync('containers-storage', ['--graph', s.root, '--run', s.runroot, '--storage-driver', 'overlay', 'layers', '--json'], { encoding: 'utf8' }));
  assert.deepEqual(layers ?? [], [], 'no layer record left');
  const dirs = readdirSync(join(s.root, 'overlay')).filter((d) => /^[0-9a-f]{64}$/.test(d));
  assert.deepEqual(dirs, [], 'no layer directory left');
  assert.deepEqual(readdirSync(join(s.root, 'overlay', 'l')), [], 'no link left');
});

test('a layer whose entries cross the extraction thread\'s batches: a refused entry after thousands fails with its error and leaves nothing; the thread then makes a big file with its xattr, times and hard link, and thousands of small ones', async (t) => {
  const s = freshStore('overlay');
  const src = mkdtempSync(join(tmpdir(), 'csreg-batches-'));
  t.after(() => {
    removeStore(s);
    rmSync(src, { recursive: true, force: true });
  });
  execFileSync('mkdir', ['-p', s.root]);
  const w = new StoreWriter(Store.open(s));
  // 9,000 operations (begin, data, end of 3,000 files) before the bad entry: several batches
  const files = Array.from({ length: 3000 }, (_, i) => tarEntry(`f${i}`, '0', Buffer.from(`file ${i}\n`)));
  const bad = Buffer.concat([...files, tarEntry('../evil', '0', Buffer.from('x')), Buffer.alloc(1024)]);
  await assert.rejects(w.createLayer(Readable.from([bad])), (e: Error) => e instanceof ExtractError && /leaves the layer/.test(e.message));
  // a system call's failure there keeps its class and errno here (an xattr name over 255 bytes: ERANGE)
  const longXattr = Buffer.concat([...files, tarEntry('PaxHeaders/x', 'x', paxRecord(`SCHILY.xattr.user.${'n'.repeat(300)}`, 'v')), tarEntry('x', '0', Buffer.from('x')), Buffer.alloc(1024)]);
  await assert.rejects(w.createLayer(Readable.from([longXattr])), (e: Error) => e instanceof SyscallError && e.call === 'lsetxattr' && e.errno === 34);
  // refused by this thread's tar reader while the extraction thread is still behind it
  const corrupt = Buffer.concat([...files, Buffer.from('not a tar'.padEnd(512, '!')), Buffer.alloc(1024)]);
  await assert.rejects(w.createLayer(Readable.from([corrupt])), /checksum/);
  assert.deepEqual(readdirSync(join(s.root, 'overlay')).filter((d) => /^[0-9a-f]{64}$/.test(d)), [], 'no layer directory left');

  // 3 MiB + 5 bytes: the file's data spans several 1 MiB batches; its xattr is set at its end
  const big = randomBytes(3 * 2 ** 20 + 5);
  writeFileSync(join(src, 'big'), big, { mode: 0o640 });
  execFileSync('setfattr', ['-n', 'user.csreg', '-v', 'kept', join(src, 'big')]);
  utimesSync(join(src, 'big'), 1_000_000_000, 1_500_000_000);
  linkSync(join(src, 'big'), join(src, 'big-link'));
  mkdirSync(join(src, 'many'));
  for (let i = 0; i < 3000; i++) writeFileSync(join(src, 'many', `f${i}`), `file ${i}\n`);
  const tar = execFileSync('tar', ['--xattrs', '--xattrs-include=user.*', '--numeric-owner', '-C', src, '-cf', '-', 'big', 'big-link', 'many'], { maxBuffer: 1 << 28 });
  const layer = await w.createLayer(Readable.from([tar]));
  assert.equal(layer.diffDigest, sha(tar));
  const dir = join(s.root, 'overlay', layer.id, 'diff');
  assert.ok(readFileSync(join(dir, 'big')).equals(big));
  assert.equal(execFileSync('getfattr', ['--only-values', '-n', 'user.csreg', join(dir, 'big')], { encoding: 'utf8' }), 'kept');
  const st = lstatSync(join(dir, 'big'));
  assert.deepEqual([st.mode & 0o7777, st.mtimeMs, st.nlink, lstatSync(join(dir, 'big-link')).ino], [0o640, 1_500_000_000_000, 2, st.ino]);
  assert.equal(readdirSync(join(dir, 'many')).length, 3000);
  assert.equal(readFileSync(join(dir, 'many', 'f2999'), 'utf8'), 'file 2999\n');
  const goTar = execFileSync('containers-storage', ['--graph', s.root, '--run', s.runroot, '--storage-driver', 'overlay', 'diff', '-u', layer.id], { maxBuffer: 1 << 28 });
  assert.equal(sha(goTar), sha(tar), 'Go rebuilds the layer from our tar-split');
});

test('an extraction thread that dies mid-layer fails that layer with its reason; a dead thread, busy or idle, is never handed out again', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'csreg-thread-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const tar = Buffer.concat([...Array.from({ length: 3000 }, (_, i) => tarEntry(`f${i}`, '0', Buffer.from(`file ${i}\n`))), Buffer.alloc(1024)]);
  // (the thread is private: reached here to kill it as a crash or an out-of-memory would)
  const workerOf = (x: ThreadedExtractor) => (x as unknown as { thread: { worker: Worker } }).thread.worker;
  /** the tar extracted into dir/name, its thread terminated before entry killAt if given */
  async function extract(name: string, killAt = -1): Promise<ThreadedExtractor> {
    mkdirSync(join(dir, name));
    const x = new ThreadedExtractor(join(dir, name), 'overlay');
    let n = 0;
    try {
      for await (const ev of readTar(Readable.from([tar]))) {
        if (ev.kind === 'entry') {
          if (n) x.end();
          if (n++ === killAt) await workerOf(x).terminate();
          await x.begin(ev.header);
        } else if (ev.kind === 'data') await x.write(ev.bytes);
      }
      x.end();
      await x.finish();
    } catch (e) {
      await x.abort();
      throw e;
    }
    return x;
  }
  await assert.rejects(extract('killed', 2000), /extraction thread exited/);
  assert.ok(readdirSync(join(dir, 'killed')).length < 3000);
  // the next layer gets a live thread, and so does the one after the idle thread it left died
  const ok = await extract('next');
  assert.equal(readdirSync(join(dir, 'next')).length, 3000);
  await workerOf(ok).terminate();
  await extract('after-idle-death');
  assert.equal(readFileSync(join(dir, 'after-idle-death', 'f2999'), 'utf8'), 'file 2999\n');
});

test('a layer another process created meanwhile is reused, not recreated; a parent that vanished says so (commits retry on it)', async (t) => {
  const s = freshStore('overlay');
  t.after(() => removeStore(s));
  execFileSync('mkdir', ['-p', s.root]);
  const w = new StoreWriter(Store.open(s));
  const tar = Buffer.concat([tarEntry('hello', '0', Buffer.from('hi\n')), Buffer.alloc(1024)]);
  const id = chainLayerId(undefined, sha(tar));
  await w.createLayer(Readable.from([tar]), { id });
  const before = readFileSync(join(s.root, 'overlay-layers', 'layers.json'), 'utf8');
  let read = false;
  const again = Readable.from((function* () { read = true; yield tar; })());
  const reused = await w.createLayer(again, { id, reuse: true });
  assert.equal(reused.id, id);
  assert.equal(reused.diffDigest, sha(tar));
  assert.ok(!read, 'the blob is not read again');
  assert.equal(readFileSync(join(s.root, 'overlay-layers', 'layers.json'), 'utf8'), before, 'layers.json is untouched');
  await assert.rejects(w.createLayer(Readable.from([tar]), { id }), /already exists/);
  await assert.rejects(w.createLayer(Readable.from([tar]), { parent: 'f'.repeat(64) }), (e: Error & { vanished?: boolean }) => e.vanished === true && /not in the store/.test(e.message));
  await assert.rejects(w.createImage({ id: 'e'.repeat(64), topLayer: 'f'.repeat(64) }), (e: Error & { vanished?: boolean }) => e.vanished === true);
  // podman reads what we wrote
  assert.match(execFileSync('containers-storage', ['--graph', s.root, '--run', s.runroot, '--storage-driver', 'overlay', 'layers'], { encoding: 'utf8' }), new RegExp(id));
});

test('while a layer is being extracted, this process reads the store as it was instead of waiting for the layers lock; a Go reader waits', async (t) => {
  const s = freshStore('overlay');
  t.after(() => removeStore(s));
  execFileSync('mkdir', ['-p', s.root]);
  const store = Store.open(s);
  const w = new StoreWriter(store);
  const end = Buffer.alloc(1024);
  const first = await w.createLayer(Readable.from([Buffer.concat([tarEntry('a', '0', Buffer.from('a')), end])]));
  assert.deepEqual((await store.snapshot()).layers.map((l) => l.id), [first.id]);
  // a blob that stops halfway until released: the extraction holds the layers write lock meanwhile
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let halfway!: () => void;
  const reached = new Promise<void>((r) => (halfway = r));
  async function* blob() {
    yield tarEntry('b', '0', Buffer.from('b'));
    halfway();
    await gate;
    yield end;
  }
  const creating = w.createLayer(blob());
  await reached;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), 5000)));
  const during = await Promise.race([store.snapshot(), timeout]);
  clearTimeout(timer);
  assert.notEqual(during, 'timeout', 'snapshot() answered while the layer was being extracted');
  assert.deepEqual((during as Awaited<ReturnType<Store['snapshot']>>).layers.map((l) => l.id), [first.id], 'the store as it was');
  // another process (the Go tool) waits for the lock, as c/storage readers do
  const go = spawnAsync('containers-storage', ['--graph', s.root, '--run', s.runroot, '--storage-driver', 'overlay', 'layers', '--json']);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(go.done, false, 'containers-storage waited for the layers lock');
  release();
  const second = await creating;
  const listed = JSON.parse((await go.result).toString()) as { id: string }[];
  assert.deepEqual(listed.map((l) => l.id).sort(), [first.id, second.id].sort());
  assert.deepEqual((await store.snapshot()).layers.map((l) => l.id).sort(), [first.id, second.id].sort());
});

function spawnAsync(cmd: string, args: string[]): { done: boolean; result: Promise<Buffer> } {
  const out = { done: false, result: undefined as unknown as Promise<Buffer> };
  out.result = new Promise<Buffer>((ok, fail) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    const parts: Buffer[] = [];
    c.stdout.on('data', (d: Buffer) => parts.push(d));
    c.on('error', fail);
    c.on('close', (code) => {
      out.done = true;
      if (code === 0) ok(Buffer.concat(parts));
      else fail(new Error(`${cmd} exited ${code}`));
    });
  });
  return out;
}

test('an extracted layer has the owners and modes the Go tool gives it (set-group-ID directories, implicit parents, other owners)', async (t) => {
  // A tar by GNU tar of a tree with several owners, a set-group-ID directory of another group
  // (new entries in it take that group unless chowned) and files listed without their parent
  // directories (made implicitly), applied by csreg and by containers-storage applydiff.
  const src = mkdtempSync(join(tmpdir(), 'csreg-owners-'));
  const ours = freshStore('vfs');
  const go = freshStore('vfs');
  t.after(() => {
    rmSync(src, { recursive: true, force: true });
    removeStore(ours);
    removeStore(go);
  });
  const tree = `cd '${src}' && mkdir -p t/plain t/sg/deep t/implicit t/sg/deep2 && cd t &&
    echo a > plain/a && echo b > plain/b && chown 1000:1000 plain/b && chmod 600 plain/b &&
    echo c > plain/c && chown 0:50 plain/c && chmod 4755 plain/c &&
    chown 0:50 sg && chmod 2775 sg && echo x > sg/x && chown 0:0 sg/x &&
    echo y > sg/deep/y && chown 0:0 sg/deep/y && echo y2 > sg/deep2/y2 && chown 1000:50 sg/deep2/y2 &&
    echo z > implicit/z && echo top > top && ln -s top link && mkfifo fifo &&
    echo m > plain/m && chmod 777 plain/m && mkdir wide && chmod 777 wide && echo w > wide/w && chmod 666 wide/w &&
    tar --numeric-owner --no-recursion -cf ../layer.tar plain plain/a plain/b plain/c plain/m sg sg/x sg/deep/y sg/deep2/y2 implicit/z top link fifo wide wide/w`;
  execFileSync('sh', ['-c', tree]);
  const tarPath = join(src, 'layer.tar');
  execFileSync('mkdir', ['-p', ours.root, ours.runroot, go.root, go.runroot]);
  const layer = await new StoreWriter(Store.open(ours)).createLayer(createReadStream(tarPath), {});
  const goArgs = ['--graph', go.root, '--run', go.runroot, '--storage-driver', 'vfs'];
  const goId = execFileSync('containers-storage', [...goArgs, 'create-layer'], { encoding: 'utf8' }).trim();
  execFileSync('containers-storage', [...goArgs, 'applydiff', '-f', tarPath, goId]);
  const describe = (root: string) => {
    const out: string[] = [];
    const walk = (rel: string) => {
      for (const n of readdirSync(join(root, rel)).sort()) {
        const p = rel ? `${rel}/${n}` : n;
        const st = lstatSync(join(root, p));
        out.push(`${p} ${st.uid}:${st.gid} ${(st.mode & 0o177777).toString(8)}`);
        if (st.isDirectory()) walk(p);
      }
    };
    walk('');
    return out;
  };
  const ourTree = describe(join(ours.root, 'vfs', 'dir', layer.id));
  assert.deepEqual(ourTree, describe(join(go.root, 'vfs', 'dir', goId)));
  // (the cases are there: a set-group-ID directory, and root's file in it; modes the umask would cut)
  assert.ok(ourTree.includes('sg 0:50 42775') && ourTree.includes('sg/deep/y 0:0 100644'), ourTree.join('\n'));
  assert.ok(['plain/m 0:0 100777', 'wide 0:0 40777', 'wide/w 0:0 100666'].every((e) => ourTree.includes(e)), ourTree.join('\n'));
});

test('storage exists, metadata and set-metadata (the CLI) agree with the Go tool\'s on layers, images and containers, both ways', async (t) => {
  const s = copyStore(fx.stores.vfs);
  t.after(() => rmSync(s.dir, { recursive: true, force: true }));
  const goArgs = ['--graph', s.root, '--run', s.runroot, '--storage-driver', 'vfs'];
  const cli = (...args: string[]) => spawnSync('node', ['dist/src/cli/main.js', ...storeArgs(s), 'storage', ...args], { encoding: 'utf8' });
  const go = (...args: string[]) => spawnSync('containers-storage', [...goArgs, ...args], { encoding: 'utf8' });
  const image = JSON.parse(go('images', '--json').stdout).find((i: { names?: string[] }) => i.names?.includes('localhost/csreg/base:1')) as { id: string; layer: string };
  const container = JSON.parse(go('containers', '--json').stdout)[0] as { id: string; names: string[] };
  // exists: by ID and by name; exit status 1 when one is missing, as Go's
  const present = cli('exists', image.layer, 'localhost/csreg/base:1', container.names[0], '--json');
  assert.equal(present.status, 0, present.stderr);
  assert.deepEqual(JSON.parse(present.stdout), { [image.layer]: true, 'localhost/csreg/base:1': true, [container.names[0]]: true });
  const absent = cli('exists', image.id, 'no-such-thing');
  assert.deepEqual([absent.status, absent.stdout], [1, `${image.id}: true\nno-such-thing: false\n`]);
  assert.equal(go('exists', 'no-such-thing').status, absent.status);
  // metadata csreg sets, Go reads; metadata Go sets, csreg reads
  for (const [ref, meta] of [[image.layer, 'layer meta'], ['localhost/csreg/base:1', '{"image":"meta"}'], [container.id, 'ctr meta']]) {
    assert.equal(cli('set-metadata', '-m', meta, ref).status, 0);
    assert.equal(go('metadata', '-q', ref).stdout, meta + '\n', ref);
    assert.equal(go('set-metadata', '-m', `${meta} from Go`, ref).status, 0);
    assert.equal(cli('metadata', ref).stdout, `${ref}: ${meta} from Go\n`);
  }
  assert.equal(cli('metadata', 'no-such-thing').status, 1);
  const refused = cli('set-metadata', '-m', 'x', 'no-such-thing');
  assert.notEqual(refused.status, 0);
  assert.match(refused.stderr, /nothing in the store is known as no-such-thing/);
  // the records are still the Go tool's to read whole
  assert.equal(go('images', '--json').status, 0);
  assert.equal(go('layers', '--json').status, 0);
});

test('storage create-layer (the CLI) applies a layer the Go tool rebuilds; a missing input file is a plain error that writes nothing', async (t) => {
  const src = exportImage(fx.stores.overlay, 'localhost/csreg/base:1');
  const s = freshStore('vfs');
  t.after(() => {
    rmSync(src.dir, { recursive: true, force: true });
    removeStore(s);
  });
  const goArgs = ['--graph', s.root, '--run', s.runroot, '--storage-driver', 'vfs'];
  execFileSync('containers-storage', [...goArgs, 'layers']); // (an empty store)
  const cli = (...args: string[]) => spawnSync('node', ['dist/src/cli/main.js', ...storeArgs(s), 'storage', ...args], { encoding: 'utf8' });
  const missing = cli('create-layer', '-f', join(src.dir, 'no-such-blob'));
  assert.notEqual(missing.status, 0);
  assert.match(missing.stderr, /^csreg: ENOENT: no such file or directory, open '.*no-such-blob'\n$/, 'one line, no stack trace');
  assert.deepEqual(JSON.parse(execFileSync('containers-storage', [...goArgs, 'layers', '--json'], { encoding: 'utf8' })) ?? [], [], 'nothing written');
  // refused before any entry: the extraction thread taken for it is given back (the process ends)
  const bz = join(src.dir, 'layer.bz2');
  writeFileSync(bz, Buffer.concat([Buffer.from('BZh9'), randomBytes(64)]));
  const bzip2 = spawnSync('node', ['dist/src/cli/main.js', ...storeArgs(s), 'storage', 'create-layer', '-f', bz], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(bzip2.signal, null, 'the process ended by itself');
  assert.notEqual(bzip2.status, 0);
  assert.match(bzip2.stderr, /compressed with bzip2, which csreg does not accept/);
  assert.deepEqual(JSON.parse(execFileSync('containers-storage', [...goArgs, 'layers', '--json'], { encoding: 'utf8' })) ?? [], [], 'nothing written');
  const made = cli('create-layer', '-f', src.layers[0]);
  assert.equal(made.status, 0, made.stderr);
  const id = made.stdout.trim();
  const rebuilt = execFileSync('containers-storage', [...goArgs, 'diff', '-u', id], { maxBuffer: 1 << 28 });
  assert.equal(sha(rebuilt), sha(readFileSync(src.layers[0])), 'Go rebuilds the tar from the layer csreg applied');
});
