import type { InvalidationBus } from '../../platform/cache/invalidation-bus.ts';
import { createLocalCache } from '../../platform/cache/local-cache.ts';

/** The bus topic (and metric label) of membership invalidations; keys are `<orgId>:<userId>`. */
export const MEMBERSHIP_CACHE = 'memberships';

/**
 * Members' roles, cached per process (platform/cache/local-cache.ts): keyed by org AND user, never older
 * than `maxAgeMs`, invalidated on every instance after a role change or a removal commits (the use cases
 * call `invalidate`). Non-members are not cached, so a new membership is visible at once.
 */
export function createMembershipCache(deps: { invalidations: InvalidationBus; maxAgeMs: number }) {
  const cache = createLocalCache<string>({ name: MEMBERSHIP_CACHE, bus: deps.invalidations, maxAgeMs: deps.maxAgeMs });
  return {
    role: (orgId: string, userId: string, load: () => Promise<string | null>, beforeLookup?: () => Promise<void>) =>
      cache.get(`${orgId}:${userId}`, load, { beforeLoad: beforeLookup }),
    /** After commit: the user's role in the org changed or ended. */
    invalidate: async (orgId: string, userId: string): Promise<void> => void (await cache.invalidate([`${orgId}:${userId}`])),
    close: () => cache.close(),
  };
}

export type MembershipCache = ReturnType<typeof createMembershipCache>;
