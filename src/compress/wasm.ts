// The encoders' WebAssembly parts (wasm/*.c, compiled by scripts/build-wasm.sh into dist/ beside
// this file): loaded once per thread; where one is missing, its encoder runs its TypeScript
// version, which stays the reference (tests require both to write the same bytes).
import { readFileSync } from 'node:fs';

const modules = new Map<string, WebAssembly.Module | undefined>();
const made = new Map<string, number>();
let enabled = true;

/** Instances of wasm/NAME.wasm made so far (tests check that encoders use them, not only that they load). */
export const wasmInstancesMade = (name: string): number => made.get(name) ?? 0;

/** The compiled module wasm/NAME.wasm, if built and WebAssembly is on. */
export function wasmModule(name: string): WebAssembly.Module | undefined {
  if (!enabled) return undefined;
  if (!modules.has(name)) {
    try {
      modules.set(name, new WebAssembly.Module(readFileSync(new URL(`./wasm/${name}.wasm`, import.meta.url))));
    } catch {
      modules.set(name, undefined);
    }
  }
  return modules.get(name);
}

/** A new instance of wasm/NAME.wasm (its own memory), if built and WebAssembly is on. */
export function wasmInstance<T>(name: string): (T & { memory: WebAssembly.Memory }) | undefined {
  const m = wasmModule(name);
  if (!m) return undefined;
  made.set(name, wasmInstancesMade(name) + 1);
  return new WebAssembly.Instance(m, {}).exports as unknown as T & { memory: WebAssembly.Memory };
}

/** Whether encoders made from now on use WebAssembly; off: their TypeScript versions (tests compare the two). */
export function useWasm(on: boolean): void {
  enabled = on;
}
