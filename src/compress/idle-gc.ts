// Recompression threads are kept between jobs (warm: a cold one costs ~0.3 s), and a kept
// thread held on to what its last job allocated: V8 collects an idle isolate's garbage only
// after several seconds, so two job threads and their block threads kept 130 MB more than a
// server without them (RSS 71 → 204 MB after a cold pull of the bench's three images; 137 MB
// when each collects its garbage once idle). V8's gc() is reached through --expose-gc, set at
// run time so that it holds however csreg is started (bin/csreg, node, the test runner).
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
let timer: NodeJS.Timeout | undefined;
let collections = 0;

/** Collect this thread's garbage once it has been idle for `ms` (each call restarts the wait). */
export function collectWhenIdle(ms: number): void {
  clearTimeout(timer);
  timer = setTimeout(() => {
    gc();
    collections++;
  }, ms).unref();
}

/** This thread is busy again: no collection until it is idle. */
export function busyNow(): void {
  clearTimeout(timer);
}

/** Collections made so far on this thread (tests). */
export const idleCollections = (): number => collections;
