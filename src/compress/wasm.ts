// The encoders' WebAssembly parts (wasm/*.c, compiled by scripts/build-wasm.sh into dist/ beside
// this file), by name; the loading, the switch and the counters are storage/wasm.ts's.
import * as wasm from '../storage/wasm.js';

export { useWasm, wasmInstancesMade } from '../storage/wasm.js';

const at = (name: string) => new URL(`./wasm/${name}.wasm`, import.meta.url);

/** The compiled module wasm/NAME.wasm, if built and WebAssembly is on. */
export const wasmModule = (name: string): WebAssembly.Module | undefined => wasm.wasmModule(at(name));

/** A new instance of wasm/NAME.wasm (its own memory), if built and WebAssembly is on. */
export const wasmInstance = <T>(name: string): (T & { memory: WebAssembly.Memory }) | undefined => wasm.wasmInstance<T>(at(name));
