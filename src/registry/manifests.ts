// GET/HEAD /v2/<name>/manifests/<tag|digest>.
import { isValidDigest, looksLikeDigest } from '../oci/digest.js';
import { isValidTag } from '../oci/names.js';
import { RegistryError } from './errors.js';
import { API_HEADERS, type Context } from './context.js';

export async function getManifest(ctx: Context, name: string, ref: string): Promise<void> {
  const accept = ctx.req.headers.accept;
  const repo = ctx.repos.get(name);
  let served;
  if (looksLikeDigest(ref)) {
    if (!isValidDigest(ref)) throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(ref)}`);
    served = await ctx.resolver.byDigest(repo, ref);
    if (!served && !repo) throw new RegistryError('NAME_UNKNOWN', `repository ${name} is not known to this registry`, { name });
  } else {
    if (!isValidTag(ref)) throw new RegistryError('TAG_INVALID', `invalid tag ${JSON.stringify(ref)}`);
    if (!repo) throw new RegistryError('NAME_UNKNOWN', `repository ${name} is not known to this registry`, { name });
    served = await ctx.resolver.forTag(repo, ref, accept);
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
