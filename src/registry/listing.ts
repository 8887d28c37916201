// GET /v2/<name>/tags/list and GET /v2/_catalog, with the spec's n/last pagination.
import { paginate, repository, sendJson, type Context } from './context.js';

export function tagsList(ctx: Context, name: string): void {
  const artifacts = ctx.artifacts?.all(name) ?? [];
  const tags = new Set([...(artifacts.length ? ctx.repos.get(name)?.tags.keys() ?? [] : repository(ctx, name).tags.keys()), ...artifacts.flatMap((a) => a.tags)]);
  const { page, link } = paginate(ctx, [...tags].sort(), `/v2/${name}/tags/list`);
  sendJson(ctx, 200, { name, tags: page }, link ? { Link: link } : {});
}

export function catalog(ctx: Context): void {
  const names = new Set([...ctx.repos.names(), ...(ctx.artifacts?.repositories() ?? [])]);
  const visible = ctx.canPull ? [...names].filter((n) => ctx.canPull!(n)) : [...names];
  const { page, link } = paginate(ctx, visible.sort(), '/v2/_catalog');
  sendJson(ctx, 200, { repositories: page }, link ? { Link: link } : {});
}
