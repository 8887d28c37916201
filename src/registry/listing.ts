// GET /v2/<name>/tags/list and GET /v2/_catalog, with the spec's n/last pagination.
import { paginate, repository, sendJson, type Context } from './context.js';

export function tagsList(ctx: Context, name: string): void {
  const repo = repository(ctx, name);
  const { page, link } = paginate(ctx, [...repo.tags.keys()].sort(), `/v2/${name}/tags/list`);
  sendJson(ctx, 200, { name, tags: page }, link ? { Link: link } : {});
}

export function catalog(ctx: Context): void {
  const { page, link } = paginate(ctx, ctx.repos.names(), '/v2/_catalog');
  sendJson(ctx, 200, { repositories: page }, link ? { Link: link } : {});
}
