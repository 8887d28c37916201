// Lock files compatible with containers/storage (pkg/lockfile): whole-file fcntl locks on
// the same files, the 64-byte last-writer token at offset 0, opened per acquisition.
//
// Why koffi: Node has no fcntl, and flock() does not exclude podman (only POSIX/OFD
// record locks do). koffi is a maintained FFI package whose npm tarball carries its
// prebuilt binaries, so it installs offline from the registry with no compiler and no
// install script; a hand-written native addon would need node-gyp on every machine.
// We use OFD locks (F_OFD_SETLK): they conflict with podman's classic POSIX locks, but
// belong to our open file description, so closing some other descriptor of the same
// file elsewhere in this process cannot silently drop them (classic locks would).
// Blocking F_OFD_SETLKW would block the event loop, so we poll F_OFD_SETLK with a short
// back-off, much as the Go library retries every 10 ms.
import { closeSync, constants, openSync, readSync, writeSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fcntlLock } from './syscalls.js';

const F_OFD_SETLK = 37;
const F_RDLCK = 0;
const F_WRLCK = 1;
const EAGAIN = 11;
const EACCES = 13;
const EINTR = 4;

export class LockError extends Error {
  override name = 'LockError';
}

/** Try once to take the whole-file OFD lock; false when another process holds a conflicting one. */
function tryLock(fd: number, type: number): boolean {
  for (;;) {
    const err = fcntlLock(fd, F_OFD_SETLK, type);
    if (err === 0) return true;
    if (err === EINTR) continue;
    if (err === EAGAIN || err === EACCES) return false;
    throw new LockError(`fcntl lock failed: errno ${err}`);
  }
}

let touchCounter = 0;
/**
 * fcntl locks have no writer preference: a process that re-takes a read lock the moment it
 * dropped it can starve podman's blocking F_SETLKW forever. After releasing, we wait this
 * long before taking the same OS lock again, so a woken waiter gets its turn.
 */
const FAIR_GAP_MS = 3;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * One lock file. Readers in this process share a single OS read lock (a counter, as the Go
 * library does); a writer waits for them and holds the OS write lock alone. The descriptor is
 * closed, which releases the lock, when the last holder leaves.
 */
export class LockFile {
  private fd = -1;
  private readers = 0;
  private writer = false;
  private writersWaiting = 0;
  private acquiring: Promise<void> | undefined;
  private waiters: (() => void)[] = [];

  constructor(readonly path: string, readonly readOnly = false) {}

  private open(): number {
    if (this.readOnly) return openSync(this.path, constants.O_RDONLY | constants.O_CREAT, 0o644);
    try {
      mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
      return openSync(this.path, constants.O_RDWR | constants.O_CREAT, 0o644);
    } catch (e) {
      // Not ours to write (e.g. another user's store): a read lock needs only read access.
      if ((e as NodeJS.ErrnoException).code === 'EACCES' || (e as NodeJS.ErrnoException).code === 'EROFS') {
        return openSync(this.path, constants.O_RDONLY);
      }
      throw e;
    }
  }

  private releasedAt = 0;

  private async acquireOS(type: number): Promise<void> {
    const gap = this.releasedAt + FAIR_GAP_MS - Date.now();
    if (gap > 0) await sleep(gap);
    const fd = this.open();
    let delay = 1;
    try {
      while (!tryLock(fd, type)) {
        await sleep(delay);
        delay = Math.min(delay * 2, 20);
      }
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    this.fd = fd;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private wait(): Promise<void> {
    return new Promise((r) => this.waiters.push(r));
  }

  async lockRead(): Promise<void> {
    while (this.writer || this.writersWaiting > 0) await this.wait();
    this.readers++;
    if (this.readers === 1) this.acquiring = this.acquireOS(F_RDLCK);
    try {
      await this.acquiring;
    } catch (e) {
      this.readers--;
      if (this.readers === 0) this.wake();
      throw e;
    }
  }

  unlockRead(): void {
    if (this.readers <= 0) throw new LockError(`${this.path}: read unlock without lock`);
    if (--this.readers === 0) {
      closeSync(this.fd);
      this.fd = -1;
      this.releasedAt = Date.now();
      this.wake();
    }
  }

  async lockWrite(): Promise<void> {
    if (this.readOnly) throw new LockError(`${this.path}: store is read-only`);
    this.writersWaiting++;
    try {
      while (this.writer || this.readers > 0) await this.wait();
    } finally {
      this.writersWaiting--;
    }
    this.writer = true;
    try {
      await this.acquireOS(F_WRLCK);
    } catch (e) {
      this.writer = false;
      this.wake();
      throw e;
    }
  }

  unlockWrite(): void {
    if (!this.writer) throw new LockError(`${this.path}: write unlock without lock`);
    closeSync(this.fd);
    this.fd = -1;
    this.releasedAt = Date.now();
    this.writer = false;
    this.wake();
  }

  async withRead<T>(fn: () => T | Promise<T>): Promise<T> {
    await this.lockRead();
    try {
      return await fn();
    } finally {
      this.unlockRead();
    }
  }

  async withWrite<T>(fn: () => T | Promise<T>): Promise<T> {
    await this.lockWrite();
    try {
      return await fn();
    } finally {
      this.unlockWrite();
    }
  }

  /** The last writer's token (bytes 0–63); only meaningful while locked. Empty when never written. */
  token(): Buffer {
    if (this.fd < 0) throw new LockError(`${this.path}: token read without lock`);
    const buf = Buffer.alloc(64);
    const n = readSync(this.fd, buf, 0, 64, 0);
    return buf.subarray(0, n);
  }

  /**
   * The token read without taking the lock, to decide cheaply whether a reload is needed. A
   * writer in the middle of a change is seen as "not yet changed", which only means the next
   * check reloads: the records themselves are always read under the lock.
   */
  peekToken(): Buffer {
    let fd: number;
    try {
      fd = openSync(this.path, constants.O_RDONLY);
    } catch {
      return Buffer.alloc(0);
    }
    try {
      const buf = Buffer.alloc(64);
      return buf.subarray(0, readSync(fd, buf, 0, 64, 0));
    } finally {
      closeSync(fd);
    }
  }

  /** Record a change: a fresh token, so every other process reloads. Only while write-locked. */
  touch(): void {
    if (!this.writer) throw new LockError(`${this.path}: touch without write lock`);
    const buf = Buffer.alloc(64);
    // Same shape as c/storage's token: time in ns, a counter, the PID, random bytes.
    buf.writeBigUInt64LE(BigInt(Date.now()) * 1_000_000n, 0);
    buf.writeBigUInt64LE(BigInt(++touchCounter), 8);
    buf.writeUInt32LE(process.pid, 16);
    randomBytes(44).copy(buf, 20);
    writeSync(this.fd, buf, 0, 64, 0);
  }
}
