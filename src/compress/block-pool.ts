// pgzip blocks are independent (each needs only the previous block's tail as dictionary), so
// they are compressed on a pool of worker threads, as pgzip does with goroutines; results are
// handed back in order by the caller. The same threads run segments of Go's deflate
// (go-parallel.ts).
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { SegmentTask } from './go-flate.js';
import type { ParsedSegment } from './go-parallel.js';
import type { CompressedBlock } from './pgzip.js';

/** What a pool thread is sent (block-worker.ts). */
export type PoolTask = { kind: 'pgzip'; data: Uint8Array; dict: Uint8Array; crc: boolean } | { kind: 'go-segment'; task: SegmentTask; crcFrom: number };

interface Task {
  message: PoolTask;
  transfer: ArrayBuffer[];
  resolve(out: unknown): void;
  reject(e: Error): void;
}

const SCRIPT = new URL('./block-worker.js', import.meta.url);

function drop(list: Worker[], w: Worker): void {
  const i = list.indexOf(w);
  if (i >= 0) list.splice(i, 1);
}

export class BlockPool {
  private readonly idle: Worker[] = [];
  private readonly all: Worker[] = [];
  private readonly queue: Task[] = [];
  private readonly busy = new Map<Worker, Task>();

  constructor(readonly size = availableParallelism()) {}

  /**
   * pgzip's block of `data` (its buffer is handed over, and back as `input`, for the next block
   * to be read into: in `serve`, where glibc maps each large buffer anew, a fresh 1 MiB per
   * block cost 15% of the time) after `dict`; with the CRC-32 of `data` if `crc`
   */
  compress(data: Uint8Array, dict: Uint8Array, crc: boolean): Promise<CompressedBlock & { input: Uint8Array<ArrayBuffer> }> {
    return this.run({ kind: 'pgzip', data, dict, crc }, [data.buffer as ArrayBuffer]);
  }

  /** Go deflate's segment (go-parallel.ts parseSegment; its data buffer is handed over) */
  segment(task: SegmentTask, crcFrom: number): Promise<ParsedSegment> {
    return this.run({ kind: 'go-segment', task, crcFrom }, [task.data.buffer as ArrayBuffer]);
  }

  private run<T>(message: PoolTask, transfer: ArrayBuffer[]): Promise<T> {
    const p = new Promise<T>((resolve, reject) => {
      this.queue.push({ message, transfer, resolve: resolve as (out: unknown) => void, reject });
      this.next();
    });
    p.catch(() => undefined); // tasks of a stream given up are not awaited (their threads may be ended)
    return p;
  }

  private worker(): Worker | undefined {
    const w = this.idle.pop();
    if (w || this.all.length >= this.size) return w;
    const fresh = new Worker(SCRIPT);
    fresh.on('message', (out: { error?: string }) => {
      const t = this.busy.get(fresh)!;
      this.busy.delete(fresh);
      this.idle.push(fresh);
      fresh.unref(); // an idle thread never holds the process open
      if (out.error !== undefined) t.reject(new Error(out.error));
      else t.resolve(out);
      this.next();
    });
    const gone = (e: Error) => {
      this.busy.get(fresh)?.reject(e);
      this.busy.delete(fresh);
      drop(this.all, fresh);
      drop(this.idle, fresh);
      this.next();
    };
    fresh.on('error', gone);
    fresh.on('exit', (code) => gone(new Error(`pgzip block thread exited (${code})`)));
    this.all.push(fresh);
    return fresh;
  }

  private next(): void {
    while (this.queue.length) {
      const w = this.worker();
      if (!w) return;
      const t = this.queue.shift()!;
      this.busy.set(w, t);
      w.ref();
      w.postMessage(t.message, t.transfer);
    }
  }

  /** Ends the threads (the pool makes new ones if used again). */
  async close(): Promise<void> {
    await Promise.all(this.all.map((w) => w.terminate()));
  }
}
