import type { FastifyRequest } from 'fastify';
import { accessOf } from './auth.ts';

/** Who acts: a user, an API key (on behalf of the user who created it), or the system itself. */
export interface Actor {
  type: 'user' | 'api_key' | 'system';
  id: string;
  /** The user behind the actor (for an API key, its creator); null for the system. */
  userId: string | null;
}

/** Who does something, from where, for which request: what every mutation records (audit, events). */
export interface ActorContext {
  actor: Actor;
  requestId: string | null;
  ip: string | null;
}

/** An actor inside one org: the tenant whose state a mutation changes. */
export interface TenantActorContext extends ActorContext {
  tenantId: string;
}

/** The actor of a request (the system, 'anonymous', before authentication: signup, login). */
export function actorOf(request: FastifyRequest): ActorContext {
  const p = request.principal;
  const actor: Actor = !p
    ? { type: 'system', id: 'anonymous', userId: null }
    : p.kind === 'api_key'
      ? { type: 'api_key', id: p.apiKeyId!, userId: p.userId }
      : { type: 'user', id: p.userId, userId: p.userId };
  return { actor, requestId: request.id, ip: request.ip };
}

/** The actor of an org-scoped request, with the org as tenant. */
export function tenantActorOf(request: FastifyRequest): TenantActorContext {
  return { ...actorOf(request), tenantId: accessOf(request).orgId };
}

/** Work done by the platform or a job, not on anyone's request. */
export function systemActor(id: string, requestId: string | null = null): ActorContext {
  return { actor: { type: 'system', id, userId: null }, requestId, ip: null };
}
