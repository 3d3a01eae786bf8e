/**
 * Every documented operation has an operationId (client generators name their methods from it). A route
 * may declare its own in `schema.operationId`; otherwise one is derived from the method and the path's
 * fixed segments, e.g. GET /v1/orgs/:orgId/projects → listOrgsProjects, GET …/projects/:projectId →
 * getOrgsProjectsByProjectId, POST …/projects → createOrgsProjects. Two routes may not end up with the same id:
 * `claimOperationId` throws at startup (a test builds the whole app).
 */
const VERBS: Record<string, string> = { POST: 'create', PUT: 'set', PATCH: 'update', DELETE: 'delete' };

export function deriveOperationId(method: string, url: string): string {
  const segments = url.split('/').filter((s) => s !== '' && s !== 'v1');
  const last = segments.at(-1) ?? '';
  const item = last.startsWith(':');
  const words = segments.filter((s) => !s.startsWith(':')).flatMap((s) => s.split(/[^A-Za-z0-9]+/)).filter(Boolean);
  const verb = method === 'GET' ? (item ? 'get' : 'list') : (VERBS[method] ?? method.toLowerCase());
  const pascal = (w: string) => w[0]!.toUpperCase() + w.slice(1);
  return verb + words.map(pascal).join('') + (item ? `By${pascal(last.slice(1))}` : '');
}

export function createOperationIds(): (method: string, url: string, declared: string | undefined) => string {
  const taken = new Map<string, string>();
  return (method, url, declared) => {
    const id = declared ?? deriveOperationId(method, url);
    const owner = taken.get(id);
    if (owner && owner !== `${method} ${url}`) {
      throw new Error(`operationId ${id} of ${method} ${url} is already used by ${owner}; declare schema.operationId`);
    }
    taken.set(id, `${method} ${url}`);
    return id;
  };
}
