// Image signatures as containers/image keeps them in a store (storage_dest.go PutSignatures,
// storage_src.go GetSignatures): one big-data item per manifest, `signature-<hex of its
// digest>`, holding the signatures one after the other, and their sizes in the image's metadata
// JSON (`signatures-sizes`: digest → sizes). The image's own manifest (big data `manifest`)
// also has the default item `signatures` with `signature-sizes`, which is what a copy from the
// store by name reads. A blob starting with a NUL byte is a sigstore signature
// ("\0sigstore-json\n" + JSON); any other is a simple-signing (GPG) signature.
import type { Image } from './records.js';
import type { Store } from './store.js';

export const DEFAULT_SIGNATURES_KEY = 'signatures';
const SIZES = 'signature-sizes';
const SIZES_BY_DIGEST = 'signatures-sizes';

/** The big-data key of the signatures of the manifest with this digest. */
export const signatureKey = (digest: string): string => 'signature-' + digest.slice(digest.indexOf(':') + 1);

/** An image's metadata string as the JSON object c/image keeps in it ({} when empty); throws when it is something else. */
export function metadataObject(image: { metadata?: string }): Record<string, unknown> {
  if (!image.metadata) return {};
  let o: unknown;
  try {
    o = JSON.parse(image.metadata);
  } catch {
    throw new Error('its metadata is not JSON');
  }
  if (!o || typeof o !== 'object' || Array.isArray(o)) throw new Error('its metadata is not a JSON object');
  return o as Record<string, unknown>;
}

/** The metadata object, or undefined where it is not one (then no signatures are recorded). */
function metadataOrNone(image: { metadata?: string }): Record<string, unknown> | undefined {
  try {
    return metadataObject(image);
  } catch {
    return undefined;
  }
}

const sizeList = (v: unknown): number[] | undefined =>
  Array.isArray(v) && v.every((n) => Number.isSafeInteger(n) && n >= 0) ? (v as number[]) : undefined;

/** `signatures-sizes`: manifest digest → sizes ({} when absent) */
const sizesByDigest = (meta: Record<string, unknown>): Record<string, unknown> =>
  meta[SIZES_BY_DIGEST] && typeof meta[SIZES_BY_DIGEST] === 'object' ? (meta[SIZES_BY_DIGEST] as Record<string, unknown>) : {};

/** Where the signatures of one manifest of an image are: a big-data key and the sizes of its signatures. */
export interface SignatureSlot {
  key: string;
  sizes: number[];
}

/**
 * The slots that hold the signatures of manifest `digest`: its own, and the default one when
 * it is the image's own manifest. Sizes as recorded (empty when none are).
 */
export function signatureSlots(image: Image, meta: Record<string, unknown>, digest: string): SignatureSlot[] {
  const slots = [{ key: signatureKey(digest), sizes: sizeList(sizesByDigest(meta)[digest]) ?? [] }];
  if (image.bigDataDigests.manifest === digest) slots.push({ key: DEFAULT_SIGNATURES_KEY, sizes: sizeList(meta[SIZES]) ?? [] });
  return slots;
}

/** Record new sizes of a slot in the metadata object. */
export function setSlotSizes(meta: Record<string, unknown>, digest: string, slot: SignatureSlot): void {
  if (slot.key === DEFAULT_SIGNATURES_KEY) {
    meta[SIZES] = slot.sizes;
    return;
  }
  meta[SIZES_BY_DIGEST] = { ...sizesByDigest(meta), [digest]: slot.sizes };
}

/** A slot's item cut into its signatures; throws when the item is shorter than its sizes say (as c/image refuses it). */
export function splitSignatures(data: Buffer, sizes: number[], what: string): Buffer[] {
  const total = sizes.reduce((a, b) => a + b, 0);
  if (total > data.length) throw new Error(`${what}: expected at least ${total} bytes of signatures, only found ${data.length}`);
  const out: Buffer[] = [];
  let at = 0;
  for (const n of sizes) {
    out.push(data.subarray(at, at + n));
    at += n;
  }
  return out;
}

export const isSimpleSigning = (sig: Uint8Array): boolean => sig.length > 0 && sig[0] !== 0;

/** Whether an image holds any signatures (c/image leaves an empty item for a manifest without any). */
export const hasSignatures = (image: Image): boolean =>
  image.bigDataNames.some((k) => (k === DEFAULT_SIGNATURES_KEY || k.startsWith('signature-')) && (image.bigDataSizes[k] ?? 0) > 0);

/** Every signature slot an image's metadata records (the default one under the digest of its own manifest). */
export function recordedSlots(image: Image, meta: Record<string, unknown>): (SignatureSlot & { digest: string })[] {
  const out = Object.entries(sizesByDigest(meta)).map(([digest, v]) => ({ digest, key: signatureKey(digest), sizes: sizeList(v) ?? [] }));
  const own = sizeList(meta[SIZES]);
  if (own?.length) out.push({ digest: image.bigDataDigests.manifest ?? '', key: DEFAULT_SIGNATURES_KEY, sizes: own });
  return out;
}

/** How many signatures the store records for each manifest of an image (undefined: its metadata is not JSON). */
export function signatureCounts(image: Image): Record<string, number> | undefined {
  const meta = metadataOrNone(image);
  if (!meta) return undefined;
  const counts: Record<string, number> = {};
  // (the default slot repeats the image's own manifest's: counted where that one is not recorded)
  for (const slot of recordedSlots(image, meta)) if (slot.sizes.length && !(slot.digest in counts)) counts[slot.digest] = slot.sizes.length;
  return counts;
}

/** Whether the store records signatures of manifest `digest` of an image. */
export function isSigned(image: Image, digest: string): boolean {
  const meta = metadataOrNone(image);
  return !!meta && signatureSlots(image, meta, digest).some((s) => s.sizes.length > 0);
}

/** The signatures of manifest `digest` of an image: its own slot's, else the default slot's (its own manifest). */
export async function readSignatures(store: Store, image: Image, digest: string): Promise<Buffer[]> {
  const slot = signatureSlots(image, metadataObject(image), digest).find((s) => s.sizes.length);
  if (!slot) return [];
  return splitSignatures(await store.imageBigData(image, slot.key), slot.sizes, `image ${image.id} ${slot.key}`);
}
