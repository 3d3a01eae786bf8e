import type { Logger } from 'pino';
import type { Database } from '../../platform/db/database.ts';
import type { Redis } from '../../platform/redis.ts';
import type { ResiliencePolicy } from '../../platform/resilience/policy.ts';
import { createAudit } from '../audit/index.ts';
import { createIdentityRepo } from './identity.repo.ts';
import { createIdentityService } from './identity.service.ts';
import type { ThrottleLimits } from './identity.throttle.ts';

/** `plinth admin grant|revoke <email>`: platform administrators may call PLATFORM_ADMIN routes. */
export async function runAdminCommand(
  platform: {
    db: Database;
    redis?: Redis;
    policies: { redis: ResiliencePolicy };
    logger: Logger;
    config: { redisPrefix: string; loginThrottle: ThrottleLimits };
  },
  args: string[],
  out: (line: string) => void = console.log,
): Promise<number> {
  const [sub, email] = args;
  if ((sub !== 'grant' && sub !== 'revoke') || !email) {
    out('usage: plinth admin grant|revoke <email>');
    return 2;
  }
  const identity = createIdentityService({
    repo: createIdentityRepo(platform.db),
    redis: platform.redis,
    redisPolicy: platform.policies.redis,
    redisPrefix: platform.config.redisPrefix,
    logger: platform.logger,
    audit: createAudit({ db: platform.db }),
    throttle: platform.config.loginThrottle,
  });
  try {
    const user = await identity.setPlatformAdmin(email, sub === 'grant');
    out(`${user.email} is ${user.isPlatformAdmin ? 'now' : 'no longer'} a platform administrator`);
    return 0;
  } catch (err) {
    if ((err as { code?: string }).code === 'IDENTITY.USER_NOT_FOUND') {
      out(`no user with email ${email}`);
      return 1;
    }
    throw err;
  }
}
