// GET/PUT /extensions/v2/<name>/signatures/<digest>: the signature API extension of OpenShift's
// registry, which containers/image (skopeo, podman, buildah, CRI-O) uses for simple-signing
// signatures when a registry answers its ping with `X-Registry-Supports-Signatures: 1`. The
// signatures are those the store keeps with its images (storage/signatures.ts), so an image
// pulled with its signatures (e.g. from registry.redhat.io) is served with them, and a signed
// push lands where podman reads them.
import { createHash } from 'node:crypto';
import type { Image } from '../storage/records.js';
import type { Snapshot } from '../storage/snapshot.js';
import { hasSignatures, isSimpleSigning, readSignatures } from '../storage/signatures.js';
import { StoreWriter, WriteError } from '../storage/writer.js';
import { isValidDigest } from '../oci/digest.js';
import { RegistryError } from './errors.js';
import { API_HEADERS, repository, sendJson, type Context } from './context.js';
import { readBody } from './manifests.js';

export const SIGNATURES = /^\/extensions\/v2\/(.+)\/signatures\/([^/]+)$/;
export const SIGNATURES_HEADER = 'X-Registry-Supports-Signatures';

/** containers/image reads at most this much of a signature list (iolimits.MaxSignatureListBodySize) */
const MAX_SIGNATURE_BODY = 4 << 20;
const SCHEMA_VERSION = 2;
/** c/image sends "atomic"; OpenShift's own name of the type is AtomicImageV1, its default when none is given */
const TYPES = new Set(['atomic', 'AtomicImageV1']);

const storesSignatures = new WeakMap<Snapshot, boolean>();

/**
 * Whether to advertise the extension: when pushes are accepted (signed pushes are then kept in
 * the store), or when the store holds signatures. Otherwise clients are spared a request per
 * pull that could only answer "none".
 */
export function advertiseSignatures(snap: Snapshot, push: boolean): boolean {
  if (push) return true;
  let has = storesSignatures.get(snap);
  if (has === undefined) storesSignatures.set(snap, (has = snap.images.some(hasSignatures)));
  return has;
}

/** The repository's images (and untagged ones, as for manifests by digest) that hold manifest `digest`. */
function imagesWith(ctx: Context, name: string, digest: string): Image[] {
  if (!isValidDigest(digest)) throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(digest)}`);
  const repo = repository(ctx, name);
  return ctx.snapshot.imagesWithDigest(digest).filter((i) => repo.images.has(i) || i.names.length === 0);
}

const signatureName = (digest: string, sig: Buffer) => `${digest}@${createHash('sha256').update(sig).digest('hex').slice(0, 32)}`;

export async function getSignatures(ctx: Context, name: string, digest: string): Promise<void> {
  const images = imagesWith(ctx, name, digest);
  // a manifest csreg makes (synthesized) has no signatures, but it exists: an empty list
  if (!images.length && !(await ctx.resolver.byDigest(ctx.repos.get(name), digest))) {
    throw new RegistryError('MANIFEST_UNKNOWN', `manifest ${digest} is not known in ${name}`, { name, reference: digest });
  }
  const seen = new Set<string>();
  const signatures: { schemaVersion: number; name: string; type: string; content: string }[] = [];
  for (const image of images) {
    let sigs: Buffer[];
    try {
      sigs = await readSignatures(ctx.store, image, digest);
    } catch (e) {
      ctx.log.warn('signatures not readable', { image: image.id, error: (e as Error).message });
      continue;
    }
    for (const sig of sigs) {
      // (sigstore signatures have no place in this API: clients find those as attachments)
      const content = sig.toString('base64');
      if (!isSimpleSigning(sig) || seen.has(content)) continue;
      seen.add(content);
      signatures.push({ schemaVersion: SCHEMA_VERSION, name: signatureName(digest, sig), type: 'atomic', content });
    }
  }
  sendJson(ctx, 200, { signatures });
}

/** PUT: one signature (c/image sends each as `{schemaVersion: 2, name: "<digest>@<random>", type: "atomic", content}`). */
export async function putSignature(ctx: Context, name: string, digest: string): Promise<void> {
  const images = imagesWith(ctx, name, digest);
  const body = await readBody(ctx, MAX_SIGNATURE_BODY, 'SIGNATURE_INVALID', 'signature');
  const sig = parseSignature(body, digest);
  if (!images.length) {
    throw new RegistryError('MANIFEST_UNKNOWN', `manifest ${digest} is not in the store under ${name}: only the store's manifests keep signatures`, { name, reference: digest });
  }
  let added = false;
  for (const image of images) {
    try {
      added = (await new StoreWriter(ctx.store).addImageSignature(image.id, digest, sig)) || added;
    } catch (e) {
      if (!(e instanceof WriteError)) throw e;
      // deleted meanwhile; else its recorded signatures or metadata do not add up (the store, not the upload, is at fault)
      if (!(await ctx.store.snapshot()).images.some((i) => i.id === image.id)) throw new RegistryError('MANIFEST_UNKNOWN', `manifest ${digest} was deleted from ${name}`, { name, reference: digest });
      throw new RegistryError('SIGNATURE_INVALID', e.message, undefined, 409);
      throw e;
    }
  }
  ctx.log.info(added ? 'signature stored' : 'signature already stored', { repository: name, digest, images: images.map((i) => i.id) });
  ctx.res.writeHead(201, { ...API_HEADERS, 'Content-Length': 0 });
  ctx.res.end();
}

function parseSignature(body: Buffer, digest: string): Buffer {
  const bad = (why: string) => new RegistryError('SIGNATURE_INVALID', `invalid signature: ${why}`);
  let o: unknown;
  try {
    o = JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw bad(`not JSON (${(e as Error).message})`);
  }
  if (!o || typeof o !== 'object' || Array.isArray(o)) throw bad('not a JSON object');
  const { schemaVersion, name, type, content } = o as Record<string, unknown>;
  if (schemaVersion !== SCHEMA_VERSION) throw bad(`only schemaVersion ${SCHEMA_VERSION} is supported`);
  if (type !== undefined && type !== '' && !TYPES.has(type as string)) throw bad(`type ${JSON.stringify(type)} is not "atomic"`);
  if (typeof name !== 'string' || !name.startsWith(digest + '@') || name.length === digest.length + 1) throw bad(`name must be "${digest}@<unique name>"`);
  if (typeof content !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(content) || content.length % 4) throw bad('content must be base64');
  const sig = Buffer.from(content, 'base64');
  // (a NUL first byte marks a sigstore signature in the store: this one would be misread)
  if (!isSimpleSigning(sig)) throw bad('content is empty or not a simple-signing signature');
  return sig;
}
