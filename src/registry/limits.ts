// Resource limits: how long a client may take to send headers or the next body byte, how many
// upload sessions and staged bytes there may be, and how many blob downloads one client may run.
import type { IncomingMessage, ServerResponse } from 'node:http';

export interface Limits {
  /** the whole request head must arrive within this (slow-header clients are cut off) */
  headerTimeoutMs: number;
  /** a request body that sends nothing for this long is cut off (and a download the client stops reading) */
  bodyIdleTimeoutMs: number;
  /** ... and one that sends less than this many bytes per second, judged over windows of bodyIdleTimeoutMs */
  minBodyRate: number;
  /** open upload sessions at once, for all clients (beyond: 429 TOOMANYREQUESTS) */
  maxUploadSessions: number;
  /** bytes of upload staging at once, for all sessions (beyond: 429; one larger request alone: 413) */
  stagingMaxBytes: number;
  /** blob downloads running at once per client address (beyond: 429); 0 = no limit */
  maxDownloadsPerClient: number;
}

export const DEFAULT_LIMITS: Limits = {
  headerTimeoutMs: 30_000,
  bodyIdleTimeoutMs: 60_000,
  minBodyRate: 1024,
  maxUploadSessions: 100,
  stagingMaxBytes: 32 * 1024 ** 3,
  maxDownloadsPerClient: 32,
};

/** "30s", "5m", "1h", "500ms", or a number of seconds → milliseconds. */
export function parseDuration(v: unknown, key: string): number {
  if (typeof v === 'number' && v >= 0) return v * 1000;
  const m = typeof v === 'string' ? /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(v.trim()) : null;
  if (!m) throw new Error(`${key}: invalid duration ${JSON.stringify(v)} (e.g. 30s, 5m)`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
}

/**
 * Per-client counters of running downloads. A connection carries one download at a time: a
 * client sends its next request on it only once it has read the last response whole, maybe
 * before that response's end is seen here, so a new request on the connection ends the old one.
 */
export class DownloadSlots {
  private readonly running = new Map<string, number>();
  private readonly held = new WeakMap<object, () => void>();
  constructor(readonly perClient: number) {}

  /** A release function, or undefined when the client already runs its maximum. */
  acquire(client: string, connection: object = {}): (() => void) | undefined {
    this.held.get(connection)?.();
    const n = this.running.get(client) ?? 0;
    if (this.perClient > 0 && n >= this.perClient) return undefined;
    this.running.set(client, n + 1);
    let done = false;
    const release = () => {
      if (done) return;
      done = true;
      if (this.held.get(connection) === release) this.held.delete(connection);
      const left = (this.running.get(client) ?? 1) - 1;
      if (left <= 0) this.running.delete(client);
      else this.running.set(client, left);
    };
    this.held.set(connection, release);
    return release;
  }
}

interface Watch {
  done(): boolean;
  bytes(): number;
  /** true while the slowness is ours (data buffered unread, nothing queued to send): the window restarts */
  oursToWait(): boolean;
  cut(why: string): void;
  ms: number;
  minBytes: number;
  windowStart: number;
  windowBytes: number;
  lastBytes: number;
  lastAt: number;
}
const watched = new Set<Watch>();
let ticker: NodeJS.Timeout | undefined;

function watch(w: Omit<Watch, 'windowStart' | 'windowBytes' | 'lastBytes' | 'lastAt'>): void {
  if (w.ms <= 0) return;
  const now = Date.now();
  const x: Watch = { ...w, windowStart: now, windowBytes: w.bytes(), lastBytes: w.bytes(), lastAt: now };
  watched.add(x);
  if (ticker) return;
  ticker = setInterval(() => {
    const t = Date.now();
    for (const v of watched) {
      if (v.done()) {
        watched.delete(v);
        continue;
      }
      const b = v.bytes();
      if (v.oursToWait()) {
        v.windowStart = v.lastAt = t;
        v.windowBytes = v.lastBytes = b;
        continue;
      }
      if (b !== v.lastBytes) {
        v.lastBytes = b;
        v.lastAt = t;
      }
      if (t - v.lastAt > v.ms) {
        watched.delete(v);
        v.cut(`no progress for more than ${v.ms} ms`);
      } else if (t - v.windowStart >= v.ms) {
        if (b - v.windowBytes < v.minBytes) {
          watched.delete(v);
          v.cut(`fewer than ${v.minBytes} bytes in ${v.ms} ms`);
        } else {
          v.windowStart = t;
          v.windowBytes = b;
        }
      }
    }
    if (!watched.size) {
      clearInterval(ticker);
      ticker = undefined;
    }
  }, 250);
  ticker.unref();
}

/**
 * Cut off a request whose body stops arriving, or trickles in below `minRate` bytes/s (judged
 * over windows of `ms`). Polls the socket's byte count instead of listening for data, so the
 * handler's own reading (and its backpressure) is untouched; time spent with unread data
 * buffered on our side does not count against the client.
 */
export function watchBodyIdle(req: IncomingMessage, ms: number, minRate = 0): void {
  const sock = req.socket;
  watch({
    done: () => req.complete || req.destroyed || sock.destroyed,
    bytes: () => sock.bytesRead,
    oursToWait: () => req.readableLength > 0 || req.isPaused() || sock.isPaused(),
    cut: (why) => sock.destroy(new Error(`request body: ${why}`)),
    ms,
    minBytes: Math.floor((minRate * ms) / 1000),
  });
}

/**
 * The same for a response the client does not read (a blob download held open by a client
 * reading one byte a second keeps the store's read lock): only counts while data waits in
 * the socket for the client.
 */
export function watchSendIdle(res: ServerResponse, ms: number, minRate = 0): void {
  const sock = res.socket;
  if (!sock) return;
  watch({
    done: () => res.writableFinished || res.destroyed || sock.destroyed,
    bytes: () => sock.bytesWritten,
    oursToWait: () => sock.writableLength === 0 && !res.writableNeedDrain,
    cut: (why) => sock.destroy(new Error(`response: ${why}`)),
    ms,
    minBytes: Math.floor((minRate * ms) / 1000),
  });
}
