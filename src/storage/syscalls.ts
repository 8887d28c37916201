// The few Linux calls Node's fs module lacks, through the koffi FFI package (see lockfile.ts
// for why koffi): fcntl record locks, mknod (whiteouts, fifos, devices), xattrs, mallopt,
// openat2 with the plain read/close that go with it on the layer rebuild's hot path, and
// preadv2's page-cache-only read for sending kept files.
import type Koffi from 'koffi';
import { createRequire } from 'node:module';
import { constants } from 'node:os';
import { getSystemErrorMap } from 'node:util';

const require = createRequire(import.meta.url);

/**
 * koffi's native module, taken from where the package keeps it for this platform: the
 * package's entry script first loads its build tooling (https, zlib, crypto), 14 of the 18 ms
 * it took at every start of the CLI and of every thread that opens a store; all it adds to
 * the native module is deprecated aliases. Anything else (another layout or version, musl):
 * the entry script. (Required, not imported: an ESM import of a CommonJS module first has it
 * scanned for export names.)
 */
function loadKoffi(): typeof Koffi {
  if (process.platform === 'linux' && (process.arch === 'x64' || process.arch === 'arm64')) {
    try {
      const native = require(`koffi/build/koffi/linux_${process.arch}/koffi.node`) as typeof Koffi & { version?: string };
      if (native.version === (require('koffi/package.json') as { version: string }).version) return native;
    } catch {
      // (below)
    }
  }
  return require('koffi') as typeof Koffi;
}

const koffi = loadKoffi();

const { errno } = constants;

export class SyscallError extends Error {
  override name = 'SyscallError';
  constructor(readonly call: string, readonly errno: number, readonly path?: string) {
    const [code, text] = getSystemErrorMap().get(-errno) ?? [`errno ${errno}`, 'unknown error'];
    super(`${call}${path ? ` ${path}` : ''}: ${code} (${text})`);
  }
}

type Fn = (...args: unknown[]) => number;
let lib: Record<string, Fn> | undefined;

function libc(): Record<string, Fn> {
  if (!lib) {
    const c = koffi.load('libc.so.6');
    lib = {
      fcntl: c.func('int fcntl(int fd, int cmd, ...)') as Fn,
      mknod: c.func('int mknod(const char *path, uint32_t mode, uint64_t dev)') as Fn,
      lsetxattr: c.func('int lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags)') as Fn,
      lgetxattr: c.func('long lgetxattr(const char *path, const char *name, _Out_ void *value, size_t size)') as Fn,
      mallopt: c.func('int mallopt(int param, int value)') as Fn,
      // syscall(2) is variadic; on Linux x86_64 and arm64 integer and pointer arguments travel
      // in the same registers either way, and glibc's syscall() does not read %al
      openat2: c.func('long syscall(long nr, long dirfd, const uint8_t *path, const uint8_t *how, size_t size)') as Fn,
      pread: c.func('long pread(int fd, _Out_ uint8_t *buf, size_t count, int64_t offset)') as Fn,
      close: c.func('int close(int fd)') as Fn,
    };
  }
  return lib;
}

// struct flock is laid out the same on every 64-bit Linux (x86_64, arm64, riscv64).
export const Flock = koffi.struct('csreg_flock', { l_type: 'short', l_whence: 'short', l_start: 'int64', l_len: 'int64', l_pid: 'int' });
koffi.struct('csreg_iovec', { base: 'void *', len: 'size_t' });

/** fcntl with a struct flock argument; returns errno (0 on success). */
export function fcntlLock(fd: number, cmd: number, type: number): number {
  const r = libc().fcntl(fd, cmd, 'csreg_flock *', { l_type: type, l_whence: 0, l_start: 0, l_len: 0, l_pid: 0 });
  return r === 0 ? 0 : koffi.errno();
}

export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const S_IFIFO = 0o010000;

/** glibc's makedev encoding of a device number. */
export function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn);
}

/** Paths are Buffers so names that are not UTF-8 reach the file system unchanged. */
function cpath(p: string | Buffer): Buffer {
  return Buffer.concat([typeof p === 'string' ? Buffer.from(p) : p, Buffer.from([0])]);
}

export function mknod(path: string | Buffer, mode: number, dev: bigint = 0n): void {
  if (libc().mknod(cpath(path), mode, dev) !== 0) throw new SyscallError('mknod', koffi.errno(), path.toString());
}

export function lsetxattr(path: string | Buffer, name: string, value: Buffer): void {
  if (libc().lsetxattr(cpath(path), name, value, value.length, 0) !== 0) throw new SyscallError('lsetxattr', koffi.errno(), path.toString());
}

/** An xattr's value, or undefined when the file has none of that name. */
export function lgetxattr(path: string | Buffer, name: string): Buffer | undefined {
  const buf = Buffer.alloc(65536);
  const n = libc().lgetxattr(cpath(path), name, buf, buf.length);
  if (n < 0) {
    const e = koffi.errno();
    if (e === 61 /* ENODATA */) return undefined;
    throw new SyscallError('lgetxattr', e, path.toString());
  }
  return buf.subarray(0, n);
}

const M_MMAP_THRESHOLD = -3;

/**
 * Make glibc give freed large buffers back to the OS. By default it raises its mmap threshold
 * each time such a buffer is freed (up to 32 MiB), after which 256 KiB–1 MiB stream buffers come
 * from heaps it keeps: a server that streamed and recompressed a few hundred MB kept ~200 MB of
 * freed memory resident (measured: 199 MB after three cold pulls, 86 MB with a fixed threshold).
 * Not glibc (musl): nothing to do.
 */
export function returnFreedBuffers(threshold = 128 << 10): boolean {
  try {
    return libc().mallopt(M_MMAP_THRESHOLD, threshold) === 1;
  } catch {
    return false;
  }
}

/** openat2(2)'s number: one for every Linux architecture (it came after their tables were unified) */
const SYS_openat2 = 437;
const RESOLVE_NO_MAGICLINKS = 0x02;
const RESOLVE_BENEATH = 0x08;
const hows = new Map<number, Buffer>();

/**
 * openat2(2) with RESOLVE_BENEATH: `path` (bytes ending in a NUL) resolved below the directory
 * `dirfd`, the kernel failing with EXDEV wherever a step (`..`, an absolute or escaping
 * symlink) would leave it, with no gap between a check and the open. Returns the descriptor or
 * -errno (-ENOSYS on kernels before 5.6, -EPERM under some seccomp filters).
 */
export function openBeneath(dirfd: number, path: Buffer, flags: number): number {
  let how = hows.get(flags);
  if (!how) {
    // struct open_how { u64 flags, mode, resolve }, in the machine's byte order
    const fields = new BigUint64Array([BigInt(flags), 0n, BigInt(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)]);
    how = Buffer.from(fields.buffer);
    hows.set(flags, how);
  }
  const fd = libc().openat2(SYS_openat2, dirfd, path, how, how.length);
  return fd >= 0 ? fd : -koffi.errno();
}

/** pread(2) into buf[0, count): the bytes read, or -errno. */
export function pread(fd: number, buf: Uint8Array, count: number, offset: number): number {
  const n = libc().pread(fd, buf, count, offset);
  return n >= 0 ? n : -koffi.errno();
}

const RWF_NOWAIT = 0x08;
/** preadv2, while the kernel and file systems take RWF_NOWAIT (null: not here, not asked again) */
let preadv2: Fn | null | undefined;

/**
 * preadv2(2) with RWF_NOWAIT: buf[0, count) from offset, as far as it is in the page cache
 * (never waiting for a disk). The bytes read (0 at the end of the file; fewer than count when
 * only part was cached), or -1: nothing cached, or no RWF_NOWAIT here (glibc < 2.26, Linux <
 * 4.14, a file system without it: not asked again), or an error (the caller's plain read
 * reports it).
 */
export function readCached(fd: number, buf: Uint8Array, count: number, offset: number): number {
  if (preadv2 === undefined) {
    try {
      preadv2 = koffi.load('libc.so.6').func('long preadv2(int fd, const csreg_iovec *iov, int iovcnt, int64_t offset, int flags)') as Fn;
    } catch {
      preadv2 = null;
    }
  }
  if (!preadv2) return -1;
  const n = preadv2(fd, [{ base: buf, len: count }], 1, offset, RWF_NOWAIT);
  if (n >= 0) return n;
  const e = koffi.errno();
  if (e === errno.ENOSYS || e === errno.EOPNOTSUPP || e === errno.EINVAL) preadv2 = null;
  return -1;
}

/** Can readCached be asked (false once the kernel, glibc or a file system refused RWF_NOWAIT)? */
export const cachedReadsWork = (): boolean => preadv2 !== null;

export function closeFd(fd: number): void {
  libc().close(fd);
}

/** alignment of read buffers: a cache line */
const READ_ALIGN = 64;

/**
 * Memory for a read buffer of up to `size` bytes that alignedView places: size plus slack.
 * Every large buffer Node allocates starts 16 bytes past a page (glibc's header of a mapped
 * chunk), and the kernel copies file data to such a destination at a fraction of the speed
 * (measured on an AMD EPYC: a 1 MiB pread from the page cache at 1.9 GB/s to an address 16
 * past a boundary, 10–11 GB/s to one 32 or 64 past it; writes and sends do not care).
 */
export function alignableBuffer(size: number, shared = false): Buffer {
  return shared ? Buffer.from(new SharedArrayBuffer(size + READ_ALIGN)) : Buffer.allocUnsafeSlow(size + READ_ALIGN);
}

/**
 * `size` bytes of raw (an alignableBuffer of at least that size) whose first byte is `phase`
 * bytes past a 64-byte boundary: where a file's or tar's offsets that are multiples of 64 land
 * on boundaries, for a buffer whose index 0 holds an offset that is not one.
 */
export function alignedView(raw: Buffer, size: number, phase = 0): Buffer {
  const at = (phase - Number(koffi.address(raw) % BigInt(READ_ALIGN)) + 2 * READ_ALIGN) % READ_ALIGN;
  return raw.subarray(at, at + size);
}

/** A read buffer of `size` bytes starting `phase` bytes past a 64-byte boundary (its `.buffer` is its own). */
export function alignedBuffer(size: number, shared = false, phase = 0): Buffer {
  return alignedView(alignableBuffer(size, shared), size, phase);
}
