// GET /v2/<name>/referrers/<digest>: an OCI index of the stored manifests whose subject is
// the digest (an empty index when none), optionally filtered by artifactType.
import { isValidDigest } from '../oci/digest.js';
import { MT } from '../oci/media.js';
import { RegistryError } from './errors.js';
import { API_HEADERS, type Context } from './context.js';

export async function referrers(ctx: Context, name: string, digest: string): Promise<void> {
  if (!isValidDigest(digest)) throw new RegistryError('DIGEST_INVALID', `invalid digest ${JSON.stringify(digest)}`);
  const artifacts = (ctx.artifacts?.all(name) ?? []).filter((a) => a.subject === digest);
  // (a repository not known yet has no referrers: an empty index, as the spec wants, not a 404)
  const images = ctx.repos.get(name)?.images ?? [];
  let list = [
    ...(await ctx.resolver.referrers(digest, images)),
    ...artifacts.map(({ mediaType, digest: d, size, artifactType, annotations }) => ({ mediaType, digest: d, size, artifactType, annotations })),
  ];
  const filter = ctx.url.searchParams.get('artifactType');
  const headers: Record<string, string | number> = { ...API_HEADERS, 'Content-Type': MT.ociIndex };
  if (filter) {
    list = list.filter((d) => d.artifactType === filter);
    headers['OCI-Filters-Applied'] = 'artifactType';
  }
  const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: list }));
  headers['Content-Length'] = body.length;
  ctx.res.writeHead(200, headers);
  ctx.res.end(ctx.head ? undefined : body);
}
