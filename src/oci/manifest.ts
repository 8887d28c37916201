// Manifests: reading the descriptors out of stored manifest bytes, and the synthesized
// manifest csreg serves when the original one's blobs cannot all be produced.
//
// The synthesized manifest is a contract (docs/synthesized-manifest.md): every csreg serving
// the same image yields the same bytes, hence the same digest.
import type { Image, Layer } from '../storage/records.js';
import { IMAGE_MANIFEST_TYPES, INDEX_TYPES, MT } from './media.js';

export class ManifestError extends Error {
  override name = 'ManifestError';
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os?: string; architecture?: string; variant?: string };
  artifactType?: string;
  annotations?: Record<string, string>;
}

export interface ParsedManifest {
  mediaType: string;
  kind: 'image' | 'index' | 'other';
  config?: Descriptor;
  layers: Descriptor[];
  /** index children */
  manifests: Descriptor[];
  subject?: Descriptor;
  artifactType?: string;
  annotations?: Record<string, string>;
}

/** The OCI digest grammar (algorithm ":" encoded); whether we can verify it is the caller's business. */
const DIGEST_GRAMMAR = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

function stringMap(v: unknown, what: string): Record<string, string> | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v) || !Object.values(v).every((x) => typeof x === 'string')) throw new ManifestError(`${what} is not a map of strings`);
  return v as Record<string, string>;
}

// Every field is checked for its type here, once: callers use digests as file names and sizes
// as byte counts, and a wrong type deep inside a handler would be a TypeError (a 500), not a 400.
function descriptor(v: unknown, what: string): Descriptor {
  const o = v as Record<string, unknown>;
  if (!isObject(o) || typeof o.digest !== 'string' || typeof o.size !== 'number' || typeof o.mediaType !== 'string') {
    throw new ManifestError(`${what} is not a valid descriptor`);
  }
  if (!DIGEST_GRAMMAR.test(o.digest)) throw new ManifestError(`${what} has an invalid digest ${JSON.stringify(o.digest)}`);
  if (!Number.isSafeInteger(o.size) || o.size < 0) throw new ManifestError(`${what} has an invalid size ${o.size}`);
  if (o.platform !== undefined && o.platform !== null) {
    const p = o.platform as Record<string, unknown>;
    if (!isObject(p) || ['os', 'architecture', 'variant'].some((k) => p[k] !== undefined && typeof p[k] !== 'string')) throw new ManifestError(`${what} has an invalid platform`);
  }
  if (o.artifactType !== undefined && o.artifactType !== null && typeof o.artifactType !== 'string') throw new ManifestError(`${what} has an invalid artifactType`);
  stringMap(o.annotations, `${what}.annotations`);
  return o as unknown as Descriptor;
}

/** Parse manifest bytes; the media type comes from the document or from its shape. */
export function parseManifest(bytes: Buffer, declaredType?: string): ParsedManifest {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new ManifestError(`manifest is not valid JSON: ${(e as Error).message}`);
  }
  if (!o || typeof o !== 'object' || Array.isArray(o)) throw new ManifestError('manifest is not a JSON object');
  let mediaType = typeof o.mediaType === 'string' ? o.mediaType : declaredType ?? '';
  if (!mediaType) {
    if (o.schemaVersion === 1) mediaType = o.signatures ? MT.dockerSchema1Signed : MT.dockerSchema1;
    else if (Array.isArray(o.manifests)) mediaType = MT.ociIndex;
    else if (o.config) mediaType = MT.ociManifest;
  }
  const kind = INDEX_TYPES.has(mediaType) ? 'index' : IMAGE_MANIFEST_TYPES.has(mediaType) ? 'image' : 'other';
  const list = (k: string) => {
    if (o[k] === undefined || o[k] === null) return [];
    if (!Array.isArray(o[k])) throw new ManifestError(`${k} is not an array`);
    return (o[k] as unknown[]).map((d, i) => descriptor(d, `${k}[${i}]`));
  };
  const present = (k: string) => o[k] !== undefined && o[k] !== null;
  if (kind === 'image' && !present('config')) throw new ManifestError('image manifest without a config descriptor');
  if (present('artifactType') && typeof o.artifactType !== 'string') throw new ManifestError('artifactType is not a string');
  return {
    mediaType,
    kind,
    config: present('config') ? descriptor(o.config, 'config') : undefined,
    layers: list('layers'),
    manifests: list('manifests'),
    subject: present('subject') ? descriptor(o.subject, 'subject') : undefined,
    artifactType: typeof o.artifactType === 'string' ? o.artifactType : undefined,
    annotations: stringMap(o.annotations, 'annotations'),
  };
}

/**
 * The synthesized manifest: config = the stored config blob, layers = the uncompressed tars
 * (diff digests), or with `gzip`, the tars compressed as containers/image pushes them (the
 * digests a push of the image would upload). Written by hand in a fixed key order with no
 * whitespace, so its bytes do not depend on any JSON library.
 */
export function synthesizeManifest(config: { digest: string; size: number }, layers: { digest: string; size: number }[], form: 'oci' | 'docker', gzip = false): { bytes: Buffer; mediaType: string } {
  const oci = form === 'oci';
  const mediaType = oci ? MT.ociManifest : MT.dockerManifest;
  const desc = (mt: string, digest: string, size: number) => `{"mediaType":"${mt}","digest":"${digest}","size":${size}}`;
  const layerType = oci ? (gzip ? MT.ociLayerGzip : MT.ociLayerTar) : gzip ? MT.dockerLayerGzip : MT.dockerLayerTar;
  const json = `{"schemaVersion":2,"mediaType":"${mediaType}","config":${desc(oci ? MT.ociConfig : MT.dockerConfig, config.digest, config.size)},`
    + `"layers":[${layers.map((l) => desc(layerType, l.digest, l.size)).join(',')}]}`;
  return { bytes: Buffer.from(json, 'utf8'), mediaType };
}

/** The config big-data item of an image (`sha256:<image ID>` for schema2/OCI images). */
export function configKey(image: Image): string | undefined {
  const key = `sha256:${image.id}`;
  return image.bigDataNames.includes(key) ? key : undefined;
}
