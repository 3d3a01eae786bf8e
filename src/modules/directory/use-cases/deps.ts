import type { ActorContext } from '../../../platform/http/actor.ts';
import type { Audit } from '../../audit/index.ts';
import type { Identity } from '../../identity/index.ts';
import type { Tenancy } from '../../tenancy/index.ts';
import type { DirectoryRepo } from '../directory.repo.ts';

/** What every directory use case is given (built once in index.ts). */
export interface DirectoryDeps {
  repo: DirectoryRepo;
  audit: Audit;
  identity: Pick<Identity, 'findUserByEmail' | 'preparePassword' | 'createUser' | 'revokeAllSessions'>;
  tenancy: Pick<Tenancy, 'provisionMember' | 'deprovisionMember' | 'invalidateMember'>;
}

/** A SCIM request's actor: the org's directory, by token id (no user behind it). */
export interface ScimCaller {
  orgId: string;
  ctx: ActorContext;
}
