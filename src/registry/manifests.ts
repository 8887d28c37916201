// GET/HEAD /v2/<name>/manifests/<tag|digest>.
import { isValidDigest, looksLikeDigest } from '../oci/digest.js';
import { isValidTag, nameInRepository, namesInRepository, type Repository } from '../oci/names.js';
import { RegistryError, type ErrorCode } from './errors.js';
import { API_HEADERS, repository, type Context } from './context.js';
import { commitManifest, CommitError, storeNameFor, type CommitResult } from '../oci/commit.js';
import type { ServedManifest } from '../oci/resolver.js';
import { readFile } from 'node:fs/promises';
import { StoreWriter, WriteError } from '../storage/writer.js';
import type { Image } from '../storage/records.js';

/** How long a manifest request by tag waits for recipes of layers seen for the first time. */
const TAG_RECIPE_WAIT_MS = 15_000;

/** An artifact csreg keeps (not in the store), as a served manifest. */
async function artifactManifest(ctx: Context, name: string, ref: string): Promise<ServedManifest | undefined> {
  const a = ctx.artifacts?.get(name, ref);
  const file = a && ctx.cache?.file(a.digest);
  return a && file ? { bytes: await readFile(file), mediaType: a.mediaType, digest: a.digest } : undefined;
}

export async function getManifest(ctx: Context, name: string, ref: string): Promise<void> {
  const accept = ctx.req.headers.accept;
  const repo = ctx.repos.get(name);
  let served = await artifactManifest(ctx, name, ref);
  // original manifests need their compressed layers: find the recipes of layers not seen yet
  const candidates = looksLikeDigest(ref) ? ctx.snapshot.imagesWithDigest(ref) : [repo?.tags.get(ref)].filter((i) => i !== undefined);
  if (!served && ctx.recipes) {
    const failed = (e: Error) => ctx.log.error('recipe detection failed', { error: e.message });
    const held = (digest: string) => !!ctx.cache?.file(digest);
    const ready = ctx.recipes.ensureImages(candidates, ctx.snapshot, held, failed).catch(failed);
    // by digest the client needs this very manifest, so wait; a tag is answered synthesized
    // if detection takes long (it goes on, and the tag serves the original once it is done)
    await (looksLikeDigest(ref) ? ready : Promise.race([ready, new Promise((r) => setTimeout(r, TAG_RECIPE_WAIT_MS).unref())]));
  }
  if (served) {
    // csreg's own artifact
  } else if (looksLikeDigest(ref)) {
    if (!isValidDigest(ref)) throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(ref)}`);
    served = await ctx.resolver.byDigest(repo, ref);
    if (!served && !repo) throw new RegistryError('NAME_UNKNOWN', `repository ${name} is not known to this registry`, { name });
  } else {
    if (!isValidTag(ref)) throw new RegistryError('TAG_INVALID', `invalid tag ${JSON.stringify(ref)}`);
    if (!repo) throw new RegistryError('NAME_UNKNOWN', `repository ${name} is not known to this registry`, { name });
    // the manifest this tag was pushed with, when csreg received it (one record may carry several)
    const full = repo.name;
    const pushed = (image: { names: string[] }) => {
      const n = namesInRepository(image, full).find((x) => nameInRepository(x)?.tag === ref && ctx.tagManifests?.get(x));
      return n ? ctx.tagManifests!.get(n) : undefined;
    };
    served = await ctx.resolver.forTag(repo, ref, accept, pushed);
  }
  if (!served) throw new RegistryError('MANIFEST_UNKNOWN', `manifest ${ref} is not known in ${name} (or not all of its blobs can be served)`, { name, reference: ref });
  ctx.res.writeHead(200, {
    ...API_HEADERS,
    'Content-Type': served.mediaType,
    'Content-Length': served.bytes.length,
    'Docker-Content-Digest': served.digest,
    ETag: `"${served.digest}"`,
  });
  ctx.res.end(ctx.head ? undefined : served.bytes);
}

/** archive limit of common registries: a manifest larger than this is refused */
export const MAX_MANIFEST = 4 << 20;

/**
 * The body, up to `limit` bytes. Beyond it: MANIFEST_INVALID (or `code`) as distribution answers
 * (its detail "http: request body too large"), with the status 413 the OCI spec allows, and the
 * connection closed after the answer instead of reading the rest.
 */
export async function readBody(ctx: Context, limit: number, code: ErrorCode = 'MANIFEST_INVALID', what = 'manifest'): Promise<Buffer> {
  const tooLarge = () => {
    ctx.res.setHeader('Connection', 'close');
    return new RegistryError(code, `${what} larger than ${limit} bytes`, 'http: request body too large', 413);
  };
  const declared = Number(ctx.req.headers['content-length'] ?? 0);
  if (declared > limit) throw tooLarge();
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of ctx.req) {
    n += (c as Buffer).length;
    if (n > limit) throw tooLarge();
    parts.push(c as Buffer);
  }
  return Buffer.concat(parts);
}

/** tags a push by digest may add with `?tag=` (the spec: at least 10) */
const MAX_TAG_PARAMS = 100;

/**
 * PUT /v2/<name>/manifests/<tag|digest>: the image goes into the store under the push naming
 * rule; a push by digest may also tag it (`?tag=a&tag=b`, answered with OCI-Tag), each tag
 * as a push by that tag would.
 */
export async function putManifest(ctx: Context, name: string, ref: string): Promise<void> {
  if (looksLikeDigest(ref) ? !isValidDigest(ref) : !isValidTag(ref)) {
    throw new RegistryError(looksLikeDigest(ref) ? 'DIGEST_INVALID' : 'TAG_INVALID', `invalid reference ${JSON.stringify(ref)}`);
  }
  const tags = looksLikeDigest(ref) ? [...new Set(ctx.url.searchParams.getAll('tag'))] : [];
  const bad = tags.find((t) => !isValidTag(t));
  if (bad !== undefined) throw new RegistryError('TAG_INVALID', `invalid tag ${JSON.stringify(bad)}`);
  if (tags.length > MAX_TAG_PARAMS) throw new RegistryError('TAG_INVALID', `at most ${MAX_TAG_PARAMS} tags per push`);
  const bytes = await readBody(ctx, MAX_MANIFEST);
  const result = await commitAs(ctx, name, ref, bytes);
  for (const t of tags) await commitAs(ctx, name, t, bytes);
  for (const b of await ctx.cache!.enforceLimit()) ctx.log.warn('blob cache: evicted (its pushed digest is no longer servable)', { digest: b.digest, size: b.size });
  const headers: Record<string, string | number> = { ...API_HEADERS, Location: `/v2/${name}/manifests/${result.digest}`, 'Docker-Content-Digest': result.digest, 'Content-Length': 0 };
  if (result.subject) headers['OCI-Subject'] = result.subject;
  if (tags.length) headers['OCI-Tag'] = tags.join(', ');
  ctx.res.writeHead(201, headers);
  ctx.res.end();
}

/** The manifest committed under one reference (a tag then names it alone). */
async function commitAs(ctx: Context, name: string, ref: string, bytes: Buffer): Promise<CommitResult> {
  let result: CommitResult;
  try {
    result = await commitManifest({ store: ctx.store, resolver: ctx.resolver, cache: ctx.cache!, artifacts: ctx.artifacts!, repos: ctx.repos, repo: name, reference: ref, bytes });
  } catch (e) {
    if (e instanceof CommitError) throw new RegistryError(e.code, e.message);
    if (e instanceof WriteError) throw new RegistryError('MANIFEST_INVALID', e.message);
    throw e;
  }
  if (!looksLikeDigest(ref)) {
    // a tag names one thing: the image or artifact pushed last
    if (result.imageId) await ctx.artifacts?.remove(name, ref);
    else await new StoreWriter(ctx.store).dropImageName(storeNameFor(name, ref));
    await ctx.tagManifests?.set(storeNameFor(name, ref), result.digest);
  }
  ctx.log.info('manifest pushed', { repository: name, reference: ref, digest: result.digest, image: result.imageId });
  return result;
}

/** DELETE by tag removes the name; by digest takes the image out of the repository (deleted once nothing else names it). */
export async function deleteManifest(ctx: Context, name: string, ref: string): Promise<void> {
  if (looksLikeDigest(ref) && !isValidDigest(ref)) throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(ref)}`);
  if (await ctx.artifacts?.remove(name, ref)) {
    ctx.log.info('artifact deleted', { repository: name, reference: ref });
    ctx.res.writeHead(202, { ...API_HEADERS, 'Content-Length': 0 });
    ctx.res.end();
    return;
  }
  const repo = repository(ctx, name);
  const writer = new StoreWriter(ctx.store);
  try {
    await deleteFromStore(ctx, writer, repo, name, ref);
  } catch (e) {
    // e.g. the image is used by a container: the store is left as it was
    if (e instanceof WriteError) throw new RegistryError('DENIED', e.message, undefined, 409);
    throw e;
  }
  ctx.res.writeHead(202, { ...API_HEADERS, 'Content-Length': 0 });
  ctx.res.end();
}

async function deleteFromStore(ctx: Context, writer: StoreWriter, repo: Repository, name: string, ref: string): Promise<void> {
  if (looksLikeDigest(ref)) {
    if (!isValidDigest(ref)) throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(ref)}`);
    const served = ctx.resolver.imagesServing(repo, ref);
    if (!served.length) throw new RegistryError('MANIFEST_UNKNOWN', `manifest ${ref} is not known in ${name}`);
    const images = writable(served);
    // as in a registry, the manifest leaves this repository (with its tags there); an image
    // that other repositories (or podman's other tags) name stays for them
    for (const img of images) {
      const r = await writer.deleteImageNames(img.id, namesInRepository(img, repo.name));
      ctx.log.info(r.deleted ? 'manifest deleted' : 'manifest deleted from the repository (the image keeps its other names)', { repository: name, digest: ref, image: img.id, layers: r.layers.length });
    }
  } else {
    const tagged = (img: Image) => namesInRepository(img, repo.name).filter((n) => nameInRepository(n)?.tag === ref);
    const named = [...repo.images].filter((i) => tagged(i).length);
    if (!named.length) throw new RegistryError('MANIFEST_UNKNOWN', `tag ${ref} is not known in ${name}`);
    for (const img of writable(named)) {
      await writer.removeImageNames(img.id, tagged(img));
      ctx.log.info('tag deleted', { repository: name, tag: ref, image: img.id });
    }
  }
}

/** The images of the primary store (an image there and in an additional store is the former's to change); refused when all are read-only. */
function writable(images: Image[]): Image[] {
  const w = images.filter((i) => !i.readOnly);
  if (!w.length) throw new RegistryError('DENIED', `image ${images[0].id} is in the read-only image store ${images[0].storeRoot} (additionalimagestores): it cannot be changed here`, undefined, 409);
  return w;
}
