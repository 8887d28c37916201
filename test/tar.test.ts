// The streaming tar reader against tars written by GNU tar, and against hostile input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, linkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readTar, TarError, type TarHeader } from '../src/storage/tar.js';

async function parse(bytes: Buffer, chunk = 4096): Promise<{ headers: TarHeader[]; rebuilt: Buffer; contents: Buffer[] }> {
  async function* chunks() {
    for (let i = 0; i < bytes.length; i += chunk) yield bytes.subarray(i, i + chunk);
  }
  const headers: TarHeader[] = [];
  const parts: Buffer[] = [];
  const contents: Buffer[] = [];
  for await (const ev of readTar(chunks())) {
    if (ev.kind === 'entry') {
      headers.push(ev.header);
      contents.push(Buffer.alloc(0));
    } else {
      parts.push(ev.bytes);
      if (ev.kind === 'data') contents[contents.length - 1] = Buffer.concat([contents[contents.length - 1], ev.bytes]);
    }
  }
  return { headers, rebuilt: Buffer.concat(parts), contents };
}

function gnuTar(format: string): Buffer {
  const dir = mkdtempSync(join(tmpdir(), 'csreg-tar-'));
  try {
    const long = 'd'.repeat(60) + '/' + 'e'.repeat(60) + '/' + 'f'.repeat(120) + '.txt';
    mkdirSync(join(dir, 'd'.repeat(60), 'e'.repeat(60)), { recursive: true });
    writeFileSync(join(dir, long), 'long name\n');
    writeFileSync(join(dir, 'héllo-wörld.txt'), Buffer.alloc(70_000, 7));
    writeFileSync(join(dir, 'empty'), '');
    symlinkSync('héllo-wörld.txt', join(dir, 'link'));
    linkSync(join(dir, 'empty'), join(dir, 'hard'));
    execFileSync('mkfifo', [join(dir, 'fifo')]);
    return execFileSync('tar', ['-C', dir, `--format=${format}`, '--sort=name', '-cf', '-', '.'], { maxBuffer: 1 << 26 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const format of ['gnu', 'pax']) {
  test(`every byte of a GNU tar (${format}) comes back, names and types as tar lists them`, async () => {
    const tarBytes = gnuTar(format);
    for (const chunk of [1, 511, 4096, 1 << 20]) {
      const { headers, rebuilt } = await parse(tarBytes, chunk);
      assert.ok(rebuilt.equals(tarBytes), `chunk ${chunk}: bytes round-trip`);
      const listed = execFileSync('tar', ['-tf', '-'], { input: tarBytes, encoding: 'utf8' }).trim().split('\n');
      assert.deepEqual(headers.map((h) => h.name.toString('utf8')), listed);
    }
    const { headers, contents } = await parse(tarBytes);
    const byName = (n: string) => headers.findIndex((h) => h.name.toString() === n);
    assert.equal(headers[byName('./link')].type, '2');
    assert.equal(headers[byName('./link')].linkname.toString(), 'héllo-wörld.txt');
    assert.equal(headers[byName('./fifo')].type, '6');
    assert.equal(headers[byName('./hard')].type, '1');
    assert.equal(contents[byName('./héllo-wörld.txt')].length, 70_000);
  });
}

test('hostile tars are refused with a TarError, never a crash', async () => {
  const good = gnuTar('pax');
  const cases: [string, Buffer][] = [];
  const corrupt = Buffer.from(good);
  corrupt[10] ^= 0xff; // breaks the first header's checksum
  cases.push(['checksum', corrupt]);
  cases.push(['truncated', good.subarray(0, 700)]);
  const negative = Buffer.from(good.subarray(0, 512));
  negative.write('\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff', 124, 'latin1'); // base-256 -1 size
  fixChecksum(negative);
  cases.push(['negative size', negative]);
  const hugePax = Buffer.alloc(512);
  hugePax.write('PaxHeaders/x', 0);
  hugePax.write('0000644\0', 100);
  hugePax.write('77777777777\0', 124); // 8 GiB of PAX records
  hugePax.write('x', 156);
  hugePax.write('ustar\x0000', 257, 'latin1');
  fixChecksum(hugePax);
  cases.push(['huge PAX header', hugePax]);
  const notTar = Buffer.from('{"this":"is json, not a tar"}'.padEnd(1024, ' '));
  cases.push(['not a tar', notTar]);
  for (const [what, bytes] of cases) {
    await assert.rejects(parse(bytes), TarError, what);
  }
});

function fixChecksum(block: Buffer): void {
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += block[i];
  block.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
}

test('the source ends when the reader stops early or the tar fails: no file or lock is left to the GC', async () => {
  const good = gnuTar('pax');
  const corrupt = Buffer.concat([good.subarray(0, 1536), Buffer.alloc(512, 'A'), good.subarray(2048)]);
  let ended = 0;
  async function* source(bytes: Buffer) {
    try {
      for (let i = 0; i < bytes.length; i += 512) yield bytes.subarray(i, i + 512);
    } finally {
      ended++;
    }
  }
  for await (const ev of readTar(source(good))) if (ev.kind === 'entry') break;
  assert.equal(ended, 1, 'a reader that stopped at the first entry');
  await assert.rejects(async () => {
    for await (const _ of readTar(source(corrupt)));
  }, TarError);
  assert.equal(ended, 2, 'a tar that failed at a corrupt header');
  for await (const _ of readTar(source(good)));
  assert.equal(ended, 3, 'read to the end');
});
