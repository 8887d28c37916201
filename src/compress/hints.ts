// Which compressor most likely made a layer, guessed from its image's config: the tool that
// built an image usually pushed it as well (design.md, "who compressed the layers users have").
// A guess only orders the candidates (a right one spares a whole failed pass over the layer);
// every verdict still comes from reproducing the blob.
import { profileById, PROFILES } from './profiles.js';

/** (a profile id that no longer exists fails at load, not silently as a guess never made) */
const known = (id: string): string => {
  if (!profileById(id)) throw new Error(`hints: no profile ${id}`);
  return id;
};
const PGZIP = PROFILES[0].id;
const GO6 = known('go1.19-gzip/6');
const GO1 = known('go1.19-gzip/1');
const JAVA = ['zlib-1.2/6+java', 'zlib-1.2/6+java-legacy'].map(known);

interface HistoryEntry {
  author?: unknown;
  created_by?: unknown;
  comment?: unknown;
  empty_layer?: unknown;
}

/**
 * Profiles the config points to for its layer `index` (0 = bottom) of `layers`, most likely
 * first: an image buildah or podman built (their `io.buildah.version` label) was pushed by
 * containers/image (pgzip); a layer BuildKit made (its history comment) by Go's compress/gzip
 * (docker push, BuildKit's exporter); a layer ko made (its history author) by
 * go-containerregistry's, at BestSpeed; a layer Jib made (its history author) by Java's zlib.
 * History entries map to layers only when the non-empty ones are exactly as many.
 */
export function hintedProfiles(config: unknown, index: number, layers: number): string[] {
  if (!config || typeof config !== 'object') return [];
  const c = config as { history?: unknown; config?: { Labels?: unknown } };
  const hints: string[] = [];
  const labels = c.config?.Labels;
  if (labels && typeof labels === 'object' && 'io.buildah.version' in labels) hints.push(PGZIP);
  const history = Array.isArray(c.history) ? (c.history as HistoryEntry[]).filter((h) => h && typeof h === 'object' && h.empty_layer !== true) : [];
  const entry = history.length === layers ? history[index] : undefined;
  if (entry?.comment === 'buildkit.dockerfile.v0') hints.push(GO6);
  if (entry?.author === 'ko') hints.push(GO1);
  if (entry?.author === 'Jib' || (typeof entry?.created_by === 'string' && entry.created_by.startsWith('jib-'))) hints.push(...JAVA);
  return [...new Set(hints)];
}
